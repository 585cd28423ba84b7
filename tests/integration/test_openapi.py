"""``/api/openapi.json`` stays true: it documents every route the server registers, names
no route the server lacks, and its schemas are valid JSON Schema 2020-12.

The chunk API's answers are validated against these schemas in ``test_chunk_api.py``.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientSession, web
from aiohttp.test_utils import TestServer
from jsonschema import Draft202012Validator

from freight.config import ServerConfig
from freight.server.app import create_app
from freight.server.chunks import POLICY
from freight.server.openapi import build_openapi, registered_paths

OPERATIONS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}


async def _served(app: web.Application) -> AsyncIterator[dict[str, Any]]:
    async with (
        TestServer(app, host="127.0.0.1") as server,
        ClientSession() as http,
        http.get(server.make_url("/api/openapi.json")) as resp,
    ):
        assert resp.status == 200
        assert resp.content_type == "application/json"
        yield await resp.json()


@pytest.fixture(params=["/files/", "/uploads/"])
async def served(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Any]:
    """An app with the given tus base path, and the document it serves."""
    app = create_app(ServerConfig(data_dir=tmp_path / "data", base_path=request.param))
    async for document in _served(app):
        yield app, document


def _documented_methods(item: dict[str, Any]) -> set[str]:
    return {key.upper() for key in item if key in OPERATIONS}


async def test_every_route_is_documented(served: tuple[web.Application, Any]) -> None:
    app, document = served
    for resource in app.router.resources():
        path = resource.canonical
        assert path in document["paths"], f"{path} is not documented"
        methods = {route.method for route in resource}
        documented = _documented_methods(document["paths"][path])
        if "*" in methods:  # one handler for every method (tus and IETF under the base path)
            assert documented, path
        else:
            # aiohttp answers HEAD wherever it answers GET; documenting it is optional.
            assert methods - {"HEAD"} == documented - {"HEAD"}, path


async def test_every_documented_path_exists(served: tuple[web.Application, Any]) -> None:
    app, document = served
    assert set(document["paths"]) <= registered_paths(app)


async def test_path_parameters_are_declared(served: tuple[web.Application, Any]) -> None:
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


async def test_the_document_is_valid_openapi_3_1(served: tuple[web.Application, Any]) -> None:
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
    served: tuple[web.Application, Any],
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
