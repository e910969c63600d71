"""The MemOS server: a FastAPI app over the SDK (``memos serve``).

Versioned routes under ``/v1`` mirror the SDK; every route but ``/healthz`` and
``/openapi.json`` needs an API key (``Authorization: Bearer memos_...``, made by ``memos keys
create``), checked before the request's body is read, and acts as the key's principal; errors
use the one JSON envelope of :mod:`memos.errors`.
"""

from ._app import create_app, open_memos
from ._settings import ServerSettings

__all__ = ["ServerSettings", "create_app", "open_memos"]
