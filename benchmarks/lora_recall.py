"""Parametric-memory benchmark: 20 made-up facts consolidated into a LoRA adapter of SmolLM2-135M
(``memos.parametric._train.consolidate``), then asked as questions with no context.

In one run, on the same questions, greedy answers of:

(a) the base model, question only (what the model knows without the facts: nothing);
(b) the base model with all facts in the system message (the retrieval baseline);
(c) each seed's consolidated adapter, question only, the adapter active;
(d) optionally, the adapter stored ComPEFT-compressed (``memos.parametric.compress``) and
    decompressed, question only.

An answer is correct when it contains the expected short answer (case-insensitive). The trainer
sees only the fact texts; the questions and answers are used for scoring alone. Per seed: training
seconds (recall checks included), steps, losses, the trainer's own recall; the adapter's raw size
(fp32 safetensors of its weights) and parameter count. Then the cost of switching adapters per
request, measured two ways (see ``switch_times``).

    python benchmarks/lora_recall.py                 # 3 seeds, 2 threads
    python benchmarks/lora_recall.py --seeds 0 --recipe '{"max_steps": 20}'
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
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
DEFAULT_FACTS = HERE / "data" / "made_up_facts.json"
RESULTS_DIR = HERE / "results"
CONTEXT_HEADER = "Facts you know:"
# goals of the issue
MIN_ACCURACY = 0.80  # adapter, no context
MAX_TRAIN_S = 120.0  # on 2 CPU threads
MAX_COMPRESSED_BYTES = 1_000_000
MAX_SWITCH_MS = 10.0

Log = Callable[[str], None]


@dataclass(frozen=True)
class Config:
    facts: Path
    threads: int
    seeds: tuple[int, ...]
    new_tokens: int
    switch_reps: int
    model_cache: Path
    recipe: dict[str, Any]
    densities: tuple[float, ...]
    baselines: bool
    out_dir: Path


def parse_args(argv: Sequence[str] | None) -> Config:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--facts", type=Path, default=DEFAULT_FACTS)
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument("--seeds", default="0,1,2", help="training seeds, one adapter each")
    parser.add_argument("--new-tokens", type=int, default=40, help="greedy tokens per answer")
    parser.add_argument("--switch-reps", type=int, default=40, help="timed calls per kind")
    parser.add_argument(
        "--model-cache",
        type=Path,
        default=Path("~/.cache/memos/models"),
        help="where the bundled GGUF is converted once to safetensors",
    )
    parser.add_argument("--recipe", default="{}", help="TrainingRecipe fields as JSON")
    parser.add_argument(
        "--densities", default="0.3,0.5", help="ComPEFT densities to score ('' for none)"
    )
    parser.add_argument(
        "--no-baselines", action="store_true", help="skip (a) and (b): recipe experiments only"
    )
    parser.add_argument("--out-dir", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)
    return Config(
        facts=args.facts,
        threads=args.threads,
        seeds=tuple(int(s) for s in args.seeds.split(",")),
        new_tokens=args.new_tokens,
        switch_reps=args.switch_reps,
        model_cache=args.model_cache.expanduser(),
        recipe=dict(json.loads(args.recipe)),
        densities=tuple(float(d) for d in args.densities.split(",") if d.strip()),
        baselines=not args.no_baselines,
        out_dir=args.out_dir,
    )


# -- data and scoring -------------------------------------------------------------------------


@dataclass(frozen=True)
class Item:
    fact: str
    question: str
    answer: str


def load_items(path: Path) -> list[Item]:
    data = json.loads(path.read_text(encoding="utf-8"))
    items = [Item(str(f["fact"]), str(f["question"]), str(f["answer"])) for f in data["facts"]]
    for item in items:  # an answer the question gives away, or the fact lacks, scores nothing
        if correct(item.question, item.answer) or not correct(item.fact, item.answer):
            raise SystemExit(f"bad item: {item}")
    return items


def correct(answer: str, expected: str) -> bool:
    return expected.lower() in " ".join(answer.split()).lower()


@dataclass
class Scored:
    """Greedy answers to every question under one condition."""

    condition: str
    answers: list[str]
    correct: list[bool]
    seconds: float

    @property
    def accuracy(self) -> float:
        return sum(self.correct) / len(self.correct)


def ask_all(
    model: Any,
    items: Sequence[Item],
    condition: str,
    new_tokens: int,
    *,
    context: bool = False,
    adapter: str | None = None,
) -> Scored:
    started = time.perf_counter()
    answers = []
    for item in items:
        messages = [{"role": "user", "content": item.question}]
        if context:
            facts = "\n".join(f"- {i.fact}" for i in items)
            messages.insert(0, {"role": "system", "content": f"{CONTEXT_HEADER}\n{facts}"})
        ids = model.chat_ids(messages)
        answers.append(
            model.decode(model.generate(ids, max_new_tokens=new_tokens, adapter=adapter))
        )
    marks = [correct(a, i.answer) for a, i in zip(answers, items, strict=True)]
    return Scored(condition, answers, marks, time.perf_counter() - started)


# -- one seed ---------------------------------------------------------------------------------


@dataclass
class Compressed:
    density: float
    bytes: int
    scored: Scored


@dataclass
class SeedRun:
    seed: int
    training: dict[str, Any]
    cpu_s: float  # process CPU time of the training (both threads)
    losses: list[float]
    adapter_bytes: int
    parameters: int
    scored: Scored
    compressed: list[Compressed] = field(default_factory=list)


def adapter_bytes(weights: dict[str, Any]) -> int:
    import torch
    from safetensors.torch import save

    return len(save({k: v.to(torch.float32).contiguous() for k, v in weights.items()}))


def run_seed(model: Any, items: Sequence[Item], seed: int, config: Config, log: Log) -> SeedRun:
    from memos.parametric._train import TrainingRecipe, consolidate

    recipe = TrainingRecipe.model_validate(config.recipe | {"seed": seed})
    losses: list[float] = []

    def progress(step: int, total: int, loss: float) -> None:
        losses.append(loss)
        log(f"seed {seed}: step {step}/{total} loss {loss:.3f}")

    name = f"seed{seed}"
    cpu = time.process_time()
    result = consolidate(model, [i.fact for i in items], recipe, adapter=name, progress=progress)
    cpu_s = time.process_time() - cpu
    log(f"seed {seed}: {result.model_dump()}")
    weights = model.adapters.weights(name)
    scored = ask_all(model, items, f"adapter, seed {seed}", config.new_tokens, adapter=name)
    log(f"seed {seed}: adapter answers {scored.accuracy:.0%}")
    run = SeedRun(
        seed, result.model_dump(), cpu_s, losses, adapter_bytes(weights),
        sum(t.numel() for t in weights.values()), scored,
    )  # fmt: skip
    for density in config.densities:
        run.compressed.append(compressed_run(model, items, name, weights, recipe, density, config))
        log(f"seed {seed}: density {density}: {run.compressed[-1].scored.accuracy:.0%}")
    return run


def compressed_run(
    model: Any,
    items: Sequence[Item],
    name: str,
    weights: dict[str, Any],
    recipe: Any,
    density: float,
    config: Config,
) -> Compressed:
    from memos.parametric import compress, decompress

    data = compress(weights, density=density)
    slot = f"{name}-density-{round(density * 1000)}"
    model.adapters.add(slot, recipe.lora_config(), decompress(data))
    try:
        scored = ask_all(model, items, f"{slot}", config.new_tokens, adapter=slot)
    finally:
        model.adapters.remove(slot)
    return Compressed(density, len(data), scored)


# -- switching --------------------------------------------------------------------------------


@dataclass(frozen=True)
class SwitchTimes:
    """Medians in ms. ``switch``/``stay``: ``generate(ids, max_new_tokens=1, adapter=x)`` (one
    forward pass of the question) right after a call through the other adapter / the same one,
    interleaved in the pattern a a b b (so calls alternate switch, stay). ``active_*``: entering
    and leaving ``model.adapters.active(x)`` alone, alternating a/b, the same one, or None."""

    switch_ms: float
    stay_ms: float
    active_alternating_ms: float
    active_same_ms: float
    active_none_ms: float
    add_ms: float  # model.adapters.add of saved weights (a load), median
    reps: int


def switch_times(
    model: Any, ids: list[int], a: str, b: str, config_of_a: dict[str, Any], reps: int
) -> SwitchTimes:
    pattern = [a, a, b, b]
    previous = b
    switch, stay = [], []
    for n in range(4 * reps + 4):
        name = pattern[n % 4]
        start = time.perf_counter()
        model.generate(ids, max_new_tokens=1, adapter=name)
        elapsed = (time.perf_counter() - start) * 1000
        if n >= 4:  # a warm-up pattern first
            (switch if name != previous else stay).append(elapsed)
        previous = name
    return SwitchTimes(
        switch_ms=statistics.median(switch),
        stay_ms=statistics.median(stay),
        active_alternating_ms=_active_ms(model, [a, b], reps * 5),
        active_same_ms=_active_ms(model, [a, a], reps * 5),
        active_none_ms=_active_ms(model, [None, None], reps * 5),
        add_ms=_add_ms(model, a, config_of_a, max(3, reps // 8)),
        reps=reps,
    )


def _active_ms(model: Any, names: list[str | None], reps: int) -> float:
    times = []
    for n in range(reps):
        start = time.perf_counter()
        with model.adapters.active(names[n % 2]):
            pass
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def _add_ms(model: Any, name: str, config: dict[str, Any], reps: int) -> float:
    weights = model.adapters.weights(name)
    times = []
    for n in range(reps):
        start = time.perf_counter()
        model.adapters.add(f"load-{n}", config, weights)
        times.append((time.perf_counter() - start) * 1000)
        model.adapters.remove(f"load-{n}")
    return statistics.median(times)


# -- tables -----------------------------------------------------------------------------------


def _row(cells: Sequence[object]) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = [_row(header), _row(["---"] * len(header))]
    return "\n".join([*lines, *(_row(r) for r in rows)])


def _score_row(name: str, scored: Scored) -> list[object]:
    return [name, f"{sum(scored.correct)}/{len(scored.correct)}", f"{scored.seconds:.0f}"]


def accuracy_table(baselines: Sequence[Scored], runs: Sequence[SeedRun]) -> str:
    names = ["(a) base, question only", "(b) base, all facts in the system message"]
    rows = [_score_row(n, s) for n, s in zip(names, baselines, strict=False)]
    for run in runs:
        rows.append(_score_row(f"(c) adapter seed {run.seed}, question only", run.scored))
        rows += [
            _score_row(f"(d) adapter seed {run.seed}, ComPEFT density {c.density}", c.scored)
            for c in run.compressed
        ]
    return table(["condition", "correct", "answering s"], rows)


def training_table(runs: Sequence[SeedRun]) -> str:
    rows = []
    for run in runs:
        t = run.training
        sizes = ", ".join(f"{c.bytes / 1e3:.0f} KB @ {c.density}" for c in run.compressed)
        rows.append(
            [run.seed, t["steps"], f"{t['seconds']:.1f}", f"{run.cpu_s:.0f}",
             f"{t['first_loss']:.2f}",
             f"{t['last_loss']:.3f}", f"{t['recall']:.0%}", t["stopped_early"],
             f"{run.parameters:,}", f"{run.adapter_bytes / 1e6:.2f} MB", sizes or "-"]
        )  # fmt: skip
    header = [
        "seed", "steps", "train s", "CPU s", "first loss", "last loss", "trainer recall",
        "stopped early", "parameters", "raw fp32", "ComPEFT",
    ]  # fmt: skip
    return table(header, rows)


def per_question_table(items: Sequence[Item], conditions: Sequence[Scored]) -> str:
    rows = []
    for n, item in enumerate(items):
        rows.append(
            [item.question, item.answer, *("✓" if c.correct[n] else "·" for c in conditions)]
        )
    return table(["question", "expected", *(c.condition for c in conditions)], rows)


def switch_table(times: SwitchTimes) -> str:
    rows = [
        ["generate 1 token, after the other adapter", f"{times.switch_ms:.2f}"],
        ["generate 1 token, after the same adapter", f"{times.stay_ms:.2f}"],
        ["→ switching overhead (difference)", f"{times.switch_ms - times.stay_ms:.2f}"],
        ["adapters.active(x) enter+exit, alternating a/b", f"{times.active_alternating_ms:.3f}"],
        ["adapters.active(x) enter+exit, same adapter", f"{times.active_same_ms:.3f}"],
        ["adapters.active(None) enter+exit (base model)", f"{times.active_none_ms:.3f}"],
        ["adapters.add(saved fp32 weights) (a load)", f"{times.add_ms:.1f}"],
    ]
    return table(["what (median)", "ms"], rows)


def goals(runs: Sequence[SeedRun], times: SwitchTimes | None) -> list[tuple[str, bool]]:
    accuracy = [r.scored.accuracy for r in runs]
    seconds = [float(r.training["seconds"]) for r in runs]
    seeds = ", ".join(str(r.seed) for r in runs)
    verdicts = [
        (f"adapter answers ≥ {MIN_ACCURACY:.0%} with no context: "
         f"{', '.join(f'{a:.0%}' for a in accuracy)} (seeds {seeds})",
         min(accuracy) >= MIN_ACCURACY),
        (f"trains in ≤ {MAX_TRAIN_S:.0f} s: {', '.join(f'{s:.0f} s' for s in seconds)}",
         max(seconds) <= MAX_TRAIN_S),
    ]  # fmt: skip
    for density in sorted({c.density for r in runs for c in r.compressed}):
        sizes = [c.bytes for r in runs for c in r.compressed if c.density == density]
        kept = [c.scored.accuracy for r in runs for c in r.compressed if c.density == density]
        verdicts.append(
            (f"≤ 1 MB compressed (ComPEFT density {density}): {max(sizes) / 1e3:.0f} KB, "
             f"answers {', '.join(f'{a:.0%}' for a in kept)}",
             max(sizes) <= MAX_COMPRESSED_BYTES and min(kept) >= MIN_ACCURACY)
        )  # fmt: skip
    if times is not None:
        # the switch itself (pointing the layers at the other adapter), and what a request
        # through the other adapter costs over one through the same; both must be in budget
        overhead = times.switch_ms - times.stay_ms
        switch = times.active_alternating_ms
        verdicts.append(
            (f"switches in ≤ {MAX_SWITCH_MS:.0f} ms: {switch:.3f} ms to switch, "
             f"{overhead:+.2f} ms per request", max(switch, overhead) <= MAX_SWITCH_MS)
        )  # fmt: skip
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
    from memos.llm import LocalModel
    from memos.parametric._train import TrainingRecipe

    recipe = TrainingRecipe.model_validate(config.recipe)
    items = load_items(config.facts)
    load_at_start = os.getloadavg()
    log(f"load average at start: {load_at_start}; recipe {recipe.model_dump(mode='json')}")
    model = LocalModel.load(None, cache_dir=config.model_cache)
    model.generate(model.chat_ids([{"role": "user", "content": "Hi"}]), max_new_tokens=2)

    baselines: list[Scored] = []
    if config.baselines:
        baselines.append(ask_all(model, items, "base", config.new_tokens))
        log(f"base, question only: {baselines[0].accuracy:.0%}")
        baselines.append(ask_all(model, items, "base + facts", config.new_tokens, context=True))
        log(f"base, facts in context: {baselines[1].accuracy:.0%}")
    runs = [run_seed(model, items, seed, config, log) for seed in config.seeds]
    times = None
    if len(runs) >= 2:
        ids = model.chat_ids([{"role": "user", "content": items[0].question}])
        times = switch_times(
            model, ids, "seed" + str(runs[0].seed), "seed" + str(runs[1].seed),
            recipe.lora_config(), config.switch_reps,
        )  # fmt: skip
    for run in runs:
        model.adapters.remove(f"seed{run.seed}")
    load_at_end = os.getloadavg()

    print(
        f"\nSmolLM2-135M-Instruct fp32, torch {torch.__version__}, {config.threads} threads; "
        f"{len(items)} made-up facts; load average {load_at_start[0]:.2f} at start, "
        f"{load_at_end[0]:.2f} at end; {time.perf_counter() - started:.0f} s in all\n"
    )
    print(f"Recipe: `{json.dumps(recipe.model_dump(mode='json'))}`\n")
    print(f"Accuracy (answer contains the expected string), greedy, {config.new_tokens} tokens:\n")
    print(accuracy_table(baselines, runs))
    print("\nTraining (seconds include the recall checks):\n")
    print(training_table(runs))
    print("\nPer question:\n")
    print(per_question_table(items, [*baselines, *(r.scored for r in runs)]))
    if times is not None:
        print(f"\nSwitching adapters (medians of {times.reps}+ calls, interleaved):\n")
        print(switch_table(times))
    print("\nGoals\n")
    verdicts = goals(runs, times)
    for text, met in verdicts:
        print(f"- {'MET' if met else 'NOT MET'}: {text}")

    config.out_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = config.out_dir / f"lora_recall-{stamp}.json"
    payload = {
        "benchmark": "benchmarks/lora_recall.py",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "config": asdict(config) | {"facts": str(config.facts), "out_dir": str(config.out_dir),
                                    "model_cache": str(config.model_cache)},
        "recipe": recipe.model_dump(mode="json"),
        "machine": machine_info(),
        "load_average": {"start": load_at_start, "end": load_at_end},
        "baselines": [asdict(b) for b in baselines],
        "seeds": [asdict(r) for r in runs],
        "switch": None if times is None else asdict(times),
        "goals": [{"goal": text, "met": met} for text, met in verdicts],
    }  # fmt: skip
    out.write_text(json.dumps(payload, indent=1, default=str), encoding="utf-8")
    print(f"\nResults: {out.relative_to(HERE.parent) if out.is_relative_to(HERE.parent) else out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
