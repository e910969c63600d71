"""``pca{k}+fp8``: an uncentred PCA projection to ``k`` dimensions, then fp8 codes.

The projection is the top ``k`` right singular vectors of the cube's vectors *without*
subtracting their mean: inner products are what searches rank by, and an orthogonal
projection onto the dominant directions keeps them (a centred PCA also drops the mean
direction, which every embedding shares, and ranks badly). The fitted state is the
``projection`` matrix (``d × k``); until fitted, tables are exact fp32.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from memos.codecs._common import FIT_MIN, fit_sample, state_array
from memos.codecs._faiss import FaissTable, exact_table, load_faiss_table
from memos.codecs._float8 import Fp8Table, load_fp8_table
from memos.codecs._protocol import CodecState, CodeTable, Positions, Vectors
from memos.errors import InvalidInput

_KEY = "projection"


def uncentred_pca(sample: NDArray[np.float32], k: int) -> NDArray[np.float32]:
    """``d × k``: the top ``k`` eigenvectors of ``sampleᵀ sample``, each signed so that its
    largest component is positive (so that a refit on the same sample is the same state)."""
    gram = sample.astype(np.float64).T @ sample.astype(np.float64)
    _, vectors = np.linalg.eigh(gram)  # ascending eigenvalues
    top = vectors[:, ::-1][:, :k]
    peaks = top[np.argmax(np.abs(top), axis=0), np.arange(k)]
    return np.ascontiguousarray(top * np.sign(peaks), dtype=np.float32)


class PcaTable:
    """Projects each vector, then holds it in an :class:`Fp8Table` of ``k`` dimensions."""

    def __init__(self, projection: NDArray[np.float32], codes: Fp8Table) -> None:
        self._projection = projection
        self._codes = codes

    def __len__(self) -> int:
        return len(self._codes)

    @property
    def nbytes(self) -> int:
        return self._codes.nbytes

    def add(self, vectors: Vectors) -> None:
        self._codes.add(np.ascontiguousarray(vectors, dtype=np.float32) @ self._projection)

    def remove(self, positions: Positions) -> None:
        self._codes.remove(positions)

    def search(
        self, query: Vectors, k: int, allowed: Positions | None = None
    ) -> tuple[NDArray[np.float32], Positions]:
        projected = np.ascontiguousarray(query, dtype=np.float32).reshape(-1) @ self._projection
        return self._codes.search(projected, k, allowed)

    def save(self, path: Path) -> None:
        self._codes.save(path)


class PcaFp8Codec:
    def __init__(self, k: int, state: CodecState | None = None) -> None:
        if k < 1:
            raise InvalidInput("a PCA codec keeps at least one dimension")
        self.k = k
        self.name = f"pca{k}+fp8"
        self.fit_min = max(FIT_MIN, k)
        self._projection: NDArray[np.float32] | None = None
        if state is not None:
            projection = state_array(self.name, state, _KEY, 2)
            if projection.shape[1] != k or projection.shape[0] < k:
                raise ValueError(f"codec {self.name} state is a {projection.shape} projection")
            self._projection = projection

    @property
    def fitted(self) -> bool:
        return self._projection is not None

    @property
    def exact(self) -> bool:
        return not self.fitted

    def fit(self, sample: Vectors) -> CodecState:
        matrix = fit_sample(self.name, sample, 1)
        self.projected_dim(matrix.shape[1])
        return {_KEY: uncentred_pca(matrix, self.k)}

    def projected_dim(self, dim: int) -> int:
        if self.k > dim:
            raise InvalidInput(f"codec {self.name} cannot project {dim}-d vectors to {self.k}-d")
        return self.k

    def bytes_per_vector(self, dim: int, *, once_fitted: bool = False) -> float:
        return float(self.k + 4) if self.fitted or once_fitted else 4.0 * dim

    def _checked_projection(self, dim: int) -> NDArray[np.float32] | None:
        if self._projection is not None and self._projection.shape[0] != dim:
            raise ValueError(
                f"codec {self.name} was fitted to {self._projection.shape[0]}-d vectors"
            )
        return self._projection

    def new_table(self, dim: int) -> CodeTable:
        projection = self._checked_projection(dim)
        if projection is None:
            return exact_table(dim)
        return PcaTable(projection, Fp8Table(self.k))

    def load_table(self, path: Path, dim: int) -> CodeTable:
        projection = self._checked_projection(dim)
        if projection is None:
            table: FaissTable = load_faiss_table(path, dim)
            return table
        return PcaTable(projection, load_fp8_table(path, self.k))
