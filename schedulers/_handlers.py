"""What each kind of job does: one SDK call, made with the rights of whoever queued the job."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from memos import Event, Job, JobKind, MemOS
from memos.core._jobs import (
    RERUN_WHEN_TAKEN_AGAIN,
    ConsolidateParams,
    ReencodeParams,
    RetrainParams,
    failed,
    succeeded,
)
from memos.errors import MemosError

Handler = Callable[[MemOS, Job], dict[str, Any]]


def _consolidate(mos: MemOS, job: Job) -> dict[str, Any]:
    from memos.parametric._manifest import DEFAULT_DENSITY

    params = ConsolidateParams.model_validate(job.params)
    density = None if params.fp32 else (params.density or DEFAULT_DENSITY)
    entry = mos.lora.consolidate(
        job.cube, params.item_ids, name=params.name, query=params.query, k=params.k,
        recipe=params.recipe, density=density, user=job.actor, reason=job.event_reason,
    )  # fmt: skip
    return {"adapter": entry.name, "version": entry.version}


def _retrain(mos: MemOS, job: Job) -> dict[str, Any]:
    params = RetrainParams.model_validate(job.params)
    entry = mos.lora.retrain(job.cube, params.name, user=job.actor, reason=job.event_reason)
    return {"adapter": entry.name, "version": entry.version}


def _refit(mos: MemOS, job: Job) -> dict[str, Any]:
    info = mos.refit(job.cube, user=job.actor, reason=job.event_reason)
    return {"codec": info.codec, "codec_version": info.codec_version}


def _reencode(mos: MemOS, job: Job) -> dict[str, Any]:
    params = ReencodeParams.model_validate(job.params)
    info = mos.reencode(job.cube, codec=params.codec, user=job.actor, reason=job.event_reason)
    return {"codec": info.codec, "codec_version": info.codec_version}


def _tick(mos: MemOS, job: Job) -> dict[str, Any]:
    report = mos.scheduler.tick(job.cube, user=job.actor, reason=job.event_reason)
    return {"migrations": len(report.events)}


def _expire(mos: MemOS, job: Job) -> dict[str, Any]:
    events = mos.governance.expire(job.cube, reason=job.event_reason)
    return {"expired": len(events)}


HANDLERS: dict[JobKind, Handler] = {
    JobKind.CONSOLIDATE: _consolidate,
    JobKind.RETRAIN: _retrain,
    JobKind.REFIT: _refit,
    JobKind.REENCODE: _reencode,
    JobKind.TICK: _tick,
    JobKind.EXPIRE: _expire,
}


def run_job(mos: MemOS, job: Job) -> Job:
    """Run a claimed ``job`` on the store of ``mos`` (the operator's handle) and return it
    finished: done, or failed with the typed error that stopped it.

    A job taken again (its worker stopped) whose event is already in its cube's log was run
    to its commit before: it is marked done, not run twice (a tick runs again: it plans from
    what stands, so it finishes what the first run left).
    """
    try:
        again = job.attempts > 1 and job.kind not in RERUN_WHEN_TAKEN_AGAIN
        if again and (earlier := made_by(mos, job, job.after_seq)) is not None:
            return succeeded(job, {**_event_summary(earlier), "recovered": True})
        before = mos.store.head(job.cube)[0]
        handle = mos if job.principal is None else mos.as_principal(job.principal)
        summary = HANDLERS[job.kind](handle, job)
        made = made_by(mos, job, before)
    except MemosError as error:
        return failed(job, error)
    return succeeded(job, {**summary, **({} if made is None else _event_summary(made))})


def made_by(mos: MemOS, job: Job, after_seq: int) -> Event | None:
    """The event ``job`` made in its cube's log after ``after_seq``, if any."""
    events = mos.store.events(job.cube, after_seq=max(after_seq, job.after_seq))
    return next((event for event in events if job.made(event)), None)


def _event_summary(event: Event) -> dict[str, Any]:
    return {"seq": event.seq, "op": event.op.value}
