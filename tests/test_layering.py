"""The layer rules of docs/architecture.md, checked on every import under src/freight.

Every import counts: at module level, inside functions and under ``TYPE_CHECKING``. An
arrow the rules forbid fails with its module, line, imported module and rule; so does any
cycle between modules. Importing a submodule also runs its package's ``__init__``; that
implicit arrow is not counted (every submodule would otherwise form a cycle with its
package), but an explicit ``from freight.core import X`` is an arrow to ``freight.core``.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "src"

# Longest prefix wins. The bottom layer is importable by every other one.
LAYER_OF = {
    "freight": "bottom",
    "freight._types": "bottom",
    "freight.errors": "bottom",
    "freight.config": "bottom",
    "freight.protocol": "protocol",
    "freight.core": "core",
    "freight.storage": "storage",
    "freight.server": "server",
    "freight.client": "client",
    "freight.cli": "cli",
    "freight.__main__": "cli",
}
MAY_IMPORT = {
    "bottom": set(),
    "protocol": {"bottom", "protocol"},
    "core": {"bottom", "protocol", "core"},
    "storage": {"bottom", "protocol", "core", "storage"},
    "server": {"bottom", "protocol", "core", "storage", "server"},
    "client": {"bottom", "protocol", "client"},
    "cli": {"bottom", "protocol", "client", "cli"},
}
# The one arrow from the CLI to the server: the module defining the ``serve`` command may
# import the server inside its functions (the command and the callbacks checking its
# options), never at module level, so no other command loads it.
SERVE_COMMAND = "serve"
# The same for ``user`` (it edits the user store a server keeps, as ``serve`` opens it).
USER_COMMAND = "user"


@dataclass(frozen=True)
class Import:
    module: str
    line: int
    target: str
    function: str | None  # the outermost function it sits in, if any


def module_names(source: Path) -> dict[str, Path]:
    names = {}
    for path in sorted(source.rglob("*.py")):
        parts = list(path.relative_to(source).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


def _resolve(name: str, known: set[str]) -> str | None:
    """The known module ``name`` is or lies in (``a.b.C`` → ``a.b``), if any."""
    while name:
        if name in known:
            return name
        name = name.rpartition(".")[0]
    return None


def _targets(node: ast.Import | ast.ImportFrom, module: str, is_package: bool) -> Iterator[str]:
    if isinstance(node, ast.Import):
        yield from (alias.name for alias in node.names)
        return
    base = node.module or ""
    if node.level:
        package = module if is_package else module.rpartition(".")[0]
        for _ in range(node.level - 1):
            package = package.rpartition(".")[0]
        base = f"{package}.{base}" if base else package
    for alias in node.names:
        yield f"{base}.{alias.name}"  # a submodule if there is one, else resolves to ``base``


def _walk(node: ast.AST, function: str | None) -> Iterator[tuple[ast.AST, str | None]]:
    for child in ast.iter_child_nodes(node):
        inner = function
        if function is None and isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
            inner = child.name
        yield child, inner
        yield from _walk(child, inner)


def collect_imports(source: Path, package: str = "freight") -> dict[str, list[Import]]:
    """Every import of a ``package`` module by a module under ``source``."""
    modules = module_names(source)
    known = set(modules)
    found: dict[str, list[Import]] = {}
    for module, path in modules.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        imports = found.setdefault(module, [])
        for node, function in _walk(tree, None):
            if not isinstance(node, ast.Import | ast.ImportFrom):
                continue
            for name in _targets(node, module, path.name == "__init__.py"):
                target = _resolve(name, known)
                if not target or target.split(".")[0] != package or target == module:
                    continue
                arrow = Import(module, node.lineno, target, function)
                if arrow not in imports:  # ``from m import a, b``: one arrow
                    imports.append(arrow)
    return found


def layer_of(module: str) -> str:
    owner = _resolve(module, set(LAYER_OF))
    assert owner is not None, f"{module} is in no layer of docs/architecture.md"
    return LAYER_OF[owner]


def defining(source: Path, function: str) -> set[str]:
    """Modules under ``source`` with a top-level function named ``function``."""
    found = set()
    for module, path in module_names(source).items():
        tree = ast.parse(path.read_text(), filename=str(path))
        defs = (n for n in tree.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef))
        if any(node.name == function for node in defs):
            found.add(module)
    return found


def forbidden_arrows(imports: dict[str, list[Import]], serve_modules: set[str]) -> list[str]:
    """Arrows the rules forbid; ``serve_modules`` may import the server inside functions."""
    problems = []
    for found in imports.values():
        for imp in found:
            source, target = layer_of(imp.module), layer_of(imp.target)
            if target in MAY_IMPORT[source]:
                continue
            lazy = imp.function is not None and imp.module in serve_modules
            if (source, target) == ("cli", "server") and lazy:
                continue
            problems.append(
                f"{imp.module}:{imp.line} imports {imp.target}: "
                f"{source} may import only {', '.join(sorted(MAY_IMPORT[source]))}"
            )
    return problems


def import_cycles(imports: dict[str, list[Import]]) -> list[list[str]]:
    """One cycle (``a → b → … → a``) for every strongly connected group of modules."""
    graph = {module: sorted({imp.target for imp in found}) for module, found in imports.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[set[str]] = []

    def connect(node: str) -> None:  # Tarjan; the package is small enough to recurse
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, []):
            if nxt not in index:
                connect(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.add(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(group)

    for module in sorted(graph):
        if module not in index:
            connect(module)
    return [_cycle_in(graph, group) for group in groups]


def _cycle_in(graph: dict[str, list[str]], group: set[str]) -> list[str]:
    """A path from the group's first module back to itself, inside the group."""
    start = min(group)
    paths = {start: [start]}
    queue = [start]
    while queue:
        node = queue.pop(0)
        for nxt in graph.get(node, []):
            if nxt == start:
                return [*paths[node], start]
            if nxt in group and nxt not in paths:
                paths[nxt] = [*paths[node], nxt]
                queue.append(nxt)
    raise AssertionError("a strongly connected group always has a cycle")


def test_no_import_crosses_a_layer_the_docs_forbid() -> None:
    server_commands = defining(SOURCE, SERVE_COMMAND) | defining(SOURCE, USER_COMMAND)
    problems = forbidden_arrows(collect_imports(SOURCE), server_commands)
    assert not problems, "\n".join(problems)


def test_no_import_cycle_between_modules() -> None:
    cycles = import_cycles(collect_imports(SOURCE))
    assert not cycles, "\n".join(" → ".join(cycle) for cycle in cycles)


def test_every_module_is_in_a_layer() -> None:
    for module in module_names(SOURCE):
        assert layer_of(module) in MAY_IMPORT


def test_the_docs_state_the_rules_checked_here() -> None:
    text = (ROOT / "docs" / "architecture.md").read_text()
    for package in LAYER_OF:
        assert f"`{package}`" in text, f"docs/architecture.md does not place {package}"


# the checker itself -------------------------------------------------------------------------


def _write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


@pytest.fixture
def synthetic(tmp_path: Path) -> Path:
    _write(
        tmp_path,
        {
            "freight/__init__.py": "",
            "freight/errors.py": "",
            "freight/core/__init__.py": "from freight.core.a import A\n",
            "freight/core/a.py": (
                "from typing import TYPE_CHECKING\nimport freight.errors\n"
                "if TYPE_CHECKING:\n    from freight.core.b import B\n"
            ),
            "freight/core/b.py": "def f():\n    from . import a\n",
            "freight/core/c.py": "\n\ndef g():\n    from freight.server import s\n",
            "freight/server/__init__.py": "",
            "freight/server/s.py": "from freight.core import A\nfrom freight import errors\n",
            "freight/cli/__init__.py": "",
            "freight/cli/main.py": (
                "def serve():\n    from freight.server import s\n"
                "def _check_option():\n    import freight.server.s\n"
            ),
            "freight/cli/other.py": "import freight.server.s\n",
        },
    )
    return tmp_path


def test_checker_resolves_every_kind_of_import(synthetic: Path) -> None:
    imports = collect_imports(synthetic)
    arrows = {(i.module, i.target, i.function) for found in imports.values() for i in found}
    assert arrows == {
        ("freight.core", "freight.core.a", None),
        ("freight.core.a", "freight.errors", None),
        ("freight.core.a", "freight.core.b", None),
        ("freight.core.b", "freight.core.a", "f"),
        ("freight.core.c", "freight.server.s", "g"),
        ("freight.server.s", "freight.core", None),
        ("freight.server.s", "freight.errors", None),
        ("freight.cli.main", "freight.server.s", "serve"),
        ("freight.cli.main", "freight.server.s", "_check_option"),
        ("freight.cli.other", "freight.server.s", None),
    }


def test_checker_reports_a_forbidden_arrow(synthetic: Path) -> None:
    serve_modules = defining(synthetic, SERVE_COMMAND)
    assert serve_modules == {"freight.cli.main"}
    problems = forbidden_arrows(collect_imports(synthetic), serve_modules)
    assert sorted(problems) == [
        "freight.cli.other:1 imports freight.server.s: "
        "cli may import only bottom, cli, client, protocol",
        "freight.core.c:4 imports freight.server.s: core may import only bottom, core, protocol",
    ]


def test_checker_reports_a_cycle(synthetic: Path) -> None:
    cycles = import_cycles(collect_imports(synthetic))
    assert cycles == [["freight.core.a", "freight.core.b", "freight.core.a"]]


def test_checker_finds_nothing_in_a_clean_tree(tmp_path: Path) -> None:
    _write(
        tmp_path,
        {
            "freight/__init__.py": "",
            "freight/core/__init__.py": "",
            "freight/core/a.py": "import os\nfrom freight.core import b\n",
            "freight/core/b.py": "",
        },
    )
    imports = collect_imports(tmp_path)
    assert not forbidden_arrows(imports, set())
    assert not import_cycles(imports)
