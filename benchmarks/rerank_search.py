"""Dense search with a lossy codec against a flat FAISS scan, in one run, as ratios.

A cube with the default codec (``pca188+fp8`` for MiniLM's 384 dimensions) scans compact codes
and re-ranks its top 100 candidates with the full-precision vectors. This script times that
search, next to a plain ``faiss.IndexFlatIP.search`` over the same vectors with the same query
vector, and checks recall@10 against that exact scan. Per cube size it also reports the
process's resident memory after the index was opened (anonymous pages apart from file-backed
ones, so rows the OS pages in from a memory-mapped file show as such).

The cubes are ingest_search.py's semi-synthetic ones: the real MiniLM vectors of the distinct
LoCoMo dev turns, then noisy re-normalised variants, fed through ``add_many`` by a lookup
embedder. The query vectors (LoCoMo questions) are computed once and served from memory, so
search is timed as users call it minus the query embedding. For each question the paths run
one after another in rotating order, so drift on a shared machine falls on all alike.

    python benchmarks/rerank_search.py ../shared/data/locomo/locomo_dev.json
    python benchmarks/rerank_search.py --sizes 1000000 --queries 100
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import faiss
import numpy as np
from ingest_search import (  # this script's folder
    CUBE,
    DEFAULT_LOCOMO,
    RESULTS_DIR,
    QueryCacheEmbedder,
    Turn,
    build_corpus,
    configure_environment,
    ingest_corpus,
    latency_summary,
    load_locomo,
    machine_info,
    pick_questions,
    rotated,
)
from numpy.typing import NDArray

from memos import MemOS, MiniLMEmbedder

PATHS = ("faiss", "dense", "hybrid")
Matrix = NDArray[np.float32]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("locomo", nargs="?", type=Path, default=DEFAULT_LOCOMO)
    parser.add_argument("--sizes", default="10000,100000", help="cube sizes")
    parser.add_argument("--queries", type=int, default=200, help="LoCoMo questions to ask")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--noise", type=float, default=0.02, help="σ of synthetic variants")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=1024, help="add_many batch_size")
    parser.add_argument("--omp-threads", type=int, default=0, help="FAISS threads (0: its default)")
    parser.add_argument("--workdir", type=Path, default=None, help="parent of the data dirs")
    parser.add_argument(
        "--keep",
        type=Path,
        default=None,
        help="keep each cube in KEEP/cube-<size> and reuse it on later runs (not deleted)",
    )
    parser.add_argument("--out-dir", type=Path, default=RESULTS_DIR)
    return parser.parse_args(argv)


def memory_kib() -> dict[str, int]:
    """The process's resident memory by kind (KiB), from /proc/self/status."""
    gc.collect()
    wanted = ("VmRSS", "RssAnon", "RssFile")
    found: dict[str, int] = {}
    for line in Path("/proc/self/status").read_text(encoding="ascii").splitlines():
        key, _, value = line.partition(":")
        if key in wanted:
            found[key] = int(value.split()[0])
    return found


def distinct_turns(turns: Sequence[Turn]) -> list[Turn]:
    seen: dict[str, Turn] = {}
    for turn in turns:
        seen.setdefault(turn.text, turn)
    return list(seen.values())


def time_paths(
    mos: MemOS, qe: QueryCacheEmbedder, flat: Any, queries: Sequence[str], k: int
) -> tuple[dict[str, list[float]], list[list[str]], Matrix]:
    """Per-query seconds of each path, the texts dense search found, FAISS's exact rows."""
    times: dict[str, list[float]] = {name: [] for name in PATHS}
    found_texts: list[list[str]] = []
    exact_rows = np.zeros((len(queries), k), dtype=np.int64)
    calls: dict[str, Callable[[str, Matrix], Any]] = {
        "faiss": lambda _query, vector: flat.search(vector, k),
        "dense": lambda query, _vector: mos.search(query, cube=CUBE, k=k, mode="dense"),
        "hybrid": lambda query, _vector: mos.search(query, cube=CUBE, k=k, mode="hybrid"),
    }
    for row, query in enumerate(queries):
        vector = qe.embed([query])
        for name in rotated(PATHS, row):
            start = time.perf_counter()
            answer = calls[name](query, vector)
            times[name].append(time.perf_counter() - start)
            if name == "faiss":
                exact_rows[row] = answer[1][0]
            elif name == "dense":
                found_texts.append([hit.item.text for hit in answer])
    return times, found_texts, exact_rows


def recall(found: list[list[str]], exact: Matrix, texts: Sequence[str], k: int) -> float:
    hits = sum(
        len(set(got) & {texts[int(r)] for r in rows})
        for got, rows in zip(found, exact, strict=True)
    )
    return hits / (k * len(found))


def run_size(
    size: int, args: argparse.Namespace, corpus: Any, qe: QueryCacheEmbedder, queries: list[str]
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="memos-rerank-", dir=args.workdir) as tmp:
        path = Path(tmp) / "data" if args.keep is None else args.keep / f"cube-{size}"
        if not (path / "memos.db").exists():
            built = ingest_corpus(path, corpus, 0, size, qe.name, args.batch_size)
            print(f"{size:,} items ingested in {built:.1f} s", flush=True)
        measured = measure(path, size, args, corpus, qe, queries)
        measured["index_files_bytes"] = {
            f.name: f.stat().st_size for f in (path / "index").iterdir()
        }
    return measured


def measure(
    path: Path,
    size: int,
    args: argparse.Namespace,
    corpus: Any,
    qe: QueryCacheEmbedder,
    queries: list[str],
) -> dict[str, Any]:
    vectors = corpus.vectors[:size]
    flat = faiss.IndexFlatIP(vectors.shape[1])
    flat.add(vectors)
    before = memory_kib()
    mos = MemOS.open(path, embedder=qe)
    codec = mos.get_cube(CUBE).codec
    for query in queries[:5]:  # the index load, the first calls' caches
        mos.search(query, cube=CUBE, k=args.k, mode="dense")
        mos.search(query, cube=CUBE, k=args.k)
    opened = memory_kib()
    times, found, exact = time_paths(mos, qe, flat, queries, args.k)
    after = memory_kib()
    mos.close()
    summary = {name: latency_summary(values) for name, values in times.items()}
    faiss_p50 = summary["faiss"]["p50_ms"]
    return {
        "items": size,
        "codec": codec,
        "latency": summary,
        "p50_over_faiss": {name: summary[name]["p50_ms"] / faiss_p50 for name in PATHS},
        "recall_at_k": recall(found, exact, corpus.texts, args.k),
        "memory_kib": {"before_open": before, "after_warmup": opened, "after_searches": after},
    }


def report(result: dict[str, Any]) -> None:
    size, lat, ratio = result["items"], result["latency"], result["p50_over_faiss"]
    print(f"\n{size:,} items, codec {result['codec']}, recall@10 {result['recall_at_k']:.4f}")
    for name in PATHS:
        row = lat[name]
        print(
            f"  {name:7s} p50 {row['p50_ms']:7.2f} ms  p99 {row['p99_ms']:7.2f} ms  "
            f"mean {row['mean_ms']:7.2f} ms  p50 ÷ FAISS {ratio[name]:.2f}"
        )
    memory = result["memory_kib"]
    for stage in ("before_open", "after_warmup", "after_searches"):
        print(f"  RSS {stage:15s} {memory[stage]}")
    print(f"  index files {result['index_files_bytes']}")


def main(argv: Sequence[str] | None = None) -> int:
    configure_environment()
    args = parse_args(argv)
    if args.omp_threads > 0:
        faiss.omp_set_num_threads(args.omp_threads)
    load_at_start = os.getloadavg()
    turns, questions = load_locomo(args.locomo)
    distinct = distinct_turns(turns)
    queries = pick_questions(questions, args.queries, args.seed)
    model = MiniLMEmbedder()
    base = model.embed([turn.text for turn in distinct])
    qe = QueryCacheEmbedder(model, queries)
    sizes = [int(s) for s in str(args.sizes).split(",") if s.strip()]
    corpus = build_corpus(distinct, base, max(sizes), args.noise, args.seed)
    results = []
    for size in sizes:
        result = run_size(size, args, corpus, qe, queries)
        report(result)
        results.append(result)
    payload = {
        "benchmark": "benchmarks/rerank_search.py",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "args": {key: str(value) for key, value in vars(args).items()},
        "machine": machine_info(),
        "load_average": {"start": load_at_start, "end": os.getloadavg()},
        "sizes": results,
    }
    args.out_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = args.out_dir / f"rerank_search-{stamp}.json"
    out.write_text(json.dumps(payload, indent=2, default=str), encoding="utf-8")
    print(f"\nload average {load_at_start} -> {os.getloadavg()}; results: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
