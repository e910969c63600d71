"""Uses of memories, batched before they reach the store: each search and each chat names the
memories it retrieved together (a :class:`memos.core._access.Use`), and a process keeps them in
memory until ``batch`` uses or ``max_age_s`` seconds have gathered, then writes them in one
``record_uses`` per cube. Reading the statistics through a handle, and closing the engine, write
what is pending first. A process that dies loses its pending uses: they are statistics that
steer the scheduler, not memories anyone was told are stored.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from datetime import datetime

from memos.core._access import DEFAULT_HALF_LIFE_S, Use
from memos.core._store import Store

DEFAULT_BATCH = 256
DEFAULT_MAX_AGE_S = 5.0


class UseRecorder:
    """The uses one process has seen and not written yet; see the module docstring."""

    def __init__(
        self,
        store: Store,
        *,
        half_life_s: float = DEFAULT_HALF_LIFE_S,
        batch: int = DEFAULT_BATCH,
        max_age_s: float = DEFAULT_MAX_AGE_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._half_life_s = half_life_s
        self._batch, self._max_age_s, self._clock = batch, max_age_s, clock
        self._lock = threading.Lock()
        self._pending: defaultdict[str, list[Use]] = defaultdict(list)
        self._count = 0
        self._since = clock()

    def add(self, cube: str, item_ids: Sequence[str], at: datetime) -> None:
        """Note one use of ``item_ids`` (best first) of ``cube`` at ``at``."""
        if not item_ids:
            return
        with self._lock:
            if not self._count:
                self._since = self._clock()
            self._pending[cube].append(Use(tuple(item_ids), at))
            self._count += 1
            due = self._count >= self._batch or self._clock() - self._since >= self._max_age_s
        if due:
            self.flush()

    def flush(self) -> None:
        """Write every pending use (one ``record_uses`` per cube)."""
        with self._lock:
            pending, self._pending, self._count = self._pending, defaultdict(list), 0
        for cube, uses in pending.items():
            self._store.record_uses(cube, uses, self._half_life_s)

    @property
    def pending(self) -> int:
        with self._lock:
            return self._count
