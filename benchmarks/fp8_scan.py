"""Micro-benchmark of the fp8 (e4m3) scan kernel against FAISS flat and numpy, in one run.

Single query at a time, ms per query (median over ``--reps`` distinct queries), for
``memos.codecs._fp8scan.ip_scan`` at d = 384 and 192 and, on the same d = 384 vectors, FAISS
``IndexFlatIP`` (fp32) and a numpy ``matrix @ query``. The vectors are synthetic unit vectors:
a scan's speed depends only on n and d, not on the values. fp8 is reported both as the bare
scan and as scan + top-10 (what FAISS's ``search`` does), so the comparison is like for like.

    python benchmarks/fp8_scan.py                     # n = 100k and 1M
    python benchmarks/fp8_scan.py --sizes 100000 --reps 10
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import faiss
import numpy as np
from numpy.typing import NDArray

from memos.codecs import _fp8scan
from memos.codecs._fp8 import encode_fp8, scan, top_k

Matrix = NDArray[np.float32]
K = 10
CHUNK = 100_000  # rows encoded at a time, to bound the temporaries of encode_fp8


@dataclass(frozen=True)
class Row:
    method: str
    n: int
    d: int
    bytes_per_vector: float
    ms: float

    @property
    def gb_per_s(self) -> float:
        return self.n * self.bytes_per_vector / (self.ms * 1e-3) / 1e9


def unit_vectors(n: int, d: int, rng: np.random.Generator) -> Matrix:
    data = rng.standard_normal((n, d), dtype=np.float32)
    data /= np.linalg.norm(data, axis=1, keepdims=True)
    return data


def encode_chunked(vectors: Matrix) -> tuple[NDArray[np.uint8], NDArray[np.float32]]:
    codes = np.empty(vectors.shape, np.uint8)
    scales = np.empty(len(vectors), np.float32)
    for start in range(0, len(vectors), CHUNK):
        stop = start + CHUNK
        codes[start:stop], scales[start:stop] = encode_fp8(vectors[start:stop])
    return codes, scales


def median_ms(fn: Callable[[Matrix], object], queries: Matrix) -> float:
    fn(queries[0])  # warm-up: page in the data, settle the caches
    times = []
    for query in queries:
        start = time.perf_counter()
        fn(query)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def faiss_ms(vectors: Matrix, queries: Matrix, threads: int) -> float:
    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(vectors)
    default = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(threads)
    try:
        return median_ms(lambda q: index.search(q[None, :], K), queries)
    finally:
        faiss.omp_set_num_threads(default)


def bench_size(n: int, reps: int, rng: np.random.Generator) -> list[Row]:
    full = unit_vectors(n, 384, rng)
    queries = unit_vectors(reps, 384, rng)
    rows: list[Row] = []

    # On a shared 2-core machine FAISS's OpenMP threads can lose badly to other load, so its
    # single-threaded time (like the fp8 kernel's) is reported beside the default.
    for threads in sorted({1, faiss.omp_get_max_threads()}):
        label = f"faiss IndexFlatIP fp32, {threads} thread(s) (search, top-10)"
        rows.append(Row(label, n, 384, 1536, faiss_ms(full, queries, threads)))
    rows.append(Row("numpy fp32 matrix @ query", n, 384, 1536, median_ms(full.__matmul__, queries)))

    codes, scales = encode_chunked(full)
    del full
    out = np.empty(n, np.float32)
    ms = median_ms(lambda q: _fp8scan.ip_scan(codes, scales, q, out), queries)
    rows.append(Row(f"fp8 ip_scan [{_fp8scan.backend()}]", n, 384, 388, ms))
    ms = median_ms(lambda q: top_k(scan(codes, scales, q), K), queries)
    rows.append(Row("fp8 scan + top_k (top-10)", n, 384, 388, ms))
    if n <= 100_000:
        _fp8scan._set_backend("scalar")
        ms = median_ms(
            lambda q: _fp8scan.ip_scan(codes, scales, q, out), queries[: max(3, reps // 4)]
        )
        _fp8scan._set_backend("auto")
        rows.append(Row("fp8 ip_scan [scalar fallback]", n, 384, 388, ms))
    del codes

    # d = 192 stands for pca192+fp8: the scan reads half the bytes of d = 384.
    half = unit_vectors(n, 192, rng)
    codes, scales = encode_chunked(half)
    del half
    half_queries = np.ascontiguousarray(queries[:, :192])
    ms = median_ms(lambda q: _fp8scan.ip_scan(codes, scales, q, out), half_queries)
    rows.append(Row(f"fp8 ip_scan [{_fp8scan.backend()}]", n, 192, 196, ms))
    ms = median_ms(lambda q: top_k(scan(codes, scales, q), K), half_queries)
    rows.append(Row("fp8 scan + top_k (top-10)", n, 192, 196, ms))
    return rows


def print_table(rows: list[Row]) -> None:
    print("| method | n | d | bytes/vector | ms/query | GB/s read |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        print(
            f"| {row.method} | {row.n:,} | {row.d} | {row.bytes_per_vector:g} | "
            f"{row.ms:.2f} | {row.gb_per_s:.1f} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--reps", type=int, default=20, help="distinct queries per measurement")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    print(
        f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"faiss {faiss.__version__} ({faiss.omp_get_max_threads()} OpenMP threads), "
        f"numpy {np.__version__}, fp8 kernel: {_fp8scan.backend()} (1 thread)"
    )
    rows: list[Row] = []
    for n in args.sizes:
        rows.extend(bench_size(n, args.reps, rng))
    print_table(rows)


if __name__ == "__main__":
    main()
