"""Background jobs: the durable queue of each store, the worker, and the SDK calls over them.

The queue is tested on the real SQLite and the real Redis store alike: claims under a lease,
renewals, a lease that runs out, finishing (only by the worker that holds the job), reopening.
The worker runs each kind of job; a job whose worker died after its change landed is marked done,
not run twice; a job that keeps killing workers fails for good.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from _backends import STORES
from _backends import store_url as backend_url
from _servers import serve
from memos.api import ServerSettings
from memos.schedulers import HANDLERS, Worker

from memos import HashEmbedder, Job, JobKind, JobState, MemOS, Store, open_store
from memos.core._jobs import MAX_ATTEMPTS, new_job_id, succeeded
from memos.errors import (
    AccessDenied,
    Conflict,
    CubeNotFound,
    InvalidInput,
    JobNotFound,
)
from memos.llm import LocalModel

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
LEASE_S = 10.0


@pytest.fixture(params=STORES)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with backend_url(request.param, tmp_path / "store") as url:
        yield url


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    opened = open_store(store_url)
    yield opened
    opened.close()


def queued(cube: str = "notes", **update: object) -> Job:
    fields = {"id": new_job_id(), "cube": cube, "kind": JobKind.REFIT, "actor": "alice",
              "after_seq": 1, "submitted_at": T0} | update  # fmt: skip
    return Job.model_validate(fields)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


# the queue of each store -----------------------------------------------------------------------


def test_claim_renew_and_finish(store: Store) -> None:
    first, second = queued(), queued()
    store.enqueue_job(first)
    store.enqueue_job(second)
    assert store.job_counts() == {JobState.QUEUED: 2, JobState.RUNNING: 0}
    mine = store.claim_job("w1", at(0), LEASE_S)
    assert mine is not None
    assert mine.id == first.id
    assert (mine.state, mine.worker, mine.attempts) == (JobState.RUNNING, "w1", 1)
    assert mine.lease_until == at(LEASE_S)
    theirs = store.claim_job("w2", at(1), LEASE_S)
    assert theirs is not None
    assert theirs.id == second.id
    assert store.claim_job("w3", at(2), LEASE_S) is None
    assert store.job_counts() == {JobState.QUEUED: 0, JobState.RUNNING: 2}
    assert store.renew_job(first.id, "w1", at(5), LEASE_S).lease_until == at(5 + LEASE_S)
    with pytest.raises(Conflict):
        store.renew_job(first.id, "w2", at(5), LEASE_S)  # w2 does not hold it
    done = store.finish_job(succeeded(mine, {"seq": 2}))
    assert store.get_job(first.id) == done
    assert (done.state, done.result, done.lease_until) == (JobState.DONE, {"seq": 2}, None)
    with pytest.raises(Conflict):
        store.finish_job(done)  # finished once
    assert store.job_counts() == {JobState.QUEUED: 0, JobState.RUNNING: 1}
    assert [j.id for j in store.list_jobs("notes")] == [first.id, second.id]
    assert store.list_jobs("other") == []


def test_a_lease_that_ran_out_is_claimed_again(store: Store) -> None:
    job = queued()
    store.enqueue_job(job)
    first = store.claim_job("w1", at(0), LEASE_S)
    assert first is not None
    assert store.claim_job("w2", at(LEASE_S - 1), LEASE_S) is None  # w1's lease holds
    again = store.claim_job("w2", at(LEASE_S + 1), LEASE_S)
    assert again is not None
    assert again.id == job.id
    assert (again.worker, again.attempts) == ("w2", 2)
    # w1 woke up late: it can neither renew nor finish what is now w2's, and writes nothing
    with pytest.raises(Conflict):
        store.renew_job(job.id, "w1", at(LEASE_S + 2), LEASE_S)
    with pytest.raises(Conflict):
        store.finish_job(succeeded(first, {"by": "w1"}))
    assert store.get_job(job.id) == again
    assert store.finish_job(succeeded(again, {"by": "w2"})).result == {"by": "w2"}


def test_only_a_queued_job_can_be_cancelled(store: Store) -> None:
    first, second, third = queued(), queued(), queued()
    for job in (first, second, third):
        store.enqueue_job(job)
    gone = store.cancel_job(second.id, at(1))
    assert (gone.state, gone.finished_at) == (JobState.CANCELLED, at(1))
    assert store.get_job(second.id) == gone
    assert store.job_counts() == {JobState.QUEUED: 2, JobState.RUNNING: 0}
    running = store.claim_job("w1", at(2), LEASE_S)
    assert running is not None
    assert running.id == first.id
    with pytest.raises(Conflict):
        store.cancel_job(first.id, at(3))  # a worker has it
    with pytest.raises(Conflict):
        store.cancel_job(second.id, at(3))  # cancelled already
    with pytest.raises(JobNotFound):
        store.cancel_job(new_job_id(), at(3))
    store.finish_job(succeeded(running, {}))
    with pytest.raises(Conflict):
        store.cancel_job(first.id, at(4))
    last = store.claim_job("w1", at(5), LEASE_S)
    assert last is not None
    assert last.id == third.id  # the cancelled job is never handed out
    assert store.claim_job("w1", at(6), LEASE_S) is None
    assert store.job_counts() == {JobState.QUEUED: 0, JobState.RUNNING: 1}


def test_bad_queue_calls_change_nothing(store: Store) -> None:
    job = queued()
    store.enqueue_job(job)
    with pytest.raises(Conflict):
        store.enqueue_job(job.model_copy(update={"cube": "other"}))
    with pytest.raises(InvalidInput):
        store.finish_job(job)  # not finished
    with pytest.raises(JobNotFound):
        store.renew_job(new_job_id(), "w1", at(0), LEASE_S)
    assert store.get_job(job.id) == job
    assert store.list_jobs("other") == []
    assert store.get_job(new_job_id()) is None


def test_jobs_outlive_the_process_that_queued_them(store_url: str) -> None:
    job = queued()
    with_job = open_store(store_url)
    with_job.enqueue_job(job)
    with_job.close()
    reopened = open_store(store_url)
    try:
        assert reopened.get_job(job.id) == job
        claimed = reopened.claim_job("w1", at(0), LEASE_S)
        assert claimed is not None
        assert claimed.id == job.id
    finally:
        reopened.close()


def test_concurrent_workers_claim_each_job_once(store_url: str) -> None:
    jobs = [queued() for _ in range(24)]
    setup = open_store(store_url)
    for job in jobs:
        setup.enqueue_job(job)
    setup.close()
    claims: dict[str, list[str]] = {}

    def work(name: str) -> None:
        own = open_store(store_url)
        try:
            while (job := own.claim_job(name, at(0), LEASE_S)) is not None:
                claims.setdefault(job.id, []).append(name)
                own.finish_job(succeeded(job, {}))
        finally:
            own.close()

    threads = [threading.Thread(target=work, args=(f"w{n}",)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(claims) == sorted(job.id for job in jobs)
    assert all(len(names) == 1 for names in claims.values()), claims


# the SDK and the worker ----------------------------------------------------------------------


@pytest.fixture
def fitted(mos: MemOS, cube: str) -> str:
    mos.add_many([f"fact {n} about the harbour" for n in range(40)], cube=cube)
    return cube


def test_a_worker_runs_a_queued_reencode(mos: MemOS, fitted: str) -> None:
    job = mos.jobs.submit(fitted, "reencode", {"codec": "fp16"}, user="carol", reason="smaller")
    assert (job.state, job.actor, job.params) == (JobState.QUEUED, "carol", {"codec": "fp16"})
    assert mos.get_cube(fitted).codec != "fp16"  # nothing happens until a worker runs it
    done = Worker(mos, name="w1").run_once()
    assert done is not None
    assert done.id == job.id
    assert done.state == JobState.DONE
    assert done.failure is None
    assert mos.get_cube(fitted).codec == "fp16"
    last = mos.log(fitted)[-1]
    assert (last.op, last.actor, last.reason) == ("reencode", "carol", f"[{job.id}] smaller")
    assert done.result == {"codec": "fp16", "codec_version": 1, "seq": last.seq, "op": "reencode"}
    assert mos.jobs.get(job.id) == done
    assert mos.jobs.list(fitted) == [done]
    assert Worker(mos).run_once() is None
    assert mos.verify(fitted).ok


@pytest.mark.parametrize(
    ("kind", "params", "error"),
    [
        ("defrag", {}, InvalidInput),
        ("reencode", {}, InvalidInput),
        ("reencode", {"codec": "zip"}, InvalidInput),
        ("reencode", {"codec": "fp16", "level": 9}, InvalidInput),
        ("reencode", ["fp16"], InvalidInput),
        ("refit", {}, InvalidInput),  # the cube's codec is not fitted yet
        ("consolidate", {"name": "facts"}, InvalidInput),  # neither item_ids nor query
        ("consolidate", {"name": "facts", "query": "q", "item_ids": ["x"]}, InvalidInput),
        ("consolidate", {"name": "../facts", "query": "q"}, InvalidInput),
        ("consolidate", {"name": "facts", "query": "q", "density": 2.0}, InvalidInput),
        ("retrain", {"name": 7}, InvalidInput),
    ],
)
def test_bad_jobs_are_refused_and_queue_nothing(
    mos: MemOS, cube: str, kind: str, params: object, error: type[Exception]
) -> None:
    with pytest.raises(error):
        mos.jobs.submit(cube, kind, params)  # type: ignore[arg-type]
    assert mos.jobs.list(cube) == []
    assert mos.store.job_counts()[JobState.QUEUED] == 0


def test_jobs_are_scoped_like_their_cube(mos: MemOS, fitted: str) -> None:
    alice, bob = mos.as_principal("alice"), mos.as_principal("bob")
    job = alice.jobs.submit(fitted, "reencode", {"codec": "fp16"})
    assert (job.principal, job.actor) == ("alice", "alice")
    with pytest.raises(JobNotFound):
        bob.jobs.get(job.id)
    with pytest.raises(CubeNotFound):
        bob.jobs.list(fitted)
    with pytest.raises(CubeNotFound):
        bob.jobs.submit(fitted, "reencode", {"codec": "fp16"})
    with pytest.raises(JobNotFound):
        bob.jobs.cancel(job.id)
    assert bob.jobs.list() == []
    mos.grant(fitted, "bob", "read")
    assert bob.jobs.get(job.id) == job
    assert bob.jobs.list() == [job]
    assert bob.jobs.list(state="queued") == [job]
    assert bob.jobs.list(fitted, state=JobState.DONE) == []
    with pytest.raises(InvalidInput):
        bob.jobs.list(state="finished")
    with pytest.raises(AccessDenied):
        bob.jobs.submit(fitted, "reencode", {"codec": "fp16"})
    with pytest.raises(AccessDenied):
        bob.jobs.cancel(job.id)
    with pytest.raises(InvalidInput):
        bob.jobs.get("not-a-job")
    assert mos.jobs.list(fitted) == [job]


def test_a_job_runs_with_the_rights_of_its_submitter(mos: MemOS, fitted: str) -> None:
    mos.grant(fitted, "bob", "write")
    job = mos.as_principal("bob").jobs.submit(fitted, "reencode", {"codec": "fp16"})
    mos.revoke(fitted, "bob")  # before any worker ran it
    done = Worker(mos).run_once()
    assert done is not None
    assert done.state == JobState.FAILED
    assert done.failure is not None
    assert done.failure.code == "cube_not_found"
    assert mos.get_cube(fitted).codec != "fp16"
    assert mos.jobs.get(job.id).state == JobState.FAILED


def test_a_job_done_before_its_worker_died_is_not_run_twice(mos: MemOS, fitted: str) -> None:
    job = mos.jobs.submit(fitted, "reencode", {"codec": "fp16"})
    claimed = mos.store.claim_job("dies", datetime.now(UTC), 0.2)
    assert claimed is not None
    HANDLERS[JobKind.REENCODE](mos, claimed)  # its change lands, then the worker is gone
    seq = mos.store.head(fitted)[0]
    time.sleep(0.3)  # the lease runs out
    done = Worker(mos, name="next").run_once()
    assert done is not None
    assert (done.state, done.attempts) == (JobState.DONE, 2)
    assert done.result == {"seq": seq, "op": "reencode", "recovered": True}
    assert mos.store.head(fitted)[0] == seq  # no second reencode
    assert [e.seq for e in mos.log(fitted) if e.reason and e.reason.startswith(job.tag)] == [seq]


def test_a_job_that_keeps_killing_workers_fails_for_good(mos: MemOS, fitted: str) -> None:
    job = mos.jobs.submit(fitted, "reencode", {"codec": "fp16"})
    an_hour_ago = datetime.now(UTC) - timedelta(hours=1)
    for attempt in range(MAX_ATTEMPTS):  # each worker dies within its one-second lease
        claimed = mos.store.claim_job(
            f"dies-{attempt}", an_hour_ago + attempt * timedelta(seconds=2), 1
        )
        assert claimed is not None
        assert claimed.attempts == attempt + 1
    done = Worker(mos).run_once()
    assert done is not None
    assert done.state == JobState.FAILED
    assert done.failure is not None
    assert "gave up after 3 attempts" in done.failure.message
    assert mos.get_cube(fitted).codec != "fp16"
    assert mos.jobs.get(job.id).attempts == MAX_ATTEMPTS + 1


def test_an_unexpected_error_fails_the_job_and_the_worker_goes_on(
    mos: MemOS, fitted: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(handle: MemOS, job: Job) -> dict[str, object]:
        raise ZeroDivisionError("a bug in a handler")

    monkeypatch.setitem(HANDLERS, JobKind.REENCODE, broken)
    first = mos.jobs.submit(fitted, "reencode", {"codec": "fp16"})
    second = mos.jobs.submit(fitted, "reencode", {"codec": "int8"})
    worker = Worker(mos)
    failed = worker.run_once()
    assert failed is not None
    assert failed.id == first.id
    assert failed.failure is not None
    assert failed.failure.message == "ZeroDivisionError: a bug in a handler"
    assert worker.run_once() is not None  # the next job still runs
    assert mos.jobs.get(second.id).state == JobState.FAILED


def test_worker_run_drains_the_queue_until_stopped(mos: MemOS, fitted: str) -> None:
    jobs = [mos.jobs.submit(fitted, "reencode", {"codec": c}) for c in ("fp16", "fp32", "fp8")]
    stop = threading.Event()
    thread = threading.Thread(
        target=Worker(mos, lease_s=1).run, args=(stop,), kwargs={"poll_s": 0.05}
    )
    thread.start()
    try:
        finished = [mos.jobs.wait(job.id, timeout=30, poll_s=0.05) for job in jobs]
    finally:
        stop.set()
        thread.join(timeout=30)
    assert not thread.is_alive()
    assert [job.state for job in finished] == [JobState.DONE] * 3
    assert mos.get_cube(fitted).codec == "fp8"
    assert mos.jobs.wait(jobs[0].id, timeout=0) == finished[0]


def test_a_queued_consolidation_trains_an_adapter(data_dir: Path, tiny_model: LocalModel) -> None:
    mos = MemOS.open(data_dir, model=tiny_model, embedder=None)
    try:
        mos.create_cube("trip", embedder="hash-64")
        facts = mos.add_many(["Alice flew to Lisbon on May 3", "The boat is called Wren"],
                             cube="trip")  # fmt: skip
        recipe = {"max_steps": 12, "learning_rate": 0.01, "batch_size": 4, "recall_every": 6}
        params = {"name": "trip", "item_ids": [f.id for f in facts], "recipe": recipe}
        job = mos.jobs.submit("trip", "consolidate", params, reason="nightly")
        done = Worker(mos).run_once()
        assert done is not None
        assert done.state == JobState.DONE, done
        assert done.result is not None
        assert done.result["adapter"] == "trip"
        entry = mos.lora.show("trip", "trip")
        assert (entry.version, done.result["version"]) == (1, 1)
        assert {s.item_id for s in entry.sources} == {f.id for f in facts}
        built = mos.log("trip")[-1]
        assert (built.op, built.reason, built.seq) == (
            "adapter_build",
            f"[{job.id}] nightly",
            done.result["seq"],
        )
    finally:
        mos.close()


# over HTTP -------------------------------------------------------------------------------------


@pytest.fixture(params=STORES)
def served(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[MemOS, str]]:
    """A server's own handle (what its workers use) and its URL."""
    with backend_url(request.param, tmp_path / "data") as url:
        mos = MemOS(open_store(url), embedder=HashEmbedder(64))
        with mos, serve(mos, ServerSettings(store=url)) as base:
            yield mos, base


def test_jobs_over_http(served: tuple[MemOS, str]) -> None:
    mos, base = served
    with (
        MemOS.connect(base, api_key=mos.keys.create("alice")[1]) as alice,
        MemOS.connect(base, api_key=mos.keys.create("bob")[1]) as bob,
    ):
        alice.create_cube("notes")
        alice.add_many([f"fact {n} about the harbour" for n in range(40)], cube="notes")
        job = alice.jobs.submit("notes", JobKind.REENCODE, {"codec": "fp16"}, reason="smaller")
        assert (job.state, job.principal, job.params) == ("queued", "alice", {"codec": "fp16"})
        with pytest.raises(JobNotFound):
            bob.jobs.get(job.id)
        with pytest.raises(CubeNotFound):
            bob.jobs.submit("notes", "reencode", {"codec": "fp16"})
        with pytest.raises(InvalidInput):
            alice.jobs.submit("notes", "reencode", {"codec": "zip"})
        with pytest.raises(InvalidInput):
            alice.jobs.submit("notes", "defrag")
        assert alice.jobs.list("notes") == [job]
        extra = alice.jobs.submit("notes", "reencode", {"codec": "int8"})
        with pytest.raises(JobNotFound):
            bob.jobs.cancel(extra.id)
        assert alice.jobs.cancel(extra.id).state == "cancelled"
        with pytest.raises(Conflict):
            alice.jobs.cancel(extra.id)
        stop = threading.Event()
        worker = threading.Thread(target=Worker(mos).run, args=(stop,), kwargs={"poll_s": 0.05})
        worker.start()
        try:
            done = alice.jobs.wait(job.id, timeout=30, poll_s=0.05)
        finally:
            stop.set()
            worker.join(timeout=30)
        assert done.state == "done"
        assert done.result is not None
        assert alice.get_cube("notes").codec == "fp16"
        assert alice.log("notes")[-1].reason == f"[{job.id}] smaller"
        assert alice.jobs.list("notes") == [done, alice.jobs.get(extra.id)]
        assert alice.jobs.list(state="cancelled") == [alice.jobs.get(extra.id)]
        assert alice.jobs.list() == alice.jobs.list("notes")
        assert bob.jobs.list() == []
        with pytest.raises(InvalidInput):
            alice.jobs.list(state="finished")
        assert alice.jobs.get(extra.id).state == "cancelled"  # no worker ran it


def test_a_server_with_workers_runs_its_jobs_itself(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'data'}"
    mos = MemOS(open_store(url), embedder=HashEmbedder(64))
    with (
        serve(mos, ServerSettings(store=url, workers=1)) as base,
        MemOS.connect(base, api_key=mos.keys.create("alice")[1]) as alice,
    ):
        alice.create_cube("notes")
        alice.add_many([f"fact {n} about the harbour" for n in range(40)], cube="notes")
        job = alice.jobs.submit("notes", "reencode", {"codec": "fp16"})
        done = alice.jobs.wait(job.id, timeout=60, poll_s=0.05)
        assert done.state == "done"
        assert alice.get_cube("notes").codec == "fp16"
