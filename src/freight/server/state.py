"""Typed keys for what the aiohttp application holds."""

from __future__ import annotations

from aiohttp import web

from freight.config import ServerConfig
from freight.core import UploadEngine
from freight.server.splice import Splicers

__all__ = ["ENGINE", "SETTINGS", "SPLICERS"]

ENGINE = web.AppKey("engine", UploadEngine)
SETTINGS = web.AppKey("settings", ServerConfig)
SPLICERS = web.AppKey("splicers", Splicers)
