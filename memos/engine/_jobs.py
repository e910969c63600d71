"""``mos.jobs``: the background job queue's operations, declared once (see
:mod:`memos.engine._operations`). A job is stored before ``submit`` returns, and ``memos
worker`` processes sharing the store run it (see :mod:`memos.core._jobs`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from memos.core import _validation as check
from memos.core._jobs import (
    Job,
    JobKind,
    JobState,
    ReencodeParams,
    checked_job_id,
    checked_kind,
    checked_params,
    checked_state,
    new_job_id,
    waited,
)
from memos.core._types import Access, utcnow
from memos.engine._operations import Namespace, operation
from memos.errors import JobNotFound

if TYPE_CHECKING:
    from memos.engine._handle import Handle

_JOBS = "jobs"


class Jobs(Namespace):
    """Background jobs: ``submit``, ``list``, ``get``, ``cancel``, ``wait``."""

    _handle: Handle

    @operation("POST", "/v1/cubes/{cube}/jobs", status=202, tag=_JOBS)
    def submit(
        self,
        cube: str,
        kind: JobKind | str,
        params: Mapping[str, Any] | None = None,
        *,
        user: str | None = None,
        reason: str | None = None,
    ) -> Job:
        """Queue a background job on ``cube`` and return it, queued: ``consolidate`` (params
        as ``lora.consolidate``: ``name`` and ``item_ids`` or ``query``), ``retrain``
        (``name``), ``refit``, ``reencode`` (``codec``). A worker (``memos worker``) runs it
        with this handle's rights; the events it makes name the acting user and begin their
        reason with the job's id. The job is stored before this returns: no worker crash
        loses it."""
        from memos.plaintext._encoding import checked_codec, fitted

        engine, scope = self._handle._engine, self._handle._scope
        info = scope.cube(cube, Access.WRITE)
        job_kind = checked_kind(kind)
        checked = checked_params(job_kind, dict(params) if isinstance(params, Mapping) else params)
        # what the worker's call would refuse at once is refused now, before anything queues
        if isinstance(checked, ReencodeParams):
            checked_codec(checked.codec, info.dim)
        elif job_kind == JobKind.REFIT:
            fitted(info)
        job = Job(
            id=new_job_id(), cube=info.name, kind=job_kind, principal=scope.principal,
            params=checked.model_dump(mode="json"), actor=scope.actor(user),
            reason=check.reason(reason, scope.limits), after_seq=engine.store.head(info.name)[0],
            submitted_at=utcnow(),
        )  # fmt: skip
        check.reason(job.event_reason, scope.limits)  # the events' reasons must fit too
        engine.store.enqueue_job(job)
        return job

    @operation("GET", "/v1/jobs", tag=_JOBS)
    def list(self, cube: str | None = None, *, state: JobState | str | None = None) -> list[Job]:
        """The jobs of ``cube`` (default: of every cube this handle may read), oldest first;
        only those in ``state`` when given."""
        store, scope = self._handle._engine.store, self._handle._scope
        wanted = checked_state(state)
        cubes = self._handle.list_cubes() if cube is None else [scope.cube(cube)]
        jobs = [job for info in cubes for job in store.list_jobs(info.name)]
        if cube is None:
            jobs.sort(key=lambda job: (job.submitted_at, job.id))
        return [job for job in jobs if wanted is None or job.state == wanted]

    @operation("GET", "/v1/jobs/{job_id}", tag=_JOBS)
    def get(self, job_id: str) -> Job:
        """The job as it stands; :class:`JobNotFound` also for a job of a cube this handle may
        not read."""
        job = self._handle._engine.store.get_job(checked_job_id(job_id))
        if job is None or not self._handle._scope.can_read(job.cube):
            raise JobNotFound(f"no job with id {job_id!r}", job_id=job_id)
        return job

    @operation("POST", "/v1/jobs/{job_id}/cancel", tag=_JOBS)
    def cancel(self, job_id: str) -> Job:
        """Cancel a job no worker has taken yet (:class:`Conflict` once one has: a running job
        is never interrupted); needs write access to its cube."""
        job = self.get(job_id)
        self._handle._scope.cube(job.cube, Access.WRITE)
        return self._handle._engine.store.cancel_job(job.id, utcnow())

    def wait(self, job_id: str, *, timeout: float = 600.0, poll_s: float = 0.2) -> Job:
        """The job once a worker finished it (``done`` or ``failed``), or as it stands when
        ``timeout`` seconds ran out."""
        return waited(lambda: self.get(job_id), timeout, poll_s)
