"""The connection every part of the SQLite store shares, and its two uses: a write transaction
and a read.

Every write runs in one ``BEGIN IMMEDIATE`` transaction, so whatever it reads (a cube's head, an
item's version) is read under the write lock. Readers never block the writer (WAL), and two
processes on one data directory serialise their writes through SQLite's lock.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from memos.errors import InvalidInput, StorageError


class Connected:
    """The state each part of :class:`SQLiteStore` works on; the store sets it when it opens."""

    data_dir: Path
    url: str
    _lock: threading.RLock
    _conn: sqlite3.Connection

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            conn = self._conn
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                raise StorageError(f"could not lock the data dir for writing: {exc}") from exc
            try:
                with utf8_bound():
                    yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._lock, utf8_bound():
            return self._conn.execute(sql, params).fetchall()


@contextmanager
def utf8_bound() -> Iterator[None]:
    """SQLite binds text as UTF-8: a string with a lone surrogate that got past the checks at
    the edge (an id, say) is the caller's error, and the transaction writes nothing."""
    try:
        yield
    except UnicodeEncodeError:
        raise InvalidInput("a value is not valid Unicode (a lone surrogate)") from None


def sortable_time(value: datetime) -> str:
    """A fixed-width UTC ISO string, so that string order is time order in SQL."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat(timespec="microseconds")


def chunks(values: Sequence[str], size: int = 500) -> Iterator[list[str]]:
    for start in range(0, len(values), size):
        yield list(values[start : start + size])
