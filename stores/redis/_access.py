"""The access log: how often and how lately each item was used, one hash per item beside
the items, and per cube the set of its items ever used and a hash of its pairs of items
retrieved together (use, not content: nothing here is in the event log)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from redis.client import Pipeline

from memos.core._access import Use, accessed, tally, touched
from memos.core._types import AccessStats, CoAccess, Refusal

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

    @_storage_errors
    def record_uses(self, cube: str, uses: Sequence[Use], half_life_s: float) -> None:
        items, pairs = touched(uses)
        if not items:
            return
        keys = self._keys.cube(cube)
        fields = [_pair_field(pair) for pair in pairs]

        def plan(watcher: Pipeline) -> _Plan[None]:
            access_keys = [self._keys.access(item_id) for item_id in items]
            _send(watcher, "WATCH", keys.co_access, *access_keys)
            rows = self._each(items, lambda pipe, item_id: pipe.hgetall(self._keys.access(item_id)))
            before = {
                i: s for i, row in zip(items, rows, strict=True) if (s := _stats_from(i, row))
            }
            stored = watcher.hmget(keys.co_access, fields) if fields else []
            pairs_before = {
                pair: _pair_from(pair, value)
                for pair, value in zip(pairs, stored, strict=True)
                if value is not None
            }
            after = tally(uses, half_life_s, before, pairs_before)
            commands: list[Command] = [
                ("HSET", self._keys.access(s.item_id), "count", s.count,
                 "last_access", _time_text(_when(s.last_access)), "frequency", repr(s.frequency))
                for s in after.items.values()
            ]  # fmt: skip
            commands.append(("SADD", keys.accessed, *items))
            if after.pairs:
                values = [(_pair_field(k), _pair_value(v)) for k, v in after.pairs.items()]
                commands.append(("HSET", keys.co_access, *(x for kv in values for x in kv)))
            return _Plan(None, commands)

        self._transact(plan)

    @_storage_errors
    def record_refusal(self, cube: str, refusal: Refusal) -> None:
        self._redis.rpush(self._keys.cube(cube).refusals, refusal.model_dump_json())

    @_storage_errors
    def refusals(self, cube: str, since: datetime | None = None) -> list[Refusal]:
        found = self._redis.lrange(self._keys.cube(cube).refusals, 0, -1)
        kept = [Refusal.model_validate_json(body) for body in found]
        return [r for r in kept if since is None or r.ts >= since]

    @_storage_errors
    def cube_access(self, cube: str) -> dict[str, AccessStats]:
        members = sorted(_text(m) for m in self._redis.smembers(self._keys.cube(cube).accessed))
        return self.access_stats(members)

    @_storage_errors
    def co_access(self, cube: str) -> dict[tuple[str, str], CoAccess]:
        stored = self._redis.hgetall(self._keys.cube(cube).co_access)
        found = {}
        for field, value in stored.items():
            a, b = _text(field).split(" ", 1)
            found[(a, b)] = _pair_from((a, b), value)
        return found


def _pair_field(pair: tuple[str, str]) -> str:
    return f"{pair[0]} {pair[1]}"  # item ids hold no space


def _pair_value(stats: CoAccess) -> str:
    return f"{stats.count} {_time_text(_when(stats.last_access))} {stats.frequency!r}"


def _pair_from(pair: tuple[str, str], value: Any) -> CoAccess:
    count, last, frequency = _text(value).split(" ")
    return CoAccess(
        a=pair[0], b=pair[1], count=int(count), last_access=datetime.fromisoformat(last),
        frequency=float(frequency),
    )  # fmt: skip


def _when(at: datetime | None) -> datetime:
    assert at is not None  # a tallied use always has its time
    return at
