"""In-process search on the Redis store against the SQLite store, on the same cube.

One cube of LoCoMo turns (all-MiniLM-L6-v2, the default codec) is seeded in a SQLite data dir
and imported into a fresh Redis prefix, so both stores hold identical items, vectors and logs.
The same searches (other LoCoMo turns, ``k`` = 10) then run through ``MemOS.search`` on each,
alternating store by store in rounds so drift on a shared machine hits both alike. The query
embeddings are computed once beforehand and served from memory: they cost the same on both
stores, and what is measured is what the store adds. Reported per store and mode: p50 and mean
search time, the time spent inside each store method, and for Redis the round trips, commands
and bytes per search.

    python benchmarks/store_search.py ../shared/data/locomo/locomo_dev.json
    python benchmarks/store_search.py --items 2000 --queries 200 --rounds 3
"""

from __future__ import annotations

import argparse
import functools
import json
import random
import statistics
import tempfile
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import redis
from memos.stores.redis import RedisStore
from numpy.typing import NDArray
from redis.connection import Connection
from server_load import DEFAULT_LOCOMO, locomo_turns  # this script's folder

from memos import MemOS, MiniLMEmbedder, open_store

REDIS = "redis://127.0.0.1:6379/0"
CUBE = "search"
MODES = ("hybrid", "dense", "keyword")


class CachedEmbedder:
    """MiniLM, with the vectors of texts embedded beforehand served from memory."""

    def __init__(self, model: MiniLMEmbedder) -> None:
        self._model = model
        self._known: dict[str, NDArray[np.float32]] = {}

    @property
    def name(self) -> str:
        return self._model.name

    @property
    def dim(self) -> int:
        return self._model.dim

    def remember(self, texts: Sequence[str]) -> None:
        vectors = self._model.embed(list(texts))
        self._known.update(zip(texts, vectors, strict=True))

    def embed(self, texts: Sequence[str]) -> NDArray[np.float32]:
        if all(text in self._known for text in texts):
            return np.stack([self._known[text] for text in texts])
        return self._model.embed(texts)


class CountingConnection(Connection):
    """A Redis connection that counts the times it sends (one per round trip)."""

    sends = 0

    def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        CountingConnection.sends += 1
        super().send_packed_command(command, check_health)


class StoreTimer:
    """Wraps a store: seconds spent in each of its methods, from every thread."""

    def __init__(self, store: Any) -> None:
        self._store = store
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._store, name)
        if not callable(value):
            return value

        @functools.wraps(value)
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return value(*args, **kwargs)
            finally:
                with self._lock:
                    self.seconds[name] += time.perf_counter() - start
                    self.calls[name] += 1

        return timed

    def reset(self) -> None:
        self.seconds.clear()
        self.calls.clear()


def redis_net() -> tuple[int, int, int]:
    """The server's commands processed and bytes in and out so far (all clients)."""
    with redis.Redis.from_url(REDIS) as client:
        stats = client.info("stats")
    commands = int(stats["total_commands_processed"])
    return commands, int(stats["total_net_input_bytes"]), int(stats["total_net_output_bytes"])


def seed(tmp: Path, texts: Sequence[str], embedder: CachedEmbedder, prefix: str) -> None:
    """The cube in a SQLite data dir, exported and imported into Redis under ``prefix``."""
    with MemOS.open(tmp / "data", embedder=embedder) as mos:
        mos.create_cube(CUBE)
        mos.add_many(list(texts), cube=CUBE)
        exported = mos.export_cube(CUBE, tmp / "export")
    with MemOS(open_store(f"{REDIS}?prefix={prefix}"), embedder=embedder) as mos:
        mos.import_cube(exported)


@contextmanager
def opened(tmp: Path, embedder: CachedEmbedder, prefix: str) -> Iterator[dict[str, Any]]:
    """Both stores, each wrapped in a timer, under a MemOS as the server would hold them."""
    pool = redis.ConnectionPool.from_url(REDIS, connection_class=CountingConnection)
    on_redis = RedisStore(redis.Redis(connection_pool=pool), prefix=prefix, url=REDIS)
    stores = {"sqlite": open_store(f"sqlite:///{tmp / 'data'}"), "redis": on_redis}
    timers = {name: StoreTimer(store) for name, store in stores.items()}
    handles = {
        "sqlite": MemOS(timers["sqlite"], snapshot_dir=tmp / "data" / "index", embedder=embedder),
        "redis": MemOS(timers["redis"], embedder=embedder),
    }
    try:
        yield {name: (handles[name], timers[name]) for name in stores}
    finally:
        for mos in handles.values():
            mos.close()


def measure(mos: MemOS, timer: StoreTimer, queries: Sequence[str], mode: str) -> dict[str, Any]:
    timer.reset()
    sends, (commands, bytes_in, bytes_out) = CountingConnection.sends, redis_net()
    times = []
    for query in queries:
        start = time.perf_counter()
        mos.search(query, cube=CUBE, k=10, mode=mode)
        times.append((time.perf_counter() - start) * 1000)
    after = redis_net()
    n = len(queries)
    return {
        "ms": times,
        "store_ms": {name: 1000 * s / n for name, s in timer.seconds.items()},
        "round_trips": (CountingConnection.sends - sends) / n,
        "commands": (after[0] - commands) / n - 1,  # less the INFO that read them
        "bytes_in": (after[1] - bytes_in) / n,
        "bytes_out": (after[2] - bytes_out) / n,
    }


def report(runs: dict[tuple[str, str], list[dict[str, Any]]]) -> None:
    for (store, mode), rounds in runs.items():
        times = [t for r in rounds for t in r["ms"]]
        p50s = [statistics.median(r["ms"]) for r in rounds]
        print(f"{store:6} {mode:7} p50 {statistics.median(times):6.2f} ms "
              f"(rounds {', '.join(f'{p:.2f}' for p in p50s)}), "
              f"mean {statistics.fmean(times):6.2f} ms")  # fmt: skip
        last = rounds[-1]
        inside = ", ".join(f"{k} {v:.2f}" for k, v in sorted(last["store_ms"].items()))
        print(f"       store ms per search: {inside}")
        if store == "redis":
            print(f"       per search: {last['round_trips']:.1f} round trips, "
                  f"{last['commands']:.1f} commands, {last['bytes_in'] / 1024:.1f} KiB sent, "
                  f"{last['bytes_out'] / 1024:.1f} KiB received")  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("locomo", type=Path, nargs="?", default=DEFAULT_LOCOMO)
    parser.add_argument("--items", type=int, default=2000, help="memories in the cube")
    parser.add_argument("--queries", type=int, default=200, help="searches per round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds over both stores")
    parser.add_argument("--modes", default="hybrid", help=f"of {', '.join(MODES)}")
    parser.add_argument("--profile", help="a store: cProfile one round of its searches")
    args = parser.parse_args(argv)
    turns = locomo_turns(args.locomo)
    random.Random(0).shuffle(turns)
    texts, queries = turns[: args.items], turns[args.items : args.items + args.queries]
    embedder = CachedEmbedder(MiniLMEmbedder())
    embedder.remember(queries)
    prefix = f"memos-bench-{uuid.uuid4().hex[:8]}"
    runs: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    with tempfile.TemporaryDirectory(prefix="memos-search-") as tmp:
        try:
            seed(Path(tmp), texts, embedder, prefix)
            with opened(Path(tmp), embedder, prefix) as handles:
                for mos, _ in handles.values():  # load the indexes
                    mos.search(queries[0], cube=CUBE, k=10)
                for _ in range(args.rounds):
                    for mode in args.modes.split(","):
                        for name, (mos, timer) in handles.items():
                            runs[(name, mode)].append(measure(mos, timer, queries, mode))
                if args.profile:
                    profile(*handles[args.profile], queries, args.modes.split(",")[0])
        finally:
            drop(prefix)
    report(runs)
    print(json.dumps({f"{s}/{m}": statistics.median(t for r in rs for t in r["ms"])
                      for (s, m), rs in runs.items()}))  # fmt: skip
    return 0


def profile(mos: MemOS, timer: StoreTimer, queries: Sequence[str], mode: str) -> None:
    import cProfile
    import pstats

    profiler = cProfile.Profile()
    profiler.enable()
    measure(mos, timer, queries, mode)
    profiler.disable()
    pstats.Stats(profiler).sort_stats("tottime").print_stats(25)


def drop(prefix: str) -> None:
    with redis.Redis.from_url(REDIS) as client:
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        if keys:
            client.delete(*keys)


if __name__ == "__main__":
    raise SystemExit(main())
