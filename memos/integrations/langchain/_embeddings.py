"""Embeddings both ways: a MemOS embedder as LangChain ``Embeddings``, and any LangChain
``Embeddings`` as a MemOS embedder (the :class:`memos.Embedder` protocol) a cube can be built
and searched with."""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np
from langchain_core.embeddings import Embeddings
from numpy.typing import NDArray

from memos.embedding import Embedder, make_embedder
from memos.errors import InvalidInput

# what the dimension of an adapted model is measured with when nobody says it
_DIM_PROBE = "dimension probe"


class MemOSEmbeddings(Embeddings):
    """A MemOS embedder as LangChain ``Embeddings``: the bundled all-MiniLM-L6-v2 by default,
    or an embedder, or one a cube's configuration names (``"hash-64"``, ``"all-MiniLM-L6-v2"``).
    Vectors are L2-normalised, so a dot product is their cosine similarity."""

    def __init__(self, embedder: Embedder | str | None = None) -> None:
        if embedder is None or isinstance(embedder, str):
            embedder = make_embedder(embedder or "all-MiniLM-L6-v2")
        self.embedder = embedder

    @property
    def name(self) -> str:
        """The name a cube built with these vectors records."""
        return self.embedder.name

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        if not texts:
            return []
        vectors: list[list[float]] = self.embedder.embed(texts).astype(float).tolist()
        return vectors

    def embed_query(self, text: str) -> list[float]:
        return self.embed_documents([text])[0]


class LangChainEmbedder:
    """Any LangChain ``Embeddings`` as a MemOS embedder: ``MemOS.open(path,
    embedder=LangChainEmbedder(model, name="my-model"))`` builds new cubes with it.

    ``name`` is recorded in each cube's configuration, and a cube is only ever searched with
    the embedder of that name, so it must name the model (and its settings) for good. The
    model's vectors are L2-normalised here (search scores are cosine similarities); ``dim`` is
    measured by embedding one text when it is not given."""

    def __init__(self, embeddings: Embeddings, *, name: str, dim: int | None = None) -> None:
        if not name or not isinstance(name, str):
            raise InvalidInput("a LangChain embedder needs a name for the cubes it builds")
        self.embeddings = embeddings
        self._name = name
        self._dim = dim
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        return self._name

    @property
    def dim(self) -> int:
        with self._lock:
            if self._dim is None:
                self._dim = len(self.embeddings.embed_query(_DIM_PROBE))
            return self._dim

    def embed(self, texts: Sequence[str]) -> NDArray[np.float32]:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        raw = self.embeddings.embed_documents(list(texts))
        vectors = np.asarray(raw, dtype=np.float32)
        if vectors.shape != (len(texts), self.dim):
            raise InvalidInput(
                f"embedder {self._name!r} returned vectors of shape {vectors.shape}, "
                f"expected {(len(texts), self.dim)}"
            )
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        # a zero vector stays zero: it has no direction to normalise
        normalised: NDArray[np.float32] = np.divide(
            vectors, norms, out=np.zeros_like(vectors), where=norms > 0
        )
        return normalised
