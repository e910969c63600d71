"""The job queue of each store against a plain model, driven by hypothesis.

The model is a list of jobs in the order they were queued, each with its state, its worker, its
lease and how many times it was claimed, and a clock the machine moves forward. Every claim must
hand out the oldest job that is queued or whose lease ran out (or nothing); renewing or finishing
a job must succeed exactly when the worker holds it; the counts and every stored job must match
the model after every step, on SQLite and on Redis.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from _redis import drop_redis_store, fresh_redis_url
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, invariant, rule

from memos import Job, JobKind, JobState, open_store
from memos.core._jobs import new_job_id, succeeded
from memos.errors import Conflict

T0 = datetime(2026, 1, 1, tzinfo=UTC)
workers = st.sampled_from(["w1", "w2", "w3"])
leases = st.sampled_from([5.0, 10.0])


@dataclass
class Modelled:
    id: str
    state: JobState = JobState.QUEUED
    worker: str | None = None
    lease_until: datetime | None = None
    attempts: int = 0

    def claimable(self, now: datetime) -> bool:
        return self.state == JobState.QUEUED or (
            self.state == JobState.RUNNING
            and self.lease_until is not None
            and self.lease_until <= now
        )


class JobQueueMachine(RuleBasedStateMachine):
    jobs = Bundle("jobs")

    def __init__(self) -> None:
        super().__init__()
        self.tmp = Path(tempfile.mkdtemp(prefix="memos-jobs-"))
        self.store = open_store(self.url())
        self.now = T0
        self.model: list[Modelled] = []
        self.held: dict[str, Job] = {}  # the job each claim handed out, as its worker has it

    def url(self) -> str:
        return f"sqlite:///{self.tmp / 'store'}"

    def teardown(self) -> None:
        self.store.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def _find(self, job_id: str) -> Modelled:
        return next(job for job in self.model if job.id == job_id)

    @rule(target=jobs)
    def enqueue(self) -> str:
        job = Job(id=new_job_id(), cube="c", kind=JobKind.REFIT, actor="alice", after_seq=1,
                  submitted_at=self.now)  # fmt: skip
        self.store.enqueue_job(job)
        self.model.append(Modelled(job.id))
        return job.id

    @rule(seconds=st.sampled_from([0.0, 1.0, 4.0, 6.0, 11.0]))
    def wait(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)

    @rule(worker=workers, lease=leases)
    def claim(self, worker: str, lease: float) -> None:
        expected = next((job for job in self.model if job.claimable(self.now)), None)
        claimed = self.store.claim_job(worker, self.now, lease)
        if expected is None:
            assert claimed is None
            return
        assert claimed is not None
        assert claimed.id == expected.id
        expected.state, expected.worker = JobState.RUNNING, worker
        expected.lease_until = self.now + timedelta(seconds=lease)
        expected.attempts += 1
        self.held[expected.id] = claimed

    @rule(job_id=jobs, worker=workers, lease=leases)
    def renew(self, job_id: str, worker: str, lease: float) -> None:
        job = self._find(job_id)
        if job.state == JobState.RUNNING and job.worker == worker:
            self.store.renew_job(job_id, worker, self.now, lease)
            job.lease_until = self.now + timedelta(seconds=lease)
        else:
            with pytest.raises(Conflict):
                self.store.renew_job(job_id, worker, self.now, lease)

    @rule(job_id=jobs, worker=workers)
    def finish(self, job_id: str, worker: str) -> None:
        job = self._find(job_id)
        mine = self.held.get(job_id)
        if mine is None or mine.worker != worker:
            return  # a worker can only finish what a claim handed it
        if job.state == JobState.RUNNING and job.worker == worker:
            self.store.finish_job(succeeded(mine, {"by": worker}))
            job.state, job.lease_until = JobState.DONE, None
        else:
            with pytest.raises(Conflict):
                self.store.finish_job(succeeded(mine, {"by": worker}))

    @rule(job_id=jobs)
    def cancel(self, job_id: str) -> None:
        job = self._find(job_id)
        if job.state == JobState.QUEUED:
            self.store.cancel_job(job_id, self.now)
            job.state = JobState.CANCELLED
        else:
            with pytest.raises(Conflict):
                self.store.cancel_job(job_id, self.now)

    @invariant()
    def matches_the_model(self) -> None:
        counts = {state: sum(j.state == state for j in self.model) for state in JobState}
        assert self.store.job_counts() == {
            JobState.QUEUED: counts[JobState.QUEUED],
            JobState.RUNNING: counts[JobState.RUNNING],
        }
        stored = self.store.list_jobs("c")
        assert [job.id for job in stored] == [job.id for job in self.model]
        for job, expected in zip(stored, self.model, strict=True):
            assert (job.state, job.worker, job.lease_until, job.attempts) == (
                expected.state, expected.worker, expected.lease_until, expected.attempts,
            )  # fmt: skip


class RedisJobQueueMachine(JobQueueMachine):
    def url(self) -> str:
        self.redis_url = fresh_redis_url()
        return self.redis_url

    def teardown(self) -> None:
        super().teardown()
        drop_redis_store(self.redis_url)


JobQueueMachine.TestCase.settings = settings(max_examples=40, stateful_step_count=30, deadline=None)
TestJobQueueMachine = JobQueueMachine.TestCase
RedisJobQueueMachine.TestCase.settings = settings(
    max_examples=25, stateful_step_count=30, deadline=None
)
TestRedisJobQueueMachine = RedisJobQueueMachine.TestCase
