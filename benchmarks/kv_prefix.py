"""Activation-memory benchmark: a stored KV prefix reused against recomputing it, SmolLM2-135M.

A memory block of P tokens (consecutive LoCoMo dialogue turns, rendered by the real block
template as the system message) is stored through the real path, ``mos.kv.build``, once per
storage dtype (fp32, bf16, int8), for P ≈ 256, 1024 and 2048, all in one run. Measured side by
side, on the same prompt ids, in the same process:

1. time to first token (TTFT) from the prompt ids: the cached prefix resident in RAM against
   full recomputation (``prefix=None``) and against the question alone with no memory at all,
   interleaved in rotating order, medians; next to the ideal floor ``Q / (P + Q)`` of the full
   time. A profile of one cached TTFT per P shows where the time goes.
2. exactness: greedy tokens of ``mos.chat`` with the stored cache (for bf16 and int8, the cache
   decoded from the stored bytes) against ``mos.chat(use_kv=False)``, over several questions.
3. bytes per cached token of the stored safetensors blob, per dtype, and the ratio to fp32.
4. load time of a stored cache from a file: read + ``cache_from_bytes`` + ``ResidentPrefix``.
5. the invariant that use never mutates a stored cache: every resident prefix's digest is the
   same after all the chats as right after it was built, and as the stored bytes decode to.

    python benchmarks/kv_prefix.py ../shared/data/locomo/locomo_dev.json
    python benchmarks/kv_prefix.py --quick          # a small smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
DEFAULT_LOCOMO = HERE.parent.parent / "shared" / "data" / "locomo" / "locomo_dev.json"
RESULTS_DIR = HERE / "results"
DTYPES = ("fp32", "bf16", "int8")
_SESSION_KEY = re.compile(r"session_(\d+)$")
_SESSION_DATE = "%I:%M %p on %d %B, %Y"  # LoCoMo's "1:56 pm on 8 May, 2023"
# goals of the issue
FLOOR_FACTOR = 2.0  # cached TTFT within 2x of the ideal floor ...
MIN_REDUCTION = 0.90  # ... i.e. at least 90% less than recomputing
GOAL_FROM_P = 1024  # ... at P = 1024 and 2048
MIN_INT8_SHRINK = 3.5
MIN_INT8_AGREEMENT = 0.95


# -- configuration ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Config:
    locomo: Path
    sizes: tuple[int, ...]
    questions: int
    new_tokens: int
    reps: int
    load_reps: int
    threads: int
    model_cache: Path
    conversation: int
    q_tokens: tuple[int, int]
    profile: bool
    quick: bool
    workdir: Path | None
    out_dir: Path


def parse_args(argv: Sequence[str] | None) -> Config:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("locomo", nargs="?", type=Path, default=DEFAULT_LOCOMO)
    parser.add_argument("--sizes", default="256,1024,2048", help="block sizes P in tokens")
    parser.add_argument("--questions", type=int, default=10, help="questions per P (exactness)")
    parser.add_argument("--new-tokens", type=int, default=32, help="greedy tokens per answer")
    parser.add_argument("--reps", type=int, default=7, help="TTFT repetitions per path")
    parser.add_argument("--load-reps", type=int, default=5, help="repetitions of a cache load")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument(
        "--model-cache",
        type=Path,
        default=Path("~/.cache/memos/models"),
        help="where the bundled GGUF is converted once to safetensors",
    )
    parser.add_argument("--conversation", type=int, default=0, help="LoCoMo conversation index")
    parser.add_argument(
        "--q-tokens", default="17,23", help="accepted question length (user turn + headers)"
    )
    parser.add_argument("--no-profile", action="store_true", help="skip the TTFT profile")
    parser.add_argument("--quick", action="store_true", help="smoke run: P=256, 2 questions")
    parser.add_argument("--workdir", type=Path, default=None, help="where the data dir goes")
    parser.add_argument("--out-dir", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)
    sizes = tuple(int(s) for s in args.sizes.split(","))
    questions, new_tokens, reps, load_reps = (
        args.questions, args.new_tokens, args.reps, args.load_reps,
    )  # fmt: skip
    if args.quick:
        sizes, questions, new_tokens, reps, load_reps = (256,), 2, 8, 2, 2
    low, high = (int(x) for x in args.q_tokens.split(","))
    return Config(
        locomo=args.locomo,
        sizes=sizes,
        questions=questions,
        new_tokens=new_tokens,
        reps=reps,
        load_reps=load_reps,
        threads=args.threads,
        model_cache=args.model_cache.expanduser(),
        conversation=args.conversation,
        q_tokens=(low, high),
        profile=not args.no_profile,
        quick=args.quick,
        workdir=args.workdir,
        out_dir=args.out_dir,
    )


# -- data -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Turn:
    """One LoCoMo dialogue turn as a memory: ``speaker: text``, dated by its session."""

    text: str
    dia_id: str
    occurred_at: datetime


@dataclass(frozen=True)
class Question:
    text: str
    evidence: tuple[str, ...]
    q_tokens: int
    in_block: bool


def load_conversation(path: Path, index: int) -> tuple[str, list[Turn], list[dict[str, Any]]]:
    data = json.loads(path.read_text(encoding="utf-8"))
    sample = data[index]
    conversation = sample["conversation"]
    sessions = sorted(int(m[1]) for key in conversation if (m := _SESSION_KEY.match(key)))
    turns: list[Turn] = []
    for number in sessions:
        date = datetime.strptime(
            str(conversation[f"session_{number}_date_time"]), _SESSION_DATE
        ).replace(tzinfo=UTC)
        for turn in conversation[f"session_{number}"]:
            text = " ".join(str(turn.get("text", "")).split())
            if text:
                turns.append(Turn(f"{turn['speaker']}: {text}", str(turn["dia_id"]), date))
    return str(sample["sample_id"]), turns, list(sample["qa"])


def block_turns(
    prefix_tokens: Callable[[Sequence[Turn]], int], turns: Sequence[Turn], target: int
) -> list[Turn]:
    """Consecutive turns from the first whose block is ``target`` tokens or just under: the
    last turn is cut at a word boundary when the whole turn would pass the target."""
    chosen: list[Turn] = []
    for turn in turns:
        chosen.append(turn)
        if prefix_tokens(chosen) >= target:
            break
    else:
        raise SystemExit(f"the conversation has fewer than {target} tokens of turns")
    if prefix_tokens(chosen) == target:
        return chosen
    last = chosen.pop()
    words = last.text.split()
    low, high = 1, len(words) - 1  # the largest cut that stays within the target
    best = 0
    while low <= high:
        middle = (low + high) // 2
        cut = Turn(" ".join(words[:middle]), last.dia_id, last.occurred_at)
        if prefix_tokens([*chosen, cut]) <= target:
            best, low = middle, middle + 1
        else:
            high = middle - 1
    if best:
        chosen.append(Turn(" ".join(words[:best]), last.dia_id, last.occurred_at))
    return chosen


def pick_questions(
    qa: Sequence[Mapping[str, Any]],
    q_tokens: Callable[[str], int],
    block_ids: set[str],
    count: int,
    window: tuple[int, int],
) -> list[Question]:
    """The first ``count`` questions (file order) of the accepted length, those whose evidence
    lies in the block first. Nothing here looks at the model's answers."""
    candidates: list[Question] = []
    seen: set[str] = set()
    for entry in qa:
        text = " ".join(str(entry.get("question", "")).split())
        if not text or text in seen:
            continue
        seen.add(text)
        n = q_tokens(text)
        if window[0] <= n <= window[1]:
            evidence = tuple(str(e) for e in entry.get("evidence", []))
            inside = bool(evidence) and set(evidence) <= block_ids
            candidates.append(Question(text, evidence, n, inside))
    candidates.sort(key=lambda q: not q.in_block)  # stable: file order within each group
    if len(candidates) < count:
        raise SystemExit(f"only {len(candidates)} questions of {window} tokens")
    return candidates[:count]


# -- measuring --------------------------------------------------------------------------------


def first_token(model: Any, ids: Sequence[int], prefix: Any) -> tuple[float, int]:
    """Seconds from the prompt ids to the first greedy token, and that token."""
    start = time.perf_counter()
    tokens = model.stream(ids, max_new_tokens=1, prefix=prefix)
    token = next(tokens)
    seconds = time.perf_counter() - start
    tokens.close()
    return seconds, token


def first_piece(mos: Any, question: str, cube: str) -> float:
    """Seconds from ``mos.chat_stream(question)`` to its first text piece (the whole SDK path:
    retrieval, finding the covering block, rendering and tokenizing the prompt, generation)."""
    start = time.perf_counter()
    stream = mos.chat_stream(question, cube=cube, max_new_tokens=1)
    pieces = iter(stream)
    next(pieces)
    seconds = time.perf_counter() - start
    for _ in pieces:  # finish, so the use is recorded outside the timing
        pass
    return seconds


def agreement(reference: Sequence[int], other: Sequence[int]) -> tuple[int, int, int]:
    """(positions compared, agreeing up to the first divergence, agreeing position by
    position); an answer that stops early disagrees at every position the other goes on."""
    length = max(len(reference), len(other))
    common = 0
    for a, b in zip(reference, other, strict=False):
        if a != b:
            break
        common += 1
    same = sum(a == b for a, b in zip(reference, other, strict=False))
    return length, common, same


def last_logits(model: Any, ids: Sequence[int], prefix: Any) -> Any:
    """Logits after ``ids`` from one forward pass (from ``prefix`` when given)."""
    import torch

    start = 0 if prefix is None else prefix.length
    step = torch.tensor([list(ids[start:])], dtype=torch.long)
    with torch.inference_mode():
        if prefix is None:
            return model.model(input_ids=step, use_cache=False, logits_to_keep=1).logits[0, -1]
        with prefix.session(step.shape[1]) as cache:
            out = model.model(input_ids=step, cache=cache, use_cache=True, logits_to_keep=1)
            return out.logits[0, -1]


def divergences(
    model: Any,
    prompt_ids: Sequence[int],
    reference: Sequence[int],
    other: Sequence[int],
    residents: Mapping[str, Any],
    dtype: str,
) -> dict[str, Any] | None:
    """Where a cached answer first leaves the recomputed one: the recomputed run's margin
    between its two best tokens there, and how far the cached logits are from it (for this
    dtype and, as the noise floor of reordered float sums, for the fp32 cache)."""
    position = next(
        (i for i, (a, b) in enumerate(zip(reference, other, strict=False)) if a != b),
        min(len(reference), len(other)),
    )
    if list(reference) == list(other):
        return None
    ids = [*prompt_ids, *reference[:position]]
    full = last_logits(model, ids, None)
    top = full.topk(2).values
    return {
        "position": position,
        "margin": float(top[0] - top[1]),
        "delta": float((last_logits(model, ids, residents[dtype]) - full).abs().max()),
        "delta_fp32_cache": float((last_logits(model, ids, residents["fp32"]) - full).abs().max()),
    }


def relative_error(resident: Any, exact: Any) -> tuple[float, float]:
    """Mean over layers of ||stored - fp32|| / ||fp32||, keys and values."""
    keys, values = [], []
    for (k, v), (k0, v0) in zip(resident.layers, exact.layers, strict=True):
        keys.append(float((k - k0).norm() / k0.norm()))
        values.append(float((v - v0).norm() / v0.norm()))
    return statistics.mean(keys), statistics.mean(values)


def profile_ttft(model: Any, ids: Sequence[int], prefix: Any) -> dict[str, float]:
    """Self CPU ms of one first-token call, grouped by kind of operation."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        first_token(model, ids, prefix)
    groups = {"matmul": 0.0, "attention": 0.0, "copy": 0.0, "other": 0.0}
    for event in prof.key_averages():
        ms = event.self_cpu_time_total / 1000.0
        name = event.key
        if name in ("aten::mm", "aten::addmm", "aten::bmm"):
            groups["matmul"] += ms
        elif "scaled_dot_product" in name or "flash_attention" in name:
            groups["attention"] += ms
        elif name in ("aten::copy_", "aten::clone", "aten::contiguous"):
            groups["copy"] += ms
        else:
            groups["other"] += ms
    groups["total"] = sum(groups.values())
    return groups


@dataclass
class SizeResult:
    target: int
    tokens: int
    items: int
    turns: str
    questions: list[dict[str, Any]] = field(default_factory=list)
    entries: dict[str, dict[str, Any]] = field(default_factory=dict)
    ttft_question: str = ""
    ttft_q_tokens: int = 0
    ttft_s: dict[str, list[float]] = field(default_factory=dict)
    ttft_same_token: bool = True
    profile_ms: dict[str, dict[str, float]] = field(default_factory=dict)
    exact: dict[str, dict[str, Any]] = field(default_factory=dict)
    load_s: dict[str, dict[str, float]] = field(default_factory=dict)
    digests: dict[str, dict[str, Any]] = field(default_factory=dict)


def run_size(
    mos: Any,
    model: Any,
    target: int,
    turns: Sequence[Turn],
    qa: Sequence[Mapping[str, Any]],
    config: Config,
    work: Path,
    log: Callable[[str], None],
) -> tuple[SizeResult, dict[str, Any]]:
    from memos.activation import render_block
    from memos.activation._tensors import cache_from_bytes
    from memos.llm import ResidentPrefix

    def prefix_tokens(chosen: Sequence[Turn]) -> int:
        return len(model.split_prompt(render_block(chosen), "").prefix)  # type: ignore[arg-type]

    block = block_turns(prefix_tokens, turns, target)
    block_ids = {t.dia_id for t in block}
    questions = pick_questions(
        qa,
        lambda q: len(model.split_prompt("", q).rest),
        block_ids,
        config.questions,
        config.q_tokens,
    )
    result = SizeResult(
        target=target,
        tokens=prefix_tokens(block),
        items=len(block),
        turns=f"{block[0].dia_id}..{block[-1].dia_id}",
        questions=[asdict(q) for q in questions],
    )
    log(f"P≈{target}: {result.items} turns {result.turns}, {result.tokens} tokens; building")

    # 1. one cube per storage dtype, the same turns, a KV block built by the real path
    cubes: dict[str, str] = {}
    residents: dict[str, Any] = {}
    for dtype in DTYPES:
        cube = f"p{target}-{dtype}"
        mos.create_cube(cube, kv_dtype=dtype)
        records = [
            {"text": t.text, "occurred_at": t.occurred_at, "metadata": {"dia_id": t.dia_id}}
            for t in block
        ]
        items = mos.add_many(records, cube=cube)
        start = time.perf_counter()
        entry = mos.kv.build(cube, [item.id for item in items])
        build_s = time.perf_counter() - start
        if entry.tokens != result.tokens:
            raise SystemExit(f"built {entry.tokens} tokens, expected {result.tokens}")
        data = mos.store.get_blob(entry.blob)
        resident = mos.kv.load(entry)  # the object every chat of this cube will use
        cubes[dtype], residents[dtype] = cube, resident
        result.entries[dtype] = {
            "entry": entry.id,
            "bytes": len(data),
            "bytes_per_token": len(data) / entry.tokens,
            "build_s": build_s,
        }
        result.digests[dtype] = {
            "built": resident.digest(),
            "stored": ResidentPrefix(*cache_from_bytes(data, entry.manifest)).digest(),
        }
        # 4. load from a file
        path = work / f"p{target}-{dtype}.safetensors"
        path.write_bytes(data)
        ResidentPrefix(*cache_from_bytes(path.read_bytes(), entry.manifest))  # warm-up
        reads, decodes = [], []
        for _ in range(config.load_reps):
            start = time.perf_counter()
            raw = path.read_bytes()
            read = time.perf_counter()
            ResidentPrefix(*cache_from_bytes(raw, entry.manifest))
            decodes.append(time.perf_counter() - read)
            reads.append(read - start)
        result.load_s[dtype] = {
            "read": statistics.median(reads),
            "decode": statistics.median(decodes),
            "total": statistics.median(r + d for r, d in zip(reads, decodes, strict=True)),
        }

    # 2. TTFT, interleaved in rotating order
    question = questions[0]
    prompt = model.split_prompt(render_block(block), question.text)  # type: ignore[arg-type]
    if prompt.prefix != residents["fp32"].token_ids:
        raise SystemExit("the benchmark's prompt does not start with the stored block")
    ids, rest = prompt.ids, prompt.rest
    result.ttft_question, result.ttft_q_tokens = question.text, len(rest)
    paths: dict[str, Callable[[], tuple[float, int | None]]] = {
        "cached": lambda: first_token(model, ids, residents["fp32"]),
        "full": lambda: first_token(model, ids, None),
        "question_only": lambda: first_token(model, rest, None),
        "chat_stream_cached": lambda: (first_piece(mos, question.text, cubes["fp32"]), None),
    }
    names = list(paths)
    log(f"P={result.tokens}: TTFT, {config.reps} rounds of {', '.join(names)}")
    for name in names:  # warm-up
        paths[name]()
    result.ttft_s = {name: [] for name in names}
    for rep in range(config.reps):
        order = names[rep % len(names) :] + names[: rep % len(names)]
        tokens: dict[str, int | None] = {}
        for name in order:
            seconds, token = paths[name]()
            result.ttft_s[name].append(seconds)
            tokens[name] = token
        result.ttft_same_token &= tokens["cached"] == tokens["full"]
    if config.profile:
        result.profile_ms = {
            "cached": profile_ttft(model, ids, residents["fp32"]),
            "question_only": profile_ttft(model, rest, None),
        }

    # 3. exactness through mos.chat
    log(f"P={result.tokens}: greedy answers, {len(questions)} questions x (full + {DTYPES})")
    answers: dict[str, list[list[int]]] = {"full": [], **{d: [] for d in DTYPES}}
    for q in questions:
        reply = mos.chat(q.text, cube=cubes["fp32"], max_new_tokens=config.new_tokens, use_kv=False)
        if reply.cached_tokens != 0:
            raise SystemExit("use_kv=False read a cache")
        answers["full"].append(list(reply.tokens))
        for dtype in DTYPES:
            reply = mos.chat(q.text, cube=cubes[dtype], max_new_tokens=config.new_tokens)
            if reply.cached_tokens != result.tokens or reply.kv_entry is None:
                raise SystemExit(f"the {dtype} chat did not use its stored block")
            answers[dtype].append(list(reply.tokens))
    for dtype in DTYPES:
        counts = [agreement(a, b) for a, b in zip(answers["full"], answers[dtype], strict=True)]
        result.exact[dtype] = {
            "identical": sum(a == b for a, b in zip(answers["full"], answers[dtype], strict=True)),
            "answers": len(questions),
            "positions": sum(c[0] for c in counts),
            "to_first_divergence": sum(c[1] for c in counts),
            "position_by_position": sum(c[2] for c in counts),
            "relative_error": relative_error(residents[dtype], residents["fp32"]),
            "divergences": [],
        }
        for q, reference, other in zip(questions, answers["full"], answers[dtype], strict=True):
            prompt = model.split_prompt(render_block(block), q.text)  # type: ignore[arg-type]
            found = divergences(model, prompt.ids, reference, other, residents, dtype)
            if found is not None:
                result.exact[dtype]["divergences"].append({"question": q.text, **found})

    # 5. the stored caches were never written
    for dtype in DTYPES:
        entry = mos.kv.get(cubes[dtype], result.entries[dtype]["entry"])
        still = mos.kv.load(entry)
        result.digests[dtype]["after"] = residents[dtype].digest()
        result.digests[dtype]["same_object"] = still is residents[dtype]
        result.digests[dtype]["unchanged"] = (
            result.digests[dtype]["built"]
            == result.digests[dtype]["after"]
            == result.digests[dtype]["stored"]
        )
    return result, {
        "answers": answers,
        "texts": {k: [model.decode(a) for a in v] for k, v in answers.items()},
    }


# -- reporting --------------------------------------------------------------------------------


def markdown(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def ms(seconds: float) -> str:
    return f"{seconds * 1000:,.0f}" if seconds >= 0.1 else f"{seconds * 1000:.1f}"


def ttft_summary(r: SizeResult) -> dict[str, float]:
    med = {name: statistics.median(values) for name, values in r.ttft_s.items()}
    floor_ratio = r.ttft_q_tokens / (r.tokens + r.ttft_q_tokens)
    floor_s = med["full"] * floor_ratio
    return {
        **med,
        "floor_ratio": floor_ratio,
        "floor_s": floor_s,
        "cached/full": med["cached"] / med["full"],
        "cached/floor": med["cached"] / floor_s,
        "reduction": 1 - med["cached"] / med["full"],
        "question_only/floor": med["question_only"] / floor_s,
    }


def ttft_table(results: Sequence[SizeResult]) -> str:
    rows = []
    for r in results:
        s = ttft_summary(r)
        rows.append([
            f"{r.tokens:,}", str(r.ttft_q_tokens), ms(s["full"]), ms(s["cached"]),
            ms(s["question_only"]), ms(s["chat_stream_cached"]), ms(s["floor_s"]),
            f"{s['cached/full']:.3f}", f"{s['floor_ratio']:.3f}", f"{s['cached/floor']:.2f}",
            f"{s['question_only/floor']:.2f}", f"{s['reduction']:.1%}",
        ])  # fmt: skip
    headers = [
        "P", "Q", "full ms", "cached ms", "question alone ms", "`chat_stream` cached ms",
        "ideal floor ms", "cached ÷ full", "floor Q/(P+Q)", "cached ÷ floor",
        "question alone ÷ floor", "TTFT reduction",
    ]  # fmt: skip
    return markdown(headers, rows)


def profile_table(results: Sequence[SizeResult]) -> str:
    rows = []
    for r in results:
        for name, label in (("question_only", "question alone"), ("cached", "cached")):
            p = r.profile_ms.get(name)
            if p:
                rows.append([
                    f"{r.tokens:,}", label, f"{p['matmul']:.1f}", f"{p['attention']:.1f}",
                    f"{p['copy']:.1f}", f"{p['other']:.1f}", f"{p['total']:.1f}",
                ])  # fmt: skip
    headers = ["P", "first token of", "matmul", "attention", "copies", "other", "total"]
    return markdown(headers, rows)


def exact_table(results: Sequence[SizeResult]) -> str:
    rows = []
    for r in results:
        for dtype in DTYPES:
            e = r.exact[dtype]
            positions = max(e["positions"], 1)
            rows.append([
                f"{r.tokens:,}", dtype, f"{e['identical']}/{e['answers']}",
                f"{e['to_first_divergence'] / positions:.3f}",
                f"{e['position_by_position'] / positions:.3f}", str(e["positions"]),
                f"{e['relative_error'][0]:.4f}", f"{e['relative_error'][1]:.4f}",
            ])  # fmt: skip
    headers = [
        "P", "stored as", "answers identical", "agreement to first divergence",
        "agreement position by position", "positions", "K rel. error", "V rel. error",
    ]  # fmt: skip
    return markdown(headers, rows)


def divergence_table(results: Sequence[SizeResult]) -> str:
    rows = []
    for r in results:
        for dtype in DTYPES:
            for d in r.exact[dtype]["divergences"]:
                rows.append([
                    f"{r.tokens:,}", dtype, d["question"], str(d["position"]),
                    f"{d['margin']:.3f}", f"{d['delta']:.3f}", f"{d['delta_fp32_cache']:.4f}",
                ])  # fmt: skip
    headers = [
        "P", "stored as", "question", "first divergent token", "top-2 logit margin (full)",
        "max abs Δ logit, this cache", "max abs Δ logit, fp32 cache",
    ]  # fmt: skip
    return markdown(headers, rows) if rows else "(no answer diverged)"


def bytes_table(results: Sequence[SizeResult]) -> str:
    rows = []
    for r in results:
        fp32 = r.entries["fp32"]["bytes"]
        for dtype in DTYPES:
            e, load = r.entries[dtype], r.load_s[dtype]
            rows.append([
                f"{r.tokens:,}", dtype, f"{e['bytes']:,}", f"{e['bytes_per_token']:,.0f}",
                f"{fp32 / e['bytes']:.2f}", ms(load["read"]), ms(load["decode"]),
                ms(load["total"]), f"{e['build_s']:.2f}",
            ])  # fmt: skip
    headers = [
        "P", "stored as", "blob bytes", "bytes/token", "fp32 ÷ this", "load: read ms",
        "load: decode + ResidentPrefix ms", "load total ms", "`kv.build` s",
    ]  # fmt: skip
    return markdown(headers, rows)


def digest_lines(results: Sequence[SizeResult]) -> list[str]:
    lines = []
    for r in results:
        for dtype in DTYPES:
            d = r.digests[dtype]
            state = "unchanged" if d["unchanged"] and d["same_object"] else "CHANGED"
            lines.append(f"P={r.tokens} {dtype}: digest {d['after'][:16]}… {state}")
    return lines


def goals(results: Sequence[SizeResult]) -> list[tuple[str, bool]]:
    verdicts = []
    for r in results:
        if r.target >= GOAL_FROM_P:
            s = ttft_summary(r)
            verdicts.append(
                (
                    f"P={r.tokens}: cached TTFT within {FLOOR_FACTOR:g}× of the ideal floor "
                    f"(measured {s['cached/floor']:.2f}×)",
                    s["cached/floor"] <= FLOOR_FACTOR,
                )
            )
            verdicts.append(
                (
                    f"P={r.tokens}: TTFT reduction ≥ {MIN_REDUCTION:.0%} "
                    f"(measured {s['reduction']:.1%})",
                    s["reduction"] >= MIN_REDUCTION,
                )
            )
    fp32_same = all(r.exact["fp32"]["identical"] == r.exact["fp32"]["answers"] for r in results)
    verdicts.append(("fp32: greedy tokens identical with and without the cache", fp32_same))
    for r in results:
        shrink = r.entries["fp32"]["bytes"] / r.entries["int8"]["bytes"]
        e = r.exact["int8"]
        rate = e["to_first_divergence"] / max(e["positions"], 1)
        overall = e["position_by_position"] / max(e["positions"], 1)
        verdicts.append(
            (
                f"P={r.tokens}: int8 ≥ {MIN_INT8_SHRINK:g}× smaller than fp32 "
                f"(measured {shrink:.2f}×)",
                shrink >= MIN_INT8_SHRINK,
            )
        )
        verdicts.append(
            (
                f"P={r.tokens}: int8 token agreement ≥ {MIN_INT8_AGREEMENT:.0%} "
                f"(to first divergence {rate:.1%}, position by position {overall:.1%})",
                rate >= MIN_INT8_AGREEMENT,
            )
        )
    verdicts.append(
        (
            "stored caches unchanged by use (digests)",
            all(d["unchanged"] and d["same_object"] for r in results for d in r.digests.values()),
        )
    )
    return verdicts


# -- main -------------------------------------------------------------------------------------


def machine_info() -> dict[str, Any]:
    import torch
    import transformers

    cpuinfo = Path("/proc/cpuinfo")
    names = re.findall(r"model name\s*:\s*(.+)", cpuinfo.read_text()) if cpuinfo.exists() else []

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=HERE, capture_output=True, text=True)
        return done.stdout.strip() if done.returncode == 0 else ""

    return {
        "git": {"commit": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain"))},
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "cpu": names[0] if names else platform.processor(),
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "transformers": transformers.__version__,
    }


def configure_environment() -> None:
    """Before anything imports transformers: offline, and no tokenizer thread pool."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def main(argv: Sequence[str] | None = None) -> int:
    configure_environment()
    config = parse_args(argv)
    started = time.perf_counter()

    def log(message: str) -> None:
        print(f"[{time.perf_counter() - started:6.1f} s] {message}", file=sys.stderr, flush=True)

    import torch

    torch.set_num_threads(config.threads)
    from memos import HashEmbedder, MemOS
    from memos.llm import LocalModel

    load_at_start = os.getloadavg()
    log(f"load average at start: {load_at_start}; loading SmolLM2 (first run converts the GGUF)")
    start = time.perf_counter()
    model = LocalModel.load(None, cache_dir=config.model_cache)
    model_load_s = time.perf_counter() - start
    sample_id, turns, qa = load_conversation(config.locomo, config.conversation)
    log(f"model loaded in {model_load_s:.1f} s; LoCoMo {sample_id}: {len(turns)} turns")
    # one long forward first, so that no timed path pays first-call costs
    model.generate(
        model.split_prompt(" ".join(t.text for t in turns[:60]), "Hi").ids, max_new_tokens=2
    )

    results: list[SizeResult] = []
    samples: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="memos-kv-bench-", dir=config.workdir) as tmp:
        work = Path(tmp)
        mos = MemOS.open(work / "data", embedder=HashEmbedder(64), model=model)
        try:
            for target in config.sizes:
                result, answers = run_size(mos, model, target, turns, qa, config, work, log)
                results.append(result)
                samples[str(result.tokens)] = answers
        finally:
            mos.close()
    load_at_end = os.getloadavg()

    print(
        f"\nSmolLM2-135M-Instruct fp32, torch {torch.__version__}, {config.threads} threads; "
        f"LoCoMo {sample_id}; load average {load_at_start[0]:.2f} at start, "
        f"{load_at_end[0]:.2f} at end; {time.perf_counter() - started:.0f} s in all\n"
    )
    if config.quick:
        print("QUICK SMOKE CONFIGURATION: too small to be the benchmark's figures.\n")
    print(f"TTFT, median of {config.reps} interleaved rounds (ms):\n")
    print(ttft_table(results))
    if config.profile:
        print("\nWhere one first token's time goes (torch profiler, self CPU ms):\n")
        print(profile_table(results))
    print(
        f"\nGreedy answers, {config.new_tokens} new tokens, {config.questions} questions per P, "
        "cached (decoded from the stored bytes) vs mos.chat(use_kv=False):\n"
    )
    print(exact_table(results))
    print("\nWhere an answer diverged (logits at that position, recomputed in one forward):\n")
    print(divergence_table(results))
    print(f"\nStored size and load from a file (median of {config.load_reps}, page cache warm):\n")
    print(bytes_table(results))
    print("\nInvariant: resident prefixes after every chat\n")
    for line in digest_lines(results):
        print(f"- {line}")
    print("\nGoals\n")
    verdicts = goals(results)
    for text, met in verdicts:
        print(f"- {'MET' if met else 'NOT MET'}: {text}")

    config.out_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    full = config.sizes == (256, 1024, 2048) and not config.quick
    kind = "quick" if config.quick else "full" if full else "custom"
    out = config.out_dir / f"kv_prefix-{kind}-{stamp}.json"
    payload = {
        "benchmark": "benchmarks/kv_prefix.py",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "config": asdict(config),
        "machine": machine_info(),
        "load_average": {"start": load_at_start, "end": load_at_end},
        "model_load_s": model_load_s,
        "locomo_sample": sample_id,
        "sizes": [asdict(r) | {"ttft_summary": ttft_summary(r)} for r in results],
        "answers": samples,
        "goals": [{"goal": text, "met": met} for text, met in verdicts],
    }
    out.write_text(json.dumps(payload, indent=2, default=str), encoding="utf-8")
    print(f"\nresults: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
