"""The library's pydantic models defer their build (``memos.core._model.Model``): a model builds
its validator and serializer on first use, so importing the declarations (``memos`` commands,
the HTTP client) is cheap. The LangChain classes are LangChain's models and the server's
(``memos.api``) are built when it starts, and a scheduler policy's parameters are its own;
none of those is held to this."""

from __future__ import annotations

import importlib
import pkgutil
import subprocess
import sys

import pydantic

import memos

_NOT_HELD = ("memos.integrations.langchain", "memos.api", "memos.stores", "memos.schedulers")


def _models() -> set[type[pydantic.BaseModel]]:
    found: set[type[pydantic.BaseModel]] = set()
    pending = list(pydantic.BaseModel.__subclasses__())
    while pending:
        cls = pending.pop()
        found.add(cls)
        pending.extend(cls.__subclasses__())
    # the models a module declares (not those made at run time, as the request models of the
    # operations are, on first use)
    return {
        c
        for c in found
        if c.__module__.startswith("memos.")
        and vars(sys.modules[c.__module__]).get(c.__name__) is c
    }


def test_every_model_defers_its_build() -> None:
    for module in pkgutil.walk_packages(memos.__path__, "memos."):
        if not module.name.startswith(_NOT_HELD):
            importlib.import_module(module.name)
    eager = sorted(
        f"{cls.__module__}.{cls.__qualname__}"
        for cls in _models()
        if not cls.__module__.startswith(_NOT_HELD) and not cls.model_config.get("defer_build")
    )
    assert eager == []


def test_the_command_line_builds_no_model_at_import() -> None:
    code = (
        "import pydantic, memos.engine._remote, memos.cli\n"
        "pending, built = list(pydantic.BaseModel.__subclasses__()), []\n"
        "while pending:\n"
        "    cls = pending.pop()\n"
        "    pending.extend(cls.__subclasses__())\n"
        "    if cls.__module__.startswith('memos.') and cls.__pydantic_complete__:\n"
        "        built.append(cls.__qualname__)\n"
        "print(sorted(built))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
