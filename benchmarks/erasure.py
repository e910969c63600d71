"""Erasing one user from a large cube: ``forget(user=...)`` on a cube of ``--items`` memories
(default 100,000) of which ``--share`` (default 10%) are the user's, with KV blocks and a
consolidated adapter built partly from them, on SmolLM2-135M.

The cube's memories are made-up sentences, each about one of 1,000 users (``bob`` has the
share asked for), embedded by the deterministic 384-d hash embedder (the erasure's work does
not depend on the embedder; MiniLM would spend 13 minutes on 100k texts before anything is
measured). Four KV blocks of 8 memories are built, two of them holding one of bob's, and one
adapter is consolidated on 8 memories, two of them bob's. In the same run, as the baseline,
bob's memories are added again to a second cube of their own: the erasure is reported as a
multiple of writing the memories it erases. The receipt is then checked with ``verify``.

    HF_HUB_OFFLINE=1 python benchmarks/erasure.py
    HF_HUB_OFFLINE=1 python benchmarks/erasure.py --items 10000 --store redis://127.0.0.1:6379/0

The last line holds the figures as ``key=value`` pairs.
"""

from __future__ import annotations

import argparse
import contextlib
import random
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from ingest_search import configure_environment  # this script's folder

from memos import HashEmbedder, MemoryItem, MemOS, open_store
from memos.engine._engine import DEFAULT_MODEL_CACHE

FAST = {"max_steps": 20, "learning_rate": 0.01, "batch_size": 4, "recall_every": 20}
SUBJECT = "bob"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=100_000, help="memories in the cube")
    parser.add_argument("--share", type=float, default=0.1, help="the subject's share of them")
    parser.add_argument("--store", default=None, help="a store URL (default: a temporary dir)")
    return parser.parse_args(argv)


def records(total: int, share: float, seed: int = 0) -> list[dict[str, object]]:
    rng = random.Random(seed)
    places = ["lisbon", "porto", "paris", "oslo", "kyoto", "lima", "accra", "perth"]
    things = ["tea", "chess", "jazz", "hiking", "sushi", "poetry", "cycling", "opera"]
    made = []
    for n in range(total):
        user = SUBJECT if rng.random() < share else f"user{rng.randrange(999)}"
        text = (
            f"{user} mentioned on day {n} that they like {rng.choice(things)} "
            f"and plan a trip to {rng.choice(places)} with {rng.randrange(2, 9)} friends"
        )
        made.append({"text": text, "user": user})
    return made


@contextlib.contextmanager
def opened(store: str | None) -> Iterator[MemOS]:
    cache = DEFAULT_MODEL_CACHE.expanduser()
    with tempfile.TemporaryDirectory() as tmp:
        if store is None:
            mos = MemOS.open(Path(tmp) / "data", embedder=HashEmbedder(384), model_cache=cache)
        else:
            url = f"{store}{'&' if '?' in store else '?'}prefix=bench-erasure-{time.time_ns()}"
            mos = MemOS(open_store(url), embedder=HashEmbedder(384), model_cache=cache)
        try:
            yield mos
        finally:
            mos.close()


def main(argv: Sequence[str] | None = None) -> int:
    configure_environment()
    args = parse_args(argv)
    made = records(args.items, args.share)
    theirs = [r for r in made if r["user"] == SUBJECT]
    with opened(args.store) as mos:
        started = time.perf_counter()
        mos.create_cube("big")
        items = mos.add_many(made, cube="big", batch_size=2048)
        filled = time.perf_counter() - started
        print(f"filled: {len(items):,} memories in {filled:.1f} s", file=sys.stderr)
        _derive(mos, items)
        mos.search("trip to lisbon", cube="big")
        started = time.perf_counter()
        mos.create_cube("again")
        mos.add_many(theirs, cube="again", batch_size=2048)
        baseline = time.perf_counter() - started
        started = time.perf_counter()
        receipt = mos.forget(user=SUBJECT, cube="big")
        erased = time.perf_counter() - started
        (part,) = receipt.cubes
        started = time.perf_counter()
        report = mos.verify("big", receipt=part.digest)
        verified = time.perf_counter() - started
        left = mos.search(SUBJECT, cube="big", user=SUBJECT, mode="keyword")
    record = part.record
    print(
        f"erased {len(record.items):,} of {len(items):,} memories ({len(part.events):,} event "
        f"payloads, {len(record.blocks)} KV blocks, {len(record.adapters)} adapter versions, "
        f"{len(record.blobs)} blobs) in {erased:.2f} s; adding them took {baseline:.2f} s; "
        f"verify with the receipt {verified:.2f} s ({'ok' if report.ok else report.problem})"
    )
    print(
        f"items={len(items)} erased={len(record.items)} events={len(part.events)} "
        f"blocks={len(record.blocks)} adapters={len(record.adapters)} blobs={len(record.blobs)} "
        f"erase_s={erased:.2f} add_same_s={baseline:.2f} ratio={erased / baseline:.2f} "
        f"verify_s={verified:.2f} verify_ok={str(report.ok).lower()} left={len(left)}"
    )
    return 0 if report.ok and not left else 1


def _derive(mos: MemOS, items: Sequence[MemoryItem]) -> None:
    """Four KV blocks (two holding one of the subject's memories) and one adapter (two of its
    eight memories the subject's), on SmolLM2 (loaded on first use)."""
    mine = [i for i in items if i.user == SUBJECT][:4]
    others = [i for i in items if i.user != SUBJECT][:40]
    for n in range(4):
        block = others[n * 7 : n * 7 + 7] + ([mine[n]] if n < 2 else [others[30 + n]])
        mos.kv.build("big", [i.id for i in block])
    facts = [i.id for i in mine[2:4] + others[28:34]]
    mos.lora.consolidate("big", facts, name="facts", recipe=FAST, density=None)


if __name__ == "__main__":
    raise SystemExit(main())
