"""``/api/openapi.json`` stays true: it documents every route the server registers, names
no route the server lacks, and its schemas are valid JSON Schema 2020-12.

The chunk API's answers are validated against these schemas in ``test_chunk_api.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientSession, web
from aiohttp.test_utils import TestServer
from jsonschema import Draft202012Validator
from openapi_spec_validator import OpenAPIV31SpecValidator

from freight.config import ServerConfig
from freight.server.app import create_app
from freight.server.chunks import POLICY
from freight.server.openapi import build_openapi, registered_paths

OPERATIONS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}


async def _served(app: web.Application, mount: str = "") -> AsyncIterator[dict[str, Any]]:
    async with (
        TestServer(app, host="127.0.0.1") as server,
        ClientSession() as http,
        http.get(server.make_url(f"{mount}/api/openapi.json")) as resp,
    ):
        assert resp.status == 200
        assert resp.content_type == "application/json"
        yield await resp.json()


class Mounted:
    """The routes of a served application as its document names them: from its mount."""

    def __init__(self, app: web.Application, mount: str) -> None:
        self.app = app
        self.mount = mount

    def resources(self) -> Iterator[tuple[str, web.AbstractResource]]:
        for resource in self.app.router.resources():
            yield resource.canonical.removeprefix(self.mount), resource

    def paths(self) -> set[str]:
        return {path.removeprefix(self.mount) for path in registered_paths(self.app)}


@pytest.fixture(params=["/", "/sub/"])
async def served(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Any]:
    """An app mounted at the given base path (its routes under it), and its document."""
    app = create_app(ServerConfig(data_dir=tmp_path / "data", base_path=request.param))
    mount = request.param.rstrip("/")
    inner = app
    if mount:
        (sub,) = (r for r in app.router.resources() if isinstance(r, web.PrefixedSubAppResource))
        inner = sub.get_info()["app"]
    async for document in _served(app, mount):
        if mount:
            assert document["servers"] == [{"url": mount}]
        yield Mounted(inner, mount), document


def _documented_methods(item: dict[str, Any]) -> set[str]:
    return {key.upper() for key in item if key in OPERATIONS}


async def test_every_route_is_documented(served: tuple[Mounted, Any]) -> None:
    app, document = served
    for path, resource in app.resources():
        assert path in document["paths"], f"{path} is not documented"
        methods = {route.method for route in resource}
        documented = _documented_methods(document["paths"][path])
        if "*" in methods:  # one handler for every method (tus and IETF under the base path)
            assert documented, path
        else:
            # aiohttp answers HEAD wherever it answers GET; documenting it is optional.
            assert methods - {"HEAD"} == documented - {"HEAD"}, path


async def test_every_documented_path_exists(served: tuple[Mounted, Any]) -> None:
    app, document = served
    assert set(document["paths"]) <= app.paths()


async def test_path_parameters_are_declared(served: tuple[Mounted, Any]) -> None:
    _, document = served
    for path, item in document["paths"].items():
        names = set(re.findall(r"{(\w+)}", path))
        for method in _documented_methods(item):
            operation = item[method.lower()]
            declared = {
                p["name"]
                for p in [*item.get("parameters", []), *operation.get("parameters", [])]
                if p["in"] == "path"
            }
            assert declared == names, (path, method)


async def test_the_document_is_valid_openapi_3_1(served: tuple[Mounted, Any]) -> None:
    _, document = served
    assert document["openapi"] == "3.1.0"
    assert document["info"]["title"] == "freight" and document["info"]["version"]
    schemas = document["components"]["schemas"]
    for schema in schemas.values():
        Draft202012Validator.check_schema(schema)
    # Every reference points at a schema that exists.
    text = repr(document)
    for name in re.findall(r"#/components/schemas/(\w+)", text):
        assert name in schemas, name
    for item in document["paths"].values():
        for method in _documented_methods(item):
            operation = item[method.lower()]
            assert operation["summary"] and operation["responses"]
            for status in operation["responses"]:
                assert re.fullmatch(r"[1-5][0-9][0-9]", status), status


async def test_health_needs_no_token_and_the_rest_does(
    served: tuple[Mounted, Any],
) -> None:
    _, document = served
    assert document["security"] == [{"bearer": []}]
    assert document["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    assert document["paths"]["/health"]["get"]["security"] == []


def test_optional_endpoints_appear_only_when_registered() -> None:
    bare = build_openapi(base_path="/files/", registered=set(), policy=POLICY)
    assert "/api/ws" not in bare["paths"] and "/" not in bare["paths"]
    full = build_openapi(base_path="/files/", registered={"/api/ws", "/"}, policy=POLICY)
    assert "get" in full["paths"]["/api/ws"] and "get" in full["paths"]["/"]


def test_chunk_limits_are_stated() -> None:
    document = build_openapi(base_path="/files/", registered=set(), policy=POLICY)
    described = document["components"]["schemas"]["CreateUpload"]["properties"]["chunk_size"]
    for number in (POLICY.minimum, POLICY.maximum, POLICY.default, POLICY.max_count):
        assert str(number) in described["description"]
    missing = document["components"]["schemas"]["UploadStatus"]["properties"]["missing"]
    assert "Half-open" in repr(missing)


def test_the_document_passes_an_openapi_3_1_validator() -> None:
    registered = {"/api/ws", "/", "/static/{name}"}
    document = build_openapi(base_path="/files/", registered=registered, policy=POLICY)
    errors = [error.message for error in OpenAPIV31SpecValidator(document).iter_errors()]
    assert not errors


def _walk(node: Any, where: str = "#") -> Iterator[tuple[str, Any]]:
    yield where, node
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _walk(value, f"{where}/{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _walk(value, f"{where}/{index}")


async def test_every_items_is_one_schema_object(served: tuple[Mounted, Any]) -> None:
    _, document = served
    for where, node in _walk(document):
        if isinstance(node, dict) and "items" in node and where.rsplit("/", 1)[-1] != "properties":
            assert isinstance(node["items"], dict), where
            assert "prefixItems" not in node, where


def _operations(document: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in document["paths"].items():
        for method in _documented_methods(item):
            yield path, method, item[method.lower()]


async def test_refusals_are_documented_where_they_happen(
    served: tuple[Mounted, Any],
) -> None:
    _, document = served
    for path, method, operation in _operations(document):
        guarded = operation.get("security") != []
        assert ("401" in operation["responses"]) == guarded, (path, method)
        assert ("403" in operation["responses"]) == guarded, (path, method)
    assert document["paths"]["/api/ws"]["get"]["responses"]["400"]


async def test_every_operation_answers_what_the_document_says(tmp_path: Path) -> None:
    """Without the token a guarded operation is 401; from a foreign page on a server without
    a token, 403; and what the document calls open is open."""
    async with (
        _live(tmp_path / "a", token="t") as (guarded, document),
        _live(tmp_path / "b") as (open_url, _),
        ClientSession() as http,
    ):
        for path, method, operation in _operations(document):
            target = path.replace("{upload_id}", "x").replace("{n}", "0")
            target = target.replace("{name}", "app.js")
            async with http.request(method, f"{guarded}{target}") as resp:
                if operation.get("security") is None:
                    assert resp.status == 401, (path, method)
                elif operation["security"] == []:
                    assert resp.status != 401, (path, method)
            foreign = {"Origin": "https://evil.example"}
            async with http.request(method, f"{open_url}{target}", headers=foreign) as resp:
                guarded_op = operation.get("security") != []
                assert (resp.status == 403) == guarded_op, (path, method, resp.status)


@contextlib.asynccontextmanager
async def _live(data_dir: Path, **config: Any) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    app = create_app(ServerConfig(data_dir=data_dir, **config))
    async with TestServer(app, host="127.0.0.1") as server:
        url = str(server.make_url("")).rstrip("/")
        headers = {"Authorization": "Bearer t"} if "token" in config else {}
        async with (
            ClientSession() as http,
            http.get(f"{url}/api/openapi.json", headers=headers) as resp,
        ):
            document = await resp.json()
        yield url, document


async def test_event_data_matches_the_documented_schemas(tmp_path: Path) -> None:
    tus = {"Tus-Resumable": "1.0.0"}
    async with _live(tmp_path / "data") as (url, document), ClientSession() as http:
        media = document["paths"]["/api/events"]["get"]["responses"]["200"]["content"]
        schema_of = media["text/event-stream"]["x-event-data"]
        async with http.post(f"{url}/files/", headers={**tus, "Upload-Length": "5"}) as resp:
            waiting = resp.headers["Location"]  # in the snapshot
        events = await http.get(f"{url}/api/events")
        async with http.post(f"{url}/files/", headers={**tus, "Upload-Length": "5"}) as resp:
            location = resp.headers["Location"]
        patch = {**tus, "Upload-Offset": "0", "Content-Type": "application/offset+octet-stream"}
        async with http.patch(f"{url}{location}", data=b"hello", headers=patch) as resp:
            assert resp.status == 204
        async with http.delete(f"{url}{location}", headers=tus) as resp:
            assert resp.status == 204
        seen: dict[str, int] = {}
        async with asyncio.timeout(20):
            kind = ""
            while "deleted" not in seen:
                line = (await events.content.readline()).decode().rstrip("\n")
                if line.startswith("event: "):
                    kind = line.removeprefix("event: ")
                elif line.startswith("data: "):
                    data = json.loads(line.removeprefix("data: "))
                    schema = {**schema_of[kind], "components": document["components"]}
                    Draft202012Validator(schema).validate(data)
                    seen[kind] = seen.get(kind, 0) + 1
                    if kind == "snapshot":
                        assert [u["id"] for u in data["uploads"]] == [waiting.rsplit("/", 1)[1]]
        events.close()
    # Progress between creation and the end is merged for watchers: a 5-byte upload may
    # show none (tests/unit/core/test_events.py); every other kind must have come.
    assert {"snapshot", "created", "finished", "deleted"} <= set(seen)
    assert set(seen) <= {"snapshot", "created", "progress", "finished", "deleted"}
