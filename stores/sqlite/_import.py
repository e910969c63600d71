"""The import of a whole verified cube, written as it is (same seqs, same hashes) in one
transaction with its blobs, or not at all."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

from memos.core._store import CubeImport
from memos.core._types import ItemStatus
from memos.errors import Conflict, CubeExists

from .. import _fts5  # relative: this package is installed as memos.stores
from ._blobs import blob_path, write_blob
from ._db import Connected, chunks
from ._derived import insert_derived
from ._items import INSERT_ITEM_AT, item_row, vector_bytes
from ._log import INSERT_EVENT, INSERT_PAYLOAD, event_row, payload_row


class CubeImporter(Connected):
    """``import_cube``: a new cube's rows, a statement per table, and its blob files."""

    def import_cube(self, data: CubeImport) -> None:
        data.check()
        name, last = data.cube.name, data.events[-1]
        created: list[Path] = []
        try:
            with self._write() as conn:
                if conn.execute("SELECT 1 FROM cubes WHERE name = ?", (name,)).fetchone():
                    raise CubeExists(f"cube {name!r} already exists", cube=name)
                _check_import_ids(conn, data)
                conn.execute(
                    "INSERT INTO cubes VALUES (?, ?, ?, ?)",
                    (name, data.cube.model_dump_json(), last.seq, last.hash),
                )
                _fts5.create_table(conn, name)
                _insert_import(conn, data)
                # last, under the write lock: a refusal above leaves no blob behind
                for blob in data.blobs.values():
                    self._put_import_blob(blob, created)
        except BaseException:
            for path in created:
                path.unlink(missing_ok=True)
            raise

    def _put_import_blob(self, data: bytes, created: list[Path]) -> None:
        """Put ``data``, recording its file in ``created`` when this call made it."""
        path = blob_path(self.data_dir, hashlib.sha256(data).hexdigest())
        existed = path.is_file()
        write_blob(self.data_dir, data)
        if not existed:
            created.append(path)


def _check_import_ids(conn: sqlite3.Connection, data: CubeImport) -> None:
    """Ids are global: an import whose item or derived artifact id is taken would write
    into another cube, so it is refused (the message names no other cube)."""
    item_ids = [item.id for item in data.items]
    for table, column, ids in (
        ("items", "id", item_ids),
        ("vectors", "item_id", item_ids),
        ("derived", "id", [entry.id for entry in data.derived]),
    ):
        for chunk in chunks(ids):
            marks = ",".join("?" * len(chunk))
            taken = conn.execute(
                f"SELECT {column} FROM {table} WHERE {column} IN ({marks}) LIMIT 1", chunk
            ).fetchone()
            if taken is not None:
                raise Conflict(f"the id {taken[0]} of the import is taken", id=taken[0])


def _insert_import(conn: sqlite3.Connection, data: CubeImport) -> None:
    """Every row of a new cube, a statement per table: no row of it exists yet (the ids
    were checked), so nothing is looked up or replaced."""
    try:
        conn.executemany(INSERT_EVENT, [event_row(event) for event in data.events])
        conn.executemany(INSERT_PAYLOAD, [payload_row(event) for event in data.events])
        first = conn.execute("SELECT COALESCE(MAX(rowid), 0) + 1 FROM items").fetchone()[0]
        rows = list(enumerate(data.items, start=first))
        conn.executemany(INSERT_ITEM_AT, [(rowid, *item_row(item)) for rowid, item in rows])
        keyword_table = _fts5.table_name(data.cube.name)
        conn.executemany(
            f"INSERT INTO {keyword_table} (rowid, text) VALUES (?, ?)",
            [(rowid, item.text) for rowid, item in rows if item.status == ItemStatus.ACTIVE],
        )
        conn.executemany(
            "INSERT OR IGNORE INTO item_tags VALUES (?, ?)",
            [(item.id, tag) for item in data.items for tag in item.tags],
        )
        conn.executemany(
            "INSERT INTO vectors VALUES (?, ?)",
            [(item_id, vector_bytes(vector)) for item_id, vector in data.vectors.items()],
        )
        for entry in data.derived:
            insert_derived(conn, entry)
    except sqlite3.IntegrityError as exc:
        # rows no cube owns (an event of a cube of that name, say): never overwritten
        raise Conflict(f"the import collides with stored rows: {exc}") from exc
