"""Erasure in the SQLite store: the rows an ``erase`` change removes inside its commit, and
what makes them unrecoverable from the database's files afterwards.

Every connection runs with ``secure_delete`` on, so freed space is overwritten with zeros
rather than left in the file's free pages. The keyword table's index keeps a deleted text's
terms in its segments until they are merged, so an erasure merges the cube's table whole
(FTS5's ``optimize``); after the commit the write-ahead log, which still holds the pages as
they were, is checkpointed and truncated.
"""

from __future__ import annotations

import sqlite3

from memos.core import _commit_rules as rules
from memos.core._store import Change

from .. import _fts5  # relative: this package is installed as memos.stores
from ._db import chunks


def check_erasure(conn: sqlite3.Connection, change: Change) -> None:
    if not change.erased:
        return
    cubes: dict[str, str | None] = {}
    built: set[str] = set()
    for chunk in chunks(change.erased):
        marks = ",".join("?" * len(chunk))
        cubes.update(conn.execute(f"SELECT id, cube FROM items WHERE id IN ({marks})", chunk))
        built.update(
            row[0]
            for row in conn.execute(
                f"SELECT DISTINCT item_id FROM derived_sources WHERE item_id IN ({marks})", chunk
            )
        )
    rules.check_erasure(change, cubes, built)


def erase_items(conn: sqlite3.Connection, cube: str, item_ids: tuple[str, ...]) -> None:
    """Remove the items, every trace of them beside the log, and their events' payloads."""
    table = _fts5.table_name(cube)
    for chunk in chunks(item_ids):
        marks = ",".join("?" * len(chunk))
        conn.execute(
            "UPDATE payloads SET body = NULL WHERE cube = ? AND seq IN"
            f" (SELECT seq FROM events WHERE item_id IN ({marks}) AND cube = ?)",
            [cube, *chunk, cube],
        )
        conn.execute(
            f"DELETE FROM {table} WHERE rowid IN (SELECT rowid FROM items WHERE id IN ({marks}))",
            chunk,
        )
        for table_name, column in (
            ("item_tags", "item_id"),
            ("vectors", "item_id"),
            ("access", "item_id"),
            ("items", "id"),
        ):
            conn.execute(f"DELETE FROM {table_name} WHERE {column} IN ({marks})", chunk)
        conn.execute(
            f"DELETE FROM cube_access WHERE cube = ? AND item_id IN ({marks})", [cube, *chunk]
        )
        conn.execute(
            f"DELETE FROM co_access WHERE cube = ? AND (a IN ({marks}) OR b IN ({marks}))",
            [cube, *chunk, *chunk],
        )
    conn.execute(f"INSERT INTO {table} ({table}) VALUES ('optimize')")


def truncate_wal(conn: sqlite3.Connection) -> None:
    """Copy the write-ahead log into the database and empty it (as far as readers allow: a
    page a reader still needs stays until the next checkpoint)."""
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
