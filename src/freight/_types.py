"""Type aliases shared across layers."""

from typing import TypeAlias

Buffer: TypeAlias = bytes | bytearray | memoryview
"""Anything freight writes from: ``collections.abc.Buffer`` only exists from Python 3.12."""
