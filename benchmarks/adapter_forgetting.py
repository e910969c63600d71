"""Adapter forgetting benchmark: facts erased from memory, taken out of a consolidated LoRA
adapter of SmolLM2-135M three ways, on 20 made-up facts (``data/made_up_facts.json``).

One adapter is consolidated on all the facts (``memos.parametric._train.consolidate``, the
default recipe); ``--forget`` of them are then erased, and each method gives the adapter that
answers after the erasure:

- **retrain**: a fresh adapter consolidated on the facts kept (what ``mos.lora.retrain`` does);
- **revert**: the version that never saw the facts; for an adapter whose first version saw
  them, that is the base model with no adapter;
- **dampen**: Selective Synaptic Dampening of the trained adapter
  (``memos.parametric._dampen.dampen``): no training, one gradient per fact, erased or kept.

For each: the recall of the erased facts (the goal is the base model's, which knows none of
them), the recall of the kept ones (the goal is at least 90% of the trained adapter's), and the
wall time (the goal for dampening is at most 10% of a retrain). Recall is the project's own
``recall`` (the recipe's recall prompt, greedy, the fact's key in the answer). ``--sweep``
also prints recall over a grid of SSD's alpha and lambda, from one computation of the
importances. The last line prints the figures as ``key=value`` pairs.

    python benchmarks/adapter_forgetting.py                 # 2 threads, 5 of 20 forgotten
    python benchmarks/adapter_forgetting.py --sweep
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
DEFAULT_FACTS = HERE / "data" / "made_up_facts.json"
# goals of the issue
MIN_KEPT = 0.90  # recall of the kept facts, as a share of the trained adapter's
MAX_DAMPEN_SHARE = 0.10  # dampening time, as a share of a retrain's
SWEEP_ALPHAS = (0.5, 1.0, 2.0, 5.0, 10.0)
SWEEP_LAMBDAS = (0.1, 0.3, 0.5, 1.0)

Log = Callable[[str], None]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--facts", type=Path, default=DEFAULT_FACTS)
    parser.add_argument(
        "--forget", default="0,4,8,12,16", help="indices of the facts to erase (comma list)"
    )
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument("--recipe", default="{}", help="TrainingRecipe fields as JSON")
    parser.add_argument("--alpha", type=float, default=None, help="SSD's alpha (default: ours)")
    parser.add_argument("--lam", type=float, default=None, help="SSD's lambda (default: ours)")
    parser.add_argument("--sweep", action="store_true", help="also recall over an alpha×λ grid")
    parser.add_argument(
        "--model-cache",
        type=Path,
        default=Path("~/.cache/memos/models"),
        help="where the bundled GGUF is converted once to safetensors",
    )
    return parser.parse_args(argv)


def load_facts(path: Path) -> list[str]:
    data = json.loads(path.read_text(encoding="utf-8"))
    return [str(f["fact"]) for f in data["facts"]]


@dataclass(frozen=True)
class Outcome:
    """What one adapter (or none) recalls after the erasure, and what it took."""

    method: str
    forgotten: float  # recall of the erased facts
    kept: float  # recall of the facts kept
    seconds: float | None  # wall time of the method (None: nothing to compute)


def recalls(
    model: Any, weights: Any, recipe: Any, forget: list[str], keep: list[str]
) -> tuple[float, float]:
    """The recall of the erased and of the kept facts through ``weights`` (None: base)."""
    from memos.parametric._density import slot
    from memos.parametric._train import recall

    if weights is None:
        base = (recall(model, facts, adapter=None, recipe=recipe) for facts in (forget, keep))
        return next(base), next(base)
    name = slot("bench")
    model.adapters.add(name, recipe.lora_config(), weights)
    try:
        scores = (recall(model, facts, adapter=name, recipe=recipe) for facts in (forget, keep))
        return next(scores), next(scores)
    finally:
        model.adapters.remove(name)


def trained(model: Any, facts: list[str], recipe: Any, log: Log) -> tuple[Any, float]:
    """An adapter consolidated on ``facts``: its weights and the seconds it took."""
    from memos.parametric._density import slot
    from memos.parametric._train import consolidate

    name = slot("train")
    started = time.perf_counter()
    result = consolidate(model, facts, recipe, adapter=name)
    seconds = time.perf_counter() - started
    weights = model.adapters.weights(name)
    model.adapters.remove(name)
    log(f"consolidated {len(facts)} facts: {result.steps} steps, {seconds:.1f} s")
    return weights, seconds


# -- the sweep --------------------------------------------------------------------------------


def sweep(
    model: Any, weights: Any, recipe: Any, forget: list[str], keep: list[str], log: Log
) -> tuple[list[list[object]], float]:
    """Rows of the alpha×λ grid (share dampened, recalls), and the importances' seconds."""
    from memos.parametric._dampen import dampened, importance

    started = time.perf_counter()
    forgotten = importance(model, weights, recipe, forget)
    kept = importance(model, weights, recipe, keep)
    seconds = time.perf_counter() - started
    total = sum(t.numel() for t in weights.values())
    rows: list[list[object]] = []
    for alpha in SWEEP_ALPHAS:
        for lam in SWEEP_LAMBDAS:
            new, count = dampened(weights, forgotten, kept, alpha=alpha, lam=lam)
            lost, held = recalls(model, new, recipe, forget, keep)
            log(f"sweep alpha {alpha} λ {lam}: {lost:.0%} / {held:.0%}")
            rows.append([alpha, lam, f"{count / total:.1%}", *counts(lost, held, forget, keep)])
    return rows, seconds


# -- tables -----------------------------------------------------------------------------------


def table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = [header, ["---"] * len(header), *rows]
    return "\n".join("| " + " | ".join(str(c) for c in line) + " |" for line in lines)


def counts(lost: float, held: float, forget: list[str], keep: list[str]) -> list[str]:
    return [f"{round(lost * len(forget))}/{len(forget)}", f"{round(held * len(keep))}/{len(keep)}"]


def outcome_rows(
    outcomes: Sequence[Outcome], before: Outcome, retrain_s: float, forget: list[str],
    keep: list[str],
) -> list[list[object]]:  # fmt: skip
    rows: list[list[object]] = []
    for o in outcomes:
        seconds = "-" if o.seconds is None else f"{o.seconds:.1f}"
        share = "-" if o.seconds is None else f"{o.seconds / retrain_s:.1%}"
        kept = f"{o.kept / before.kept:.0%}" if before.kept else "-"
        rows.append([o.method, *counts(o.forgotten, o.kept, forget, keep), kept, seconds, share])
    return rows


def goals(
    by: dict[str, Outcome], base: Outcome, before: Outcome, forget: list[str]
) -> list[tuple[str, bool]]:
    verdicts = []
    for method in ("retrain", "revert", "dampen"):
        o = by[method]
        forgot = o.forgotten <= base.forgotten
        kept = o.kept >= MIN_KEPT * before.kept
        verdicts.append(
            (f"{method}: erased facts recalled {round(o.forgotten * len(forget))} "
             f"(base {round(base.forgotten * len(forget))}), kept facts at "
             f"{o.kept / max(before.kept, 1e-9):.0%} of before (goal ≥ {MIN_KEPT:.0%})",
             forgot and kept)
        )  # fmt: skip
    share = (by["dampen"].seconds or 0.0) / (by["retrain"].seconds or 1.0)
    verdicts.append(
        (f"dampen takes {share:.1%} of a retrain's time (goal ≤ {MAX_DAMPEN_SHARE:.0%})",
         share <= MAX_DAMPEN_SHARE)
    )  # fmt: skip
    return verdicts


# -- main -------------------------------------------------------------------------------------


def configure_environment() -> None:
    """Before anything imports transformers: offline, and no tokenizer thread pool."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@dataclass
class Results:
    forget: list[str]
    keep: list[str]
    base: Outcome
    before: Outcome
    retrain: Outcome
    revert: Outcome
    dampen: Outcome
    report: Any  # DampenReport
    grid: list[list[object]]
    importance_s: float  # the sweep's importances


def measure(
    model: Any, facts: list[str], erased: list[int], recipe: Any, ssd: tuple[float, float],
    grid: bool, log: Log,
) -> Results:  # fmt: skip
    """Every method's outcome, on ``facts`` with those at the ``erased`` indices erased."""
    from memos.parametric._dampen import dampen

    forget = [facts[n] for n in erased]
    keep = [f for n, f in enumerate(facts) if n not in erased]

    base = Outcome("base model (no adapter)", *recalls(model, None, recipe, forget, keep), None)
    log(f"base: {base}")
    weights, trained_s = trained(model, facts, recipe, log)
    before = Outcome("trained on all (before)", *recalls(model, weights, recipe, forget, keep),
                     trained_s)  # fmt: skip
    log(f"before: {before}")
    fresh, retrain_s = trained(model, keep, recipe, log)
    retrain = Outcome("retrain", *recalls(model, fresh, recipe, forget, keep), retrain_s)
    revert = Outcome("revert (= base model)", base.forgotten, base.kept, None)
    started = time.perf_counter()
    new, report = dampen(model, weights, recipe, forget, keep, alpha=ssd[0], lam=ssd[1])
    dampen_s = time.perf_counter() - started
    damp = Outcome(f"dampen (α {ssd[0]}, λ {ssd[1]})",
                   *recalls(model, new, recipe, forget, keep), dampen_s)  # fmt: skip
    log(f"dampen: {report}")
    rows, importance_s = sweep(model, weights, recipe, forget, keep, log) if grid else ([], 0.0)
    return Results(forget, keep, base, before, retrain, revert, damp, report, rows, importance_s)


def show(r: Results, ssd: tuple[float, float]) -> None:
    header = ["adapter", "erased recalled", "kept recalled", "kept vs before", "seconds",
              "of a retrain"]  # fmt: skip
    outcomes = [r.base, r.before, r.retrain, r.revert, r.dampen]
    retrain_s = r.retrain.seconds or 1.0
    print(table(header, outcome_rows(outcomes, r.before, retrain_s, r.forget, r.keep)))
    print(
        f"\nDampening: {r.report.dampened:,} of {r.report.parameters:,} parameters "
        f"({r.report.share:.1%}) scaled down, {r.report.seconds:.1f} s (importance included)"
    )
    if r.grid:
        print(f"\nSweep (importances computed once, {r.importance_s:.1f} s):\n")
        print(table(["alpha", "λ", "dampened", "erased recalled", "kept recalled"], r.grid))
    print("\nGoals\n")
    by = {"retrain": r.retrain, "revert": r.revert, "dampen": r.dampen}
    for text, met in goals(by, r.base, r.before, r.forget):
        print(f"- {'MET' if met else 'NOT MET'}: {text}")
    dampen_s = r.dampen.seconds or 0.0
    print(
        f"facts={len(r.forget) + len(r.keep)} erased={len(r.forget)} "
        f"base_erased={r.base.forgotten:.2f} before_erased={r.before.forgotten:.2f} "
        f"before_kept={r.before.kept:.3f} retrain_erased={r.retrain.forgotten:.2f} "
        f"retrain_kept={r.retrain.kept:.3f} retrain_s={retrain_s:.1f} "
        f"revert_erased={r.revert.forgotten:.2f} revert_kept={r.revert.kept:.3f} "
        f"dampen_erased={r.dampen.forgotten:.2f} dampen_kept={r.dampen.kept:.3f} "
        f"dampen_s={dampen_s:.1f} dampen_share={dampen_s / retrain_s:.3f} "
        f"alpha={ssd[0]} lam={ssd[1]}"
    )


def run(args: argparse.Namespace, log: Log) -> int:
    import torch

    from memos.llm import LocalModel
    from memos.parametric._dampen import ALPHA, LAMBDA
    from memos.parametric._train import TrainingRecipe

    torch.set_num_threads(args.threads)
    facts = load_facts(args.facts)
    erased = sorted({int(n) for n in args.forget.split(",")})
    recipe = TrainingRecipe.model_validate(json.loads(args.recipe))
    ssd = (ALPHA if args.alpha is None else args.alpha, LAMBDA if args.lam is None else args.lam)
    load = os.getloadavg()[0]
    model = LocalModel.load(None, cache_dir=args.model_cache.expanduser())
    results = measure(model, facts, erased, recipe, ssd, args.sweep, log)
    print(
        f"\nSmolLM2-135M-Instruct fp32, torch {torch.__version__}, {args.threads} threads on "
        f"{os.cpu_count()} CPUs ({platform.machine()}), load average {load:.2f} at start, "
        f"{os.getloadavg()[0]:.2f} at end; {len(facts)} facts, {len(erased)} erased "
        f"(indices {', '.join(map(str, erased))})\n"
    )
    print(f"Recipe: `{json.dumps(recipe.model_dump(mode='json'))}`\n")
    show(results, ssd)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    configure_environment()
    args = parse_args(argv)
    started = time.perf_counter()

    def log(message: str) -> None:
        print(f"[{time.perf_counter() - started:6.1f} s] {message}", file=sys.stderr, flush=True)

    return run(args, log)


if __name__ == "__main__":
    sys.exit(main())
