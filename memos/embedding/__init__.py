"""Embedding models behind the :class:`Embedder` protocol, and the registry that names them."""

from __future__ import annotations

from typing import TYPE_CHECKING

from memos.core._lazy import lazy_attributes
from memos.embedding._protocol import MINILM, Embedder
from memos.errors import InvalidInput

if TYPE_CHECKING:
    from memos.embedding._hashing import HashEmbedder
    from memos.embedding._minilm import MiniLMEmbedder

__all__ = ["Embedder", "HashEmbedder", "MiniLMEmbedder", "make_embedder"]

# the embedders load numpy (and MiniLM its weights) when first named, not with the package
__getattr__ = lazy_attributes(
    __name__,
    {"HashEmbedder": "memos.embedding._hashing", "MiniLMEmbedder": "memos.embedding._minilm"},
)
_MINILM_NAMES = frozenset({MINILM, "minilm"})


def make_embedder(name: str) -> Embedder:
    """Build the embedder a cube's configuration names (``all-MiniLM-L6-v2``, ``hash-64``)."""
    if name.startswith("hash-") and name[5:].isdigit() and 8 <= int(name[5:]) <= 4096:
        from memos.embedding._hashing import HashEmbedder

        return HashEmbedder(int(name[5:]))
    if name not in _MINILM_NAMES:
        raise InvalidInput(f"unknown embedder {name!r} (known: {MINILM}, hash-<dim>)")
    from memos.embedding._minilm import MiniLMEmbedder

    return MiniLMEmbedder()
