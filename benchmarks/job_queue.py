"""Job queue benchmark: what queuing, claiming and finishing a background job costs on each
store, next to the bare mechanism underneath in the same run.

For each store (the embedded SQLite data dir, the Redis store) N jobs are queued one by one,
then W worker threads, each with its own store handle, claim and finish them until the queue is
empty (the job's own work left out: this is the queue's cost). The baseline does the same
round with the store's primitive and nothing else: for SQLite a table of rows flipped by an
``UPDATE ... RETURNING`` in a write transaction, for Redis ``XADD`` / ``XREADGROUP`` / ``XACK``
on a stream. Reported: submits/s, claims+finishes/s, and the ratio of each to the baseline.

    python benchmarks/job_queue.py
    python benchmarks/job_queue.py --jobs 500 --workers 1,4      # quick
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis

from memos import Job, JobKind, open_store
from memos.core._jobs import new_job_id, succeeded

HERE = Path(__file__).resolve().parent
RESULTS_DIR = HERE / "results"
REDIS = "redis://127.0.0.1:6379/0"
LEASE_S = 60.0


def job(cube: str) -> Job:
    return Job(id=new_job_id(), cube=cube, kind=JobKind.REFIT, actor="bench", after_seq=1,
               submitted_at=datetime.now(UTC))  # fmt: skip


def timed(work: Callable[[], None]) -> float:
    start = time.perf_counter()
    work()
    return time.perf_counter() - start


def in_threads(workers: int, work: Callable[[int], None]) -> float:
    threads = [threading.Thread(target=work, args=(n,)) for n in range(workers)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - start


# -- the job queue of a store --------------------------------------------------------------------


def memos_round(url: str, jobs: int, workers: int) -> dict[str, float]:
    store = open_store(url)
    submit = timed(lambda: [store.enqueue_job(job("bench")) for _ in range(jobs)])
    store.close()

    def work(n: int) -> None:
        own = open_store(url)
        try:
            while (claimed := own.claim_job(f"w{n}", datetime.now(UTC), LEASE_S)) is not None:
                own.finish_job(succeeded(claimed, {}))
        finally:
            own.close()

    return {"submit_s": submit, "drain_s": in_threads(workers, work)}


# -- the bare mechanisms ---------------------------------------------------------------------------


def sqlite_round(path: Path, jobs: int, workers: int) -> dict[str, float]:
    def connect() -> sqlite3.Connection:
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=60)
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = FULL")
        return conn

    conn = connect()
    conn.execute("CREATE TABLE q (seq INTEGER PRIMARY KEY, id TEXT, state TEXT, body TEXT)")
    conn.execute("CREATE INDEX q_state ON q (state, seq)")
    body = job("bench").model_dump_json()

    def submit() -> None:
        for _ in range(jobs):
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("INSERT INTO q (id, state, body) VALUES (?, 'queued', ?)",
                         (uuid.uuid4().hex, body))  # fmt: skip
            conn.execute("COMMIT")

    submitted = timed(submit)
    conn.close()

    def work(n: int) -> None:
        own = connect()
        while True:
            own.execute("BEGIN IMMEDIATE")
            row = own.execute(
                "UPDATE q SET state = 'running' WHERE seq = (SELECT seq FROM q WHERE state ="
                " 'queued' ORDER BY seq LIMIT 1) RETURNING seq"
            ).fetchone()
            own.execute("COMMIT")
            if row is None:
                break
            own.execute("BEGIN IMMEDIATE")
            own.execute("UPDATE q SET state = 'done', body = ? WHERE seq = ?", (body, row[0]))
            own.execute("COMMIT")
        own.close()

    return {"submit_s": submitted, "drain_s": in_threads(workers, work)}


def redis_round(prefix: str, jobs: int, workers: int) -> dict[str, float]:
    client = redis.Redis.from_url(REDIS)
    stream = f"{prefix}:raw"
    client.xgroup_create(stream, "g", id="0", mkstream=True)
    body = job("bench").model_dump_json()
    submitted = timed(lambda: [client.xadd(stream, {"job": body}) for _ in range(jobs)])

    def work(n: int) -> None:
        own = redis.Redis.from_url(REDIS)
        while True:
            reply: Any = own.xreadgroup("g", f"w{n}", {stream: ">"}, count=1)
            if not reply:
                break
            entry_id = reply[0][1][0][0]
            own.xack(stream, "g", entry_id)
            own.xdel(stream, entry_id)
        own.close()

    drained = in_threads(workers, work)
    client.close()
    return {"submit_s": submitted, "drain_s": drained}


def drop_prefix(prefix: str) -> None:
    with redis.Redis.from_url(REDIS) as client:
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        if keys:
            client.delete(*keys)


# -- the run ---------------------------------------------------------------------------------------


def run(jobs: int, workers: int) -> list[dict[str, Any]]:
    rows = []
    with tempfile.TemporaryDirectory(prefix="memos-jobs-") as tmp:
        root = Path(tmp)
        prefix = f"memos-bench-jobs-{uuid.uuid4().hex[:8]}"
        try:
            pairs = {
                "sqlite": (memos_round(f"sqlite:///{root / 'data'}", jobs, workers),
                           sqlite_round(root / "raw.db", jobs, workers)),
                "redis": (memos_round(f"{REDIS}?prefix={prefix}", jobs, workers),
                          redis_round(prefix, jobs, workers)),
            }  # fmt: skip
        finally:
            drop_prefix(prefix)
    for store, (ours, raw) in pairs.items():
        rows.append({
            "store": store, "workers": workers, "jobs": jobs,
            "submit_per_s": jobs / ours["submit_s"], "raw_submit_per_s": jobs / raw["submit_s"],
            "drain_per_s": jobs / ours["drain_s"], "raw_drain_per_s": jobs / raw["drain_s"],
        })  # fmt: skip
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--workers", default="1,4", help="worker thread counts, comma-separated")
    args = parser.parse_args()
    rows = [row for w in map(int, args.workers.split(",")) for row in run(args.jobs, w)]
    print("| store | workers | submits/s | bare | ratio | claims+finishes/s | bare | ratio |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(
            f"| {r['store']} | {r['workers']} | {r['submit_per_s']:.0f} | "
            f"{r['raw_submit_per_s']:.0f} | {r['submit_per_s'] / r['raw_submit_per_s']:.2f} | "
            f"{r['drain_per_s']:.0f} | {r['raw_drain_per_s']:.0f} | "
            f"{r['drain_per_s'] / r['raw_drain_per_s']:.2f} |"
        )
    RESULTS_DIR.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = RESULTS_DIR / f"job_queue-{stamp}.json"
    out.write_text(json.dumps({"rows": rows, "args": vars(args)}, indent=2), encoding="utf-8")
    print(f"results: {out}")


if __name__ == "__main__":
    main()
