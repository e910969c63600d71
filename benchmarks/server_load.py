"""Server load benchmark: the memory server against the embedded SDK, on the same operations.

A load generator (a separate process, on loopback) runs C concurrent clients, each a loop of
80% search / 20% add, bounded in request count and time, against:

(a) ``sdk``: the embedded SDK in the generator's own process (threads calling ``MemOS``), the
    baseline: what the same operations cost without a server;
(b) ``sdk-redis``: the same SDK over the Redis store of (d), so that what a search costs on
    Redis is told apart from what the HTTP server adds;
(c) ``sqlite-server``: one ``memos serve`` process over an embedded (SQLite) data dir;
(d) ``redis-2x``: two ``memos serve`` processes over one Redis store, clients spread over both.

Each store starts from the same cube of LoCoMo turns (all-MiniLM-L6-v2, the default codec);
searches ask other LoCoMo turns, adds write turns not in the cube. Reported per mode and client
count: requests/s, search and add p50/p99 (ms), errors; then each server's p50 overhead on search
over the SDK's and its share of the SDK's search throughput at 8 clients (for ``redis-2x``
against both SDK modes). ``--soak SECONDS``
then drives 8 clients at the SQLite server that long and samples its resident memory.

    python benchmarks/server_load.py ../shared/data/locomo/locomo_dev.json
    python benchmarks/server_load.py --clients 1,8 --requests 200 --items 500   # quick
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
DEFAULT_LOCOMO = HERE.parent.parent / "shared" / "data" / "locomo" / "locomo_dev.json"
RESULTS_DIR = HERE / "results"
MEMOS = Path(sys.executable).parent / "memos"
CUBE = "load"
SEARCH_SHARE = 0.8
REDIS = "redis://127.0.0.1:6379/0"
# goals of the issue
MAX_OVERHEAD_MS = 2.0
MIN_THROUGHPUT_SHARE = 0.80
# (a server mode, the SDK mode it is measured against): the goals are against the SDK
# on SQLite; against the SDK on Redis, what is left is what HTTP and the server add
COMPARISONS = (("sqlite-server", "sdk"), ("redis-2x", "sdk"), ("redis-2x", "sdk-redis"))


# -- the texts ---------------------------------------------------------------------------------


def locomo_turns(path: Path) -> list[str]:
    data = json.loads(path.read_text(encoding="utf-8"))
    conversations = data if isinstance(data, list) else data.get("conversations", data)
    turns = []
    for sample in conversations:
        conversation = sample["conversation"]
        for key, session in conversation.items():
            if key.startswith("session_") and isinstance(session, list):
                turns += [str(t["text"]) for t in session if t.get("text")]
    return turns


# -- the load generator (runs in its own process) ----------------------------------------------


@dataclass
class Timings:
    search_ms: list[float] = field(default_factory=list)
    add_ms: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0


Operation = Callable[[str, str], None]  # (op, text) -> raises on failure


def run_clients(make_client: Callable[[int], Operation], texts: Sequence[str], clients: int,
                requests: int, max_seconds: float) -> Timings:  # fmt: skip
    """``requests`` operations over ``clients`` threads (each with its own client), 80%
    searches, stopping early at ``max_seconds``."""
    timings = Timings()
    lock = threading.Lock()
    counter = iter(range(requests))
    deadline = time.monotonic() + max_seconds

    def loop(n: int) -> None:
        rng = random.Random(n)
        call = make_client(n)
        for i in counter:
            if time.monotonic() > deadline:
                return
            op = "search" if rng.random() < SEARCH_SHARE else "add"
            text = rng.choice(texts) if op == "search" else f"{rng.choice(texts)} [{n}-{i}]"
            start = time.perf_counter()
            try:
                call(op, text)
            except Exception as error:  # noqa: BLE001 - every failure is counted and reported
                with lock:
                    timings.errors.append(f"{op}: {type(error).__name__}: {error}"[:300])
                continue
            elapsed = (time.perf_counter() - start) * 1000
            with lock:
                (timings.search_ms if op == "search" else timings.add_ms).append(elapsed)

    start = time.perf_counter()
    threads = [threading.Thread(target=loop, args=(n,)) for n in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    timings.seconds = time.perf_counter() - start
    return timings


def sdk_client(location: str) -> Callable[[int], Operation]:
    """Clients of one ``MemOS`` over a data dir, or over a store URL as ``memos --store`` opens
    it (no index snapshots)."""
    import faiss

    from memos import MemOS, open_store

    faiss.omp_set_num_threads(1)  # as the server does (ServerSettings.faiss_threads)
    if "://" in location:
        root = MemOS(open_store(location, create=False))
    else:
        root = MemOS.open(location, create=False)
    mos = root.as_principal("bench")
    mos.search("warm up the embedder and the index", cube=CUBE, k=10)

    def make(_: int) -> Operation:
        def call(op: str, text: str) -> None:
            if op == "search":
                mos.search(text, cube=CUBE, k=10)
            else:
                mos.add(text, cube=CUBE)

        return call

    return make


def http_client(urls: Sequence[str], token: str) -> Callable[[int], Operation]:
    import httpx

    def make(n: int) -> Operation:
        client = httpx.Client(
            base_url=urls[n % len(urls)],
            headers={"Authorization": f"Bearer {token}"},
            timeout=60,
        )

        def call(op: str, text: str) -> None:
            if op == "search":
                response = client.post(f"/v1/cubes/{CUBE}/search", json={"query": text, "k": 10})
            else:
                response = client.post(f"/v1/cubes/{CUBE}/memories", json={"text": text})
            if response.status_code >= 300:
                raise RuntimeError(f"HTTP {response.status_code}: {response.text[:200]}")

        return call

    return make


def generate(args: argparse.Namespace) -> None:
    """The generator process: run one level and print its timings as JSON."""
    texts = json.loads(Path(args.texts).read_text(encoding="utf-8"))
    target = args.generate
    if target.startswith("sdk:"):
        make = sdk_client(target.removeprefix("sdk:"))
    else:
        make = http_client(target.split(","), args.token)
    timings = run_clients(make, texts, int(args.clients), args.requests, args.max_seconds)
    print(json.dumps(asdict(timings)))


# -- the run -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Config:
    locomo: Path
    clients: tuple[int, ...]
    requests: int
    max_seconds: float
    items: int
    soak: float
    out_dir: Path


def parse_args(argv: Sequence[str] | None) -> tuple[Config, argparse.Namespace]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("locomo", type=Path, nargs="?", default=DEFAULT_LOCOMO)
    parser.add_argument("--clients", default="1,8,32", help="concurrent client counts")
    parser.add_argument("--requests", type=int, default=600, help="requests per level")
    parser.add_argument("--max-seconds", type=float, default=120.0, help="time bound per level")
    parser.add_argument("--items", type=int, default=2000, help="memories in the cube at start")
    parser.add_argument("--soak", type=float, default=0.0, help="seconds of soak (0: none)")
    parser.add_argument("--out-dir", type=Path, default=RESULTS_DIR)
    # the generator process's own arguments
    parser.add_argument("--generate", help=argparse.SUPPRESS)
    parser.add_argument("--texts", help=argparse.SUPPRESS)
    parser.add_argument("--token", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    config = Config(
        locomo=args.locomo,
        clients=tuple(int(c) for c in args.clients.split(",")),
        requests=args.requests,
        max_seconds=args.max_seconds,
        items=args.items,
        soak=args.soak,
        out_dir=args.out_dir,
    )
    return config, args


def seed_store(store_url: str, texts: Sequence[str], snapshot_dir: Path | None) -> str:
    """Create the cube with ``texts`` and an API key; returns the key."""
    from memos import MemOS, open_store

    mos = MemOS(open_store(store_url), snapshot_dir=snapshot_dir)
    try:
        _, token = mos.keys.create("bench")
        bench = mos.as_principal("bench")
        bench.create_cube(CUBE)
        bench.add_many(list(texts), cube=CUBE)
        return token
    finally:
        mos.close()


@contextmanager
def servers(store_args: Sequence[str], count: int) -> Iterator[tuple[list[str], list[int]]]:
    """``count`` ``memos serve`` processes on free ports; yields their URLs and pids."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    processes, urls = [], []
    try:
        for _ in range(count):
            port = _free_port()
            # no scheduler ticks: they would load the model and build KV blocks mid-run
            command = [
                str(MEMOS),
                *store_args,
                "serve",
                "--port",
                str(port),
                "--tick-interval",
                "0",
            ]
            processes.append(subprocess.Popen(command, env=env))
            urls.append(f"http://127.0.0.1:{port}")
        for url, process in zip(urls, processes, strict=True):
            _wait_healthy(url, process)
        yield urls, [p.pid for p in processes]
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(timeout=60)


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_healthy(url: str, process: subprocess.Popen[bytes]) -> None:
    import httpx

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"memos serve exited with {process.returncode}")
        try:
            if httpx.get(f"{url}/healthz", timeout=2).is_success:
                return
        except httpx.TransportError:
            time.sleep(0.2)
    raise SystemExit(f"memos serve at {url} did not answer")


def run_level(target: str, token: str, texts_file: Path, clients: int, config: Config) -> Timings:
    command = [
        sys.executable, __file__, "--generate", target, "--token", token,
        "--texts", str(texts_file), "--clients", str(clients), "--requests",
        str(config.requests), "--max-seconds", str(config.max_seconds),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"the load generator failed:\n{done.stderr[-3000:]}")
    return Timings(**json.loads(done.stdout.strip().splitlines()[-1]))


def warm(target: str, token: str, texts_file: Path, config: Config) -> None:
    """Load the embedder and the index of every process before measuring."""
    quick = Config(config.locomo, (4,), 40, 60.0, config.items, 0.0, config.out_dir)
    run_level(target, token, texts_file, 4, quick)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def soak(url: str, pid: int, token: str, texts_file: Path, seconds: float) -> dict[str, Any]:
    """8 clients for ``seconds``; the server's RSS sampled every 10 s."""
    samples: list[tuple[float, float]] = []
    start = time.monotonic()
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(10):
            samples.append((time.monotonic() - start, rss_mb(pid)))

    sampler = threading.Thread(target=sample)
    samples.append((0.0, rss_mb(pid)))
    sampler.start()
    long = Config(DEFAULT_LOCOMO, (8,), 10**9, seconds, 0, 0.0, RESULTS_DIR)
    timings = run_level(url, token, texts_file, 8, long)
    stop.set()
    sampler.join()
    samples.append((time.monotonic() - start, rss_mb(pid)))
    return {"timings": summary(timings), "rss_mb": samples}


# -- reporting ---------------------------------------------------------------------------------


def pct(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def summary(timings: Timings) -> dict[str, Any]:
    done = len(timings.search_ms) + len(timings.add_ms)
    return {
        "requests": done,
        "rps": done / timings.seconds if timings.seconds else 0.0,
        "search_rps": len(timings.search_ms) / timings.seconds if timings.seconds else 0.0,
        "search_p50": pct(timings.search_ms, 0.5),
        "search_p99": pct(timings.search_ms, 0.99),
        "add_p50": pct(timings.add_ms, 0.5),
        "add_p99": pct(timings.add_ms, 0.99),
        "errors": len(timings.errors),
        "first_errors": timings.errors[:3],
        "seconds": timings.seconds,
    }


def table(results: dict[str, dict[int, dict[str, Any]]]) -> str:
    head = "| mode | clients | req/s | search p50 | search p99 | add p50 | add p99 | errors |"
    lines = [head, "|" + " --- |" * 8]
    for mode, levels in results.items():
        for clients, s in levels.items():
            lines.append(
                f"| {mode} | {clients} | {s['rps']:.1f} | {s['search_p50']:.1f} | "
                f"{s['search_p99']:.1f} | {s['add_p50']:.1f} | {s['add_p99']:.1f} | "
                f"{s['errors']} |"
            )
    return "\n".join(lines)


def goals(results: dict[str, dict[int, dict[str, Any]]]) -> list[str]:
    lines = []
    for mode, base in COMPARISONS:
        for clients, sdk in results[base].items():
            served = results[mode][clients]
            overhead = served["search_p50"] - sdk["search_p50"]
            share = served["search_rps"] / sdk["search_rps"]
            lines.append(
                f"{mode} at {clients} clients: search p50 overhead over {base} {overhead:+.2f} "
                f"ms (goal <= {MAX_OVERHEAD_MS}), search throughput {share:.0%} of {base}'s "
                f"(goal >= {MIN_THROUGHPUT_SHARE:.0%} at 8)"
            )
    errors = sum(s["errors"] for levels in results.values() for s in levels.values())
    lines.append(f"errors: {errors} (goal 0)")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    config, args = parse_args(argv)
    if args.generate:
        generate(args)
        return 0
    turns = locomo_turns(config.locomo)
    rng = random.Random(0)
    rng.shuffle(turns)
    seed, queries = turns[: config.items], turns[config.items :]
    results: dict[str, dict[int, dict[str, Any]]] = {}
    extra: dict[str, Any] = {}
    prefix = f"memos-bench-{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory(prefix="memos-load-") as tmp, ExitStack() as stack:
        texts_file = Path(tmp) / "texts.json"
        texts_file.write_text(json.dumps(queries), encoding="utf-8")
        data_dir = Path(tmp) / "data"
        token = seed_store(f"sqlite:///{data_dir}", seed, data_dir / "index")
        redis_url = f"{REDIS}?prefix={prefix}"
        redis_token = seed_store(redis_url, seed, None)
        stack.callback(_drop_redis, redis_url)
        print(f"seeded {len(seed)} memories in each store", flush=True)
        (sqlite_urls, sqlite_pids) = stack.enter_context(servers(["--data-dir", str(data_dir)], 1))
        (redis_urls, _) = stack.enter_context(servers(["--store", redis_url], 2))
        targets = {
            "sdk": (f"sdk:{data_dir}", token),
            "sdk-redis": (f"sdk:{redis_url}", redis_token),
            "sqlite-server": (sqlite_urls[0], token),
            "redis-2x": (",".join(redis_urls), redis_token),
        }
        for target, key in targets.values():
            warm(target, key, texts_file, config)
        for clients in config.clients:
            for mode, (target, key) in targets.items():
                timings = run_level(target, key, texts_file, clients, config)
                results.setdefault(mode, {})[clients] = summary(timings)
                s = results[mode][clients]
                print(f"{mode:14} {clients:3} clients: {s['rps']:7.1f} req/s, search p50 "
                      f"{s['search_p50']:6.1f} ms p99 {s['search_p99']:6.1f}, add p50 "
                      f"{s['add_p50']:6.1f} ms, errors {s['errors']}", flush=True)  # fmt: skip
        if config.soak:
            extra["soak"] = soak(sqlite_urls[0], sqlite_pids[0], token, texts_file, config.soak)
            print(f"soak: {extra['soak']['rss_mb']}", flush=True)
    print(table(results))
    for line in goals(results):
        print(line)
    save(config, results, extra)
    return 0


def _drop_redis(url: str) -> None:
    import redis

    prefix = url.split("prefix=")[1]
    with redis.Redis.from_url(REDIS) as client:
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        if keys:
            client.delete(*keys)


def save(config: Config, results: dict[str, Any], extra: dict[str, Any]) -> None:
    config.out_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    record = {
        "config": {k: str(v) for k, v in asdict(config).items()},
        "results": results,
        **extra,
        "load_average": os.getloadavg(),
        "cores": os.cpu_count(),
        "median_search_p50_sdk": statistics.median(
            s["search_p50"] for s in results["sdk"].values()
        ),
    }
    path = config.out_dir / f"server_load-{stamp}.json"
    path.write_text(json.dumps(record, indent=2), encoding="utf-8")
    print(f"results: {path}")


if __name__ == "__main__":
    raise SystemExit(main())
