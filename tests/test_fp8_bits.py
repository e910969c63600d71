"""The e4m3 conversion in numpy is bit-identical to ml_dtypes' (which costs a second to import)."""

from __future__ import annotations

import ml_dtypes
import numpy as np

from memos.codecs._fp8 import E4M3_MAX, decode_fp8, to_e4m3

E4M3 = ml_dtypes.float8_e4m3fn
ALL_CODES = np.arange(256, dtype=np.uint8)


def _finite_values() -> np.ndarray[tuple[int], np.dtype[np.float32]]:
    values = ALL_CODES.view(E4M3).astype(np.float32)
    return np.unique(values[np.isfinite(values)])


def test_every_code_decodes_as_ml_dtypes_does() -> None:
    ours = decode_fp8(ALL_CODES.reshape(1, -1), np.ones(1, np.float32))[0]
    np.testing.assert_array_equal(ours, ALL_CODES.view(E4M3).astype(np.float32))


def test_encoding_is_bit_identical_at_every_rounding_boundary() -> None:
    exact = _finite_values()
    midpoints = ((exact[1:].astype(np.float64) + exact[:-1]) / 2).astype(np.float32)
    values = np.concatenate(
        [
            exact,
            midpoints,  # ties, which round to the even code
            np.nextafter(midpoints, np.float32(np.inf)),
            np.nextafter(midpoints, np.float32(-np.inf)),
            np.float32([0.0, -0.0, 1e-30, -1e-30, 2.0**-10, -(2.0**-10)]),
        ]
    ).astype(np.float32)
    values = np.clip(values, -E4M3_MAX, E4M3_MAX)
    np.testing.assert_array_equal(to_e4m3(values), values.astype(E4M3).view(np.uint8))


def test_encoding_is_bit_identical_on_random_values_across_the_range() -> None:
    rng = np.random.default_rng(7)
    magnitudes = np.exp2(rng.uniform(-14.0, np.log2(E4M3_MAX), 200_000))
    values = (magnitudes * rng.choice([-1.0, 1.0], magnitudes.size)).astype(np.float32)
    np.testing.assert_array_equal(to_e4m3(values), values.astype(E4M3).view(np.uint8))
