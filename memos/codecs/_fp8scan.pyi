"""Type stub for the C extension memos.codecs._fp8scan (source: memos/codecs/_fp8scan.c)."""

import numpy as np
from numpy.typing import NDArray

def ip_scan(
    codes: NDArray[np.uint8],
    scales: NDArray[np.float32],
    query: NDArray[np.float32],
    out: NDArray[np.float32],
    /,
) -> None: ...
def ip_scan_subset(
    codes: NDArray[np.uint8],
    scales: NDArray[np.float32],
    query: NDArray[np.float32],
    rows: NDArray[np.int64],
    out: NDArray[np.float32],
    /,
) -> None: ...
def backend() -> str: ...
def _set_backend(name: str, /) -> None: ...
