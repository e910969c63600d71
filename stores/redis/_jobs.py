"""The job queue of the Redis store: a stream read through one consumer group.

Every key sits under the hash tag ``{jobs}``, so the whole queue lives in one slot and each
transaction below runs unchanged on Redis Cluster::

    P:{jobs}:queue            the stream of unfinished jobs (field ``job``: the job id), read by
                              the consumer group ``workers``
    P:{jobs}:job:<id>         the job's JSON: the authority on its state and lease
    P:{jobs}:entry            job id -> its stream entry id, once a worker has read it (hash)
    P:{jobs}:cube:<cube>      the cube's job ids, oldest first (list)

A worker takes new jobs with ``XREADGROUP`` and finishes one by ``XACK`` + ``XDEL`` in the
transaction that stores its result, so the stream holds exactly the unfinished jobs. An entry
stays pending while its job runs; the job's JSON says until when its worker's lease runs, and a
worker looking for work first scans the pending entries for a job whose lease ran out (or that
was read by a worker that died before marking it running) and claims it with ``XCLAIM``. Each
state change WATCHes the job's JSON, so two workers never both claim one job, and a worker whose
lease was taken over can neither renew nor finish it.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from datetime import datetime
from typing import Any, TypeVar
from urllib.parse import quote

from redis import Redis
from redis.client import Pipeline
from redis.exceptions import ResponseError

from memos.core._jobs import (
    UNFINISHED,
    Job,
    JobState,
    cancelled,
    claimable,
    claimed,
    erased_from,
    held,
    renewed,
)
from memos.errors import Conflict, IntegrityError, InvalidInput, JobNotFound

from ._connection import _Connection, _storage_errors

GROUP = "workers"
# pending entries examined per look for a job whose worker stopped
_PENDING_SCAN = 100
T = TypeVar("T")


class RedisJobQueue:
    """The jobs of one Redis store (one key prefix)."""

    def __init__(self, redis: Redis, prefix: str) -> None:
        self._redis = redis
        self._tag = f"{prefix}:{{jobs}}"
        self.queue = f"{self._tag}:queue"
        self.entries = f"{self._tag}:entry"
        self._group_ready = False

    def job_key(self, job_id: str) -> str:
        return f"{self._tag}:job:{job_id}"

    def cube_key(self, cube: str) -> str:
        return f"{self._tag}:cube:{quote(cube, safe='')}"

    # writes ------------------------------------------------------------------------------

    def enqueue(self, job: Job) -> None:
        self._ensure_group()
        key = self.job_key(job.id)

        def plan(pipe: Pipeline) -> None:
            if pipe.exists(key):
                raise Conflict(f"a job with id {job.id!r} exists", job_id=job.id)
            pipe.multi()
            pipe.set(key, job.model_dump_json())
            pipe.rpush(self.cube_key(job.cube), job.id)
            pipe.xadd(self.queue, {"job": job.id})

        *_, entry_id = self._replies(plan, key)
        # where its entry is, so that a cancel can take it off the stream at once (without
        # it, the first worker to read the entry drops it)
        self._redis.hset(self.entries, job.id, _text(entry_id))

    def claim(self, worker: str, now: datetime, lease_s: float) -> Job | None:
        self._ensure_group()
        stopped: list[tuple[str, str]] = self._stopped(now)
        for entry_id, job_id in stopped:
            job = self._take(entry_id, job_id, worker, now, lease_s, reclaim=True)
            if job is not None:
                return job
        while (entry := self._read_new(worker)) is not None:
            job = self._take(*entry, worker, now, lease_s, reclaim=False)
            if job is not None:
                return job
        return None

    def renew(self, job_id: str, worker: str, now: datetime, lease_s: float) -> Job:
        key = self.job_key(job_id)

        def plan(pipe: Pipeline) -> Job:
            job = renewed(self._job_in(pipe, job_id), worker, now, lease_s)
            pipe.multi()
            pipe.set(key, job.model_dump_json())
            return job

        return self._transaction(plan, key)

    def cancel(self, job_id: str, now: datetime) -> Job:
        key = self.job_key(job_id)

        def plan(pipe: Pipeline) -> Job:
            job = cancelled(self._job_in(pipe, job_id), now)
            entry_id = pipe.hget(self.entries, job_id)
            pipe.multi()
            pipe.set(key, job.model_dump_json())
            if entry_id is not None:
                self._unqueue(pipe, job_id, entry_id)
            return job

        return self._transaction(plan, key)

    def finish(self, job: Job) -> Job:
        if job.worker is None or job.state in UNFINISHED:
            raise InvalidInput(f"job {job.id} is not finished by a worker", job_id=job.id)
        worker, key = job.worker, self.job_key(job.id)

        def plan(pipe: Pipeline) -> Job:
            held(self._job_in(pipe, job.id), worker)
            entry_id = pipe.hget(self.entries, job.id)
            pipe.multi()
            pipe.set(key, job.model_dump_json())
            if entry_id is not None:
                self._unqueue(pipe, job.id, entry_id)
            return job

        return self._transaction(plan, key)

    # reads -------------------------------------------------------------------------------

    def get(self, job_id: str) -> Job | None:
        body = self._redis.get(self.job_key(job_id))
        return None if body is None else Job.model_validate_json(body)

    def erase_from(self, cube: str, item_ids: set[str]) -> int:
        """Clear what the cube's finished jobs say of ``item_ids`` (see ``erased_from``)."""
        erased = 0
        for job in self.in_cube(cube):
            if erased_from(job, item_ids) is None:
                continue
            key = self.job_key(job.id)

            def plan(pipe: Pipeline, job_id: str = job.id, key: str = key) -> bool:
                scrubbed = erased_from(self._job_in(pipe, job_id), item_ids)
                pipe.multi()
                if scrubbed is not None:
                    pipe.set(key, scrubbed.model_dump_json())
                return scrubbed is not None

            erased += self._transaction(plan, key)
        return erased

    def in_cube(self, cube: str) -> list[Job]:
        ids = [_text(job_id) for job_id in self._redis.lrange(self.cube_key(cube), 0, -1)]
        if not ids:
            return []
        bodies = self._redis.mget([self.job_key(job_id) for job_id in ids])
        return [Job.model_validate_json(body) for body in bodies if body is not None]

    def counts(self) -> dict[JobState, int]:
        self._ensure_group()
        with self._redis.pipeline(transaction=False) as pipe:
            pipe.xlen(self.queue)
            pipe.xpending(self.queue, GROUP)
            unfinished, pending = pipe.execute()
        running = int(pending["pending"])
        return {JobState.QUEUED: int(unfinished) - running, JobState.RUNNING: running}

    # claiming ----------------------------------------------------------------------------

    def _stopped(self, now: datetime) -> list[tuple[str, str]]:
        """Pending entries whose job may be claimed again: its lease ran out, or the worker
        that read it stopped before marking it running."""
        pending = self._redis.xpending_range(self.queue, GROUP, "-", "+", _PENDING_SCAN)
        if not pending:
            return []
        entry_ids = [_text(p["message_id"]) for p in pending]
        with self._redis.pipeline(transaction=False) as pipe:
            for entry_id in entry_ids:
                pipe.xrange(self.queue, entry_id, entry_id)
            found = [
                (e, _job_id(entries)) for e, entries in zip(entry_ids, pipe.execute(), strict=True)
            ]
        located = [(entry_id, job_id) for entry_id, job_id in found if job_id is not None]
        if not located:
            return []
        bodies = self._redis.mget([self.job_key(job_id) for _, job_id in located])
        return [
            (entry_id, job_id)
            for (entry_id, job_id), body in zip(located, bodies, strict=True)
            if body is None or claimable(Job.model_validate_json(body), now)
        ]

    def _read_new(self, worker: str) -> tuple[str, str] | None:
        reply: Any = self._redis.xreadgroup(GROUP, worker, {self.queue: ">"}, count=1)
        for _, entries in reply or []:
            for entry_id, fields in entries:
                job_id = (fields or {}).get(b"job")
                if job_id is not None:
                    return _text(entry_id), _text(job_id)
        return None

    def _take(
        self, entry_id: str, job_id: str, worker: str, now: datetime, lease_s: float,
        *, reclaim: bool,
    ) -> Job | None:  # fmt: skip
        """Mark the job of a stream entry running under ``worker``; ``None`` when it turned
        out not to be claimable (another worker was quicker)."""
        key = self.job_key(job_id)

        def plan(pipe: Pipeline) -> Job | None:
            body = pipe.get(key)
            job = None if body is None else Job.model_validate_json(body)
            if job is None or not claimable(job, now):
                if job is None or job.state not in UNFINISHED:
                    pipe.multi()  # nothing left to run for this entry
                    self._unqueue(pipe, job_id, entry_id)
                return None
            job = claimed(job, worker, now, lease_s)
            pipe.multi()
            if reclaim:
                pipe.xclaim(self.queue, GROUP, worker, 0, [entry_id], justid=True)
            pipe.set(key, job.model_dump_json())
            pipe.hset(self.entries, job_id, entry_id)
            return job

        return self._transaction(plan, key)

    def _unqueue(self, pipe: Pipeline, job_id: str, entry_id: bytes | str) -> None:
        """Queue, after MULTI, what takes a job's entry off the stream for good."""
        pipe.xack(self.queue, GROUP, entry_id)
        pipe.xdel(self.queue, entry_id)
        pipe.hdel(self.entries, job_id)

    def _job_in(self, pipe: Pipeline, job_id: str) -> Job:
        body = pipe.get(self.job_key(job_id))
        if body is None:
            raise JobNotFound(f"no job with id {job_id!r}", job_id=job_id)
        return Job.model_validate_json(body)

    # plumbing ----------------------------------------------------------------------------

    def _transaction(self, plan: Callable[[Pipeline], T], *watched: str) -> T:
        """Run ``plan`` under WATCH on ``watched`` and execute what it queued after
        ``pipe.multi()``, again from the start while a watched key changed meanwhile."""
        transaction: Any = self._redis.transaction
        result: T = transaction(plan, *watched, value_from_callable=True)
        return result

    def _replies(self, plan: Callable[[Pipeline], None], *watched: str) -> list[Any]:
        """As :meth:`_transaction`, returning the replies of the commands ``plan`` queued."""
        transaction: Any = self._redis.transaction
        replies: list[Any] = transaction(plan, *watched)
        return replies

    def _ensure_group(self) -> None:
        if self._group_ready:
            return
        try:
            self._redis.xgroup_create(self.queue, GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._group_ready = True


def _job_id(entries: Any) -> str | None:
    for _, fields in entries or []:
        job_id = (fields or {}).get(b"job")
        if job_id is not None:
            return _text(job_id)
    return None


def _text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, str):
        return value
    raise IntegrityError(f"unexpected value in the job queue: {value!r}")


class _Jobs(_Connection):
    """The :class:`memos.core._store.JobQueue` methods, run by the queue."""

    _jobs: RedisJobQueue

    @_storage_errors
    def enqueue_job(self, job: Job) -> None:
        self._jobs.enqueue(job)

    @_storage_errors
    def claim_job(self, worker: str, now: datetime, lease_s: float) -> Job | None:
        return self._jobs.claim(worker, now, lease_s)

    @_storage_errors
    def renew_job(self, job_id: str, worker: str, now: datetime, lease_s: float) -> Job:
        return self._jobs.renew(job_id, worker, now, lease_s)

    @_storage_errors
    def finish_job(self, job: Job) -> Job:
        return self._jobs.finish(job)

    @_storage_errors
    def cancel_job(self, job_id: str, now: datetime) -> Job:
        return self._jobs.cancel(job_id, now)

    @_storage_errors
    def get_job(self, job_id: str) -> Job | None:
        return self._jobs.get(job_id)

    @_storage_errors
    def list_jobs(self, cube: str) -> list[Job]:
        return self._jobs.in_cube(cube)

    @_storage_errors
    def erase_from_jobs(self, cube: str, item_ids: Collection[str]) -> int:
        return self._jobs.erase_from(cube, set(item_ids))

    @_storage_errors
    def job_counts(self) -> dict[JobState, int]:
        return self._jobs.counts()
