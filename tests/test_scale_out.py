"""Scale-out: two ``memos serve`` processes and ``memos worker`` processes on one Redis store.

A write acknowledged by one process is visible through the other (each process catches its
FAISS index up with the cube's event stream before every search), and killing a process in the
middle of a stream of writes loses none of the writes it acknowledged. A job queued through one
API process runs on a worker and shows through the other; a worker killed in the middle of a
job leaves it to the next worker, which runs it to the end, once.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
from _models import tiny_model_dir
from _redis import drop_redis_store, fresh_redis_url
from _servers import serve_process, worker_process

from memos import MemOS, open_store

MEMOS = Path(sys.executable).parent / "memos"
VISIBLE_WITHIN_S = 2.0


@pytest.fixture
def store_url() -> Iterator[str]:
    url = fresh_redis_url()
    yield url
    drop_redis_store(url)


@pytest.fixture
def token(store_url: str) -> str:
    mos = MemOS(open_store(store_url))
    try:
        return mos.keys.create("alice")[1]
    finally:
        mos.close()


def _visible(client: httpx.Client, base: str, text: str) -> float:
    """Seconds until a search through ``base`` finds ``text``."""
    start = time.monotonic()
    while time.monotonic() - start < VISIBLE_WITHIN_S * 5:
        hits = client.post(f"{base}/v1/cubes/shared/search", json={"query": text, "k": 3})
        if any(hit["item"]["text"] == text for hit in hits.json()):
            return time.monotonic() - start
        time.sleep(0.05)
    return float("inf")


@pytest.mark.slow
def test_a_write_through_one_process_is_seen_through_the_other(store_url: str, token: str) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    with ExitStack() as stack:
        first, _ = stack.enter_context(serve_process("--store", store_url))
        second, _ = stack.enter_context(serve_process("--store", store_url))
        client = stack.enter_context(httpx.Client(headers=headers, timeout=30))
        made = client.post(f"{first}/v1/cubes", json={"name": "shared", "embedder": "hash-64"})
        assert made.status_code == 201, made.text
        # both processes build the cube's index before the writes, so the second one must
        # catch up with writes it never saw
        _visible(client, second, "nothing yet")
        delays = []
        for n in range(10):
            text = f"fact number {n} about the shared harbour"
            writer, reader = (first, second) if n % 2 == 0 else (second, first)
            added = client.post(f"{writer}/v1/cubes/shared/memories", json={"text": text})
            assert added.status_code == 201, added.text
            delays.append(_visible(client, reader, text))
        assert max(delays) <= VISIBLE_WITHIN_S, delays
        log = client.get(f"{second}/v1/cubes/shared/log").json()
        assert [e["seq"] for e in log] == list(range(1, 12))
        assert client.get(f"{first}/v1/cubes/shared/verify").json()["ok"] is True


@pytest.mark.slow
def test_a_killed_process_loses_no_acknowledged_write(store_url: str, token: str) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    acknowledged: list[str] = []
    with ExitStack() as stack:
        victim, process = stack.enter_context(serve_process("--store", store_url))
        survivor, _ = stack.enter_context(serve_process("--store", store_url))
        client = stack.enter_context(httpx.Client(headers=headers, timeout=30))
        made = client.post(f"{victim}/v1/cubes", json={"name": "shared", "embedder": "hash-64"})
        assert made.status_code == 201, made.text

        def write() -> None:
            with httpx.Client(headers=headers, timeout=30) as writer:
                for n in range(10_000):
                    try:
                        added = writer.post(
                            f"{victim}/v1/cubes/shared/memories", json={"text": f"write {n}"}
                        )
                    except httpx.TransportError:
                        return  # the process died under this request: not acknowledged
                    assert added.status_code == 201, added.text
                    acknowledged.append(added.json()["id"])

        thread = threading.Thread(target=write)
        thread.start()
        while len(acknowledged) < 20:
            time.sleep(0.01)
        os.kill(process.pid, signal.SIGKILL)
        thread.join(timeout=60)
        assert not thread.is_alive()
        for item_id in acknowledged:
            found = client.get(f"{survivor}/v1/memories/{item_id}")
            assert found.status_code == 200, (item_id, found.text)
        report = client.get(f"{survivor}/v1/cubes/shared/verify").json()
        assert report["ok"] is True, report
        # the log holds every acknowledged write (and at most the one in flight besides)
        creates = [e for e in client.get(f"{survivor}/v1/cubes/shared/log").json()
                   if e["op"] == "create"]  # fmt: skip
        assert len(acknowledged) <= len(creates) <= len(acknowledged) + 1


def _job(
    client: httpx.Client, base: str, job_id: str, until: Callable[[dict[str, Any]], bool]
) -> dict[str, Any]:
    """The job as ``base`` shows it once ``until`` holds (or the last answer after a minute)."""
    deadline = time.monotonic() + 60
    while True:
        job: dict[str, Any] = client.get(f"{base}/v1/jobs/{job_id}").json()
        if until(job) or time.monotonic() > deadline:
            return job
        time.sleep(0.02)


@pytest.mark.slow
def test_a_job_queued_through_one_process_runs_on_a_worker(store_url: str, token: str) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    with ExitStack() as stack:
        first, _ = stack.enter_context(serve_process("--store", store_url))
        second, _ = stack.enter_context(serve_process("--store", store_url))
        stack.enter_context(worker_process("--store", store_url))
        client = stack.enter_context(httpx.Client(headers=headers, timeout=30))
        client.post(f"{first}/v1/cubes", json={"name": "shared", "embedder": "hash-64"})
        records = [{"text": f"fact {n} about the harbour"} for n in range(40)]
        client.post(f"{first}/v1/cubes/shared/memories/batch", json={"records": records})
        body = {"kind": "reencode", "params": {"codec": "fp16"}}
        queued = client.post(f"{first}/v1/cubes/shared/jobs", json=body)
        assert queued.status_code == 202, queued.text
        done = _job(client, second, queued.json()["id"], lambda job: job["state"] == "done")
        assert done["state"] == "done", done
        assert client.get(f"{second}/v1/cubes/shared").json()["codec"] == "fp16"
        hits = client.post(f"{second}/v1/cubes/shared/search", json={"query": "fact 7", "k": 1})
        assert hits.json()[0]["item"]["text"] == "fact 7 about the harbour"
        assert client.get(f"{second}/v1/cubes/shared/verify").json()["ok"] is True
        metrics = client.get(f"{first}/metrics").text
        assert 'memos_queue_depth{state="queued"} 0.0' in metrics


@pytest.mark.slow
def test_a_killed_worker_loses_no_acknowledged_job(
    store_url: str, token: str, tmp_path: Path
) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    model = ("--model", str(tiny_model_dir(tmp_path)), "--model-cache", str(tmp_path / "cache"))
    with ExitStack() as stack:
        api, _ = stack.enter_context(serve_process("--store", store_url))
        client = stack.enter_context(httpx.Client(headers=headers, timeout=30))
        client.post(f"{api}/v1/cubes", json={"name": "trip", "embedder": "hash-64"})
        records = [{"text": "Alice flew to Lisbon on May 3"}, {"text": "The boat is called Wren"}]
        added = client.post(f"{api}/v1/cubes/trip/memories/batch", json={"records": records})
        # long enough to be killed in the middle: no early stop, a few seconds of training
        recipe = {"max_steps": 200, "recall_every": 1000, "learning_rate": 0.01, "batch_size": 4}
        params = {"name": "trip", "item_ids": [m["id"] for m in added.json()], "recipe": recipe}
        queued = client.post(
            f"{api}/v1/cubes/trip/jobs", json={"kind": "consolidate", "params": params}
        )
        assert queued.status_code == 202, queued.text
        job_id = queued.json()["id"]
        with worker_process("--store", store_url, *model) as victim:
            running = _job(client, api, job_id, lambda job: job["state"] != "queued")
            assert running["state"] == "running", running
            os.kill(victim.pid, signal.SIGKILL)
        stack.enter_context(worker_process("--store", store_url, *model))
        done = _job(client, api, job_id, lambda job: job["state"] in ("done", "failed"))
        assert done["state"] == "done", done
        assert done["attempts"] == 2
        assert done["worker"] != running["worker"]
        log = client.get(f"{api}/v1/cubes/trip/log").json()
        built = [e for e in log if e["op"] == "adapter_build"]
        assert [e["reason"] for e in built] == [f"[{job_id}]"]  # trained once, to the end
        assert client.get(f"{api}/v1/cubes/trip/adapters/trip").json()["manifest"]["version"] == 1
        assert client.get(f"{api}/v1/cubes/trip/verify").json()["ok"] is True
