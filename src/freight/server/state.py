"""Typed keys for what the aiohttp application holds."""

from __future__ import annotations

from aiohttp import web

from freight.config import ServerConfig
from freight.core import UploadEngine

__all__ = ["ENGINE", "SETTINGS"]

ENGINE = web.AppKey("engine", UploadEngine)
SETTINGS = web.AppKey("settings", ServerConfig)
