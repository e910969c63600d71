"""What several codecs share: the mixin of codecs that are never fitted, and state checks."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from numpy.typing import NDArray

from memos.codecs._protocol import CodecState, Vectors
from memos.errors import InvalidInput

# A codec that needs fitting is fitted once a cube holds this many active vectors, on a sample
# of at most FIT_SAMPLE_MAX of them.
FIT_MIN = 1000
FIT_SAMPLE_MAX = 50_000


class NeverFitted:
    """For codecs that encode any vector as it comes (fp32, fp16, fp8)."""

    name: str
    fit_min = 0
    fitted = True

    def __init__(self, state: Mapping[str, NDArray[np.float32]] | None = None) -> None:
        no_state(self.name, state)

    def fit(self, sample: Vectors) -> CodecState:
        raise InvalidInput(f"codec {self.name} is not fitted to a cube's vectors")

    def projected_dim(self, dim: int) -> int:
        return dim


def no_state(name: str, state: Mapping[str, NDArray[np.float32]] | None) -> None:
    if state:
        raise ValueError(f"codec {name} takes no fitted state, got {sorted(state)}")


def state_array(
    name: str, state: Mapping[str, NDArray[np.float32]], key: str, ndim: int
) -> NDArray[np.float32]:
    """``state[key]`` when it is the only array, finite float32 of ``ndim`` dimensions."""
    if set(state) != {key}:
        raise ValueError(f"codec {name} state holds {sorted(state)}, expected [{key!r}]")
    array = state[key]
    if (
        not isinstance(array, np.ndarray)
        or array.dtype != np.float32
        or array.ndim != ndim
        or array.size == 0
        or not np.isfinite(array).all()
    ):
        raise ValueError(f"codec {name} state {key!r} is not a finite {ndim}-d float32 array")
    return np.ascontiguousarray(array)


def fit_sample(name: str, sample: Vectors, min_rows: int) -> NDArray[np.float32]:
    matrix = np.ascontiguousarray(sample, dtype=np.float32)
    if matrix.ndim != 2 or len(matrix) < min_rows:
        raise InvalidInput(f"codec {name} needs at least {min_rows} vectors to fit")
    return matrix
