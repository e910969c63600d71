"""The shape of the code, measured: where each SDK operation is written, the largest classes and
the import cycles between packages.

An operation is "written" in a place when that place names it by hand: its declaration on the
shared handle or one of its namespaces (``memos.engine._handle.Handle``, ``mos.kv``,
``mos.lora``, ``mos.jobs``: from it the embedded call, the route, the OpenAPI entry and the HTTP
client's call follow), a method of an embedded or an HTTP class that writes it for itself, and a
hand-written server route that calls it. Run:

    .venv/bin/python benchmarks/architecture.py
"""

from __future__ import annotations

import ast
import collections
import inspect
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# where each package of the memos namespace lives in the repository
PACKAGES = {"memos": "memos", "memos.stores": "stores", "memos.api": "api",
            "memos.schedulers": "schedulers"}  # fmt: skip


def operation_places() -> dict[str, list[str]]:
    """SDK method name (``kv.build`` for a namespace's) -> the places it is written by hand."""
    from memos import MemOS
    from memos.engine._cube_operations import CubeOperations
    from memos.engine._handle import Handle
    from memos.engine._keys import Keys
    from memos.engine._operations import operations_of
    from memos.engine._remote import RemoteMemOS

    declared = {_dotted(op.namespace, op.function.__name__) for op in operations_of(Handle)}
    routes = _route_calls()
    # the classes of each face, the shared one first
    shared = [CubeOperations, Handle]
    faces: list[tuple[str, list[type]]] = [("", [*shared, MemOS, RemoteMemOS]), ("keys", [Keys])]
    faces += [
        (name, [_namespace(cls, name) for cls in (Handle, MemOS, RemoteMemOS)])
        for name in ("kv", "lora", "jobs")
    ]
    places: dict[str, list[str]] = {}
    for prefix, classes in faces:
        classes = list(dict.fromkeys(classes))
        for name in sorted({m for cls in classes for m in _methods(cls)}):
            full = _dotted(prefix, name)
            where = ["declaration"] if full in declared else []
            where += [cls.__name__ for cls in classes if _written(cls, name)]
            where += ["route"] * routes[full]
            places[full] = where
    return places


def _dotted(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _namespace(handle: type, name: str) -> type:
    return next(vars(k)[name].cls for k in handle.__mro__ if name in vars(k))


def _written(cls: type, name: str) -> bool:
    """Whether ``cls`` itself writes method ``name`` by hand (a declaration is not)."""
    member = vars(cls).get(name)
    return member is not None and not hasattr(member, "operation")


def _methods(cls: type) -> list[str]:
    return [
        name
        for name in dir(cls)
        if not name.startswith("_")
        and callable(getattr(cls, name))
        and not isinstance(inspect.getattr_static(cls, name), property)
    ]


def _route_calls() -> collections.Counter[str]:
    """How many hand-written route functions answer with ``mos.<name>`` or ``mos.kv.<name>``
    (the call they return)."""
    calls: collections.Counter[str] = collections.Counter()
    for path in (ROOT / "api").glob("_*_routes.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef) and node.decorator_list:
                calls.update({name for name in map(_sdk_call, ast.walk(node)) if name})
    return calls


def _sdk_call(node: ast.AST) -> str | None:
    """``name`` for a call ``mos.name(...)``, ``kv.name`` for ``mos.kv.name(...)``."""
    if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
        return None
    owner = node.func.value
    if isinstance(owner, ast.Name) and owner.id == "mos":
        return None if node.func.attr in ("get_cube", "kv", "lora") else node.func.attr
    if (
        isinstance(owner, ast.Attribute)
        and isinstance(owner.value, ast.Name)
        and owner.value.id == "mos"
    ):
        return f"{owner.attr}.{node.func.attr}"
    return None


def largest_classes(n: int = 8) -> list[tuple[int, str]]:
    rows = []
    for folder in PACKAGES.values():
        for path in sorted((ROOT / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ClassDef) and node.end_lineno is not None:
                    size = node.end_lineno - node.lineno + 1
                    rows.append((size, f"{path.relative_to(ROOT)}:{node.name}"))
    return sorted(rows, reverse=True)[:n]


def package_cycles() -> list[tuple[str, str]]:
    """Pairs of packages that import each other (any import, lazy ones included); the facade
    ``memos/__init__.py`` and ``memos/errors.py`` count as packages of their own."""
    edges: set[tuple[str, str]] = set()
    for package, folder in PACKAGES.items():
        for path in folder_files(folder):
            parts = list(path.relative_to(ROOT / folder).with_suffix("").parts)
            module = ".".join([package, *(parts[:-1] if parts[-1] == "__init__" else parts)])
            for target in _imports(path, module):
                edges.add((_package(module), _package(target)))
    return sorted((a, b) for a, b in edges if a < b and (b, a) in edges)


def folder_files(folder: str) -> list[Path]:
    return sorted((ROOT / folder).rglob("*.py"))


def _imports(path: Path, module: str) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("memos")}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "memos":  # from memos import _x: the module memos._x
                found |= {f"memos.{a.name}" for a in node.names}
            elif node.module.startswith("memos"):
                found.add(node.module)
    return found


def _package(module: str) -> str:
    parts = module.split(".")
    if len(parts) > 1 and (parts[1] == "errors" or not parts[1][0].isupper()):
        return ".".join(parts[:2]) if not parts[1].startswith("_") else "memos"
    return "memos"


def main() -> None:
    sys.path.insert(0, str(ROOT))
    places = operation_places()
    counts = collections.Counter(len(where) for where in places.values())
    print("places an SDK operation is written (declaration, face classes, routes):")
    for name, where in places.items():
        print(f"  {name:<20} {len(where)}  {', '.join(where)}")
    print("operations by places written:", dict(sorted(counts.items())))
    print("largest classes:")
    for size, name in largest_classes():
        print(f"  {size:>5} {name}")
    print("package-level import cycles:", package_cycles() or "none")


if __name__ == "__main__":
    main()
