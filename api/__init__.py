"""The MemOS server: a FastAPI app over the SDK (``memos serve``).

Versioned routes under ``/v1`` mirror the SDK; every route but ``/healthz``,
``/openapi.json`` and the API reference at ``/docs`` needs an API key (``Authorization:
Bearer memos_...``, made by ``memos keys create``), checked before the request's body is
read, and acts as the key's principal; errors use the one JSON envelope of
:mod:`memos.errors`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._settings import ServerSettings

if TYPE_CHECKING:
    from ._app import create_app, open_memos

__all__ = ["ServerSettings", "create_app", "open_memos"]


def __getattr__(name: str) -> Any:
    # the app (FastAPI and every route) loads on first use: `memos serve --help` and anything
    # that reads ServerSettings stay as quick to start as the rest of the CLI
    if name in ("create_app", "open_memos"):
        from . import _app

        return getattr(_app, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
