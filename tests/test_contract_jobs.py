"""The contract of ``JobQueue``: the durable queue of background jobs, with leases, on every
backend.

The queue's core rules (claims under a lease, renewals, a lease that runs out, finishing only by
the worker that holds the job, cancelling only a queued job, reopening, concurrent workers) are
held to every backend by the store-level tests of ``tests/test_jobs.py`` and by the model-based
machine of ``tests/test_job_queue_machine.py``; this file adds what those leave out: a job read
back with every field, a failed job, the queue over several cubes, a refused cancel writing
nothing, and concurrent enqueues of one id.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from _contract import T0, handles, race

from memos import Job, JobKind, JobState, Store
from memos.core._jobs import cancelled, claimed, failed, new_job_id, succeeded
from memos.errors import Conflict, InvalidInput

LEASE_S = 10.0


def queued(cube: str = "notes", **update: object) -> Job:
    fields = {"id": new_job_id(), "cube": cube, "kind": JobKind.REFIT, "actor": "alice",
              "after_seq": 1, "submitted_at": T0} | update  # fmt: skip
    return Job.model_validate(fields)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def test_a_job_reads_back_with_every_field(store: Store) -> None:
    job = queued(
        kind=JobKind.CONSOLIDATE,
        params={"name": "trip", "item_ids": ["a", "b"], "k": 3, "density": 0.25, "fp32": False,
                "recipe": {"lr": 1e-4, "steps": [1, 2], "note": "ünï 🙂", "none": None}},
        principal="bob",
        actor="bob",
        reason="nightly consolidation",
        after_seq=42,
        submitted_at=T0.replace(microsecond=654321),
    )  # fmt: skip
    store.enqueue_job(job)
    assert store.get_job(job.id) == job
    assert store.list_jobs("notes") == [job]
    mine = store.claim_job("w1", at(1), LEASE_S)
    assert mine == claimed(job, "w1", at(1), LEASE_S)  # the claim changes nothing else
    assert store.get_job(job.id) == mine
    done = store.finish_job(succeeded(mine, {"adapter": "trip@1", "nested": {"x": [1.5, None]}}))
    assert store.get_job(job.id) == done
    assert store.list_jobs("notes") == [done]


def test_a_failed_job_keeps_its_failure_and_leaves_the_queue(store: Store) -> None:
    job, after = queued(), queued()
    store.enqueue_job(job)
    store.enqueue_job(after)
    mine = store.claim_job("w1", at(0), LEASE_S)
    assert mine is not None
    assert mine.id == job.id
    gone = store.finish_job(failed(mine, InvalidInput("no such adapter")))
    assert gone.state == JobState.FAILED
    assert gone.failure is not None
    assert (gone.failure.code, gone.failure.message) == ("invalid_input", "no such adapter")
    assert gone.lease_until is None
    assert store.get_job(job.id) == gone
    assert store.job_counts() == {JobState.QUEUED: 1, JobState.RUNNING: 0}
    # long past the lease it ran under, a failed job is never handed out again
    nxt = store.claim_job("w2", at(10 * LEASE_S), LEASE_S)
    assert nxt is not None
    assert nxt.id == after.id
    # and when w2's lease runs out too, only w2's job is handed out again
    again = store.claim_job("w3", at(100 * LEASE_S), LEASE_S)
    assert again is not None
    assert again.id == after.id
    assert store.claim_job("w4", at(100 * LEASE_S), LEASE_S) is None
    with pytest.raises(Conflict):
        store.enqueue_job(job)  # its id stays taken
    with pytest.raises(Conflict):
        store.finish_job(gone)  # and it is finished once
    assert store.get_job(job.id) == gone
    assert [j.state for j in store.list_jobs("notes")] == [JobState.FAILED, JobState.RUNNING]


def test_the_queue_spans_every_cube(store: Store) -> None:
    n1, d1, n2, d2 = queued("notes"), queued("diary"), queued("notes"), queued("diary")
    for job in (n1, d1, n2, d2):
        store.enqueue_job(job)
    assert [j.id for j in store.list_jobs("notes")] == [n1.id, n2.id]
    assert [j.id for j in store.list_jobs("diary")] == [d1.id, d2.id]
    assert store.list_jobs("nowhere") == []
    assert store.job_counts() == {JobState.QUEUED: 4, JobState.RUNNING: 0}
    # claims take the oldest job of any cube
    order = [store.claim_job(f"w{n}", at(n), LEASE_S) for n in range(3)]
    assert [job.id if job else None for job in order] == [n1.id, d1.id, n2.id]
    assert store.job_counts() == {JobState.QUEUED: 1, JobState.RUNNING: 3}
    assert order[1] is not None
    store.finish_job(succeeded(order[1], {}))
    store.cancel_job(d2.id, at(5))
    assert store.job_counts() == {JobState.QUEUED: 0, JobState.RUNNING: 2}
    # finished and cancelled jobs are still listed, in their cube, in their order
    assert [(j.id, j.state) for j in store.list_jobs("diary")] == [
        (d1.id, JobState.DONE),
        (d2.id, JobState.CANCELLED),
    ]
    assert [(j.id, j.state) for j in store.list_jobs("notes")] == [
        (n1.id, JobState.RUNNING),
        (n2.id, JobState.RUNNING),
    ]


def test_a_refused_cancel_writes_nothing(store: Store) -> None:
    running, finished, waiting = queued(), queued(), queued()
    for job in (running, finished, waiting):
        store.enqueue_job(job)
    mine = store.claim_job("w1", at(0), LEASE_S)
    assert mine is not None
    done = store.claim_job("w2", at(0), LEASE_S)
    assert done is not None
    done = store.finish_job(succeeded(done, {"seq": 3}))
    gone = store.cancel_job(waiting.id, at(1))
    assert gone == cancelled(waiting, at(1))
    for job_id, before in ((mine.id, mine), (done.id, done), (gone.id, gone)):
        with pytest.raises(Conflict):
            store.cancel_job(job_id, at(2))
        assert store.get_job(job_id) == before
    assert store.job_counts() == {JobState.QUEUED: 0, JobState.RUNNING: 1}
    # the running job's worker still holds it, and finishes it
    assert store.renew_job(mine.id, "w1", at(3), LEASE_S).lease_until == at(3 + LEASE_S)
    assert store.finish_job(succeeded(mine, {})).state == JobState.DONE


def test_of_concurrent_enqueues_of_one_id_exactly_one_lands(store: Store) -> None:
    job_id = new_job_id()
    candidates = [queued(f"cube{n}", id=job_id, actor=f"a{n}") for n in range(6)]
    with handles(store, len(candidates)) as stores:
        outcomes = race(stores, lambda other, n: other.enqueue_job(candidates[n]))
    landed = [n for n, outcome in enumerate(outcomes) if outcome is None]
    assert len(landed) == 1, outcomes
    assert all(isinstance(o, Conflict) for n, o in enumerate(outcomes) if n != landed[0])
    winner = candidates[landed[0]]
    assert store.get_job(job_id) == winner
    assert store.job_counts() == {JobState.QUEUED: 1, JobState.RUNNING: 0}
    for n, candidate in enumerate(candidates):
        assert store.list_jobs(candidate.cube) == ([winner] if n == landed[0] else [])
    claimed_once = store.claim_job("w1", at(0), LEASE_S)
    assert claimed_once is not None
    assert claimed_once.id == job_id
    assert store.claim_job("w2", at(1), LEASE_S) is None
