"""Which web pages may use the server: one policy for HTTP and the WebSocket endpoint.

A browser names the page behind every cross-origin request in ``Origin``. A server without
a token has nothing else to stop a page the user happens to visit from listing, reading or
deleting files, so it answers only its own origin and the origins the operator lists
(``--cors-origin``, ``*`` for any). With a token, the token is that check and any origin may
present it. A request without ``Origin`` is not a cross-origin browser request (or is one a
browser lets the page read nothing of) and passes.

Chrome asks before a public page reaches a private address
(``Access-Control-Request-Private-Network``); only listed origins are granted that.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from aiohttp import web

from freight.config import ServerConfig
from freight.protocol.ws_rules import is_same_origin

__all__ = [
    "ORIGIN_POLICY",
    "OriginPolicy",
    "origin_listed",
    "origin_permitted",
    "parse_origin",
]


def parse_origin(text: str) -> tuple[str, str]:
    """``scheme://host[:port]`` split into scheme and host (``ValueError`` otherwise)."""
    scheme, sep, host = text.strip().partition("://")
    if not sep or not is_same_origin(text, scheme=scheme, host=host):
        raise ValueError(f"{text!r} is not an origin like https://example.com[:port]")
    return scheme, host


@dataclass(frozen=True)
class OriginPolicy:
    """``listed``: the operator's origins as (scheme, host); ``any_listed``: ``*`` was given;
    ``token``: the server requires a token."""

    listed: tuple[tuple[str, str], ...] = ()
    any_listed: bool = False
    token: bool = False

    @classmethod
    def from_config(cls, config: ServerConfig) -> OriginPolicy:
        return cls.build(config.cors_origins, token=config.token is not None)

    @classmethod
    def build(cls, origins: Iterable[str], *, token: bool) -> OriginPolicy:
        values = [o.strip() for o in origins if o.strip()]
        listed = tuple(parse_origin(o) for o in values if o != "*")
        return cls(listed=listed, any_listed="*" in values, token=token)

    def is_listed(self, origin: str) -> bool:
        if self.any_listed:
            return True
        return any(is_same_origin(origin, scheme=s, host=h) for s, h in self.listed)

    def permits(self, request: web.Request) -> bool:
        """Whether a request may be served as far as its ``Origin`` goes."""
        origin = request.headers.get("Origin")
        if origin is None or self.token:
            return True
        return self.is_listed(origin) or _same_origin(request, origin)


ORIGIN_POLICY = web.AppKey("freight.origin_policy", OriginPolicy)


def _policy(request: web.Request) -> OriginPolicy:
    # An application assembled without create_app lets in no foreign page.
    return request.app.get(ORIGIN_POLICY) or OriginPolicy()


def origin_permitted(request: web.Request) -> bool:
    """The one origin check of every endpoint (HTTP middleware and WebSocket handshake)."""
    return _policy(request).permits(request)


def origin_listed(request: web.Request, origin: str) -> bool:
    """Whether the operator listed ``origin`` (grants Chrome's private-network access)."""
    return _policy(request).is_listed(origin)


def _same_origin(request: web.Request, origin: str) -> bool:
    # A reverse proxy terminating TLS forwards the scheme. A page cannot make a browser send
    # this header cross-origin without a preflight, which a foreign origin does not pass.
    forwarded = request.headers.get("X-Forwarded-Proto", "").split(",")[0].strip().lower()
    scheme = forwarded if forwarded in ("http", "https") else request.scheme
    return is_same_origin(origin, scheme=scheme, host=request.host)
