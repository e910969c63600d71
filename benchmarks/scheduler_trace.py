"""A trace replay of the scheduler: how much of chat's memory prompt KV blocks serve, and what
that does to time-to-first-token, with the scheduler on, off, and with an oracle's foresight.

For each LoCoMo conversation of the file, and each of three runs on a fresh data dir with the
same model and budgets: the conversation's turns are added in order, then its questions are
asked as chats one after another (``k`` = 5, greedy, a few new tokens: TTFT is the point).

- **off**: no scheduler; every prompt is computed in full.
- **on**: the scheduler ticks every ``--tick-every`` questions (10), on the uses the chats so far
  made (each chat's prompt memories are one use), building and dropping KV blocks.
- **oracle**: the whole trace's retrievals are known in advance (every question is searched
  first): one block of the memories retrieved most often, most often first, as many as fit the
  budget, is built before the questions are asked. A chat's prompt uses one block as its
  prefix, and a block holding the union of several blocks' memories serves every prompt at
  least as well as any of them, so for the retrieved memories' tokens this block is the
  ceiling (a greedy knapsack whose value per token is the retrieval count) the scheduler is
  held to.

The KV budget of a cube is ``--budget-share`` (10%) of what caching all its text would take:
the conversation's text tokens times the bytes per token of the model's fp32 cache.

Reported per run: the share of the retrieved memories' prompt tokens served from KV caches
(``kv_share``: a retrieved memory's line counts as served when the block whose cache the
prompt used holds it), the share of the prompts' whole memory section (the system message up to
the end of its memories, which also holds the memories a block adds that the search did not
find) served from caches, the mean memory section in tokens, mean and p90 TTFT, prefill tokens
in total (the prompts' uncached tokens plus the blocks built, a grown block only its added
tokens), the scheduler's CPU time
(planning and building) as a share of the run's, and the peak KV bytes against the budget. The
last line prints the figures as ``key=value`` pairs.

    python benchmarks/scheduler_trace.py ../shared/data/locomo/locomo_dev.json
    python benchmarks/scheduler_trace.py PATH --conversations 1 --questions 40
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ingest_search import (  # this script's folder
    RESULTS_DIR,
    configure_environment,
    load_locomo,
    machine_info,
    turn_record,
)

CUBE = "trace"
RUNS = ("off", "on", "oracle")


@dataclass
class RunResult:
    run: str
    conversation: str
    questions: int
    retrieved_tokens: int = 0  # the retrieved memories' lines
    served_tokens: int = 0  # of those, the ones a cache served
    memory_tokens: int = 0  # the prompts' memory sections
    cached_tokens: int = 0  # of those, the ones a cache served
    prompt_tokens: int = 0
    built_tokens: int = 0
    ttft_s: list[float] = field(default_factory=list)
    cpu_s: float = 0.0
    scheduler_cpu_s: float = 0.0
    peak_kv_bytes: int = 0
    kv_budget: int = 0
    migrations: int = 0

    line_tokens: dict[str, int] = field(default_factory=dict, repr=False)

    @property
    def share(self) -> float:
        return self.served_tokens / self.retrieved_tokens if self.retrieved_tokens else 0.0


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("path", type=Path, help="a LoCoMo-format JSON file")
    parser.add_argument("--conversations", type=int, default=None, help="only the first N")
    parser.add_argument("--questions", type=int, default=None, help="per conversation")
    parser.add_argument("--tick-every", type=int, default=10)
    parser.add_argument("--budget-share", type=float, default=0.10)
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--max-new-tokens", type=int, default=4)
    parser.add_argument(
        "--parameters", type=json.loads, default={}, help="the policy's parameters, as JSON"
    )
    return parser.parse_args(argv)


def conversations(path: Path, limit: int | None, questions: int | None) -> list[tuple[str, Any]]:
    """(sample id, (turns, questions)) per conversation, in file order."""
    turns, _ = load_locomo(path)
    data = json.loads(path.read_text(encoding="utf-8"))
    found = []
    for sample in data[:limit]:
        sid = sample["sample_id"]
        asked = [str(qa["question"]) for qa in sample["qa"] if qa.get("question")]
        found.append((sid, ([t for t in turns if t.conversation == sid], asked[:questions])))
    return found


def kv_budget(model: Any, texts: Sequence[str], share: float) -> int:
    shape = model.shape
    per_token = shape.layers * 2 * shape.kv_heads * shape.head_dim * 4
    tokens = sum(len(model.tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts)
    return int(share * tokens * per_token)


def run_one(
    run: str, sid: str, trace: Any, model: Any, embedder: Any, args: argparse.Namespace
) -> RunResult:
    from memos import MemOS
    from memos.activation import render_block

    turns, questions = trace
    result = RunResult(run, sid, len(questions))
    with tempfile.TemporaryDirectory(prefix="memos-trace-") as tmp:
        mos = MemOS.open(Path(tmp) / "data", embedder=embedder, model=model)
        mos.create_cube(CUBE)
        mos.add_many([turn_record(t) for t in turns], cube=CUBE)
        result.kv_budget = kv_budget(model, [t.text for t in turns], args.budget_share)
        budgets = {"kv_bytes": result.kv_budget, "kv_blocks": None}
        mos.scheduler.configure(
            CUBE, budgets=budgets, enabled=run == "on", parameters=args.parameters
        )
        header = len(model.split_prompt(render_block([]), "").prefix)
        started = time.process_time()
        if run == "oracle":
            oracle_block(mos, questions, model, args, result)
        for n, question in enumerate(questions, 1):
            ask(mos, question, args, result, header)
            if run == "on" and n % args.tick_every == 0:
                tick(mos, result)
        result.cpu_s = time.process_time() - started
        mos.close()
    return result


def oracle_block(
    mos: Any, questions: Sequence[str], model: Any, args: argparse.Namespace, result: RunResult
) -> None:
    """Build the oracle's block (see the module docstring)."""
    from memos.activation import render_block

    counts: Counter[str] = Counter()
    items = {}
    for question in questions:
        for hit in mos.search(question, cube=CUBE, k=args.k):
            counts[hit.item.id] += 1
            items[hit.item.id] = hit.item
    shape = model.shape
    per_token = shape.layers * 2 * shape.kv_heads * shape.head_dim * 4
    started = time.process_time()
    chosen: list[str] = []
    for item_id, _ in sorted(counts.items(), key=lambda pair: (-pair[1], pair[0])):
        block = render_block([items[i] for i in [*chosen, item_id]])
        if len(model.split_prompt(block, "").prefix) * per_token <= result.kv_budget:
            chosen.append(item_id)
    entry = mos.kv.build(CUBE, chosen)
    result.scheduler_cpu_s += time.process_time() - started
    result.migrations += 1
    result.built_tokens += entry.tokens
    result.peak_kv_bytes = entry.size


def tick(mos: Any, result: RunResult) -> None:
    started = time.process_time()
    report = mos.scheduler.tick(CUBE)
    result.scheduler_cpu_s += time.process_time() - started
    result.migrations += len(report.events)
    entries = mos.kv.list(CUBE)
    for event in report.events:
        if event.op == "kv_build":  # a block grown from another computes only what it adds
            payload = event.payload or {}
            made = next(e for e in entries if e.id == payload["derived"]["id"])
            result.built_tokens += payload.get("prefilled", made.tokens)
    result.peak_kv_bytes = max(result.peak_kv_bytes, sum(e.size for e in entries))


def ask(mos: Any, question: str, args: argparse.Namespace, result: RunResult, header: int) -> None:
    from memos.activation import render_block

    started = time.perf_counter()
    stream = mos.chat_stream(question, cube=CUBE, k=args.k, max_new_tokens=args.max_new_tokens)
    first = None
    for _ in stream:
        first = first or time.perf_counter()
    result.ttft_s.append((first or time.perf_counter()) - started)
    reply = stream.reply
    model = mos.model()
    block = len(model.split_prompt(render_block(list(reply.memories)), "").prefix)
    result.memory_tokens += block - header
    result.cached_tokens += max(reply.cached_tokens - header, 0)
    result.prompt_tokens += reply.prompt_tokens - reply.cached_tokens
    served: set[str] = set()
    if reply.kv_entry is not None and reply.cached_tokens:
        served = {s.item_id for s in mos.kv.get(CUBE, reply.kv_entry).sources}
    by_id = {m.id: m for m in reply.memories}
    for item_id in reply.retrieved:
        if item_id not in result.line_tokens:
            line = model.split_prompt(render_block([by_id[item_id]]), "").prefix
            result.line_tokens[item_id] = len(line) - header
        result.retrieved_tokens += result.line_tokens[item_id]
        result.served_tokens += result.line_tokens[item_id] if item_id in served else 0


def summary(results: Sequence[RunResult]) -> dict[str, dict[str, float]]:
    by_run: dict[str, dict[str, float]] = {}
    for run in RUNS:
        rows = [r for r in results if r.run == run]
        ttft = [t for r in rows for t in r.ttft_s]
        memory = sum(r.memory_tokens for r in rows)
        retrieved = sum(r.retrieved_tokens for r in rows)
        by_run[run] = {
            "kv_share": sum(r.served_tokens for r in rows) / retrieved if retrieved else 0.0,
            "section_share": sum(r.cached_tokens for r in rows) / memory if memory else 0.0,
            "section_tokens_mean": memory / max(sum(r.questions for r in rows), 1),
            "ttft_mean_s": statistics.fmean(ttft),
            "ttft_p90_s": statistics.quantiles(ttft, n=10)[-1] if len(ttft) > 1 else ttft[0],
            "prefill_tokens": sum(r.prompt_tokens + r.built_tokens for r in rows),
            "scheduler_cpu_share": sum(r.scheduler_cpu_s for r in rows)
            / max(sum(r.cpu_s for r in rows), 1e-9),
            "peak_kv_bytes": max(r.peak_kv_bytes for r in rows),
            "peak_over_budget": max(r.peak_kv_bytes / max(r.kv_budget, 1) for r in rows),
            "budget_ok": float(all(r.peak_kv_bytes <= r.kv_budget for r in rows)),
            "migrations": sum(r.migrations for r in rows),
        }
    return by_run


def main(argv: Sequence[str] | None = None) -> int:
    configure_environment()
    args = parse_args(argv)
    from memos import MiniLMEmbedder
    from memos.engine._engine import DEFAULT_MODEL_CACHE
    from memos.llm import LocalModel

    model = LocalModel.load(None, cache_dir=DEFAULT_MODEL_CACHE.expanduser())
    embedder = MiniLMEmbedder()
    results = []
    for sid, trace in conversations(args.path, args.conversations, args.questions):
        for run in RUNS:
            result = run_one(run, sid, trace, model, embedder, args)
            results.append(result)
            print(
                f"{sid} {run:>6}: share {result.share:.2f}, mean TTFT "
                f"{statistics.fmean(result.ttft_s) * 1000:.0f} ms, {result.migrations} "
                f"migrations, peak KV {result.peak_kv_bytes} of {result.kv_budget} bytes",
                flush=True,
            )
    figures = summary(results)
    for run, row in figures.items():
        print(run, json.dumps(row))
    on, off, oracle = figures["on"], figures["off"], figures["oracle"]
    RESULTS_DIR.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = RESULTS_DIR / f"scheduler_trace-{stamp}.json"
    runs = [asdict(r) | {"line_tokens": len(r.line_tokens)} for r in results]
    payload = {"args": vars(args) | {"path": str(args.path)}, "figures": figures,
               "runs": runs, "machine": machine_info()}  # fmt: skip
    out.write_text(json.dumps(payload, indent=2, default=str), encoding="utf-8")
    print(f"results: {out}")
    print(
        f"kv_share={on['kv_share']:.3f} oracle_share={oracle['kv_share']:.3f} "
        f"of_oracle={on['kv_share'] / oracle['kv_share'] if oracle['kv_share'] else 0:.3f} "
        f"ttft_ratio={on['ttft_mean_s'] / off['ttft_mean_s']:.3f} "
        f"overhead={on['scheduler_cpu_share']:.3f} "
        f"budget_ok={'true' if on['budget_ok'] and oracle['budget_ok'] else 'false'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
