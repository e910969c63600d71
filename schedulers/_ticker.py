"""The scheduler's ticker: every ``interval_s`` seconds it plans each cube whose scheduler is
enabled and queues a ``tick`` job for each that has something to do (and no tick queued or
running already), and an ``expire`` job for each cube with a memory past its retention, so
migrations and expiry run on the durable job queue like any other work, under a lease: a
worker killed in the middle of a tick gives it back, and the next run plans from what stands
and finishes. ``memos serve`` and ``memos worker`` run one (``--tick-interval``)."""

from __future__ import annotations

import logging
import threading

from memos import Job, JobKind, JobState, MemOS
from memos.core._scheduling import config_of
from memos.engine._governance import expiring
from memos.errors import MemosError

log = logging.getLogger("memos.schedulers")

DEFAULT_TICK_INTERVAL_S = 60.0
_PENDING = (JobState.QUEUED, JobState.RUNNING)
TICK_REASON = "scheduled tick"
EXPIRE_REASON = "retention"


class Ticker:
    """Queues the ticks of the cubes of ``mos.store`` (``mos``: the operator's handle)."""

    def __init__(self, mos: MemOS, *, interval_s: float = DEFAULT_TICK_INTERVAL_S) -> None:
        if not interval_s > 0:
            raise ValueError(f"interval_s must be positive, not {interval_s!r}")
        self.mos = mos
        self.interval_s = interval_s

    def once(self) -> list[Job]:
        """Plan every enabled cube now; queue a tick for each with decisions, and an expire
        job for each with a memory past its retention. The jobs."""
        queued = []
        for info in self.mos.list_cubes():
            try:
                if not self._pending(info.name, JobKind.EXPIRE) and expiring(self.mos.store, info):
                    expire = self.mos.jobs.submit(info.name, JobKind.EXPIRE, reason=EXPIRE_REASON)
                    queued.append(expire)
            except MemosError as error:
                log.warning("retention: cube %s not checked: %s", info.name, error)
            if not config_of(info.scheduler).enabled or self._pending(info.name, JobKind.TICK):
                continue
            try:
                plan = self.mos.scheduler.plan(info.name)
                if plan.decisions:
                    queued.append(self.mos.jobs.submit(info.name, JobKind.TICK, reason=TICK_REASON))
            except MemosError as error:  # one cube's trouble does not stop the others
                log.warning("scheduler: cube %s not planned: %s", info.name, error)
        return queued

    def run(self, stop: threading.Event) -> None:
        """Tick every ``interval_s`` seconds until ``stop`` is set."""
        while not stop.wait(self.interval_s):
            for job in self.once():
                log.info("scheduler: queued %s on %s", job.id, job.cube)

    def _pending(self, cube: str, kind: JobKind) -> bool:
        jobs = self.mos.store.list_jobs(cube)
        return any(job.kind == kind and job.state in _PENDING for job in jobs)
