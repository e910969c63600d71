"""float8 (e4m3fn) vector codes with a per-vector scale, scanned by the C kernel.

A vector ``x`` is stored as ``scale = max|x| / 448`` and ``codes = e4m3(x / scale)``: its
largest component lands on the e4m3 maximum, so each vector uses the format's whole range and
small components keep 3 mantissa bits instead of being flushed to zero by one global scale.
``scan`` scores codes against a float32 query with :mod:`memos.codecs._fp8scan` (AVX2/F16C when the
CPU has it), which decodes in registers and never materialises the float32 matrix.

The e4m3 conversion is done with integer arithmetic on the float32 bits rather than through
``ml_dtypes``: importing ``ml_dtypes`` costs over a second of start-up, which every command
that adds one memory would pay. Tests hold the two bit-identical.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from memos.codecs._fp8scan import ip_scan, ip_scan_subset

__all__ = ["E4M3_MAX", "decode_fp8", "encode_fp8", "scan", "to_e4m3", "top_k"]

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
    return to_e4m3(scaled), scales


def decode_fp8(codes: NDArray[np.uint8], scales: NDArray[np.float32]) -> NDArray[np.float32]:
    """The float32 vectors ``codes`` and ``scales`` stand for (reference path, not the scan)."""
    values = _E4M3_VALUES[np.asarray(codes, dtype=np.uint8)]
    decoded = values * np.asarray(scales, dtype=np.float32)[:, None]
    return np.asarray(decoded, dtype=np.float32)


# float32 bit patterns: 2**-6 (e4m3's smallest normal) and the exponent bias difference 127 - 7
_E4M3_MIN_NORMAL_BITS = 0x3C800000
_REBIAS = (127 - 7) << 3


def to_e4m3(values: NDArray[np.float32]) -> NDArray[np.uint8]:
    """e4m3fn bit patterns of finite float32 ``values`` within ±448, rounded to nearest even.

    A normal result keeps the top 3 of float32's 23 mantissa bits (the rounding carry may bump
    the exponent, which is what rounding up to the next binade means); below 2**-6 the result
    is a multiple of 2**-9, which ``rint`` rounds exactly because scaling by 512 is exact.
    """
    floats = np.ascontiguousarray(values, dtype=np.float32)
    bits = floats.view(np.uint32).astype(np.int64)
    magnitude = bits & 0x7FFFFFFF
    normal = ((magnitude + 0x7FFFF + ((magnitude >> 20) & 1)) >> 20) - _REBIAS
    subnormal = np.rint(np.abs(floats) * np.float32(512.0)).astype(np.int64)
    code = np.where(magnitude < _E4M3_MIN_NORMAL_BITS, subnormal, normal)
    return np.ascontiguousarray(code | ((bits >> 24) & 0x80), dtype=np.uint8)


def _e4m3_values() -> NDArray[np.float32]:
    """The float32 value of each of the 256 e4m3fn bit patterns (0x7F and 0xFF are NaN)."""
    code = np.arange(256)
    exponent, mantissa = (code >> 3) & 0xF, code & 0x7
    magnitude = np.where(
        exponent == 0,
        np.ldexp(mantissa / 8.0, -6),
        np.ldexp(1.0 + mantissa / 8.0, exponent - 7),
    )
    magnitude[(code & 0x7F) == 0x7F] = np.nan
    return np.where(code & 0x80, -magnitude, magnitude).astype(np.float32)


_E4M3_VALUES = _e4m3_values()


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
