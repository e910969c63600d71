"""A worker: claims jobs from the store's queue one at a time and runs them under a lease it
keeps renewing, so that a worker that dies (killed, out of memory, its machine gone) gives its
job back to the queue once the lease runs out, and a live one is never overtaken."""

from __future__ import annotations

import logging
import os
import socket
import threading
from types import TracebackType

from memos import Job, MemOS
from memos.core._jobs import MAX_ATTEMPTS, failed
from memos.core._types import utcnow
from memos.errors import Conflict, MemosError, StorageError

from ._handlers import run_job

log = logging.getLogger("memos.schedulers")

DEFAULT_LEASE_S = 60.0


class Worker:
    """Runs the queued jobs of ``mos.store`` (``mos``: the operator's handle; each job runs
    with the rights of whoever queued it)."""

    def __init__(
        self, mos: MemOS, *, name: str | None = None, lease_s: float = DEFAULT_LEASE_S
    ) -> None:
        if not lease_s > 0:
            raise ValueError(f"lease_s must be positive, not {lease_s!r}")
        self.mos = mos
        self.name = name or f"{socket.gethostname()}-{os.getpid()}-{os.urandom(3).hex()}"
        self.lease_s = lease_s

    def run_once(self) -> Job | None:
        """Claim one job and run it; the job as finished, or ``None`` when the queue was empty
        (or the job was taken over by another worker before this one finished it)."""
        store = self.mos.store
        job = store.claim_job(self.name, utcnow(), self.lease_s)
        if job is None:
            return None
        log.info("job %s (%s on %s): attempt %d", job.id, job.kind, job.cube, job.attempts)
        if job.attempts > MAX_ATTEMPTS:
            finished = failed(job, MemosError(
                f"gave up after {MAX_ATTEMPTS} attempts: every worker that ran it stopped"
            ))  # fmt: skip
        else:
            with _Lease(self, job):
                finished = self._run(job)
        try:
            return store.finish_job(finished)
        except Conflict:
            log.warning("job %s was taken over by another worker; its result stands", job.id)
            return None

    def run(self, stop: threading.Event, *, poll_s: float = 0.5) -> int:
        """Run jobs until ``stop`` is set, waiting ``poll_s`` seconds whenever the queue is
        empty; returns how many jobs this worker finished."""
        finished = 0
        while not stop.is_set():
            if self.run_once() is None:
                stop.wait(poll_s)
            else:
                finished += 1
        return finished

    def _run(self, job: Job) -> Job:
        try:
            return run_job(self.mos, job)
        except Exception as error:  # a bug in a job must not stop the queue: it is
            # logged with its traceback and kept on the job, where its submitter sees it
            log.exception("job %s failed unexpectedly", job.id)
            return failed(job, MemosError(f"{type(error).__name__}: {error}"))


class _Lease:
    """Renews the worker's lease on a job every third of the lease while the block runs."""

    def __init__(self, worker: Worker, job: Job) -> None:
        self._worker, self._job = worker, job
        self._done = threading.Event()
        self._thread = threading.Thread(
            target=self._renew, name=f"memos-lease-{job.id}", daemon=True
        )

    def __enter__(self) -> _Lease:
        self._thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._done.set()
        self._thread.join()

    def _renew(self) -> None:
        worker, job = self._worker, self._job
        while not self._done.wait(worker.lease_s / 3):
            try:
                worker.mos.store.renew_job(job.id, worker.name, utcnow(), worker.lease_s)
            except Conflict:
                log.warning("lost the lease on job %s to another worker", job.id)
                return
            except StorageError:
                log.warning("could not renew the lease on job %s; trying again", job.id)
