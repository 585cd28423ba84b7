"""Interop with tuspy (``tusclient``), the tus project's own Python client.

Fixtures (``random_file``, ``check_stored``, ``tus_offset``, ``repr_sha256``) come from this
folder's conftest.py; ``freight_server`` and ``server_factory`` from tests/conftest.py.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from tusclient import client as tus_client
from tusclient.exceptions import TusCommunicationError
from tusclient.storage.filestorage import FileStorage

MiB = 1024 * 1024
CHUNK = 4 * MiB


def new_client(base_url: str, headers: dict[str, str] | None = None) -> tus_client.TusClient:
    return tus_client.TusClient(f"{base_url}/files/", headers=headers)


def test_upload_with_sha1_checksums(
    freight_server: Any,
    random_file: Callable[..., Any],
    check_stored: Callable[..., None],
    repr_sha256: Callable[[str], bytes | None],
) -> None:
    """24 MiB in 4 MiB PATCHes, each carrying ``Upload-Checksum: sha1 ...``."""
    local = random_file(24 * MiB)
    uploader = new_client(freight_server.url).uploader(
        str(local.path),
        chunk_size=CHUNK,
        upload_checksum=True,
        metadata={"filename": local.path.name},
    )
    uploader.upload()

    assert uploader.offset == local.size
    last_patch = uploader.request
    assert last_patch is not None
    assert last_patch.status_code == 204
    finishing_digest = last_patch.response_headers.get("repr-digest")
    assert finishing_digest is not None, "the completing PATCH should carry Repr-Digest"
    assert repr_sha256(finishing_digest) == local.sha256
    check_stored(freight_server.url, uploader.url, local)


@pytest.mark.parametrize("resume_by", ["url", "url_storage"])
def test_resume_with_a_new_uploader(
    freight_server: Any,
    random_file: Callable[..., Any],
    check_stored: Callable[..., None],
    tus_offset: Callable[..., int],
    tmp_path: Path,
    resume_by: str,
) -> None:
    """Stop after 3 chunks; a fresh uploader asks the server for the offset and finishes.

    tuspy sends an empty ``Upload-Metadata`` header when it has no metadata: tusd accepts
    that, and so must freight.
    """
    local = random_file(24 * MiB)
    stop_at = 3 * CHUNK
    storage = FileStorage(str(tmp_path / "tus-urls.json")) if resume_by == "url_storage" else None
    options: dict[str, Any] = {"chunk_size": CHUNK, "upload_checksum": True}
    if storage is not None:
        options.update(store_url=True, url_storage=storage)

    first = new_client(freight_server.url).uploader(str(local.path), **options)
    first.upload(stop_at=stop_at)
    assert first.offset == stop_at
    offset_before_resume = tus_offset(first.url)
    assert 0 < offset_before_resume <= stop_at

    if storage is None:
        options["url"] = first.url
    second = new_client(freight_server.url).uploader(str(local.path), **options)
    assert second.url == first.url
    assert second.offset == offset_before_resume
    second.upload()

    assert second.offset == local.size
    check_stored(freight_server.url, second.url, local)
    if storage is not None:
        storage.close()


async def test_async_uploader(
    freight_server: Any,
    random_file: Callable[..., Any],
    check_stored: Callable[..., None],
) -> None:
    """tuspy's aiohttp-based uploader, with checksums, 2 MiB chunks."""
    local = random_file(8 * MiB)
    uploader = new_client(freight_server.url).async_uploader(
        str(local.path), chunk_size=2 * MiB, upload_checksum=True
    )
    await uploader.upload()
    assert uploader.offset == local.size
    check_stored(freight_server.url, uploader.url, local)


def test_token_is_required_and_accepted(
    server_factory: Callable[..., Any],
    tmp_path: Path,
    random_file: Callable[..., Any],
    check_stored: Callable[..., None],
) -> None:
    token = "interop-secret"
    server = server_factory(data_dir=tmp_path / "data", args=["--token", token]).start()
    local = random_file(6 * MiB)

    with pytest.raises(TusCommunicationError) as refused:
        new_client(server.url).uploader(str(local.path), chunk_size=CHUNK).upload()
    assert refused.value.status_code == 401

    auth = {"Authorization": f"Bearer {token}"}
    uploader = new_client(server.url, headers=auth).uploader(
        str(local.path), chunk_size=CHUNK, upload_checksum=True
    )
    uploader.upload()
    check_stored(server.url, uploader.url, local, headers=auth)
