"""The access log: how often and how lately each item was used, one hash per item beside
the items (use, not content: nothing here is in the event log)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from redis.client import Pipeline

from memos.core._access import accessed
from memos.core._types import AccessStats

from ._connection import Command, _Connection, _Plan, _send, _storage_errors
from ._values import _text, _time_text


def _stats_from(item_id: str, row: dict[Any, Any]) -> AccessStats | None:
    if not row:
        return None
    got = {_text(name): _text(value) for name, value in row.items()}
    return AccessStats(
        item_id=item_id,
        count=int(got["count"]),
        last_access=datetime.fromisoformat(got["last_access"]),
        frequency=float(got["frequency"]),
    )


class _Access(_Connection):
    """Access statistics per item."""

    @_storage_errors
    def record_access(self, item_ids: Sequence[str], at: datetime, half_life_s: float) -> None:
        unique = list(dict.fromkeys(item_ids))
        if not unique:
            return

        def plan(watcher: Pipeline) -> _Plan[None]:
            _send(watcher, "WATCH", *(self._keys.access(item_id) for item_id in unique))
            rows = self._each(
                unique, lambda pipe, item_id: pipe.hgetall(self._keys.access(item_id))
            )
            commands: list[Command] = []
            for item_id, row in zip(unique, rows, strict=True):
                before = _stats_from(item_id, row) or AccessStats(item_id=item_id)
                stats = accessed(before, at, half_life_s)
                commands.append(
                    ("HSET", self._keys.access(item_id), "count", stats.count,
                     "last_access", _time_text(at), "frequency", repr(stats.frequency))
                )  # fmt: skip
            return _Plan(None, commands)

        self._transact(plan)

    @_storage_errors
    def access_stats(self, item_ids: Sequence[str]) -> dict[str, AccessStats]:
        unique = list(dict.fromkeys(item_ids))
        rows = self._each(unique, lambda pipe, item_id: pipe.hgetall(self._keys.access(item_id)))
        found = (_stats_from(item_id, row) for item_id, row in zip(unique, rows, strict=True))
        return {stats.item_id: stats for stats in found if stats is not None}
