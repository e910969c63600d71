"""What a vector codec provides: how a cube's vectors are held in RAM and scanned.

A codec makes :class:`CodeTable` objects: compact codes of unit vectors addressed by position
(0..n-1), searched by inner product. Full-precision vectors always stay in the store, so a
lossy codec's candidates can be re-ranked exactly; the codec decides only what RAM holds.

Some codecs are fitted to a cube's own vectors (a scalar quantiser's ranges, a PCA
projection). Such a codec is made without state until the cube holds ``fit_min`` vectors; until
then its tables are exact fp32. :meth:`VectorCodec.fit` turns a sample into a
:data:`CodecState` (named float32 arrays, stored as a safetensors blob) and ``make_codec(name,
state)`` makes the fitted codec from it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray

Vectors = NDArray[np.float32]
Positions = NDArray[np.int64]
CodecState = dict[str, NDArray[np.float32]]


@runtime_checkable
class CodeTable(Protocol):
    """Codes in RAM, one per vector, in insertion order."""

    def __len__(self) -> int: ...

    @property
    def nbytes(self) -> int:
        """Bytes of RAM the codes occupy."""
        ...

    def add(self, vectors: Vectors) -> None:
        """Append codes for ``vectors`` at positions ``len(self)`` onwards."""
        ...

    def remove(self, positions: Positions) -> None:
        """Drop the given positions; later ones shift down, keeping their order."""
        ...

    def search(
        self, query: Vectors, k: int, allowed: Positions | None = None
    ) -> tuple[NDArray[np.float32], Positions]:
        """Approximate inner-product scores and positions of the best ``k`` (among
        ``allowed`` positions when given), best first."""
        ...

    def save(self, path: Path) -> None: ...


@runtime_checkable
class VectorCodec(Protocol):
    """A named way of encoding a cube's vectors; recorded in the cube's configuration."""

    @property
    def name(self) -> str: ...

    @property
    def exact(self) -> bool:
        """True when scores equal full-precision inner products (no re-rank needed)."""
        ...

    @property
    def fit_min(self) -> int:
        """Active vectors a cube needs before the codec is fitted to them; 0: never fitted."""
        ...

    @property
    def fitted(self) -> bool:
        """False while a codec that needs fitting has no state (its tables are exact fp32)."""
        ...

    def fit(self, sample: Vectors) -> CodecState:
        """The state fitted to ``sample`` (unit vectors of the cube, at least one row)."""
        ...

    def projected_dim(self, dim: int) -> int:
        """The dimensions each code holds for ``dim``-d vectors; ``InvalidInput`` when the
        codec cannot encode ``dim``-d vectors at all."""
        ...

    def bytes_per_vector(self, dim: int, *, once_fitted: bool = False) -> float:
        """Nominal RAM per vector as the codec stands (exact fp32 while a codec that needs
        fitting is not fitted), or ``once_fitted`` (the table's ``nbytes`` measures it)."""
        ...

    def new_table(self, dim: int) -> CodeTable: ...

    def load_table(self, path: Path, dim: int) -> CodeTable:
        """Read a table :meth:`CodeTable.save` wrote; raises ``ValueError`` when it cannot."""
        ...
