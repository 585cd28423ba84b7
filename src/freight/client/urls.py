"""Turning what a user types into the URLs the server serves.

A server URL may be given bare (``http://host:8080``), with a path prefix
(``http://host/freight``), or as its tus endpoint (``http://host:8080/files/``). File URLs are
``<root>/files/<id>``; the JSON API lives at ``<root>/api/files``.
"""

from __future__ import annotations

from yarl import URL

from freight.client.errors import ClientError

__all__ = [
    "api_files_url",
    "file_id_from_url",
    "parse_http_url",
    "server_root",
    "split_file_url",
    "upload_endpoint",
]


def parse_http_url(text: str) -> URL:
    """Parse ``text`` as an absolute http(s) URL or raise :class:`ClientError`."""
    try:
        url = URL(text.strip())
    except ValueError as exc:
        raise ClientError(f"not a valid URL: {text!r}") from exc
    if url.scheme == "tcp":
        # The TCP protocol sends and fetches files only: no listing, no deleting.
        raise ClientError(
            f"{text.strip()} is a raw TCP port, which only sends and fetches files: give the"
            " server's http(s) URL for this"
        )
    if url.scheme not in ("http", "https") or not url.host:
        raise ClientError(f"not an http(s) URL: {text!r}")
    return url.with_query(None).with_fragment(None)


def _segments(url: URL) -> list[str]:
    return [part for part in url.path.split("/") if part]


def _with_segments(url: URL, segments: list[str], *, trailing_slash: bool) -> URL:
    path = "/" + "/".join(segments)
    if trailing_slash and not path.endswith("/"):
        path += "/"
    return url.with_path(path)


def split_file_url(text: str) -> tuple[URL, str | None]:
    """Split a URL into the server root and, when it names one, a file id.

    ``http://h/files/abc`` and ``http://h/api/files/abc`` give ``(http://h/, "abc")``;
    ``http://h/files/`` and ``http://h`` give ``(http://h/, None)``.
    """
    url = parse_http_url(text)
    segments = _segments(url)
    file_id: str | None = None
    if len(segments) >= 2 and segments[-2] == "files":
        file_id = segments[-1]
        segments = segments[:-2]
    elif segments and segments[-1] == "files":
        segments = segments[:-1]
    if segments and segments[-1] == "api":
        segments = segments[:-1]
    return _with_segments(url, segments, trailing_slash=True), file_id


def server_root(text: str) -> URL:
    """The server's root URL (always ending in ``/``), whatever form ``text`` has."""
    return split_file_url(text)[0]


def upload_endpoint(text: str) -> URL:
    """The tus creation endpoint: ``text`` itself if it ends in ``/files/``, else root + files/."""
    url = parse_http_url(text)
    segments = _segments(url)
    if not segments or segments[-1] != "files":
        segments = [*segments, "files"]
    return _with_segments(url, segments, trailing_slash=True)


def api_files_url(root: URL, file_id: str | None = None) -> URL:
    """``<root>/api/files`` or ``<root>/api/files/<id>`` (the id is percent-encoded)."""
    url = root.with_path(root.path.rstrip("/") + "/api/files")
    return url / file_id if file_id is not None else url


def file_id_from_url(url: URL) -> str | None:
    """The last path segment of a file URL (``.../files/<id>``), if any."""
    segments = _segments(url)
    return segments[-1] if segments else None
