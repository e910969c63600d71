"""The cube log: cubes, the one write path (commit), imports, and the event log's reads."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from redis.client import Pipeline
from redis.exceptions import ResponseError

from memos.core._chain import erased_in
from memos.core._store import Change, CubeImport, creation_event
from memos.core._types import CubeInfo, Event, EventOp
from memos.errors import CubeExists, CubeNotFound

from ._batch import _Batch, _check_import_ids
from ._connection import _Connection, _Plan, _storage_errors
from ._layout import _CubeKeys
from ._values import _event_from, _parsed, _text
from ._view import _View


class _Cubes(_Connection):
    """Cubes and their hash-chained event logs, written by :meth:`commit` alone."""

    @_storage_errors
    def create_cube(self, cube: CubeInfo, actor: str) -> Event:
        event = creation_event(cube, actor)

        def plan(watcher: Pipeline) -> _Plan[Event]:
            batch = _Batch(_View(self._redis, watcher, self._keys), self._keys)
            if batch.view.has_cube(cube.name):
                raise CubeExists(f"cube {cube.name!r} already exists", cube=cube.name)
            batch.put_cube(cube)
            batch.append_event(event)
            return _Plan(event, batch.finish(), proof=(cube.name, event.seq, event.hash))

        return self._transact(plan)

    @_storage_errors
    def get_cube(self, name: str) -> CubeInfo | None:
        info = self._redis.get(self._keys.cube(name).info)
        return None if info is None else _parsed(CubeInfo, info, f"cube {name!r}")

    @_storage_errors
    def list_cubes(self) -> list[CubeInfo]:
        names = sorted(_text(name) for name in self._redis.smembers(self._keys.cubes))
        infos = self._each(names, lambda pipe, name: pipe.get(self._keys.cube(name).info))
        return [
            _parsed(CubeInfo, info, f"cube {name!r}")
            for name, info in zip(names, infos, strict=True)
            if info is not None
        ]

    @_storage_errors
    def head(self, cube: str) -> tuple[int, str]:
        seq, digest = self._redis.hmget(self._keys.cube(cube).head, ["seq", "hash"])
        if seq is None or digest is None:
            raise CubeNotFound(f"no cube named {cube!r}", cube=cube)
        return int(seq), _text(digest)

    @_storage_errors
    def import_cube(self, data: CubeImport) -> None:
        data.check()
        name, last = data.cube.name, data.events[-1]

        def plan(watcher: Pipeline) -> _Plan[None]:
            batch = _Batch(_View(self._redis, watcher, self._keys), self._keys)
            if batch.view.has_cube(name):
                raise CubeExists(f"cube {name!r} already exists", cube=name)
            _check_import_ids(batch.view, data)
            batch.put_cube(data.cube)
            for event in data.events:
                batch.append_event(event)
            for row, item in enumerate(data.items, start=1):
                batch.put_item(item, row=row)
            for item_id, vector in data.vectors.items():
                batch.put_vector(name, item_id, vector)
            for row, entry in enumerate(data.derived, start=1):
                batch.insert_derived(entry, row=row)
            commands = batch.finish()
            # in the same MULTI: a refused import writes no blob (the key is the sha256 of
            # the bytes, checked by CubeImport.check, so an existing blob gets the same bytes)
            commands.extend(("SET", self._keys.blob(d), blob) for d, blob in data.blobs.items())
            return _Plan(None, commands, proof=(name, last.seq, last.hash))

        self._transact(plan)

    # the one write path

    @_storage_errors
    def commit(self, changes: Sequence[Change]) -> list[Event]:
        if not changes:
            return []

        def plan(watcher: Pipeline) -> _Plan[list[Event]]:
            batch = _Batch(_View(self._redis, watcher, self._keys), self._keys)
            batch.prefetch(changes)
            events = batch.commit(changes)
            last = events[-1]
            return _Plan(events, batch.finish(), proof=(last.cube, last.seq, last.hash))

        return self._transact(plan)

    @_storage_errors
    def events(
        self,
        cube: str,
        *,
        after_seq: int = 0,
        until_seq: int | None = None,
        item_id: str | None = None,
    ) -> list[Event]:
        keys = self._keys.cube(cube)
        low = max(after_seq + 1, 1)
        if until_seq is not None and until_seq < low:
            return []
        if item_id is None:
            entries = self._redis.xrange(
                keys.log, str(low), "+" if until_seq is None else str(until_seq)
            )
        else:
            entries = self._item_entries(keys, item_id, low, until_seq)
        entries = entries or []
        seqs = [_text(entry_id).partition("-")[0] for entry_id, _ in entries]
        bodies = self._redis.hmget(keys.payloads, seqs) if seqs else []
        return [
            _event_from(cube, entry_id, fields or {}, body)
            for (entry_id, fields), body in zip(entries, bodies, strict=True)
        ]

    def _item_entries(
        self, keys: _CubeKeys, item_id: str, low: int, until_seq: int | None
    ) -> list[Any]:
        high: int | str = "+inf" if until_seq is None else until_seq
        found = self._redis.zrangebyscore(keys.item_events(item_id), low, high)
        seqs = [int(_text(seq)) for seq in found]
        replies = self._pipelined(
            lambda pipe: [pipe.xrange(keys.log, f"{seq}-0", f"{seq}-0") for seq in seqs]
        )
        return [entry for reply in replies for entry in reply]

    @_storage_errors
    def rewrite_files(self) -> list[str]:
        done = []
        if self._redis.info("persistence").get("aof_enabled"):
            self._redis.bgrewriteaof()  # scheduled by the server if a save is running
            done.append("BGREWRITEAOF: the append-only file is being rewritten")
        if self._redis.config_get("save").get("save"):
            try:
                self._redis.bgsave()
                done.append("BGSAVE: a new snapshot is being saved")
            except ResponseError:  # one is being saved already: it is taken after the erasure
                done.append("BGSAVE: a snapshot was being saved already")
        return done or ["the server keeps no files (no AOF, no RDB snapshots)"]

    @_storage_errors
    def changed_since(self, cube: str, after_seq: int) -> tuple[set[str], int]:
        entries = self._redis.xrange(self._keys.cube(cube).log, str(max(after_seq + 1, 0)), "+")
        changed: set[str] = set()
        last = after_seq
        erasures: list[str] = []
        for entry_id, fields in entries or []:
            item_id = (fields or {}).get(b"item_id")
            if item_id is not None:
                changed.add(_text(item_id))
            last = max(last, int(_text(entry_id).partition("-")[0]))
            if (fields or {}).get(b"op") == EventOp.ERASE.value.encode():
                erasures.append(_text(entry_id).partition("-")[0])
        if erasures:
            # an erase event names the items it removed in its payload
            for body in self._redis.hmget(self._keys.cube(cube).payloads, erasures):
                changed.update(erased_in(json.loads(body)) if body is not None else ())
        return changed, last
