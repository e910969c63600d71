"""``fp8``: float8 e4m3 codes with one float32 scale per vector (``d + 4`` bytes in RAM).

Each vector is scaled so its largest component maps to e4m3's largest finite value, so small
components keep their precision instead of being flushed to zero. Codes live in a growable
numpy array (appends are amortised) and are scanned by the fp8 kernel in :mod:`memos.codecs._fp8`.
Tables are saved as safetensors, never pickle, and checked on load.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save_file

from memos.codecs import _fp8 as kernel
from memos.codecs._common import NeverFitted
from memos.codecs._protocol import Positions, Vectors

TABLE_FORMAT = "memos-fp8-table"
_MIN_CAPACITY = 64


class Fp8Table:
    """fp8 codes and scales by position; removal compacts in order."""

    def __init__(
        self,
        dim: int,
        codes: NDArray[np.uint8] | None = None,
        scales: NDArray[np.float32] | None = None,
    ) -> None:
        self.dim = dim
        self._codes = np.empty((_MIN_CAPACITY, dim), dtype=np.uint8)
        self._scales = np.empty(_MIN_CAPACITY, dtype=np.float32)
        self._n = 0
        if codes is not None and scales is not None:
            self._append(codes, scales)

    def __len__(self) -> int:
        return self._n

    @property
    def nbytes(self) -> int:
        return self._n * (self.dim * np.dtype(np.uint8).itemsize + np.dtype(np.float32).itemsize)

    @property
    def codes(self) -> NDArray[np.uint8]:
        return self._codes[: self._n]

    @property
    def scales(self) -> NDArray[np.float32]:
        return self._scales[: self._n]

    def add(self, vectors: Vectors) -> None:
        matrix = np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1, self.dim)
        if len(matrix):
            codes, scales = kernel.encode_fp8(matrix)
            self._append(codes, scales)

    def _append(self, codes: NDArray[np.uint8], scales: NDArray[np.float32]) -> None:
        count = len(codes)
        self._reserve(self._n + count)
        self._codes[self._n : self._n + count] = codes
        self._scales[self._n : self._n + count] = scales
        self._n += count

    def _reserve(self, needed: int) -> None:
        if needed <= len(self._scales):
            return
        self._resize(max(needed, 2 * len(self._scales)))

    def _resize(self, capacity: int) -> None:
        codes = np.empty((capacity, self.dim), dtype=np.uint8)
        scales = np.empty(capacity, dtype=np.float32)
        codes[: self._n] = self._codes[: self._n]
        scales[: self._n] = self._scales[: self._n]
        self._codes, self._scales = codes, scales

    def remove(self, positions: Positions) -> None:
        if not positions.size:
            return
        keep = np.ones(self._n, dtype=bool)
        keep[positions] = False
        kept = int(keep.sum())
        # Fancy indexing copies first, so the in-place write cannot read what it overwrote.
        self._codes[:kept] = self._codes[: self._n][keep]
        self._scales[:kept] = self._scales[: self._n][keep]
        self._n = kept
        if len(self._scales) > max(4 * kept, _MIN_CAPACITY):
            self._resize(max(2 * kept, _MIN_CAPACITY))

    def search(
        self, query: Vectors, k: int, allowed: Positions | None = None
    ) -> tuple[NDArray[np.float32], Positions]:
        vector = np.ascontiguousarray(query, dtype=np.float32).reshape(self.dim)
        rows = None if allowed is None else np.ascontiguousarray(allowed, dtype=np.int64)
        count = self._n if rows is None else len(rows)
        if k <= 0 or count == 0:
            return np.zeros(0, np.float32), np.zeros(0, np.int64)
        scores = kernel.scan(self.codes, self.scales, vector, rows=rows)
        top, found = kernel.top_k(scores, min(k, count))
        found = np.asarray(found, dtype=np.int64)
        positions = found if rows is None else rows[found]
        return np.asarray(top, dtype=np.float32), positions

    def save(self, path: Path) -> None:
        save_file(
            {
                "codes": np.ascontiguousarray(self.codes),
                "scales": np.ascontiguousarray(self.scales),
            },
            str(path),
            metadata={"format": TABLE_FORMAT, "dim": str(self.dim)},
        )


def load_fp8_table(path: Path, dim: int) -> Fp8Table:
    """The table :meth:`Fp8Table.save` wrote; ``ValueError`` on anything unexpected."""
    try:
        with safe_open(str(path), framework="numpy") as handle:
            metadata = handle.metadata() or {}
            names = set(handle.keys())
            if names != {"codes", "scales"}:
                raise ValueError(f"fp8 table {path} holds {sorted(names)}")
            codes = handle.get_tensor("codes")
            scales = handle.get_tensor("scales")
    except (SafetensorError, OSError) as exc:
        raise ValueError(f"unreadable fp8 table {path}: {exc}") from exc
    if metadata.get("format") != TABLE_FORMAT or metadata.get("dim") != str(dim):
        raise ValueError(f"{path} is not an fp8 table of {dim}-d vectors")
    if (
        codes.dtype != np.uint8
        or scales.dtype != np.float32
        or codes.ndim != 2
        or codes.shape[1] != dim
        or scales.shape != (codes.shape[0],)
        or not np.isfinite(scales).all()
    ):
        raise ValueError(f"fp8 table {path} has the wrong shapes or dtypes")
    return Fp8Table(dim, codes, scales)


class Fp8Codec(NeverFitted):
    """float8 e4m3 with a per-vector scale: 4× smaller than fp32; re-ranked exactly."""

    name = "fp8"
    exact = False

    def bytes_per_vector(self, dim: int, *, once_fitted: bool = False) -> float:
        return float(dim + 4)

    def new_table(self, dim: int) -> Fp8Table:
        return Fp8Table(dim)

    def load_table(self, path: Path, dim: int) -> Fp8Table:
        return load_fp8_table(path, dim)
