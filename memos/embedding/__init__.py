"""Embedding models behind the :class:`Embedder` protocol, and the registry that names them."""

from __future__ import annotations

from collections.abc import Callable

from memos.embedding._hashing import HashEmbedder
from memos.embedding._minilm import MODEL_NAME as MINILM
from memos.embedding._minilm import MiniLMEmbedder
from memos.embedding._protocol import Embedder
from memos.errors import InvalidInput

__all__ = ["Embedder", "HashEmbedder", "MiniLMEmbedder", "make_embedder"]

_FACTORIES: dict[str, Callable[[], Embedder]] = {
    MINILM: MiniLMEmbedder,
    "minilm": MiniLMEmbedder,
}


def make_embedder(name: str) -> Embedder:
    """Build the embedder a cube's configuration names (``all-MiniLM-L6-v2``, ``hash-64``)."""
    if name.startswith("hash-") and name[5:].isdigit() and 8 <= int(name[5:]) <= 4096:
        return HashEmbedder(int(name[5:]))
    factory = _FACTORIES.get(name)
    if factory is None:
        raise InvalidInput(f"unknown embedder {name!r} (known: {MINILM}, hash-<dim>)")
    return factory()
