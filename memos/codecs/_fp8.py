"""float8 (e4m3fn) vector codes with a per-vector scale, scanned by the C kernel.

A vector ``x`` is stored as ``scale = max|x| / 448`` and ``codes = e4m3(x / scale)``: its
largest component lands on the e4m3 maximum, so each vector uses the format's whole range and
small components keep 3 mantissa bits instead of being flushed to zero by one global scale.
``scan`` scores codes against a float32 query with :mod:`memos.codecs._fp8scan` (AVX2/F16C when the
CPU has it), which decodes in registers and never materialises the float32 matrix.
"""

from __future__ import annotations

import ml_dtypes
import numpy as np
from numpy.typing import NDArray

from memos.codecs._fp8scan import ip_scan, ip_scan_subset

__all__ = ["E4M3_MAX", "decode_fp8", "encode_fp8", "scan", "top_k"]

E4M3_MAX = 448.0


def _matrix(vectors: NDArray[np.float32], name: str) -> NDArray[np.float32]:
    matrix = np.ascontiguousarray(vectors, dtype=np.float32)
    if matrix.ndim != 2:
        raise ValueError(f"{name} must be 2-dimensional [n, d], got shape {matrix.shape}")
    return matrix


def encode_fp8(vectors: NDArray[np.float32]) -> tuple[NDArray[np.uint8], NDArray[np.float32]]:
    """Codes (uint8 [n, d], e4m3fn bit patterns) and scales (float32 [n]) for ``vectors``."""
    matrix = _matrix(vectors, "vectors")
    if not np.isfinite(matrix).all():
        raise ValueError("vectors must be finite")
    peak = np.abs(matrix).max(axis=1) if matrix.shape[1] else np.zeros(len(matrix), np.float32)
    # An all-zero vector gets scale 1 (its codes are all zero anyway) so no caller divides by 0.
    scales = np.where(peak > 0, peak / np.float32(E4M3_MAX), np.float32(1.0)).astype(np.float32)
    scaled = matrix / scales[:, None]
    # Rounding in the division can land a hair above 448, which e4m3fn turns into NaN.
    np.clip(scaled, -E4M3_MAX, E4M3_MAX, out=scaled)
    codes = scaled.astype(ml_dtypes.float8_e4m3fn).view(np.uint8)
    return np.ascontiguousarray(codes), scales


def decode_fp8(codes: NDArray[np.uint8], scales: NDArray[np.float32]) -> NDArray[np.float32]:
    """The float32 vectors ``codes`` and ``scales`` stand for (reference path, not the scan)."""
    values = np.ascontiguousarray(codes, dtype=np.uint8).view(ml_dtypes.float8_e4m3fn)
    decoded = values.astype(np.float32) * np.asarray(scales, dtype=np.float32)[:, None]
    return np.asarray(decoded, dtype=np.float32)


def scan(
    codes: NDArray[np.uint8],
    scales: NDArray[np.float32],
    query: NDArray[np.float32],
    rows: NDArray[np.int64] | None = None,
) -> NDArray[np.float32]:
    """Inner products of ``query`` with every coded vector, or with rows ``rows`` only (then
    ``scores[k]`` belongs to row ``rows[k]``)."""
    q = np.ascontiguousarray(query, dtype=np.float32).reshape(-1)
    if rows is None:
        out = np.empty(len(codes), dtype=np.float32)
        ip_scan(codes, scales, q, out)
    else:
        given = np.asarray(rows)
        if given.size and not np.issubdtype(given.dtype, np.integer):
            # Casting 2.7 to row 2 would silently score the wrong vector.
            raise TypeError(f"rows must be integer positions, got dtype {given.dtype}")
        picked = np.ascontiguousarray(given, dtype=np.int64).reshape(-1)
        out = np.empty(len(picked), dtype=np.float32)
        ip_scan_subset(codes, scales, q, picked, out)
    return out


def top_k(scores: NDArray[np.float32], k: int) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    """The ``k`` highest scores and their positions, best first; equal scores in position
    order, so the answer never depends on how a partition happened to split ties. NaN ranks
    last."""
    values = np.asarray(scores, dtype=np.float32).reshape(-1)
    k = min(k, len(values))
    if k <= 0:
        return np.zeros(0, np.float32), np.zeros(0, np.int64)
    key = np.where(np.isnan(values), -np.inf, values) if np.isnan(values).any() else values
    candidates = np.flatnonzero(key >= _kth_best_lower_bound(key, k))
    order = candidates[np.lexsort((candidates, -key[candidates]))][:k].astype(np.int64)
    return values[order], order


# Scores per block in the top-k prefilter; see _kth_best_lower_bound.
_BLOCK = 64


def _kth_best_lower_bound(key: NDArray[np.float32], k: int) -> np.float32:
    """A value the k-th best score is at least: every position scoring below it is out.

    Partitioning all n scores costs about as much as the fp8 scan itself at n = 100k, so for
    large n it partitions block maxima instead: the k best maxima belong to k different
    positions, so the k-th best score is at least the k-th best maximum. Ties at the bound
    are all kept, which is what makes the final order independent of the partition."""
    n = len(key)
    blocks = n // _BLOCK
    if blocks < 4 * k:
        return np.float32(np.partition(key, n - k)[n - k])
    maxima = key[: blocks * _BLOCK].reshape(blocks, _BLOCK).max(axis=1)
    return np.float32(np.partition(maxima, blocks - k)[blocks - k])
