"""The float8 (e4m3fn) scan kernel memos.codecs._fp8scan and its wrapper memos.codecs._fp8."""

from __future__ import annotations

import platform
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np
import pytest
from numpy.typing import NDArray

from memos.codecs import _fp8scan
from memos.codecs._fp8 import E4M3_MAX, decode_fp8, encode_fp8, scan, top_k

FINITE_CODES = np.array([b for b in range(256) if b & 0x7F != 0x7F], dtype=np.uint8)


@pytest.fixture(params=["auto", "scalar"])
def backend(request: pytest.FixtureRequest) -> Iterator[str]:
    """Runs a test on the dispatched kernel and on the portable fallback."""
    _fp8scan._set_backend(request.param)
    yield _fp8scan.backend()
    _fp8scan._set_backend("auto")


def realistic_unit_vectors(n: int, dim: int = 384, seed: int = 0) -> NDArray[np.float32]:
    """Unit vectors shaped like sentence embeddings: a shared mean direction, a decaying
    spectrum in a random basis, so components range over several orders of magnitude."""
    rng = np.random.default_rng(seed)
    basis, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
    spectrum = 1.0 / np.sqrt(1.0 + np.arange(dim))
    latent = rng.standard_normal((n, dim)) * spectrum
    rows = latent @ basis.T + 0.3 * basis[:, 0] / np.sqrt(dim)
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    return np.asarray(rows, dtype=np.float32)


def reference_scores(
    codes: NDArray[np.uint8], scales: NDArray[np.float32], query: NDArray[np.float32]
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Exact float64 scores from ml_dtypes' decoding, and the sum of |terms| per row (the
    scale of a float32 accumulation's rounding error)."""
    values = codes.view(ml_dtypes.float8_e4m3fn).astype(np.float64) * scales[:, None]
    q = query.astype(np.float64)
    return values @ q, np.abs(values) @ np.abs(q)


def random_codes(n: int, d: int, seed: int) -> NDArray[np.uint8]:
    return np.random.default_rng(seed).choice(FINITE_CODES, size=(n, d))


# ---------------------------------------------------------------- the decoding trick


def test_fp16_bit_trick_is_exact_for_every_finite_code() -> None:
    b = FINITE_CODES.astype(np.uint16)
    half = (((b & 0x80) << 8) | ((b & 0x7F) << 7)).astype(np.uint16).view(np.float16)
    expected = FINITE_CODES.view(ml_dtypes.float8_e4m3fn).astype(np.float64)
    assert len(FINITE_CODES) == 254
    np.testing.assert_array_equal(half.astype(np.float64) * 256.0, expected)


@pytest.mark.parametrize("d", [1, 8, 16, 24])
def test_kernel_decodes_every_finite_code_exactly(backend: str, d: int) -> None:
    # Every row repeats one code; a one-hot query on the last column reads it through
    # whichever lane path (16-wide, 8-wide or scalar tail) covers that column.
    codes = np.repeat(FINITE_CODES[:, None], d, axis=1)
    query = np.zeros(d, np.float32)
    query[-1] = 1.0
    out = np.empty(len(codes), np.float32)
    _fp8scan.ip_scan(codes, np.ones(len(codes), np.float32), query, out)
    expected = FINITE_CODES.view(ml_dtypes.float8_e4m3fn).astype(np.float32)
    np.testing.assert_array_equal(out, expected)


def test_nan_codes_decode_the_same_on_every_backend(backend: str) -> None:
    # Encoders never emit 0x7F/0xFF; should one slip in, both kernels read it as +-480 (the
    # fp16 trick's value) instead of crashing or disagreeing with each other.
    codes = np.array([[0x7F] * 17, [0xFF] * 17], np.uint8)
    out = np.empty(2, np.float32)
    _fp8scan.ip_scan(codes, np.ones(2, np.float32), np.ones(17, np.float32), out)
    np.testing.assert_array_equal(out, np.array([480.0 * 17, -480.0 * 17], np.float32))


def test_dispatch_uses_avx2_where_the_cpu_has_it() -> None:
    if platform.machine() not in ("x86_64", "AMD64"):
        assert _fp8scan.backend() == "scalar"  # the vector path is x86-64 only
        return
    cpuinfo = Path("/proc/cpuinfo").read_text()
    flags = set(cpuinfo.split("flags", 1)[-1].split("\n", 1)[0].split())
    expected = "avx2" if {"avx2", "fma", "f16c"} <= flags else "scalar"
    assert _fp8scan.backend() == expected


def test_unknown_backend_is_refused() -> None:
    with pytest.raises(ValueError, match="not available"):
        _fp8scan._set_backend("sse9")
    assert _fp8scan.backend() in ("avx2", "scalar")


# ---------------------------------------------------------------- scan against float64


@pytest.mark.parametrize("n", [0, 1, 3, 4, 5, 1000])
@pytest.mark.parametrize("d", [1, 7, 8, 15, 16, 17, 31, 33, 100, 384, 385])
def test_scan_matches_float64_reference(backend: str, n: int, d: int) -> None:
    codes = random_codes(n, d, seed=n * 1000 + d)
    rng = np.random.default_rng(d)
    scales = rng.uniform(1e-4, 2.0, n).astype(np.float32)
    query = rng.standard_normal(d).astype(np.float32)
    out = np.full(n, np.nan, np.float32)
    _fp8scan.ip_scan(codes, scales, query, out)
    expected, magnitude = reference_scores(codes, scales, query)
    # float32 accumulation: error grows with the summed magnitude of the terms.
    assert np.all(np.abs(out - expected) <= 1e-6 * np.sqrt(d) * magnitude + 1e-30)


def test_scan_of_zero_width_codes_is_zero(backend: str) -> None:
    out = np.full(3, np.nan, np.float32)
    _fp8scan.ip_scan(
        np.zeros((3, 0), np.uint8), np.ones(3, np.float32), np.zeros(0, np.float32), out
    )
    np.testing.assert_array_equal(out, np.zeros(3, np.float32))


def test_backends_agree(backend: str) -> None:
    codes = random_codes(37, 129, seed=5)
    scales = np.random.default_rng(5).uniform(0.5, 1.5, 37).astype(np.float32)
    query = np.random.default_rng(6).standard_normal(129).astype(np.float32)
    here = scan(codes, scales, query)
    _fp8scan._set_backend("scalar")
    portable = scan(codes, scales, query)
    np.testing.assert_allclose(here, portable, rtol=1e-5, atol=1e-5)


def test_scan_accepts_read_only_inputs(backend: str) -> None:
    codes = random_codes(9, 24, seed=2)
    scales = np.ones(9, np.float32)
    query = np.ones(24, np.float32)
    for array in (codes, scales, query):
        array.flags.writeable = False
    expected, _ = reference_scores(codes, scales, query)
    np.testing.assert_allclose(scan(codes, scales, query), expected, rtol=1e-5)


# ---------------------------------------------------------------- subset scans


@pytest.mark.parametrize("d", [5, 16, 40, 384])
def test_subset_scores_equal_the_full_scan_at_those_rows(backend: str, d: int) -> None:
    codes = random_codes(203, d, seed=d)
    scales = np.random.default_rng(1).uniform(0.1, 1.0, 203).astype(np.float32)
    query = np.random.default_rng(2).standard_normal(d).astype(np.float32)
    full = scan(codes, scales, query)
    for rows in (
        np.array([], np.int64),
        np.array([7], np.int64),
        np.array([202, 0, 5], np.int64),
        np.array([3, 3, 3, 3, 3], np.int64),
        np.random.default_rng(3).choice(203, 150, replace=False).astype(np.int64),
    ):
        out = np.full(len(rows), np.nan, np.float32)
        _fp8scan.ip_scan_subset(codes, scales, query, rows, out)
        # Identical, not just close: a filtered search must score a row as an unfiltered one.
        np.testing.assert_array_equal(out, full[rows])
        np.testing.assert_array_equal(scan(codes, scales, query, rows), full[rows])


@pytest.mark.parametrize("bad", [-1, 10, 2**40, -(2**62)])
def test_subset_rejects_rows_out_of_range(bad: int) -> None:
    codes = random_codes(10, 8, seed=0)
    rows = np.array([0, bad, 1], np.int64)
    with pytest.raises(IndexError, match="out of range"):
        _fp8scan.ip_scan_subset(
            codes, np.ones(10, np.float32), np.ones(8, np.float32), rows, np.empty(3, np.float32)
        )


# ---------------------------------------------------------------- bad inputs


def _args(n: int = 6, d: int = 20) -> dict[str, Any]:
    return {
        "codes": random_codes(n, d, seed=0),
        "scales": np.ones(n, np.float32),
        "query": np.ones(d, np.float32),
        "out": np.empty(n, np.float32),
    }


def _call(args: dict[str, Any]) -> None:
    _fp8scan.ip_scan(args["codes"], args["scales"], args["query"], args["out"])


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("codes", np.zeros((6, 20), np.int8)),
        ("codes", np.zeros((6, 20), np.float32)),
        ("codes", np.zeros((6, 20), np.uint16)),
        ("scales", np.ones(6, np.float64)),
        ("scales", np.ones(6, np.float16)),
        ("query", np.ones(20, np.float64)),
        ("query", np.ones(20, np.int32)),
        ("out", np.empty(6, np.float64)),
        ("codes", [[0] * 20] * 6),
        ("query", None),
        ("out", "not an array"),
        ("query", np.ones(20, np.dtype(">f4"))),
    ],
)
def test_wrong_types_raise_type_error(name: str, value: object) -> None:
    args = _args()
    args[name] = value
    with pytest.raises(TypeError, match=name):
        _call(args)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("codes", random_codes(6, 40, seed=0)[:, ::2]),
        ("codes", np.asfortranarray(random_codes(6, 20, seed=0))),
        ("codes", random_codes(6, 20, seed=0).reshape(-1)),
        ("codes", random_codes(6, 20, seed=0).reshape(6, 4, 5)),
        ("scales", np.ones(5, np.float32)),
        ("scales", np.ones((6, 1), np.float32)),
        ("scales", np.ones(12, np.float32)[::2]),
        ("query", np.ones(19, np.float32)),
        ("query", np.ones(21, np.float32)),
        ("out", np.empty(5, np.float32)),
        ("out", np.empty(7, np.float32)),
        ("out", np.empty(12, np.float32)[::2]),
    ],
)
def test_wrong_shapes_and_layouts_raise_value_error(name: str, value: object) -> None:
    args = _args()
    args[name] = value
    with pytest.raises(ValueError, match=name):
        _call(args)


def test_read_only_out_raises_value_error() -> None:
    args = _args()
    out = np.empty(6, np.float32)
    out.flags.writeable = False
    args["out"] = out
    with pytest.raises(ValueError, match="writable"):
        _call(args)


def test_wrong_argument_counts_and_row_types() -> None:
    a = _args()
    # Typed Any: these calls are wrong on purpose, which the stub would rightly refuse.
    ip_scan: Any = _fp8scan.ip_scan
    with pytest.raises(TypeError, match="4 arguments"):
        ip_scan(a["codes"], a["scales"], a["query"])
    rows32: Any = np.array([0, 1], np.int32)
    with pytest.raises(TypeError, match="rows"):
        _fp8scan.ip_scan_subset(
            a["codes"], a["scales"], a["query"], rows32, np.empty(2, np.float32)
        )
    rows = np.array([0, 1], np.int64)
    with pytest.raises(ValueError, match="out"):
        _fp8scan.ip_scan_subset(a["codes"], a["scales"], a["query"], rows, np.empty(3, np.float32))


def test_wrapper_checks_query_and_rows() -> None:
    codes, scales = encode_fp8(realistic_unit_vectors(4, 32))
    with pytest.raises(ValueError, match="query"):
        scan(codes, scales, np.ones(31, np.float32))
    float_rows: Any = np.array([1.5])
    with pytest.raises(TypeError, match="integer"):
        scan(codes, scales, np.ones(32, np.float32), float_rows)
    # Any integer dtype is fine: the wrapper widens it to int64.
    query = np.ones(32, np.float32)
    full = scan(codes, scales, query)
    rows = np.array([3, 1], np.int32)
    np.testing.assert_array_equal(scan(codes, scales, query, rows), full[[3, 1]])  # type: ignore[arg-type]
    assert len(scan(codes, scales, query, np.array([], np.int64))) == 0


# ---------------------------------------------------------------- encode / decode


def test_round_trip_error_is_within_e4m3_precision() -> None:
    vectors = realistic_unit_vectors(500)
    codes, scales = encode_fp8(vectors)
    assert codes.dtype == np.uint8
    assert codes.shape == vectors.shape
    assert scales.dtype == np.float32
    assert scales.shape == (500,)
    assert not np.isin(codes, [0x7F, 0xFF]).any()
    decoded = decode_fp8(codes, scales)
    # The largest component of each vector lands on +-448, the top of the e4m3 range.
    peak = np.abs(codes.view(ml_dtypes.float8_e4m3fn).astype(np.float32)).max(axis=1)
    np.testing.assert_array_equal(peak, np.full(500, E4M3_MAX, np.float32))
    error = np.abs(decoded.astype(np.float64) - vectors)
    normal = np.abs(vectors) >= scales[:, None] * 2.0**-6
    # 3 mantissa bits: half an ulp is 2^-4 relative for normals ...
    relative = error[normal] / np.abs(vectors[normal])
    assert relative.max() <= 2.0**-4 * (1 + 1e-6)
    # ... and half the subnormal step (2^-9 * scale) below 2^-6 * scale.
    absolute = error / scales[:, None]
    assert absolute[~normal].max() <= 2.0**-10 * (1 + 1e-6)
    # On unit vectors the whole-vector error is small: most components are normals.
    assert np.linalg.norm(decoded - vectors, axis=1).max() < 0.05


def test_encode_edge_cases() -> None:
    codes, scales = encode_fp8(np.zeros((2, 5), np.float32))
    np.testing.assert_array_equal(codes, np.zeros((2, 5), np.uint8))
    np.testing.assert_array_equal(scales, np.ones(2, np.float32))
    empty_codes, empty_scales = encode_fp8(np.zeros((0, 8), np.float32))
    assert empty_codes.shape == (0, 8)
    assert empty_scales.shape == (0,)
    # Values whose division by the scale rounds just above 448 must not become NaN codes.
    awkward = np.array([[3.0e-38, -3.1e-38, 1e-45], [7.0, -7.0000005, 1.0]], np.float32)
    odd_codes, _ = encode_fp8(awkward)
    assert not np.isin(odd_codes, [0x7F, 0xFF]).any()
    with pytest.raises(ValueError, match="finite"):
        encode_fp8(np.array([[1.0, np.nan]], np.float32))
    with pytest.raises(ValueError, match="2-dimensional"):
        encode_fp8(np.ones(4, np.float32))


def test_kernel_scores_equal_decoded_inner_products() -> None:
    vectors = realistic_unit_vectors(300, 192, seed=4)
    codes, scales = encode_fp8(vectors)
    query = realistic_unit_vectors(1, 192, seed=9)[0]
    expected = decode_fp8(codes, scales).astype(np.float64) @ query
    np.testing.assert_allclose(scan(codes, scales, query), expected, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- top-k and recall


def test_top_k_orders_best_first_and_breaks_ties_by_position() -> None:
    scores = np.array([0.5, 0.9, 0.5, np.nan, 0.9, 0.1, 0.5], np.float32)
    values, positions = top_k(scores, 4)
    np.testing.assert_array_equal(positions, [1, 4, 0, 2])
    np.testing.assert_array_equal(values, np.array([0.9, 0.9, 0.5, 0.5], np.float32))
    assert positions.dtype == np.int64
    _, everything = top_k(scores, 100)
    np.testing.assert_array_equal(everything, [1, 4, 0, 2, 6, 5, 3])
    for k in (0, -3):
        none_values, none_positions = top_k(scores, k)
        assert len(none_values) == len(none_positions) == 0
    # Many ties at the boundary: the lowest positions win, whatever argpartition picked.
    flat = np.zeros(1000, np.float32)
    flat[500] = 1.0
    np.testing.assert_array_equal(top_k(flat, 4)[1], [500, 0, 1, 2])


@pytest.mark.parametrize("kind", ["distinct", "ties", "nan", "sorted"])
def test_top_k_equals_a_full_sort(kind: str) -> None:
    # Sizes on both sides of the block-maxima prefilter's threshold (n // 64 >= 4 k).
    rng = np.random.default_rng(len(kind))
    for _ in range(60):
        n = int(rng.integers(0, 6000))
        k = int(rng.integers(1, 70))
        scores = rng.standard_normal(n).astype(np.float32)
        if kind == "ties":
            scores = rng.integers(0, 4, n).astype(np.float32)
        elif kind == "nan":
            scores[rng.random(n) < 0.3] = np.nan
        elif kind == "sorted":
            scores.sort()
        key = np.where(np.isnan(scores), -np.inf, scores)
        expected = np.lexsort((np.arange(n), -key))[:k]
        values, positions = top_k(scores, k)
        np.testing.assert_array_equal(positions, expected)
        np.testing.assert_array_equal(values, scores[expected])


def test_fp8_top10_matches_exact_top10_on_random_unit_vectors() -> None:
    rng = np.random.default_rng(42)
    data = rng.standard_normal((5000, 384)).astype(np.float32)
    data /= np.linalg.norm(data, axis=1, keepdims=True)
    queries = rng.standard_normal((50, 384)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    codes, scales = encode_fp8(data)
    exact_scores = queries.astype(np.float64) @ data.T.astype(np.float64)
    found = 0
    for query, exact in zip(queries, exact_scores, strict=True):
        exact_top = set(np.argsort(-exact, kind="stable")[:10].tolist())
        _, approx_top = top_k(scan(codes, scales, query), 10)
        found += len(exact_top & set(approx_top.tolist()))
    assert found / (10 * len(queries)) >= 0.95
