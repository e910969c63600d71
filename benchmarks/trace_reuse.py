"""How much of a LoCoMo trace's retrieval the past predicts: the ceiling of any KV policy that
learns from use, measured on retrieval alone (no model).

For each conversation, its turns are added to a cube and its questions searched in order
(``k`` = 5, as chat retrieves). A chat's prompt uses one KV block as its prefix, so the share
of retrieved memories a policy can serve is bounded by how well one set of memories, as large as
the KV budget allows (``--budget-share`` of the turns, 10%), covers each question's hits:

- **seen**: the share of a question's hits that questions before the last tick (every
  ``--tick-every`` questions) retrieved at all, whatever the budget: what use could know;
- **online**: the share held by the set of the memories retrieved most often before the last
  tick, as many as the budget allows: the best a policy that learns only from use does;
- **oracle**: the same for the set of the memories the whole trace retrieves most often: the
  ceiling with foresight.

Shares count memories, not tokens (the two differ by a few points on LoCoMo, whose turns are of
similar length). The last line prints the means over conversations as ``key=value`` pairs.

    python benchmarks/trace_reuse.py ../shared/data/locomo/locomo_dev.json --questions 150
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from ingest_search import configure_environment, turn_record  # this folder
from scheduler_trace import conversations


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("path", type=Path, help="a LoCoMo-format JSON file")
    parser.add_argument("--conversations", type=int, default=None, help="only the first N")
    parser.add_argument("--questions", type=int, default=None, help="per conversation")
    parser.add_argument("--tick-every", type=int, default=10)
    parser.add_argument("--budget-share", type=float, default=0.10)
    parser.add_argument("--k", type=int, default=5)
    return parser.parse_args(argv)


def shares(hits: Sequence[Sequence[str]], size: int, tick_every: int) -> dict[str, float]:
    """The seen, online and oracle shares of ``hits`` (each question's, in order)."""
    total = sum(len(h) for h in hits)
    oracle = {m for m, _ in Counter(m for h in hits for m in h).most_common(size)}
    seen = online = 0
    for n, found in enumerate(hits):
        before = Counter(m for h in hits[: n // tick_every * tick_every] for m in h)
        kept = {m for m, _ in before.most_common(size)}
        seen += sum(m in before for m in found)
        online += sum(m in kept for m in found)
    return {
        "seen": seen / total,
        "online": online / total,
        "oracle": sum(m in oracle for h in hits for m in h) / total,
    }


def main(argv: Sequence[str] | None = None) -> int:
    configure_environment()
    args = parse_args(argv)
    from memos import MemOS, MiniLMEmbedder

    embedder = MiniLMEmbedder()
    rows = []
    for sid, (own, asked) in conversations(args.path, args.conversations, args.questions):
        with tempfile.TemporaryDirectory(prefix="memos-reuse-") as tmp:
            mos = MemOS.open(Path(tmp) / "data", embedder=embedder)
            mos.create_cube("trace")
            mos.add_many([turn_record(t) for t in own], cube="trace")
            hits = [[h.item.id for h in mos.search(q, cube="trace", k=args.k)] for q in asked]
            mos.close()
        size = max(1, int(args.budget_share * len(own)))
        row = shares(hits, size, args.tick_every)
        rows.append(row)
        print(f"{sid}: {len(own)} turns, {len(asked)} questions, a set of {size}: "
              + ", ".join(f"{k} {v:.3f}" for k, v in row.items()), flush=True)  # fmt: skip
    means = {key: statistics.fmean(r[key] for r in rows) for key in ("seen", "online", "oracle")}
    print(" ".join(f"{key}={value:.3f}" for key, value in means.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
