"""Code tables kept in FAISS flat-code indexes, where positions are FAISS's own ids."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import faiss
import numpy as np
from numpy.typing import NDArray

from memos.codecs._common import NeverFitted
from memos.codecs._protocol import Positions, Vectors


class FaissTable:
    """A FAISS ``IndexFlatCodes`` (flat or scalar-quantised): ids are positions, and
    ``remove_ids`` compacts in order, which is exactly the :class:`CodeTable` contract."""

    def __init__(self, index: Any) -> None:
        self._index = index

    def __len__(self) -> int:
        return int(self._index.ntotal)

    @property
    def index(self) -> Any:
        """The FAISS index holding the codes."""
        return self._index

    @property
    def nbytes(self) -> int:
        return int(self._index.code_size) * len(self)

    def add(self, vectors: Vectors) -> None:
        self._index.add(np.ascontiguousarray(vectors, dtype=np.float32))

    def remove(self, positions: Positions) -> None:
        if positions.size:
            self._index.remove_ids(faiss.IDSelectorBatch(positions.astype(np.int64)))

    def search(
        self, query: Vectors, k: int, allowed: Positions | None = None
    ) -> tuple[NDArray[np.float32], Positions]:
        params = None
        if allowed is not None:
            selector = faiss.IDSelectorBatch(allowed.astype(np.int64))
            params = faiss.SearchParameters(sel=selector)  # type: ignore[call-arg]
        matrix = np.ascontiguousarray(query, dtype=np.float32).reshape(1, -1)
        scores, positions = self._index.search(matrix, k, params=params)
        keep = positions[0] >= 0
        return scores[0][keep], positions[0][keep].astype(np.int64)

    def save(self, path: Path) -> None:
        faiss.write_index(self._index, str(path))


def load_faiss_table(path: Path, dim: int) -> FaissTable:
    try:
        index = faiss.read_index(str(path))
    except RuntimeError as exc:
        raise ValueError(f"unreadable FAISS index {path}: {exc}") from exc
    if index.d != dim:
        raise ValueError(f"FAISS index {path} holds {index.d}-d vectors, not {dim}-d")
    return FaissTable(index)


def exact_table(dim: int) -> FaissTable:
    return FaissTable(faiss.IndexFlatIP(dim))


class Fp32Codec(NeverFitted):
    """Uncompressed float32 in a flat inner-product index: the exact baseline."""

    name = "fp32"
    exact = True

    def bytes_per_vector(self, dim: int, *, once_fitted: bool = False) -> float:
        return 4.0 * dim

    def new_table(self, dim: int) -> FaissTable:
        return exact_table(dim)

    def load_table(self, path: Path, dim: int) -> FaissTable:
        return load_faiss_table(path, dim)


class Fp16Codec(NeverFitted):
    """IEEE half precision (FAISS ``SQfp16``): 2× smaller, recall ≈ 1.0, no training."""

    name = "fp16"
    exact = False

    def bytes_per_vector(self, dim: int, *, once_fitted: bool = False) -> float:
        return 2.0 * dim

    def new_table(self, dim: int) -> FaissTable:
        quantizer = faiss.ScalarQuantizer.QT_fp16
        return FaissTable(faiss.IndexScalarQuantizer(dim, quantizer, faiss.METRIC_INNER_PRODUCT))

    def load_table(self, path: Path, dim: int) -> FaissTable:
        return load_faiss_table(path, dim)
