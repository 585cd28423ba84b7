"""tus ``Upload-Metadata`` and the client-supplied file names it carries.

``Upload-Metadata`` is a comma-separated list of ``key base64value`` pairs; a key may stand
alone (no value). Keys are unique, non-empty, printable ASCII without spaces or commas. Values
are strict, padded standard base64 of UTF-8 text.

A decoded value is untrusted text: before a file name is shown, put in a header or used as a
local path, pass it through :func:`safe_filename`, then :func:`content_disposition` for a
download response.
"""

from __future__ import annotations

import base64
import re
import unicodedata
from collections.abc import Mapping
from urllib.parse import quote

from freight.errors import InvalidHeader

__all__ = [
    "MAX_FILENAME_BYTES",
    "MAX_METADATA_LENGTH",
    "MAX_RELATIVE_PATH_BYTES",
    "RELATIVE_PATH",
    "build_upload_metadata",
    "content_disposition",
    "decode_base64",
    "parse_upload_metadata",
    "path_name",
    "relative_path_problem",
    "safe_filename",
    "with_relative_path",
]

HEADER = "Upload-Metadata"
MAX_METADATA_LENGTH = 65536
# The common per-component limit of Linux and macOS file systems.
MAX_FILENAME_BYTES = 255
# Where a file sat in the folder it was sent with (``photos/2024/a.jpg``), under the key Uppy
# uses; every protocol stores it under this key and checks it with relative_path_problem().
RELATIVE_PATH = "relativePath"
MAX_RELATIVE_PATH_BYTES = 4096  # PATH_MAX on Linux
# An extension longer than this is more likely part of the name than a real suffix.
_MAX_KEPT_SUFFIX_BYTES = 16

_PATH_SEPARATORS = re.compile(r"[/\\]")
# Line/paragraph separators and surrogates cannot be displayed or encoded safely.
_DROPPED_CATEGORIES = frozenset({"Cc", "Cs", "Zl", "Zp"})
# Bidirectional overrides let "gpj.exe" display as "exe.jpg"; a file name never needs them.
_BIDI_CONTROLS = frozenset("\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
# RFC 8187 attr-char beyond what urllib.parse.quote always leaves alone.
_ATTR_CHAR_EXTRA = "!#$&+^`|~"


def decode_base64(value: str, header: str) -> bytes:
    """Strict, padded, standard base64; anything else is an InvalidHeader naming ``header``."""
    try:
        return base64.b64decode(value, validate=True)
    except ValueError as exc:  # binascii.Error, or non-ASCII text
        raise InvalidHeader(f"{header} value is not valid base64") from exc


def _check_key(key: str) -> None:
    if not key or not all("!" <= char <= "~" for char in key) or "," in key:
        raise InvalidHeader(
            f"{HEADER} key {key[:64]!r} must be non-empty printable ASCII without spaces or commas"
        )


def _parse_pair(pair: str) -> tuple[str, str | None]:
    if not pair:
        raise InvalidHeader(f"{HEADER} contains an empty key-value pair")
    key, _, encoded = pair.partition(" ")
    _check_key(key)
    if not encoded:
        return key, None
    raw = decode_base64(encoded, f"{HEADER} {key!r}")
    try:
        return key, raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidHeader(f"{HEADER} {key!r} value is not UTF-8 text") from exc


def relative_path_problem(path: str) -> str | None:
    """What is wrong with ``path`` as a ``relativePath`` (None: nothing).

    It is untrusted: a client saving files under it must never leave the folder it saves
    into. So it names no drive, has no empty, ``.`` or ``..`` segment (``/`` and ``\\``
    both separate), no control character, and is bounded: at most MAX_RELATIVE_PATH_BYTES
    in all and MAX_FILENAME_BYTES a segment, in UTF-8. Leading separators are allowed and
    mean the top of the folder sent: Uppy's folder drops send ``/folder/file``.
    """
    try:
        size = len(path.encode("utf-8"))
    except UnicodeEncodeError:
        return "it is not UTF-8 text"
    if not path:
        return "it is empty"
    if size > MAX_RELATIVE_PATH_BYTES:
        return f"it is longer than {MAX_RELATIVE_PATH_BYTES} bytes"
    if any(unicodedata.category(char) == "Cc" for char in path):
        return "it holds a control character"
    inside = path.lstrip("/\\")
    if not inside or re.match(r"[A-Za-z]:", inside):
        return "it is an absolute path"
    for segment in _PATH_SEPARATORS.split(inside):
        if segment in ("", ".", ".."):
            return "it has an empty, '.' or '..' segment"
        if len(segment.encode("utf-8")) > MAX_FILENAME_BYTES:
            return f"a segment is longer than {MAX_FILENAME_BYTES} bytes"
    return None


def path_name(path: str) -> str:
    """The last segment of a relative path: the file's own name."""
    return _PATH_SEPARATORS.split(path)[-1]


def with_relative_path(metadata: dict[str, str | None], path: str | None) -> dict[str, str | None]:
    """``metadata`` plus ``relativePath`` when there is one (already checked)."""
    return metadata if path is None else {**metadata, RELATIVE_PATH: path}


def parse_upload_metadata(
    header: str, *, max_length: int = MAX_METADATA_LENGTH
) -> dict[str, str | None]:
    """Decode an ``Upload-Metadata`` header; an empty header is an empty dict.

    A key sent without a value maps to ``None``. ``max_length`` (characters) is checked before
    any other work so an oversized header costs nothing.
    """
    if len(header) > max_length:
        raise InvalidHeader(f"{HEADER} is longer than {max_length} characters")
    if not header.strip(" \t"):
        return {}
    metadata: dict[str, str | None] = {}
    for pair in header.split(","):
        key, value = _parse_pair(pair.strip(" \t"))
        if key in metadata:
            raise InvalidHeader(f"{HEADER} key {key!r} appears more than once")
        problem = relative_path_problem(value) if key == RELATIVE_PATH and value else None
        if problem is not None:
            raise InvalidHeader(f"{HEADER} {key!r} is refused: {problem}")
        metadata[key] = value
    return metadata


def _encode_value(key: str, value: str) -> str:
    try:
        raw = value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidHeader(f"{HEADER} {key!r} value cannot be encoded as UTF-8") from exc
    return base64.b64encode(raw).decode("ascii")


def build_upload_metadata(metadata: Mapping[str, str | None]) -> str:
    """Encode metadata for ``Upload-Metadata``, keeping the mapping's order.

    ``None`` and ``""`` are both sent as a bare key, so both read back as ``None``.
    """
    pairs: list[str] = []
    for key, value in metadata.items():
        _check_key(key)
        pairs.append(f"{key} {_encode_value(key, value)}" if value else key)
    return ",".join(pairs)


def _is_kept(char: str) -> bool:
    return char not in _BIDI_CONTROLS and unicodedata.category(char) not in _DROPPED_CATEGORIES


def _truncate_utf8(text: str, limit: int) -> str:
    # Cutting the encoded form and dropping a split trailing character never yields bad UTF-8.
    return text.encode("utf-8")[:limit].decode("utf-8", "ignore")


def _cap_length(name: str, limit: int) -> str:
    if len(name.encode("utf-8")) <= limit:
        return name
    stem, dot, suffix = name.rpartition(".")
    if not (dot and stem and suffix and len(suffix.encode("utf-8")) < _MAX_KEPT_SUFFIX_BYTES):
        return _truncate_utf8(name, limit)
    # Keep the extension: a shortened "report.pdf" should still open as a PDF.
    kept_suffix = "." + suffix
    return _truncate_utf8(stem, limit - len(kept_suffix.encode("utf-8"))) + kept_suffix


def safe_filename(name: str | None, fallback: str) -> str:
    """A client-supplied file name made safe to display, put in a header or save locally.

    Keeps only the last path component (``/`` and ``\\`` both separate), drops control,
    line-separator and bidi-override characters, strips leading dots and spaces (so no hidden
    files and never ``.`` or ``..``) and caps the result at 255 UTF-8 bytes, keeping a short
    extension. Returns ``fallback`` (trusted, used as is) when nothing usable is left.
    """
    if name is None:
        return fallback
    basename = _PATH_SEPARATORS.split(name)[-1]
    cleaned = "".join(char for char in basename if _is_kept(char)).lstrip(". ")
    if not cleaned:
        return fallback
    return _cap_length(cleaned, MAX_FILENAME_BYTES)


def _ascii_fallback_char(char: str) -> str:
    if char in '"\\':
        return "\\" + char
    # "%" is replaced too: some user agents percent-decode the plain filename (RFC 6266 app. D).
    if " " <= char <= "~" and char != "%":
        return char
    return "_"


def content_disposition(name: str) -> str:
    """``Content-Disposition`` for downloading ``name`` (RFC 6266 with an RFC 8187 ``filename*``).

    ``name`` should already have been through :func:`safe_filename`; anything outside
    printable ASCII is still replaced in the plain ``filename`` so the header stays valid.
    """
    if not name:
        return "attachment"
    fallback = "".join(_ascii_fallback_char(char) for char in name)
    encoded = quote(name, safe=_ATTR_CHAR_EXTRA, encoding="utf-8", errors="replace")
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{encoded}"
