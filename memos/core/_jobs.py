"""Background jobs: long work (training an adapter, re-encoding a cube) asked for now and done
later by a worker (``memos worker``, :mod:`memos.schedulers`).

A job is durable from the moment ``mos.jobs.submit`` returns: the store keeps it in a
queue (a table in SQLite, a Redis Streams consumer group on Redis). A worker *claims* the oldest
queued job under a lease that it renews while it works; a worker that dies stops renewing, and
once the lease runs out the next worker claims the job again. Running a job twice must not make
its change twice, so every event a job makes carries the job's tag in its ``reason``: a worker
that finds the tagged event in the cube's log after the job's ``after_seq`` marks the job done
instead of redoing it. Past ``MAX_ATTEMPTS`` claims a job fails for good (a job that kills every
worker that runs it must not stop the queue).

This module holds the job's record, the parameters of each kind and the state transitions every
store applies the same way.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable, Collection
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from pydantic import ConfigDict, Field, ValidationError, model_validator

from memos.core._model import Model
from memos.core._types import Event, utcnow
from memos.core._validation import ADAPTER_NAME
from memos.errors import Conflict, InvalidInput, MemosError

MAX_ATTEMPTS = 3
_JOB_ID = re.compile(r"job-[0-9a-f]{24}")


class JobKind(StrEnum):
    CONSOLIDATE = "consolidate"  # train a new version of an adapter on memories
    RETRAIN = "retrain"  # retrain an adapter on its current sources
    REFIT = "refit"  # fit the cube's codec again
    REENCODE = "reencode"  # switch the cube to another codec
    TICK = "tick"  # carry out the cube's scheduler plan (see memos.engine._scheduler)
    EXPIRE = "expire"  # apply the cube's retention rules (see memos.engine._governance)


class JobState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"  # by a user, before any worker took it


UNFINISHED = (JobState.QUEUED, JobState.RUNNING)


class JobFailure(Model):
    """Why a job failed: the error's code (as in the server's error envelope) and message."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    code: str
    message: str


class Job(Model):
    """One background job and where it stands."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    cube: str
    kind: JobKind
    params: dict[str, Any] = Field(default_factory=dict)
    # whose rights the job runs with (None: the operator) and whom its events name
    principal: str | None = None
    actor: str
    reason: str | None = None
    after_seq: int = Field(ge=0)  # the cube's head when the job was submitted
    state: JobState = JobState.QUEUED
    attempts: int = Field(default=0, ge=0)
    worker: str | None = None
    lease_until: datetime | None = None
    submitted_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    result: dict[str, Any] | None = None
    failure: JobFailure | None = None

    @property
    def tag(self) -> str:
        """What begins the reason of every event this job makes."""
        return f"[{self.id}]"

    @property
    def event_reason(self) -> str:
        return self.tag if self.reason is None else f"{self.tag} {self.reason}"

    def made(self, event: Event) -> bool:
        """Whether this job made ``event``."""
        return (
            event.cube == self.cube
            and event.seq > self.after_seq
            and (event.reason or "").startswith(self.tag)
        )


# parameters of each kind ------------------------------------------------------------------


class _Params(Model):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)


class ConsolidateParams(_Params):
    """``mos.lora().consolidate`` of the given memories (``item_ids``) or of the ``k`` best
    for ``query``."""

    name: str = Field(pattern=ADAPTER_NAME)
    item_ids: list[str] | None = Field(default=None, min_length=1)
    query: str | None = None
    k: int = Field(default=20, ge=1)
    # the ComPEFT density to try (None: the default one); fp32 stores the weights uncompressed
    density: float | None = Field(default=None, gt=0, le=1)
    fp32: bool = False
    recipe: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _one_source(self) -> ConsolidateParams:
        if (self.item_ids is None) == (self.query is None):
            raise ValueError("give the memories by item_ids or by a query (one)")
        return self


class RetrainParams(_Params):
    name: str = Field(pattern=ADAPTER_NAME)


class RefitParams(_Params):
    pass


class ReencodeParams(_Params):
    codec: str


class TickParams(_Params):
    pass


class ExpireParams(_Params):
    pass


PARAMS: dict[JobKind, type[_Params]] = {
    JobKind.CONSOLIDATE: ConsolidateParams,
    JobKind.RETRAIN: RetrainParams,
    JobKind.REFIT: RefitParams,
    JobKind.REENCODE: ReencodeParams,
    JobKind.TICK: TickParams,
    JobKind.EXPIRE: ExpireParams,
}
# a tick plans again from what stands when it runs, so one taken again after its worker died
# runs again (to finish its migrations) instead of being marked done by its first event
RERUN_WHEN_TAKEN_AGAIN = frozenset({JobKind.TICK, JobKind.EXPIRE})


def checked_kind(kind: object) -> JobKind:
    try:
        return JobKind(kind if isinstance(kind, str) else "")
    except ValueError:
        known = ", ".join(k.value for k in JobKind)
        raise InvalidInput(f"unknown job kind {kind!r} (known: {known})", field="kind") from None


def checked_params(kind: JobKind, params: object) -> _Params:
    """The parameters of a ``kind`` job, or :class:`InvalidInput` naming what is wrong."""
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise InvalidInput("job params must be an object", field="params")
    try:
        return PARAMS[kind].model_validate(params)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "params"
        raise InvalidInput(f"bad {kind.value} job params: {where}: {_message(first)}",
                           field="params") from None  # fmt: skip


def checked_state(state: object) -> JobState | None:
    if state is None:
        return None
    try:
        return JobState(state if isinstance(state, str) else "")
    except ValueError:
        known = ", ".join(s.value for s in JobState)
        raise InvalidInput(f"unknown job state {state!r} (known: {known})", field="state") from None


def checked_job_id(job_id: object) -> str:
    if not isinstance(job_id, str) or not _JOB_ID.fullmatch(job_id):
        raise InvalidInput(f"bad job id {job_id!r}", field="job_id")
    return job_id


def new_job_id() -> str:
    """Time-ordered and unique across processes: 12 hex digits of milliseconds, 12 random."""
    return f"job-{time.time_ns() // 1_000_000:012x}{os.urandom(6).hex()}"


def waited(fetch: Callable[[], Job], timeout: float, poll_s: float) -> Job:
    """``fetch()`` once it returns a finished job, or its last answer after ``timeout``
    seconds."""
    deadline = time.monotonic() + timeout
    job = fetch()
    while job.state in UNFINISHED and time.monotonic() < deadline:
        time.sleep(poll_s)
        job = fetch()
    return job


# transitions every store applies ------------------------------------------------------------


def claimable(job: Job, now: datetime) -> bool:
    """Queued, or running under a lease that ran out (its worker stopped renewing it)."""
    return job.state == JobState.QUEUED or (
        job.state == JobState.RUNNING and job.lease_until is not None and job.lease_until <= now
    )


def claimed(job: Job, worker: str, now: datetime, lease_s: float) -> Job:
    return job.model_copy(
        update={
            "state": JobState.RUNNING,
            "attempts": job.attempts + 1,
            "worker": worker,
            "lease_until": now + timedelta(seconds=lease_s),
            "started_at": now,
        }
    )


def held(job: Job, worker: str) -> Job:
    """``job`` if ``worker`` still holds it, else :class:`Conflict` (its lease ran out and
    another worker claimed it, or it was finished)."""
    if job.state != JobState.RUNNING or job.worker != worker:
        raise Conflict(f"job {job.id} is no longer held by worker {worker!r}", job_id=job.id)
    return job


def renewed(job: Job, worker: str, now: datetime, lease_s: float) -> Job:
    held(job, worker)
    return job.model_copy(update={"lease_until": now + timedelta(seconds=lease_s)})


def succeeded(job: Job, result: dict[str, Any]) -> Job:
    return _finished(job, JobState.DONE, result=result)


def failed(job: Job, error: MemosError) -> Job:
    failure = JobFailure(code=error.code, message=str(error))
    return _finished(job, JobState.FAILED, failure=failure)


def cancelled(job: Job, now: datetime) -> Job:
    """``job``, cancelled at ``now``; :class:`Conflict` unless it is still queued (a running
    job is never interrupted: its change may already have landed)."""
    if job.state != JobState.QUEUED:
        raise Conflict(f"job {job.id} is {job.state.value}, not queued", job_id=job.id)
    return job.model_copy(update={"state": JobState.CANCELLED, "finished_at": now})


def erased_from(job: Job, item_ids: Collection[str]) -> Job | None:
    """``job`` without the parameters, result and reason that name one of ``item_ids`` (an
    erasure), or ``None`` when it names none of them or is unfinished (a queued job is
    cancelled first; a running one fails on the erased items)."""
    if job.state in UNFINISHED:
        return None
    named = json.dumps([job.params, job.result, job.reason])
    if not any(item_id in named for item_id in item_ids):
        return None
    return job.model_copy(update={"params": {}, "result": {"erased": True}, "reason": None})


def _finished(job: Job, state: JobState, **update: Any) -> Job:
    return job.model_copy(
        update={"state": state, "finished_at": utcnow(), "lease_until": None, **update}
    )


def _message(error: Any) -> str:
    return str(error["msg"]).removeprefix("Value error, ")
