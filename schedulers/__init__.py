"""Workers that run the background jobs of :mod:`memos.core._jobs` (installed as
``memos.schedulers``).

``memos worker`` runs a :class:`Worker` over a store; several workers (and the API processes
that queue jobs) may share one Redis store. :func:`run_job` runs one claimed job and says how it
ended; the ``HANDLERS`` registry maps each :class:`memos.JobKind` to the SDK call it makes. A
:class:`Ticker` queues the scheduler's ticks, whose policies (:mod:`memos.schedulers._policies`)
are registered by name in :mod:`memos.core._scheduling`.
"""

from ._handlers import HANDLERS, run_job
from ._ticker import Ticker
from ._worker import Worker

__all__ = ["HANDLERS", "Ticker", "Worker", "run_job"]
