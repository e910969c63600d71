"""The layers of the code, as a contract on its imports (see docs/architecture.md).

Every import in the library, lazy ones and those made only for type checking included, goes
from a layer to the same layer or one below it, and no two packages import each other.
"""

from __future__ import annotations

import ast
import itertools
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# where each package of the memos namespace lives in the repository
FOLDERS = {"memos": ROOT / "memos", "memos.stores": ROOT / "stores",
           "memos.api": ROOT / "api", "memos.schedulers": ROOT / "schedulers"}  # fmt: skip
# top to bottom; "memos" is the public facade, memos/__init__.py
LAYERS: list[set[str]] = [
    {"memos.cli", "memos.api", "memos.schedulers", "memos.integrations"},  # faces
    {"memos"},
    {"memos.engine"},  # the engine, the handles and the operation declarations
    {"memos.plaintext", "memos.activation", "memos.parametric"},  # the tiers
    {"memos.codecs", "memos.embedding", "memos.llm", "memos.stores"},
    {"memos.core"},
    {"memos.errors"},
]
LAYER_OF = {package: depth for depth, layer in enumerate(LAYERS) for package in layer}


def modules() -> Iterator[tuple[str, Path]]:
    """Every module of the library: its dotted name and its file."""
    for package, folder in FOLDERS.items():
        for path in sorted(folder.rglob("*.py")):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            yield ".".join([package, *parts]), path


def package_of(module: str) -> str:
    """The layer package a module belongs to: ``memos.<folder>``, ``memos.errors``, or the
    facade ``memos`` itself."""
    parts = module.split(".")
    if len(parts) == 1:
        return "memos"
    return ".".join(parts[:2])


def imported(module: str, path: Path) -> Iterator[str]:
    """The memos modules (or packages) ``module`` imports, anywhere in its file."""
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names if alias.name.startswith("memos"))
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(module, is_package, node)
            if base.startswith("memos"):
                for alias in node.names:
                    # ``from memos import _x`` imports the module memos._x, not the facade
                    yield f"{base}.{alias.name}" if base == "memos" else base


def _absolute(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    anchor = module.split(".")
    anchor = anchor if is_package else anchor[:-1]
    anchor = anchor[: len(anchor) - (node.level - 1)]
    return ".".join([*anchor, *([node.module] if node.module else [])])


def edges() -> set[tuple[str, str]]:
    """(importing package, imported package) for every import between two packages."""
    found = set()
    for module, path in modules():
        for target in imported(module, path):
            source, destination = package_of(module), _facade_aware(target)
            if source != destination:
                found.add((source, destination))
    return found


def _facade_aware(target: str) -> str:
    """``memos.X`` where X is one of the facade's own names (``from memos import MemOS``)
    belongs to the facade; a subpackage or module to its package."""
    package = package_of(target)
    return package if package in LAYER_OF else "memos"


def test_every_package_is_in_a_layer() -> None:
    packages = {package_of(module) for module, _ in modules()}
    assert packages <= set(LAYER_OF), packages - set(LAYER_OF)


def test_imports_only_go_down() -> None:
    upward = sorted((a, b) for a, b in edges() if LAYER_OF[b] < LAYER_OF[a])
    assert upward == []


def test_no_two_packages_import_each_other() -> None:
    found = edges()
    cycles = [
        (a, b) for a, b in itertools.combinations(sorted(LAYER_OF), 2) if {(a, b), (b, a)} <= found
    ]
    assert cycles == []


def test_the_contract_sees_the_imports_it_checks() -> None:
    """The graph is not empty: the engine imports the tiers, the tiers the core."""
    found = edges()
    assert {("memos.engine", "memos.plaintext"), ("memos.plaintext", "memos.core"),
            ("memos.stores", "memos.core"), ("memos.api", "memos.engine")} <= found  # fmt: skip
