"""The background job queue (see :mod:`memos.core._jobs`): one row per job, its state and lease
in columns for the queries that pick the next one, the job itself in the body."""

from __future__ import annotations

import sqlite3
from collections.abc import Collection
from datetime import datetime

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

from ._db import Connected, sortable_time


class JobTable(Connected):
    """A durable queue with leases, oldest job first."""

    def enqueue_job(self, job: Job) -> None:
        with self._write() as conn:
            try:
                conn.execute(
                    "INSERT INTO jobs (id, cube, state, lease_until, body) VALUES (?, ?, ?, ?, ?)",
                    (job.id, job.cube, job.state.value, None, job.model_dump_json()),
                )
            except sqlite3.IntegrityError:
                raise Conflict(f"a job with id {job.id!r} exists", job_id=job.id) from None

    def claim_job(self, worker: str, now: datetime, lease_s: float) -> Job | None:
        sql = (
            "SELECT body FROM jobs WHERE state = 'queued'"
            " OR (state = 'running' AND lease_until <= ?) ORDER BY seq LIMIT 1"
        )
        # idle workers poll: look without the write lock first, so they never hold up writers
        if not self._read(sql, (sortable_time(now),)):
            return None
        with self._write() as conn:
            row = conn.execute(sql, (sortable_time(now),)).fetchone()
            if row is None:
                return None
            job = Job.model_validate_json(row[0])
            if not claimable(job, now):  # the row's columns and its body disagree
                raise IntegrityError(f"job {job.id} is stored inconsistently", job_id=job.id)
            job = claimed(job, worker, now, lease_s)
            _put_job(conn, job)
        return job

    def renew_job(self, job_id: str, worker: str, now: datetime, lease_s: float) -> Job:
        with self._write() as conn:
            job = renewed(_job_in(conn, job_id), worker, now, lease_s)
            _put_job(conn, job)
        return job

    def finish_job(self, job: Job) -> Job:
        if job.worker is None or job.state in UNFINISHED:
            raise InvalidInput(f"job {job.id} is not finished by a worker", job_id=job.id)
        with self._write() as conn:
            held(_job_in(conn, job.id), job.worker)
            _put_job(conn, job)
        return job

    def cancel_job(self, job_id: str, now: datetime) -> Job:
        with self._write() as conn:
            job = cancelled(_job_in(conn, job_id), now)
            _put_job(conn, job)
        return job

    def erase_from_jobs(self, cube: str, item_ids: Collection[str]) -> int:
        ids = set(item_ids)
        with self._write() as conn:
            rows = conn.execute("SELECT body FROM jobs WHERE cube = ?", (cube,)).fetchall()
            erased = [erased_from(Job.model_validate_json(body), ids) for (body,) in rows]
            for job in erased:
                if job is not None:
                    _put_job(conn, job)
        return sum(job is not None for job in erased)

    def get_job(self, job_id: str) -> Job | None:
        rows = self._read("SELECT body FROM jobs WHERE id = ?", (job_id,))
        return Job.model_validate_json(rows[0][0]) if rows else None

    def list_jobs(self, cube: str) -> list[Job]:
        rows = self._read("SELECT body FROM jobs WHERE cube = ? ORDER BY seq", (cube,))
        return [Job.model_validate_json(body) for (body,) in rows]

    def job_counts(self) -> dict[JobState, int]:
        rows = self._read(
            "SELECT state, count(*) FROM jobs WHERE state IN ('queued', 'running') GROUP BY state"
        )
        counts = dict.fromkeys(UNFINISHED, 0)
        counts.update({JobState(state): count for state, count in rows})
        return counts


def _job_in(conn: sqlite3.Connection, job_id: str) -> Job:
    row = conn.execute("SELECT body FROM jobs WHERE id = ?", (job_id,)).fetchone()
    if row is None:
        raise JobNotFound(f"no job with id {job_id!r}", job_id=job_id)
    return Job.model_validate_json(row[0])


def _put_job(conn: sqlite3.Connection, job: Job) -> None:
    lease = None if job.lease_until is None else sortable_time(job.lease_until)
    conn.execute(
        "UPDATE jobs SET state = ?, lease_until = ?, body = ? WHERE id = ?",
        (job.state.value, lease, job.model_dump_json(), job.id),
    )
