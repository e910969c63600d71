"""The access log: how often and how lately each item, and each pair of items retrieved
together, was used, kept beside the items rather than in the event log (it describes use, not
content). ``cube_access`` names the items of each cube that a recorded use named."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import datetime

from memos.core._access import Use, accessed, tally, touched
from memos.core._types import AccessStats, CoAccess, Refusal

from ._db import Connected, chunks, sortable_time, utf8_bound


class AccessTable(Connected):
    """Access counts and decayed frequencies, one row per item ever used."""

    def record_access(self, item_ids: Sequence[str], at: datetime, half_life_s: float) -> None:
        unique = list(dict.fromkeys(item_ids))
        with self._write() as conn:
            before = _access_rows(conn, unique)
            rows = []
            for item_id in unique:
                stats = accessed(before.get(item_id, AccessStats(item_id=item_id)), at, half_life_s)
                rows.append((item_id, stats.count, sortable_time(at), stats.frequency))
            conn.executemany("INSERT OR REPLACE INTO access VALUES (?, ?, ?, ?)", rows)

    def access_stats(self, item_ids: Sequence[str]) -> dict[str, AccessStats]:
        with self._lock, utf8_bound():
            return _access_rows(self._conn, list(item_ids))

    def record_uses(self, cube: str, uses: Sequence[Use], half_life_s: float) -> None:
        items, pairs = touched(uses)
        if not items:
            return
        with self._write() as conn:
            before_pairs = _pair_rows(conn, cube, {a for a, _ in pairs})
            touched_pairs = {p: before_pairs[p] for p in pairs if p in before_pairs}
            after = tally(uses, half_life_s, _access_rows(conn, items), touched_pairs)
            conn.executemany(
                "INSERT OR REPLACE INTO access VALUES (?, ?, ?, ?)",
                [(s.item_id, s.count, _time(s.last_access), s.frequency)
                 for s in after.items.values()],
            )  # fmt: skip
            conn.executemany(
                "INSERT OR IGNORE INTO cube_access VALUES (?, ?)", [(cube, i) for i in items]
            )
            conn.executemany(
                "INSERT OR REPLACE INTO co_access VALUES (?, ?, ?, ?, ?, ?)",
                [(cube, p.a, p.b, p.count, _time(p.last_access), p.frequency)
                 for p in after.pairs.values()],
            )  # fmt: skip

    def record_refusal(self, cube: str, refusal: Refusal) -> None:
        with self._write() as conn:
            conn.execute(
                "INSERT INTO refusals VALUES (?, ?, ?)",
                (cube, sortable_time(refusal.ts), refusal.model_dump_json()),
            )

    def refusals(self, cube: str, since: datetime | None = None) -> list[Refusal]:
        rows = self._read(
            "SELECT body FROM refusals WHERE cube = ? AND ts >= ? ORDER BY ts, rowid",
            (cube, "" if since is None else sortable_time(since)),
        )
        return [Refusal.model_validate_json(body) for (body,) in rows]

    def cube_access(self, cube: str) -> dict[str, AccessStats]:
        sql = (
            "SELECT access.item_id, count, last_access, frequency FROM cube_access "
            "JOIN access ON access.item_id = cube_access.item_id WHERE cube = ?"
        )
        with self._lock, utf8_bound():
            return {row[0]: _stats(*row) for row in self._conn.execute(sql, (cube,))}

    def co_access(self, cube: str) -> dict[tuple[str, str], CoAccess]:
        with self._lock, utf8_bound():
            return _pair_rows(self._conn, cube)


def _access_rows(conn: sqlite3.Connection, item_ids: list[str]) -> dict[str, AccessStats]:
    found: dict[str, AccessStats] = {}
    for chunk in chunks(item_ids):
        marks = ",".join("?" * len(chunk))
        sql = (
            f"SELECT item_id, count, last_access, frequency FROM access WHERE item_id IN ({marks})"
        )
        for row in conn.execute(sql, chunk).fetchall():
            found[row[0]] = _stats(*row)
    return found


def _pair_rows(
    conn: sqlite3.Connection, cube: str, firsts: set[str] | None = None
) -> dict[tuple[str, str], CoAccess]:
    """The cube's pairs (only those whose first item is in ``firsts``, when given)."""
    sql = "SELECT a, b, count, last_access, frequency FROM co_access WHERE cube = ?"
    if firsts is None:
        rows = conn.execute(sql, (cube,)).fetchall()
    else:
        rows = []
        for chunk in chunks(sorted(firsts)):
            marks = ",".join("?" * len(chunk))
            rows += conn.execute(f"{sql} AND a IN ({marks})", (cube, *chunk)).fetchall()
    return {
        (a, b): CoAccess(
            a=a, b=b, count=count, last_access=datetime.fromisoformat(last), frequency=frequency
        )
        for a, b, count, last, frequency in rows
    }


def _stats(item_id: str, count: int, last: str, frequency: float) -> AccessStats:
    return AccessStats(
        item_id=item_id, count=count, last_access=datetime.fromisoformat(last), frequency=frequency
    )


def _time(at: datetime | None) -> str:
    assert at is not None  # a tallied use always has its time
    return sortable_time(at)
