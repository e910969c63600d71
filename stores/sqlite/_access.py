"""The access log: how often and how lately each item was used, kept beside the items rather
than in the event log (it describes use, not content)."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import datetime

from memos.core._access import accessed
from memos.core._types import AccessStats

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


def _access_rows(conn: sqlite3.Connection, item_ids: list[str]) -> dict[str, AccessStats]:
    found: dict[str, AccessStats] = {}
    for chunk in chunks(item_ids):
        marks = ",".join("?" * len(chunk))
        sql = (
            f"SELECT item_id, count, last_access, frequency FROM access WHERE item_id IN ({marks})"
        )
        for item_id, count, last, frequency in conn.execute(sql, chunk).fetchall():
            found[item_id] = AccessStats(
                item_id=item_id,
                count=count,
                last_access=datetime.fromisoformat(last),
                frequency=frequency,
            )
    return found
