"""Before/after benchmark: add, search, export and import on a baseline revision and on the
working tree, in one run, interleaved, reported as ratios.

The baseline tree is extracted with ``git archive`` into a temporary directory (the package's
``memos.stores``, ``memos.api`` and ``memos.schedulers`` are linked in as the editable install
maps them, and the compiled fp8 kernel is copied). Each tree gets one worker process whose
``PYTHONPATH`` puts that tree first; the worker reports where ``memos`` was imported from, and
the run stops if that is not inside the intended tree. The parent drives the two workers in
lockstep, one at a time, so they never compete for the CPU: each bulk operation runs on one
tree then the other, and single calls go in blocks of 10, the two trees taking turns; which
tree goes first alternates from step to step. Drift on the machine thus falls on both alike
within seconds, not minutes.

One round, with the deterministic ``HashEmbedder(64)`` so no model time hides the library's own
cost: ``add_many`` of N records (text, user, tags, metadata, ``occurred_at``) into a fresh cube
of a fresh data dir; single ``add`` calls; searches (hybrid, dense, keyword, and hybrid
filtered by tags and a date range); ``export_cube``, then ``import_cube`` into another fresh
data dir; then the same add and search on the Redis store if one answers (its keys are deleted
afterwards). Each worker runs a small round first, untimed. ``add_many``, export and import are
timed whole, ``add`` and ``search`` by their median call in the round. Reported: the median over
rounds of each figure, per tree, and current / baseline (below 1 is faster now), with the range
of the rounds' own ratios.

    python benchmarks/before_after.py 5a5e711
    python benchmarks/before_after.py 5a5e711 --n 500 --rounds 1 --no-redis     # quick
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

import redis

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS_DIR = HERE / "results"
REDIS = "redis://127.0.0.1:6379/0"
# top-level folders the package maps into the memos namespace ([tool.setuptools.package-dir])
MAPPED = ("stores", "api", "schedulers")
MODES = ("hybrid", "dense", "keyword", "filtered")
BLOCK = 10
TREES = ("baseline", "current")

# (figure, label, unit, scale from seconds)
ROWS = [
    ("sqlite.add_many", "SQLite `add_many`, {n} memories", "s", 1.0),
    ("sqlite.add", "SQLite `add`, one memory", "ms/call p50", 1e3),
    *[(f"sqlite.search.{m}", f"SQLite `search`, {m}", "ms/query p50", 1e3) for m in MODES[:3]],
    ("sqlite.search.filtered", "SQLite `search`, hybrid + tags + since/until", "ms/query p50", 1e3),
    ("sqlite.export", "`export_cube`, {total} memories", "s", 1.0),
    ("sqlite.import", "`import_cube` into a fresh data dir", "s", 1.0),
    ("redis.add_many", "Redis `add_many`, {n} memories", "s", 1.0),
    ("redis.add", "Redis `add`, one memory", "ms/call p50", 1e3),
    *[(f"redis.search.{m}", f"Redis `search`, {m}", "ms/query p50", 1e3) for m in MODES[:3]],
]

# -- the worker (one process per tree, against whichever memos its PYTHONPATH picked) ---------

WORDS = [
    "memory", "garden", "river", "lamp", "morning", "coffee", "train", "ticket", "museum",
    "piano", "recipe", "letter", "mountain", "harbour", "winter", "market", "violin", "bicycle",
    "festival", "library", "window", "candle", "Zürich", "café", "naïve", "façade", "crème",
    "São", "Paulo", "Kraków", "Ångström", "東京", "ramen", "さくら", "Москва", "борщ",
    "θάλασσα", "☕", "🎻", "résumé", "jalapeño", "smørrebrød",
]  # fmt: skip
SPEAKERS = ("Ana", "Björn", "Chloé", "Dmitri", "Eun-ji", "Farah")


def make_records(rng: random.Random, n: int) -> list[dict[str, Any]]:
    start = datetime(2020, 1, 1, tzinfo=UTC)
    records = []
    for i in range(n):
        speaker = rng.choice(SPEAKERS)
        when = start + timedelta(minutes=rng.randrange(6 * 365 * 24 * 60))
        records.append({
            "text": f"{speaker}: " + " ".join(rng.choices(WORDS, k=rng.randint(12, 40))),
            "user": f"user-{i % 7}",
            "tags": [f"t{i % 5}", "bench"],
            "metadata": {"speaker": speaker, "session": i % 40, "mood": rng.choice(WORDS),
                         "score": round(rng.random(), 3)},
            "occurred_at": when.isoformat(),
        })  # fmt: skip
    return records


def make_queries(rng: random.Random, n: int) -> list[str]:
    return [" ".join(rng.choices(WORDS, k=rng.randint(2, 8))) for _ in range(n)]


def timed(call: Callable[[], object]) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def drop_prefix(url: str, prefix: str) -> None:
    with redis.Redis.from_url(url) as client:
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        for start in range(0, len(keys), 1000):
            client.delete(*keys[start : start + 1000])


class Worker:
    """Holds one tree's open stores; each method is one step the parent asks for."""

    def __init__(self, workdir: Path, redis_url: str, n: int, adds: int, queries: int) -> None:
        from memos import HashEmbedder, MemOS, open_store

        self.memos, self.open_store, self.embedder = MemOS, open_store, HashEmbedder
        self.workdir, self.redis_url = workdir, redis_url
        rng = random.Random(0)
        self.records, self.singles = make_records(rng, n), make_records(rng, adds)
        self.queries = make_queries(rng, queries)
        self.stores: dict[str, Any] = {}
        self.prefixes: list[str] = []
        self.dirs = 0
        self.exported = workdir / "none"

    def fresh_dir(self) -> Path:
        self.dirs += 1
        path = self.workdir / f"d{self.dirs}"
        path.mkdir(parents=True)
        return path

    def open(self, store: str) -> None:
        if store == "sqlite":
            mos = self.memos.open(self.fresh_dir(), embedder=self.embedder(64))
        else:
            prefix = f"memos-bench-ba-{uuid.uuid4().hex[:12]}"
            self.prefixes.append(prefix)
            url = f"{self.redis_url}?prefix={prefix}"
            mos = self.memos(self.open_store(url), embedder=self.embedder(64))
        mos.create_cube("bench")
        self.stores[store] = mos

    def add_many(self, store: str) -> float:
        return timed(lambda: self.stores[store].add_many(self.records, cube="bench"))

    def add(self, store: str, start: int, stop: int) -> list[float]:
        mos = self.stores[store]
        return [
            timed(lambda r=r: mos.add(r["text"], cube="bench", user=r["user"], tags=r["tags"],
                                      metadata=r["metadata"], occurred_at=r["occurred_at"]))
            for r in self.singles[start:stop]
        ]  # fmt: skip

    def search(self, store: str, mode: str, start: int, stop: int) -> list[float]:
        mos = self.stores[store]
        if mode != "filtered":
            return [
                timed(lambda q=q: mos.search(q, cube="bench", k=10, mode=mode))
                for q in self.queries[start:stop]
            ]
        return [
            timed(lambda i=i: mos.search(
                self.queries[i], cube="bench", k=10, tags=[f"t{i % 5}"],
                since=f"{2020 + i % 4}-03-01T00:00:00Z", until=f"{2022 + i % 4}-09-30T12:00+02:00"))
            for i in range(start, stop)
        ]  # fmt: skip

    def export(self) -> float:
        self.exported = self.fresh_dir()
        return timed(lambda: self.stores["sqlite"].export_cube("bench", self.exported))

    def import_(self) -> float:
        fresh = self.memos.open(self.fresh_dir(), embedder=self.embedder(64))
        try:
            return timed(lambda: fresh.import_cube(self.exported))
        finally:
            fresh.close()

    def close(self, store: str) -> None:
        self.stores.pop(store).close()
        if store == "redis":
            drop_prefix(self.redis_url, self.prefixes.pop())

    def cleanup(self) -> None:
        for store in list(self.stores):
            self.close(store)
        for prefix in self.prefixes:
            drop_prefix(self.redis_url, prefix)


def serve(args: argparse.Namespace) -> None:
    """The worker's loop: one JSON request a line on stdin, one JSON reply a line."""
    replies: IO[str] = os.fdopen(os.dup(sys.stdout.fileno()), "w", encoding="utf-8")
    sys.stdout = sys.stderr  # whatever the library prints stays out of the replies
    modules = ("memos", "memos.stores.sqlite")  # in every layout the trees may have
    where = {name: importlib.import_module(name).__file__ for name in modules}
    with tempfile.TemporaryDirectory(prefix="memos-ba-", dir=args.workdir) as tmp:
        worker = Worker(Path(tmp), args.redis, args.n, args.adds, args.queries)
        warm = Worker(Path(tmp) / "warm", args.redis, 50, BLOCK, BLOCK)
        try:
            for store in ("sqlite",) if args.no_redis else ("sqlite", "redis"):
                warm.open(store)
                warm.add_many(store)
                warm.add(store, 0, BLOCK)
                for mode in MODES:
                    warm.search(store, mode, 0, BLOCK)
                if store == "sqlite":
                    warm.export()
                    warm.import_()
                warm.close(store)
        finally:
            warm.cleanup()
        replies.write(json.dumps({"where": where}) + "\n")
        replies.flush()
        try:
            for line in sys.stdin:
                request = json.loads(line)
                step = request.pop("step")
                if step == "quit":
                    break
                result = getattr(worker, step)(**request)
                replies.write(json.dumps({"result": result}) + "\n")
                replies.flush()
        finally:
            worker.cleanup()


# -- the parent: trees, lockstep steps, the table ----------------------------------------------


def git(*argv: str) -> str:
    return subprocess.run(["git", "-C", str(REPO), "--no-optional-locks", *argv],
                          check=True, capture_output=True, text=True).stdout.strip()  # fmt: skip


def extract_baseline(rev: str, into: Path) -> str:
    try:
        sha = git("rev-parse", "--verify", f"{rev}^{{commit}}")
    except subprocess.CalledProcessError:
        sys.exit(f"{rev} is no commit of {REPO}")
    into.mkdir(parents=True)
    archive = subprocess.Popen(["git", "-C", str(REPO), "archive", sha], stdout=subprocess.PIPE)
    subprocess.run(["tar", "-x", "-C", str(into)], stdin=archive.stdout, check=True)
    assert archive.stdout is not None
    archive.stdout.close()
    if archive.wait() != 0:
        sys.exit(f"git archive {sha} failed")
    for name in MAPPED:
        link = into / "memos" / name
        if not link.exists():
            link.symlink_to(Path("..") / name)
    # the compiled fp8 kernel goes next to its source, wherever the baseline keeps it
    for source in (into / "memos").rglob("_fp8scan.c"):
        for built in (REPO / "memos").rglob("_fp8scan*.so"):
            shutil.copy2(built, source.parent / built.name)
    return sha


class Remote:
    """The parent's handle on one worker process."""

    def __init__(self, name: str, tree: Path, args: argparse.Namespace) -> None:
        self.name, self.tree = name, tree
        env = dict(os.environ, PYTHONPATH=str(tree), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
        argv = [sys.executable, str(Path(__file__).resolve()), "--worker", "--n", str(args.n),
                "--adds", str(args.adds), "--queries", str(args.queries), "--redis", args.redis,
                "--workdir", str(args.workdir)]  # fmt: skip
        if args.no_redis:
            argv.append("--no-redis")
        self.proc = subprocess.Popen(argv, env=env, cwd=args.workdir, text=True,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE)  # fmt: skip

    def read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            sys.exit(f"the {self.name} worker ({self.tree}) died (exit {self.proc.wait()})")
        reply: dict[str, Any] = json.loads(line)
        return reply

    def check_where(self) -> None:
        where = self.read()["where"]
        real = os.path.realpath(self.tree)
        for module, path in where.items():
            if os.path.commonpath([real, os.path.realpath(path)]) != real:
                sys.exit(f"{self.name}: {module} was imported from {path}, outside {self.tree}")
        print(f"{self.name}: " + ", ".join(f"{m} <- {p}" for m, p in where.items()))

    def ask(self, step: str, **kwargs: Any) -> Any:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"step": step, **kwargs}) + "\n")
        self.proc.stdin.flush()
        return self.read()["result"]

    def stop(self) -> None:
        if self.proc.poll() is None and self.proc.stdin is not None:
            try:
                self.proc.stdin.write(json.dumps({"step": "quit"}) + "\n")
                self.proc.stdin.close()
            except BrokenPipeError:
                pass
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class Lockstep:
    """Runs each step on both workers, one after the other, the first alternating."""

    def __init__(self, remotes: dict[str, Remote]) -> None:
        self.remotes, self.turn = remotes, 0

    def both(self, step: str, **kwargs: Any) -> dict[str, Any]:
        order = TREES if self.turn % 2 == 0 else TREES[::-1]
        self.turn += 1
        return {name: self.remotes[name].ask(step, **kwargs) for name in order}

    def calls(self, step: str, count: int, **kwargs: Any) -> dict[str, float]:
        """The median call of ``count`` calls, made in blocks of BLOCK taking turns."""
        times: dict[str, list[float]] = {name: [] for name in TREES}
        for start in range(0, count, BLOCK):
            got = self.both(step, start=start, stop=min(start + BLOCK, count), **kwargs)
            for name in TREES:
                times[name].extend(got[name])
        return {name: statistics.median(times[name]) for name in TREES}


def one_round(lock: Lockstep, args: argparse.Namespace) -> dict[str, dict[str, float]]:
    figures: dict[str, dict[str, float]] = {name: {} for name in TREES}

    def keep(figure: str, got: dict[str, float]) -> None:
        for name in TREES:
            figures[name][figure] = got[name]

    for store in ("sqlite",) if args.no_redis else ("sqlite", "redis"):
        lock.both("open", store=store)
        keep(f"{store}.add_many", lock.both("add_many", store=store))
        keep(f"{store}.add", lock.calls("add", args.adds, store=store))
        for mode in MODES if store == "sqlite" else MODES[:3]:
            keep(
                f"{store}.search.{mode}", lock.calls("search", args.queries, store=store, mode=mode)
            )
        if store == "sqlite":
            keep("sqlite.export", lock.both("export"))
            keep("sqlite.import", lock.both("import_"))
        lock.both("close", store=store)
    return figures


def redis_answers(url: str) -> bool:
    try:
        with redis.Redis.from_url(url, socket_connect_timeout=2) as client:
            return bool(client.ping())
    except redis.RedisError:
        return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("baseline", nargs="?", help="the revision to compare against (5a5e711)")
    parser.add_argument("--n", type=int, default=2000, help="memories in add_many")
    parser.add_argument("--rounds", type=int, default=3, help="rounds, each on fresh cubes")
    parser.add_argument("--adds", type=int, default=200, help="single add calls")
    parser.add_argument("--queries", type=int, default=200, help="queries per search mode")
    parser.add_argument("--redis", default=REDIS, help="Redis database for the Redis rows")
    parser.add_argument("--no-redis", action="store_true", help="leave the Redis rows out")
    parser.add_argument("--workdir", type=Path, default=None, help="where temporary dirs go")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        serve(args)
        return
    if args.baseline is None:
        parser.error("the baseline revision is required")
    if not args.no_redis and not redis_answers(args.redis):
        print(f"no Redis at {args.redis}: the Redis rows are left out")
        args.no_redis = True

    begun = time.perf_counter()
    load_start = os.getloadavg()
    head = git("rev-parse", "--short", "HEAD")
    dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in TREES}
    with tempfile.TemporaryDirectory(prefix="memos-before-after-", dir=args.workdir) as tmp:
        args.workdir = Path(tmp)
        base_sha = extract_baseline(args.baseline, args.workdir / "baseline")
        trees = {"baseline": args.workdir / "baseline", "current": REPO}
        remotes = {name: Remote(name, trees[name], args) for name in TREES}
        try:
            for remote in remotes.values():
                remote.check_where()
            lock = Lockstep(remotes)
            for rnd in range(args.rounds):
                for name, figures in one_round(lock, args).items():
                    runs[name].append(figures)
                print(f"round {rnd + 1}/{args.rounds} done ({time.perf_counter() - begun:.0f} s)")
        finally:
            for remote in remotes.values():
                remote.stop()

    total = args.n + args.adds
    print()
    print(f"baseline {base_sha[:7]}, current {head}{' + uncommitted changes' if dirty else ''}; "
          f"N = {args.n}, {args.adds} adds, {args.queries} queries per mode, "
          f"{args.rounds} rounds; medians over rounds")  # fmt: skip
    print()
    print("| measurement | unit | baseline | current | current ÷ baseline | range over rounds |")
    print("| --- | --- | --- | --- | --- | --- |")
    rows = []
    for key, label, unit, scale in ROWS:
        if key not in runs["current"][0]:
            continue
        before = [r[key] for r in runs["baseline"]]
        after = [r[key] for r in runs["current"]]
        ratios = [a / b for a, b in zip(after, before, strict=True)]
        row = {
            "key": key, "label": label.format(n=args.n, total=total), "unit": unit,
            "baseline": statistics.median(before) * scale,
            "current": statistics.median(after) * scale,
            "ratio": statistics.median(after) / statistics.median(before),
            "ratio_min": min(ratios), "ratio_max": max(ratios),
        }  # fmt: skip
        rows.append(row)
        digits = 3 if unit == "s" else 2
        print(f"| {row['label']} | {unit} | {row['baseline']:.{digits}f} | "
              f"{row['current']:.{digits}f} | **{row['ratio']:.2f}** | "
              f"{row['ratio_min']:.2f}–{row['ratio_max']:.2f} |")  # fmt: skip
    elapsed = time.perf_counter() - begun
    load_end = os.getloadavg()
    print()
    print(f"{elapsed:.0f} s; load average {load_start[0]:.1f} at start, "
          f"{load_end[0]:.1f} at end, {os.cpu_count()} cores")  # fmt: skip

    RESULTS_DIR.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = RESULTS_DIR / f"before_after-{stamp}.json"
    config = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    out.write_text(json.dumps({
        "baseline": base_sha, "current": head, "dirty": dirty, "config": config, "rows": rows,
        "runs": runs, "elapsed_s": elapsed, "cpus": os.cpu_count(),
        "loadavg": [load_start[0], load_end[0]],
    }, indent=2), encoding="utf-8")  # fmt: skip
    print(f"results: {out}")


if __name__ == "__main__":
    main()
