"""The backends the parametrized tests run on, named once.

``STORES`` are the store backends; ``FACES`` are the ways a client reaches one (the embedded
SDK, or HTTP to a server on it). A fixture parametrized with either makes what it needs with
:func:`store_url` or :func:`clients`, which also delete what a store keeps outside the test's
directory (a Redis store's keys).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from _redis import drop_redis_store, fresh_redis_url
from _servers import serve
from memos.api import ServerSettings

from memos import MemOS, open_store

STORES = ("sqlite", "redis")
HTTP = "-http"  # the suffix of a face that goes through a server
FACES = (*STORES, *(f"{store}{HTTP}" for store in STORES))
HTTP_FACES = tuple(face for face in FACES if face.endswith(HTTP))

# a principal's name -> a client acting as it (an embedded MemOS or a RemoteMemOS)
Connect = Callable[[str], Any]


@contextlib.contextmanager
def store_url(store: str, directory: Path) -> Iterator[str]:
    """The URL of a fresh, empty store of the backend ``store`` (SQLite: in ``directory``)."""
    if store == "sqlite":
        yield f"sqlite:///{directory}"
        return
    url = fresh_redis_url()
    try:
        yield url
    finally:
        drop_redis_store(url)


@contextlib.contextmanager
def clients(face: str, directory: Path, **handle: Any) -> Iterator[tuple[MemOS, Connect]]:
    """The operator's handle on a fresh store of the face's backend, and a maker of clients
    that act as a principal on the face. ``handle``: what ``MemOS`` takes (embedder, model)."""
    store = face.removesuffix(HTTP)
    with store_url(store, directory) as url:
        root = MemOS.open(directory, **handle) if store == "sqlite" else None
        root = MemOS(open_store(url), **handle) if root is None else root
        try:
            if not face.endswith(HTTP):
                yield root, root.as_principal
                return
            with serve(root, ServerSettings(store=url)) as base, contextlib.ExitStack() as made:

                def connect(principal: str) -> Any:
                    _, token = root.keys.create(principal)
                    return made.enter_context(MemOS.connect(base, api_key=token))

                yield root, connect
        finally:
            root.close()
