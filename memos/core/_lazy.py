"""Attributes of a package that load their module on first use (PEP 562): a package whose
models are light and whose engines load torch exports both, and only the engines pay."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_attributes(package: str, where: Mapping[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``package`` that imports ``where[name]`` (a module) on
    first use of ``name`` and returns that module's attribute."""

    def __getattr__(name: str) -> Any:  # noqa: N807 (the module hook's name)
        if name in where:
            return getattr(importlib.import_module(where[name]), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
