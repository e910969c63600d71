"""``int8``: FAISS's 8-bit scalar quantiser (``SQ8``), one byte per dimension.

Each dimension is quantised over the range the cube's vectors span, so the codec is fitted:
its state is FAISS's trained table (``ranges``: the minimum of each dimension, then its
width). Until fitted, tables are exact fp32.
"""

from __future__ import annotations

from pathlib import Path

import faiss
import numpy as np
from numpy.typing import NDArray

from memos.codecs._common import FIT_MIN, fit_sample, state_array
from memos.codecs._faiss import FaissTable, exact_table, load_faiss_table
from memos.codecs._protocol import CodecState, Vectors

_KEY = "ranges"


def _sq8(dim: int) -> faiss.IndexScalarQuantizer:
    return faiss.IndexScalarQuantizer(
        dim, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT
    )


class Int8Codec:
    name = "int8"
    fit_min = FIT_MIN

    def __init__(self, state: CodecState | None = None) -> None:
        self._ranges: NDArray[np.float32] | None = None
        if state is not None:
            ranges = state_array(self.name, state, _KEY, 1)
            if ranges.size % 2:
                raise ValueError("codec int8 ranges hold an odd number of values")
            self._ranges = ranges

    @property
    def fitted(self) -> bool:
        return self._ranges is not None

    @property
    def exact(self) -> bool:
        return not self.fitted

    def fit(self, sample: Vectors) -> CodecState:
        matrix = fit_sample(self.name, sample, 1)
        index = _sq8(matrix.shape[1])
        index.train(matrix)
        return {_KEY: faiss.vector_to_array(index.sq.trained).astype(np.float32)}

    def projected_dim(self, dim: int) -> int:
        return dim

    def bytes_per_vector(self, dim: int, *, once_fitted: bool = False) -> float:
        return float(dim) if self.fitted or once_fitted else 4.0 * dim

    def new_table(self, dim: int) -> FaissTable:
        if self._ranges is None:
            return exact_table(dim)
        if self._ranges.size != 2 * dim:
            raise ValueError(f"codec int8 was fitted to {self._ranges.size // 2}-d vectors")
        index = _sq8(dim)
        faiss.copy_array_to_vector(self._ranges, index.sq.trained)
        index.is_trained = True
        return FaissTable(index)

    def load_table(self, path: Path, dim: int) -> FaissTable:
        table = load_faiss_table(path, dim)
        if self._ranges is None:
            if not isinstance(table.index, faiss.IndexFlatIP):
                raise ValueError(f"{path} holds codes, not the exact vectors of unfitted int8")
            return table
        if not isinstance(table.index, faiss.IndexScalarQuantizer) or not np.array_equal(
            faiss.vector_to_array(table.index.sq.trained), self._ranges
        ):
            raise ValueError(f"{path} was not encoded with this int8 fit")
        return table
