"""What a vector codec provides: how a cube's vectors are held in RAM and searched."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class VectorCodec(Protocol):
    """A compact in-RAM representation of unit vectors, searched by inner product.

    Full-precision vectors always stay in the store; a codec only decides what the in-RAM
    index holds. ``name`` is recorded in the cube's configuration and in its exports.
    """

    @property
    def name(self) -> str: ...

    def bytes_per_vector(self, dim: int) -> float: ...

    def make_index(self, dim: int) -> Any:
        """A fresh, empty FAISS index (inner-product metric) for ``dim``-dimensional vectors."""
        ...
