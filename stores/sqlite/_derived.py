"""The derived artifacts (KV caches, adapters) standing on a cube's items, and the sources each
is built from: read here, written and dropped by ``commit`` with the events that name them."""

from __future__ import annotations

import sqlite3
from typing import Any

from memos.core import _commit_rules as rules
from memos.core._derived import REPLACE_OPS, invalidations, slot_key
from memos.core._store import Change
from memos.core._types import DerivedEntry
from memos.errors import IntegrityError, NotFound

from ._db import Connected
from ._items import items_by_id


class DerivedTable(Connected):
    """The reads of the standing derived artifacts."""

    def derived_entries(self, cube: str, kind: str | None = None) -> list[DerivedEntry]:
        sql = "SELECT body FROM derived WHERE cube = ?"
        params: list[Any] = [cube]
        if kind is not None:
            sql += " AND kind = ?"
            params.append(kind)
        rows = self._read(sql + " ORDER BY rowid", params)
        try:
            return [DerivedEntry.model_validate_json(body) for (body,) in rows]
        except ValueError as exc:
            raise IntegrityError(f"cube {cube!r}: a derived artifact row is malformed") from exc


def invalidated(conn: sqlite3.Connection, change: Change) -> list[Change]:
    """The changes that drop the artifacts built from an older version of the changed item."""
    item = change.after
    assert item is not None
    rows = conn.execute(
        "SELECT d.body FROM derived_sources s JOIN derived d ON d.id = s.derived_id"
        " WHERE s.item_id = ? ORDER BY d.rowid",
        (item.id,),
    ).fetchall()
    entries = [DerivedEntry.model_validate_json(body) for (body,) in rows]
    return invalidations(entries, item, actor=change.actor, ts=change.ts)


def check_sources(conn: sqlite3.Connection, change: Change) -> None:
    entry = change.derived
    if entry is None or change.op in REPLACE_OPS:
        return
    taken = conn.execute("SELECT 1 FROM derived WHERE id = ?", (entry.id,)).fetchone()
    sources = items_by_id(conn, [s.item_id for s in entry.sources])
    standing = [] if slot_key(entry) is None else [
        DerivedEntry.model_validate_json(body) for (body,) in conn.execute(
            "SELECT body FROM derived WHERE cube = ? AND kind = ?", (entry.cube, entry.kind)
        )
    ]  # fmt: skip
    rules.check_new_derived(
        change,
        id_taken=taken is not None,
        sources={s.item_id: sources.get(s.item_id) for s in entry.sources},
        standing=standing,
    )


def insert_derived(conn: sqlite3.Connection, entry: DerivedEntry) -> None:
    conn.execute(
        "INSERT INTO derived VALUES (?, ?, ?, ?)",
        (entry.id, entry.cube, entry.kind, entry.model_dump_json()),
    )
    conn.executemany(
        "INSERT OR IGNORE INTO derived_sources VALUES (?, ?)",
        [(entry.id, source.item_id) for source in entry.sources],
    )


def replace_derived(conn: sqlite3.Connection, entry: DerivedEntry) -> None:
    replaced = conn.execute(
        "UPDATE derived SET body = ? WHERE id = ? AND cube = ? AND kind = ?",
        (entry.model_dump_json(), entry.id, entry.cube, entry.kind),
    ).rowcount
    if not replaced:
        raise NotFound(f"cube {entry.cube!r} has no derived artifact {entry.id!r}")


def delete_derived(conn: sqlite3.Connection, cube: str, derived_id: str) -> None:
    gone = conn.execute(
        "DELETE FROM derived WHERE id = ? AND cube = ?", (derived_id, cube)
    ).rowcount
    if not gone:
        raise NotFound(f"cube {cube!r} has no derived artifact {derived_id!r}")
    conn.execute("DELETE FROM derived_sources WHERE derived_id = ?", (derived_id,))
