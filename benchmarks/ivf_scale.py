"""Partitioned index at scale: ``ivf{nlist}+sq8`` against an exact flat scan, in one run.

Builds ``--n`` semi-synthetic unit vectors around real all-MiniLM-L6-v2 embeddings, then
measures, next to FAISS ``IndexFlatIP`` on the same vectors:

* recall@10 against the exact top 10, through :class:`VectorIndex` as MemOS searches (the
  codec's top candidates re-ranked from full precision; here an in-RAM fp32 copy stands in for
  the store), and the codec's own ranking before re-rank;
* ms/query, p50 and p95, one query at a time;
* RAM per vector: the table's codes and ids plus the centroids (nominal), and the process's
  RSS growth while the index was built (codes plus VectorIndex's id bookkeeping);
* seconds to train (k-means on the cube-sized sample) and to fill the index.

Every FAISS call runs on one OpenMP thread (``faiss.omp_set_num_threads(1)``): on this shared
2-core machine two threads measured 6-8× slower.

Real vectors: the largest ``benchmarks/results/codecs-embeddings-*.npy`` the codec benchmark
cached (≈ 25k real sentences), else the LoCoMo turns embedded here. 1,000 of them are held out
as queries; the base set is the rest plus, up to ``--n``, perturbed copies (a random real
vector plus ``s·L·z``: ``L Lᵀ`` the real covariance, ``z`` standard normal, ``s`` uniform in
``--spread``), re-normalised — the codec benchmark's method, so both describe one distribution.

    python benchmarks/ivf_scale.py                     # 1M vectors (≈ 10 min, ≈ 4 GB)
    python benchmarks/ivf_scale.py --n 100000          # a smaller run
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import faiss
import numpy as np
from numpy.typing import NDArray

from memos.codecs import IvfCodec, IvfTable, fit_sample_size, make_codec
from memos.codecs._ivf import NPROBE
from memos.plaintext._partition import lists_for
from memos.plaintext._vector_index import RERANK_FACTOR, RERANK_MIN, VectorIndex

HERE = Path(__file__).resolve().parent
RESULTS_DIR = HERE / "results"
DEFAULT_LOCOMO = HERE.parent.parent / "shared" / "data" / "locomo" / "locomo_dev.json"
K = 10
Matrix = NDArray[np.float32]


@dataclass(frozen=True)
class Config:
    n: int
    queries: int
    flat_queries: int
    filtered_queries: int
    filter_share: float
    nprobes: tuple[int, ...]
    nlist: int | None
    spread: tuple[float, float]
    sigma: float | None
    seed: int
    locomo: Path
    out_dir: Path


def parse_args(argv: Sequence[str] | None) -> Config:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--n", type=int, default=1_000_000, help="vectors in the base set")
    parser.add_argument("--queries", type=int, default=1_000, help="held-out real queries")
    parser.add_argument("--flat-queries", type=int, default=200, help="of them, through flat")
    parser.add_argument("--filtered-queries", type=int, default=200)
    parser.add_argument("--filter-share", type=float, default=0.1, help="allowed share")
    parser.add_argument("--nprobes", default="16,32,64")
    parser.add_argument("--nlist", type=int, default=None, help="default: MemOS's rule for --n")
    parser.add_argument("--spread", default="0.25,1.0", help="scales of the covariance noise")
    parser.add_argument(
        "--sigma", type=float, default=None, help="isotropic noise σ per dimension instead"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--locomo", type=Path, default=DEFAULT_LOCOMO)
    parser.add_argument("--out-dir", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)
    low, high = (float(x) for x in args.spread.split(","))
    return Config(
        n=args.n,
        queries=args.queries,
        flat_queries=args.flat_queries,
        filtered_queries=args.filtered_queries,
        filter_share=args.filter_share,
        nprobes=tuple(int(x) for x in args.nprobes.split(",")),
        nlist=args.nlist,
        spread=(low, high),
        sigma=args.sigma,
        seed=args.seed,
        locomo=args.locomo,
        out_dir=args.out_dir,
    )


# -- vectors ----------------------------------------------------------------------------------


def real_vectors(config: Config) -> tuple[Matrix, str]:
    cached = sorted(RESULTS_DIR.glob("codecs-embeddings-*.npy"), key=lambda p: p.stat().st_size)
    if cached:
        return np.load(cached[-1]).astype(np.float32), f"cached: {cached[-1].name}"
    from memos.embedding import make_embedder  # only when nothing is cached

    dialogues = json.loads(config.locomo.read_text(encoding="utf-8"))
    turns = [
        str(turn["text"])
        for dialogue in dialogues
        for key, session in dialogue["conversation"].items()
        if key.startswith("session_") and isinstance(session, list)
        for turn in session
    ]
    vectors = make_embedder("all-MiniLM-L6-v2").embed(turns)
    return np.asarray(vectors, dtype=np.float32), f"LoCoMo turns embedded here ({len(turns)})"


def semi_synthetic(
    real: Matrix, n: int, config: Config, rng: np.random.Generator
) -> Iterator[Matrix]:
    """``n`` vectors in chunks: the real ones, then perturbed copies (see the module doc)."""
    yield real[:n]
    dim = real.shape[1]
    if config.sigma is None:
        covariance = np.cov(real.astype(np.float64), rowvar=False)
        eigenvalues, eigenvectors = np.linalg.eigh(covariance)
        factor = eigenvectors * np.sqrt(np.clip(eigenvalues, 0.0, None))
    else:
        factor = config.sigma * np.eye(dim)
    for start in range(len(real), n, 100_000):
        stop = min(start + 100_000, n)
        parents = real[rng.integers(0, len(real), stop - start)].astype(np.float64)
        if config.sigma is None:
            scale = rng.uniform(*config.spread, size=(stop - start, 1))
        else:
            scale = np.ones((stop - start, 1))
        chunk = parents + scale * (rng.standard_normal((stop - start, dim)) @ factor.T)
        chunk /= np.linalg.norm(chunk, axis=1, keepdims=True)
        yield chunk.astype(np.float32)


# -- measuring --------------------------------------------------------------------------------


def rss_bytes() -> int:
    """Resident set size after handing freed heap pages back (glibc keeps them otherwise)."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    with open("/proc/self/statm", encoding="ascii") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def timed(search: Callable[[Matrix], NDArray[np.int64]], queries: Matrix) -> dict[str, Any]:
    times, found = [], []
    for query in queries:
        started = time.perf_counter()
        found.append(search(query))
        times.append((time.perf_counter() - started) * 1e3)
    return {"found": found, "times": times}


def recall(found: Sequence[NDArray[np.int64]], truth: NDArray[np.int64]) -> float:
    hits = sum(len(np.intersect1d(f[:K], t[:K])) for f, t in zip(found, truth, strict=False))
    return hits / (K * len(found))


@dataclass
class Row:
    method: str
    queries: int
    recall_at_10: float
    recall_before_rerank: float | None
    ms_p50: float
    ms_p95: float
    bytes_per_vector: float


def row(method: str, result: dict[str, Any], truth: NDArray[np.int64], bpv: float) -> Row:
    times = sorted(result["times"])
    return Row(
        method=method,
        queries=len(times),
        recall_at_10=recall(result["found"], truth),
        recall_before_rerank=result.get("raw_recall"),
        ms_p50=statistics.median(times),
        ms_p95=times[int(0.95 * (len(times) - 1))],
        bytes_per_vector=bpv,
    )


def main(argv: Sequence[str] | None = None) -> int:
    config = parse_args(argv)
    faiss.omp_set_num_threads(1)
    rng = np.random.default_rng(config.seed)
    started_at = datetime.now(UTC)
    load_start = os.getloadavg()
    rss_start = rss_bytes()

    real, source = real_vectors(config)
    dim = real.shape[1]
    order = rng.permutation(len(real))
    queries = np.ascontiguousarray(real[order[: config.queries]])
    parents = real[np.sort(order[config.queries :])]
    print(f"real vectors: {len(real)} ({source}); queries held out: {len(queries)}")

    # The flat index holds the only fp32 copy; ``base`` is a view of it (saves 4·d B/vector).
    flat = faiss.IndexFlatIP(dim)
    for chunk in semi_synthetic(parents, config.n, config, rng):
        flat.add(np.ascontiguousarray(chunk))
    base = faiss.rev_swig_ptr(flat.get_xb(), config.n * dim).reshape(config.n, dim)
    print(f"base set: {config.n} vectors; flat index {flat.ntotal}")

    started = time.perf_counter()
    _, truth = flat.search(queries, K)
    truth_seconds = time.perf_counter() - started

    nlist = config.nlist or lists_for(config.n)
    codec = make_codec(f"ivf{nlist}+sq8")
    assert isinstance(codec, IvfCodec)
    sample_rows = np.sort(rng.choice(config.n, min(fit_sample_size(codec), config.n), False))
    sample = np.ascontiguousarray(base[sample_rows])
    started = time.perf_counter()
    state = codec.fit(sample)
    fit_seconds = time.perf_counter() - started
    del sample
    fitted = make_codec(codec.name, state)
    print(f"{codec.name}: trained on {len(sample_rows)} in {fit_seconds:.1f} s")

    ids = [str(i) for i in range(config.n)]
    rss_before = rss_bytes()
    started = time.perf_counter()
    index = VectorIndex(fitted, dim)
    for start in range(0, config.n, 4096):  # as a cube's index is rebuilt from the store
        index.upsert(ids[start : start + 4096], base[start : start + 4096])
    table = index._table  # the table's own figures
    assert isinstance(table, IvfTable)
    slack_before_compaction = table.slack_bytes
    table.compact()  # as installing an index does (its snapshot is saved compact)
    build_seconds = time.perf_counter() - started
    rss_index = rss_bytes() - rss_before
    state_bytes = sum(array.nbytes for array in state.values())
    nominal = (table.nbytes + state_bytes) / config.n
    print(f"built in {build_seconds:.1f} s; nominal {nominal:.1f} B/vector")

    def exact(item_ids: Sequence[str]) -> dict[str, Matrix]:
        return {item_id: base[int(item_id)] for item_id in item_ids}

    def through_index(query: Matrix) -> NDArray[np.int64]:
        return np.asarray([int(i) for i, _ in index.search(query, K, exact=exact)])

    def flat_one(query: Matrix) -> NDArray[np.int64]:
        return np.asarray(flat.search(query.reshape(1, -1), K)[1][0], dtype=np.int64)

    rows = [
        row(
            "faiss IndexFlatIP (exact)",
            timed(flat_one, queries[: config.flat_queries]),
            truth,
            float(flat.code_size),
        ),
    ]
    candidates = max(RERANK_FACTOR * K, RERANK_MIN)
    for nprobe in config.nprobes:
        table.nprobe = nprobe
        result = timed(through_index, queries)
        raw = [table.search(q, K)[1] for q in queries]
        result["raw_recall"] = recall(raw, truth)
        rows.append(
            row(f"{codec.name} nprobe {nprobe}, re-rank {candidates}", result, truth, nominal)
        )

    # a filter that keeps ``filter_share`` of the cube, applied inside the search
    table.nprobe = NPROBE
    allowed = np.sort(rng.choice(config.n, int(config.filter_share * config.n), False))
    allowed_ids = [ids[i] for i in allowed]
    fq = queries[: config.filtered_queries]
    _, local = faiss.knn(fq, np.ascontiguousarray(base[allowed]), K, faiss.METRIC_INNER_PRODUCT)
    filtered_truth = allowed[local]
    filtered = timed(
        lambda q: np.asarray([int(i) for i, _ in index.search(q, K, allowed_ids, exact=exact)]),
        fq,
    )
    rows.append(
        row(
            f"{codec.name} nprobe {table.nprobe}, {config.filter_share:.0%} allowed",
            filtered,
            filtered_truth,
            nominal,
        )
    )

    print()
    print(
        f"{'method':<44} {'q':>5} {'recall@10':>9} {'raw':>6} {'p50 ms':>8} {'p95 ms':>8} "
        f"{'B/vec':>7}"
    )
    for r in rows:
        raw = "" if r.recall_before_rerank is None else f"{r.recall_before_rerank:.3f}"
        print(
            f"{r.method:<44} {r.queries:>5} {r.recall_at_10:>9.3f} {raw:>6} {r.ms_p50:>8.2f} "
            f"{r.ms_p95:>8.2f} {r.bytes_per_vector:>7.1f}"
        )
    summary = {
        "benchmark": "ivf_scale",
        "config": {**asdict(config), "locomo": str(config.locomo), "out_dir": str(config.out_dir)},
        "started": started_at.isoformat(),
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "python": sys.version.split()[0],
            "faiss": faiss.__version__,
            "faiss_threads": 1,
            "load_average_start": load_start,
            "load_average_end": os.getloadavg(),
        },
        "real_vectors": {"count": len(real), "source": source},
        "codec": codec.name,
        "nlist": nlist,
        "fit_sample": len(sample_rows),
        "fit_seconds": fit_seconds,
        "build_seconds": build_seconds,
        "truth_seconds_batched": truth_seconds,
        "table_bytes": table.nbytes,
        "state_bytes": state_bytes,
        "nominal_bytes_per_vector": nominal,
        "slack_bytes_before_compaction": slack_before_compaction,
        "rss_index_bytes_per_vector": rss_index / config.n,
        "rss_peak_bytes": _peak_rss(),
        "rss_start_bytes": rss_start,
        "rows": [asdict(r) for r in rows],
    }
    config.out_dir.mkdir(parents=True, exist_ok=True)
    stamp = started_at.strftime("%Y%m%dT%H%M%SZ")
    out = config.out_dir / f"ivf_scale-{config.n}-{stamp}.json"
    out.write_text(json.dumps(summary, indent=2), encoding="utf-8")
    print(
        f"\nRSS growth of the index (codes + id bookkeeping): {rss_index / config.n:.0f} B/vector;"
        f" peak RSS {_peak_rss() / 2**30:.2f} GiB; results: {out}"
    )
    return 0


def _peak_rss() -> int:
    with open("/proc/self/status", encoding="ascii") as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


if __name__ == "__main__":
    sys.exit(main())
