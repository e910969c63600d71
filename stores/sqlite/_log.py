"""The cubes and their hash-chained event logs, with the store's one write path, ``commit``.

Every ``commit`` runs in one ``BEGIN IMMEDIATE`` transaction: the per-cube head is read under
the write lock, each change is sealed onto the chain, and the event, its payload, the item row,
its tags, its entry in the cube's keyword (FTS5) table and its vector are written together.
"""

from __future__ import annotations

import json
import sqlite3
from collections import deque
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from memos.core import _commit_rules as rules
from memos.core._chain import erased_in
from memos.core._derived import REPLACE_OPS
from memos.core._store import Change, creation_event
from memos.core._types import CubeInfo, Event, EventOp
from memos.errors import CubeExists, CubeNotFound, IntegrityError

from .. import _fts5  # relative: this package is installed as memos.stores
from . import _derived, _erase, _items
from ._db import Connected, sortable_time

INSERT_EVENT = "INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
INSERT_PAYLOAD = "INSERT INTO payloads VALUES (?, ?, ?)"


class EventLog(Connected):
    """Cubes, their heads and their events; every change goes through :meth:`commit`."""

    def create_cube(self, cube: CubeInfo, actor: str) -> Event:
        with self._write() as conn:
            if conn.execute("SELECT 1 FROM cubes WHERE name = ?", (cube.name,)).fetchone():
                raise CubeExists(f"cube {cube.name!r} already exists", cube=cube.name)
            event = creation_event(cube, actor)
            conn.execute(
                "INSERT INTO cubes VALUES (?, ?, ?, ?)",
                (cube.name, cube.model_dump_json(), event.seq, event.hash),
            )
            _insert_event(conn, event)
            _fts5.create_table(conn, cube.name)
        return event

    def get_cube(self, name: str) -> CubeInfo | None:
        rows = self._read("SELECT info FROM cubes WHERE name = ?", (name,))
        return CubeInfo.model_validate_json(rows[0][0]) if rows else None

    def list_cubes(self) -> list[CubeInfo]:
        rows = self._read("SELECT info FROM cubes ORDER BY name")
        return [CubeInfo.model_validate_json(info) for (info,) in rows]

    def head(self, cube: str) -> tuple[int, str]:
        rows = self._read("SELECT head_seq, head_hash FROM cubes WHERE name = ?", (cube,))
        if not rows:
            raise CubeNotFound(f"no cube named {cube!r}", cube=cube)
        return int(rows[0][0]), str(rows[0][1])

    def commit(self, changes: Sequence[Change]) -> list[Event]:
        events: list[Event] = []
        with self._write() as conn:
            heads: dict[str, tuple[int, str]] = {}
            pending = deque(changes)
            while pending:
                change = pending.popleft()
                if change.cube not in heads:
                    heads[change.cube] = _locked_head(conn, change.cube)
                event = _apply(conn, change, heads[change.cube])
                heads[change.cube] = (event.seq, event.hash)
                events.append(event)
                if change.after is not None:
                    # the artifacts built from an older version go right after the change
                    pending.extendleft(reversed(_derived.invalidated(conn, change)))
            conn.executemany(
                "UPDATE cubes SET head_seq = ?, head_hash = ? WHERE name = ?",
                [(seq, digest, cube) for cube, (seq, digest) in heads.items()],
            )
        if any(change.erased for change in changes):
            with self._lock:
                _erase.truncate_wal(self._conn)
        return events

    def events(
        self,
        cube: str,
        *,
        after_seq: int = 0,
        until_seq: int | None = None,
        item_id: str | None = None,
    ) -> list[Event]:
        sql = [
            "SELECT e.cube, e.seq, e.ts, e.actor, e.op, e.item_id, e.reason, e.payload_digest,",
            "e.prev_hash, e.hash, p.body FROM events e LEFT JOIN payloads p",
            "ON p.cube = e.cube AND p.seq = e.seq WHERE e.cube = ? AND e.seq > ?",
            # a seq edited into a non-integer is no event; verify reports the gap it leaves
            "AND typeof(e.seq) = 'integer'",
        ]
        params: list[Any] = [cube, after_seq]
        if until_seq is not None:
            sql.append("AND e.seq <= ?")
            params.append(until_seq)
        if item_id is not None:
            sql.append("AND e.item_id = ?")
            params.append(item_id)
        sql.append("ORDER BY e.seq")
        return [_event_from_row(row) for row in self._read(" ".join(sql), params)]

    def rewrite_files(self) -> list[str]:
        with self._lock:
            self._conn.execute("VACUUM")
            _erase.truncate_wal(self._conn)
        return ["VACUUM: the database file rebuilt", "the write-ahead log checkpointed, emptied"]

    def changed_since(self, cube: str, after_seq: int) -> tuple[set[str], int]:
        rows = self._read(
            "SELECT e.item_id, e.seq, CASE WHEN e.op = 'erase' THEN p.body END FROM events e"
            " LEFT JOIN payloads p ON p.cube = e.cube AND p.seq = e.seq"
            " WHERE e.cube = ? AND e.seq > ?",
            (cube, after_seq),
        )
        changed = {item_id for item_id, _, _ in rows if item_id is not None}
        for _, _, erasure in rows:
            # an erase event names the items it removed in its payload
            if erasure is not None:
                changed.update(erased_in(json.loads(erasure)))
        return changed, max((seq for _, seq, _ in rows), default=after_seq)


def _apply(conn: sqlite3.Connection, change: Change, head: tuple[int, str]) -> Event:
    """Check ``change`` against what is stored, seal its event after ``head`` and write both."""
    _check_version(conn, change)
    _check_cube_info(conn, change)
    _derived.check_sources(conn, change)
    _erase.check_erasure(conn, change)
    event = change.sealed(*head)
    _insert_event(conn, event)
    if change.after is not None:
        _items.upsert_item(conn, change.after)
    if change.vector is not None and change.item_id is not None:
        _items.upsert_vector(conn, change.item_id, change.vector)
    if change.cube_info is not None:
        conn.execute(
            "UPDATE cubes SET info = ? WHERE name = ?",
            (change.cube_info.model_dump_json(), change.cube),
        )
    if change.derived is not None and change.op in REPLACE_OPS:
        _derived.replace_derived(conn, change.derived)
    elif change.derived is not None:
        _derived.insert_derived(conn, change.derived)
    if change.dropped is not None:
        _derived.delete_derived(conn, change.cube, change.dropped)
    if change.erased:
        _erase.erase_items(conn, change.cube, change.erased)
    return event


def _locked_head(conn: sqlite3.Connection, cube: str) -> tuple[int, str]:
    row = conn.execute("SELECT head_seq, head_hash FROM cubes WHERE name = ?", (cube,)).fetchone()
    if row is None:
        raise CubeNotFound(f"no cube named {cube!r}", cube=cube)
    return int(row[0]), str(row[1])


def _check_version(conn: sqlite3.Connection, change: Change) -> None:
    if change.item_id is None or change.expected_version is None:
        return
    row = conn.execute("SELECT version FROM items WHERE id = ?", (change.item_id,)).fetchone()
    rules.check_version(change, None if row is None else int(row[0]))


def _check_cube_info(conn: sqlite3.Connection, change: Change) -> None:
    if change.cube_info is None:
        return
    row = conn.execute("SELECT info FROM cubes WHERE name = ?", (change.cube,)).fetchone()
    rules.check_cube_successor(change, CubeInfo.model_validate_json(row[0]))


def _insert_event(conn: sqlite3.Connection, event: Event) -> None:
    conn.execute(INSERT_EVENT, event_row(event))
    conn.execute(INSERT_PAYLOAD, payload_row(event))


def event_row(event: Event) -> tuple[Any, ...]:
    return (
        event.cube,
        event.seq,
        sortable_time(event.ts),
        event.actor,
        event.op.value,
        event.item_id,
        event.reason,
        event.payload_digest,
        event.prev_hash,
        event.hash,
    )


def payload_row(event: Event) -> tuple[Any, ...]:
    body = None if event.payload is None else json.dumps(event.payload, ensure_ascii=False)
    return (event.cube, event.seq, body)


def _event_from_row(row: tuple[Any, ...]) -> Event:
    cube, seq, ts, actor, op, item_id, reason, digest, prev_hash, hash_, body = row
    try:
        return Event(
            cube=cube,
            seq=seq,
            ts=datetime.fromisoformat(ts),
            actor=actor,
            op=EventOp(op),
            item_id=item_id,
            reason=reason,
            payload=None if body is None else json.loads(body),
            payload_digest=digest,
            prev_hash=prev_hash,
            hash=hash_,
        )
    except (ValueError, TypeError) as exc:
        # A row that no longer parses was edited outside MemOS; verify names its seq.
        raise IntegrityError(f"event {seq} of cube {cube!r} is malformed", seq=seq) from exc
