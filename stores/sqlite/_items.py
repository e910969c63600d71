"""The item projection and the full-precision vectors: the rows ``commit`` writes for each
item, the reads over them, and the filters (user, session, time, tags, metadata) as SQL over
the item rows' own columns."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from memos.core._types import ItemFilter, ItemStatus, MemoryItem
from memos.errors import IntegrityError

from .. import _fts5  # relative: this package is installed as memos.stores
from ._db import Connected, chunks, sortable_time, utf8_bound

if TYPE_CHECKING:
    from memos.core._store import Vector

INSERT_ITEM_AT = (
    "INSERT INTO items (rowid, id, cube, status, version, user, session, occurred_at, body) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


class ItemRows(Connected):
    """The reads of items and vectors."""

    def get_item(self, item_id: str) -> MemoryItem | None:
        rows = self._read("SELECT body FROM items WHERE id = ?", (item_id,))
        return MemoryItem.model_validate_json(rows[0][0]) if rows else None

    def get_items(self, item_ids: Sequence[str], cube: str | None = None) -> dict[str, MemoryItem]:
        with self._lock, utf8_bound():
            found = items_by_id(self._conn, list(item_ids))
        return {i: item for i, item in found.items() if cube is None or item.cube == cube}

    def iter_items(self, cube: str) -> Iterator[MemoryItem]:
        # The columns and tags that filters read come back too, so that an edit to them alone
        # (which changes what searches return) is caught by verify like an edit to the body.
        rows = self._read(
            "SELECT i.id, i.body, i.status, i.version, i.user, i.session, i.occurred_at,"
            " (SELECT json_group_array(t.tag) FROM item_tags t WHERE t.item_id = i.id)"
            " FROM items i WHERE i.cube = ? ORDER BY i.rowid",
            (cube,),
        )
        for row in rows:
            yield _checked_item(row)

    def filter_item_ids(self, cube: str, flt: ItemFilter) -> list[str]:
        conditions, params = filter_sql(cube, flt)
        return [row[0] for row in self._read(f"SELECT id FROM items WHERE {conditions}", params)]

    def get_vectors(self, item_ids: Sequence[str], cube: str | None = None) -> dict[str, Vector]:
        import numpy as np  # with the first vector read: reading only the log never loads it

        found: dict[str, Vector] = {}
        for chunk in chunks(item_ids):
            marks = ",".join("?" * len(chunk))
            sql = f"SELECT item_id, data FROM vectors WHERE item_id IN ({marks})"
            params: list[str] = list(chunk)
            if cube is not None:
                # CROSS JOIN keeps this order (each id looked up, then its item): left to
                # itself the planner scans the whole cube's items for every chunk (30x slower)
                sql = (
                    "SELECT v.item_id, v.data FROM vectors v CROSS JOIN items i"
                    f" ON i.id = v.item_id WHERE v.item_id IN ({marks}) AND i.cube = ?"
                )
                params.append(cube)
            for item_id, data in self._read(sql, params):
                found[item_id] = np.frombuffer(data, dtype=np.float32)
        return found


def items_by_id(conn: sqlite3.Connection, item_ids: list[str]) -> dict[str, MemoryItem]:
    found: dict[str, MemoryItem] = {}
    for chunk in chunks(item_ids):
        marks = ",".join("?" * len(chunk))
        for (body,) in conn.execute(f"SELECT body FROM items WHERE id IN ({marks})", chunk):
            item = MemoryItem.model_validate_json(body)
            found[item.id] = item
    return found


def upsert_item(conn: sqlite3.Connection, item: MemoryItem) -> None:
    # The keyword table is keyed by the row's rowid, which a REPLACE changes: the old
    # entry goes first and the new one follows the row, for active items only.
    keyword_table = _fts5.table_name(item.cube)
    old = conn.execute("SELECT rowid FROM items WHERE id = ?", (item.id,)).fetchone()
    if old is not None:
        conn.execute(f"DELETE FROM {keyword_table} WHERE rowid = ?", (old[0],))
    row = conn.execute(
        "INSERT OR REPLACE INTO items VALUES (?, ?, ?, ?, ?, ?, ?, ?)", item_row(item)
    )
    if item.status == ItemStatus.ACTIVE:
        conn.execute(
            f"INSERT INTO {keyword_table} (rowid, text) VALUES (?, ?)",
            (row.lastrowid, item.text),
        )
    conn.execute("DELETE FROM item_tags WHERE item_id = ?", (item.id,))
    conn.executemany(
        "INSERT OR IGNORE INTO item_tags VALUES (?, ?)", [(item.id, t) for t in item.tags]
    )


def upsert_vector(conn: sqlite3.Connection, item_id: str, vector: Vector) -> None:
    conn.execute("INSERT OR REPLACE INTO vectors VALUES (?, ?)", (item_id, vector_bytes(vector)))


def filter_sql(cube: str, flt: ItemFilter) -> tuple[str, list[Any]]:
    """A WHERE condition over ``items`` for the active items of ``cube`` that pass ``flt``."""
    sql = ["cube = ? AND status = 'active'"]
    params: list[Any] = [cube]
    for column, value in (("user", flt.user), ("session", flt.session)):
        if value is not None:
            sql.append(f"AND {column} = ?")
            params.append(value)
    if flt.since is not None:
        sql.append("AND occurred_at >= ?")
        params.append(sortable_time(flt.since))
    if flt.until is not None:
        sql.append("AND occurred_at < ?")
        params.append(sortable_time(flt.until))
    if flt.tags:
        marks = ",".join("?" * len(flt.tags))
        sql.append(
            f"AND id IN (SELECT item_id FROM item_tags WHERE tag IN ({marks}) "
            "GROUP BY item_id HAVING count(*) = ?)"
        )
        params.extend([*flt.tags, len(flt.tags)])
    for key, expected in flt.where.items():
        sql.append("AND json_extract(body, ?) IS ?")
        params.extend([f'$.metadata."{key}"', expected])
    return " ".join(sql), params


def _checked_item(row: tuple[Any, ...]) -> MemoryItem:
    item_id, body, status, version, user, session, occurred_at, tags = row
    try:
        item = MemoryItem.model_validate_json(body)
        indexed = (item_id, status, version, user, session, occurred_at, sorted(json.loads(tags)))
        from_body = (
            item.id,
            item.status.value,
            item.version,
            item.user,
            item.session,
            sortable_time(item.occurred_at),
            sorted(item.tags),
        )
    except (ValueError, TypeError) as exc:
        raise IntegrityError(f"item row {item_id} is malformed", item_id=item_id) from exc
    if indexed != from_body:
        raise IntegrityError(
            f"item row {item_id} disagrees with its indexed columns or tags", item_id=item_id
        )
    return item


def item_row(item: MemoryItem) -> tuple[Any, ...]:
    return (
        item.id,
        item.cube,
        item.status.value,
        item.version,
        item.user,
        item.session,
        sortable_time(item.occurred_at),
        item.model_dump_json(),
    )


def vector_bytes(vector: Vector) -> bytes:
    import numpy as np

    return np.ascontiguousarray(vector, dtype=np.float32).tobytes()
