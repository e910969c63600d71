"""The embedded default store: one SQLite database in WAL mode inside the data directory.

Every ``commit`` runs in one ``BEGIN IMMEDIATE`` transaction: the per-cube head is read under
the write lock, each change is sealed onto the chain, and the event, its payload, the item row,
its tags, its entry in the cube's keyword (FTS5) table and its vector are written together.
Readers never block the writer (WAL), and two processes on one data directory serialise their
writes through SQLite's lock. Blobs are files ``blobs/<sha256>.safetensors`` beside the
database, written atomically before any commit that names them.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sqlite3
import threading
from collections import deque
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from memos.core import _commit_rules as rules
from memos.core._access import accessed
from memos.core._chain import GENESIS_HASH, seal
from memos.core._derived import REPLACE_OPS, invalidations, slot_key
from memos.core._jobs import (
    UNFINISHED,
    Job,
    JobState,
    cancelled,
    claimable,
    claimed,
    held,
    renewed,
)
from memos.core._store import Change, CubeImport, Vector
from memos.core._types import (
    AccessStats,
    ApiKey,
    CubeInfo,
    DerivedEntry,
    Event,
    EventOp,
    ItemFilter,
    ItemStatus,
    MemoryItem,
)
from memos.errors import (
    Conflict,
    CubeExists,
    CubeNotFound,
    DataDirError,
    IntegrityError,
    InvalidInput,
    JobNotFound,
    NotFound,
    StorageError,
)

from . import _fts5  # relative: this package is installed as memos.stores

DB_FILE = "memos.db"
BLOB_DIR = "blobs"
_DIGEST = re.compile(r"[0-9a-f]{64}")
# 2: a keyword (FTS5) table per cube; a format-1 data dir gets them built on open.
FORMAT_VERSION = 2
_BUSY_TIMEOUT_MS = 60_000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS cubes (
    name TEXT PRIMARY KEY,
    info TEXT NOT NULL,
    head_seq INTEGER NOT NULL,
    head_hash TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    cube TEXT NOT NULL,
    seq INTEGER NOT NULL,
    ts TEXT NOT NULL,
    actor TEXT NOT NULL,
    op TEXT NOT NULL,
    item_id TEXT,
    reason TEXT,
    payload_digest TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL,
    PRIMARY KEY (cube, seq)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS events_by_item ON events (item_id, seq);
CREATE TABLE IF NOT EXISTS payloads (
    cube TEXT NOT NULL,
    seq INTEGER NOT NULL,
    body TEXT,
    PRIMARY KEY (cube, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS items (
    id TEXT PRIMARY KEY,
    cube TEXT NOT NULL,
    status TEXT NOT NULL,
    version INTEGER NOT NULL,
    user TEXT,
    session TEXT,
    occurred_at TEXT NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS items_by_cube ON items (cube, status, occurred_at);
CREATE TABLE IF NOT EXISTS item_tags (
    item_id TEXT NOT NULL,
    tag TEXT NOT NULL,
    PRIMARY KEY (item_id, tag)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS item_tags_by_tag ON item_tags (tag);
CREATE TABLE IF NOT EXISTS vectors (item_id TEXT PRIMARY KEY, data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS derived (
    id TEXT PRIMARY KEY,
    cube TEXT NOT NULL,
    kind TEXT NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS derived_by_cube ON derived (cube, kind);
CREATE TABLE IF NOT EXISTS derived_sources (
    derived_id TEXT NOT NULL,
    item_id TEXT NOT NULL,
    PRIMARY KEY (item_id, derived_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS access (
    item_id TEXT PRIMARY KEY,
    count INTEGER NOT NULL,
    last_access TEXT NOT NULL,
    frequency REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS api_keys (id TEXT PRIMARY KEY, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    cube TEXT NOT NULL,
    state TEXT NOT NULL,
    lease_until TEXT,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_by_state ON jobs (state, seq);
CREATE INDEX IF NOT EXISTS jobs_by_cube ON jobs (cube, seq);
"""


def sortable_time(value: datetime) -> str:
    """A fixed-width UTC ISO string, so that string order is time order in SQL."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat(timespec="microseconds")


class SQLiteStore:
    """A :class:`memos.Store` over ``<data_dir>/memos.db``."""

    def __init__(self, data_dir: str | Path, *, create: bool = True) -> None:
        self.data_dir = Path(data_dir)
        self.url = f"sqlite:///{self.data_dir}"
        self._lock = threading.RLock()
        self._conn = self._connect(create)

    @classmethod
    def from_url(cls, url: str, *, create: bool = True) -> SQLiteStore:
        if not url.startswith("sqlite:///"):
            raise DataDirError(f"not a sqlite store URL: {url!r}")
        return cls(url[len("sqlite:///") :], create=create)

    def _connect(self, create: bool) -> sqlite3.Connection:
        db_path = self.data_dir / DB_FILE
        if self.data_dir.exists() and not self.data_dir.is_dir():
            raise DataDirError(f"data dir {self.data_dir} is not a directory")
        if not db_path.exists():
            if not create:
                raise DataDirError(f"no MemOS data dir at {self.data_dir}")
            self.data_dir.mkdir(parents=True, exist_ok=True)
        try:
            conn = sqlite3.connect(
                db_path, isolation_level=None, check_same_thread=False, timeout=60
            )
        except sqlite3.Error as exc:
            raise DataDirError(f"cannot open data dir {self.data_dir}: {exc}") from exc
        try:
            conn.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = FULL")
            conn.executescript(_SCHEMA)
            self._check_format(conn)
        except sqlite3.DatabaseError as exc:
            conn.close()
            raise DataDirError(f"data dir {self.data_dir} is corrupt: {exc}") from exc
        except DataDirError:
            conn.close()
            raise
        return conn

    @staticmethod
    def _check_format(conn: sqlite3.Connection) -> None:
        row = conn.execute("SELECT value FROM meta WHERE key = 'format_version'").fetchone()
        if row is None:
            conn.execute(
                "INSERT OR IGNORE INTO meta VALUES ('format_version', ?)", (str(FORMAT_VERSION),)
            )
        elif int(row[0]) == 1:
            _add_keyword_tables(conn)
        elif int(row[0]) != FORMAT_VERSION:
            raise DataDirError(f"data dir format {row[0]} is not supported ({FORMAT_VERSION})")

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            conn = self._conn
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                raise StorageError(f"could not lock the data dir for writing: {exc}") from exc
            try:
                with _utf8_bound():
                    yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._lock, _utf8_bound():
            return self._conn.execute(sql, params).fetchall()

    # cubes ------------------------------------------------------------------------------

    def create_cube(self, cube: CubeInfo, actor: str) -> Event:
        with self._write() as conn:
            if conn.execute("SELECT 1 FROM cubes WHERE name = ?", (cube.name,)).fetchone():
                raise CubeExists(f"cube {cube.name!r} already exists", cube=cube.name)
            event = seal(
                cube=cube.name,
                seq=1,
                prev_hash=GENESIS_HASH,
                ts=cube.created_at,
                actor=actor,
                op=EventOp.CUBE_CREATE,
                item_id=None,
                reason=None,
                payload={"cube": cube.model_dump(mode="json")},
            )
            conn.execute(
                "INSERT INTO cubes VALUES (?, ?, ?, ?)",
                (cube.name, cube.model_dump_json(), event.seq, event.hash),
            )
            self._insert_event(conn, event)
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

    def import_cube(self, data: CubeImport) -> None:
        data.check()
        name, last = data.cube.name, data.events[-1]
        created: list[Path] = []
        try:
            with self._write() as conn:
                if conn.execute("SELECT 1 FROM cubes WHERE name = ?", (name,)).fetchone():
                    raise CubeExists(f"cube {name!r} already exists", cube=name)
                self._check_import_ids(conn, data)
                conn.execute(
                    "INSERT INTO cubes VALUES (?, ?, ?, ?)",
                    (name, data.cube.model_dump_json(), last.seq, last.hash),
                )
                _fts5.create_table(conn, name)
                self._insert_import(conn, data)
                # last, under the write lock: a refusal above leaves no blob behind
                for blob in data.blobs.values():
                    self._put_import_blob(blob, created)
        except BaseException:
            for path in created:
                path.unlink(missing_ok=True)
            raise

    @staticmethod
    def _check_import_ids(conn: sqlite3.Connection, data: CubeImport) -> None:
        """Ids are global: an import whose item or derived artifact id is taken would write
        into another cube, so it is refused (the message names no other cube)."""
        item_ids = [item.id for item in data.items]
        for table, column, ids in (
            ("items", "id", item_ids),
            ("vectors", "item_id", item_ids),
            ("derived", "id", [entry.id for entry in data.derived]),
        ):
            for chunk in _chunks(ids):
                marks = ",".join("?" * len(chunk))
                taken = conn.execute(
                    f"SELECT {column} FROM {table} WHERE {column} IN ({marks}) LIMIT 1", chunk
                ).fetchone()
                if taken is not None:
                    raise Conflict(f"the id {taken[0]} of the import is taken", id=taken[0])

    def _insert_import(self, conn: sqlite3.Connection, data: CubeImport) -> None:
        """Every row of a new cube, a statement per table: no row of it exists yet (the ids
        were checked), so nothing is looked up or replaced."""
        try:
            conn.executemany(_INSERT_EVENT, [_event_row(event) for event in data.events])
            conn.executemany(_INSERT_PAYLOAD, [_payload_row(event) for event in data.events])
            first = conn.execute("SELECT COALESCE(MAX(rowid), 0) + 1 FROM items").fetchone()[0]
            rows = list(enumerate(data.items, start=first))
            conn.executemany(_INSERT_ITEM_AT, [(rowid, *_item_row(item)) for rowid, item in rows])
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
                [(item_id, _vector_bytes(vector)) for item_id, vector in data.vectors.items()],
            )
            for entry in data.derived:
                self._insert_derived(conn, entry)
        except sqlite3.IntegrityError as exc:
            # rows no cube owns (an event of a cube of that name, say): never overwritten
            raise Conflict(f"the import collides with stored rows: {exc}") from exc

    def _put_import_blob(self, data: bytes, created: list[Path]) -> None:
        """Put ``data``, recording its file in ``created`` when this call made it."""
        path = self._blob_path(hashlib.sha256(data).hexdigest())
        existed = path.is_file()
        self.put_blob(data)
        if not existed:
            created.append(path)

    # writes -----------------------------------------------------------------------------

    def commit(self, changes: Sequence[Change]) -> list[Event]:
        events: list[Event] = []
        with self._write() as conn:
            heads: dict[str, tuple[int, str]] = {}
            pending = deque(changes)
            while pending:
                change = pending.popleft()
                if change.cube not in heads:
                    heads[change.cube] = self._locked_head(conn, change.cube)
                event = self._apply(conn, change, heads[change.cube])
                heads[change.cube] = (event.seq, event.hash)
                events.append(event)
                if change.after is not None:
                    # the artifacts built from an older version go right after the change
                    pending.extendleft(reversed(self._invalidated(conn, change)))
            conn.executemany(
                "UPDATE cubes SET head_seq = ?, head_hash = ? WHERE name = ?",
                [(seq, digest, cube) for cube, (seq, digest) in heads.items()],
            )
        return events

    def _apply(self, conn: sqlite3.Connection, change: Change, head: tuple[int, str]) -> Event:
        self._check_version(conn, change)
        self._check_cube_info(conn, change)
        self._check_sources(conn, change)
        event = seal(
            cube=change.cube,
            seq=head[0] + 1,
            prev_hash=head[1],
            ts=change.ts,
            actor=change.actor,
            op=change.op,
            item_id=change.item_id,
            reason=change.reason,
            payload=change.payload(),
        )
        self._insert_event(conn, event)
        if change.after is not None:
            self._upsert_item(conn, change.after)
        if change.vector is not None and change.item_id is not None:
            self._upsert_vector(conn, change.item_id, change.vector)
        if change.cube_info is not None:
            conn.execute(
                "UPDATE cubes SET info = ? WHERE name = ?",
                (change.cube_info.model_dump_json(), change.cube),
            )
        if change.derived is not None and change.op in REPLACE_OPS:
            self._replace_derived(conn, change.derived)
        elif change.derived is not None:
            self._insert_derived(conn, change.derived)
        if change.dropped is not None:
            self._delete_derived(conn, change.cube, change.dropped)
        return event

    def _invalidated(self, conn: sqlite3.Connection, change: Change) -> list[Change]:
        item = change.after
        assert item is not None
        rows = conn.execute(
            "SELECT d.body FROM derived_sources s JOIN derived d ON d.id = s.derived_id"
            " WHERE s.item_id = ? ORDER BY d.rowid",
            (item.id,),
        ).fetchall()
        entries = [DerivedEntry.model_validate_json(body) for (body,) in rows]
        return invalidations(entries, item, actor=change.actor, ts=change.ts)

    def _check_sources(self, conn: sqlite3.Connection, change: Change) -> None:
        entry = change.derived
        if entry is None or change.op in REPLACE_OPS:
            return
        taken = conn.execute("SELECT 1 FROM derived WHERE id = ?", (entry.id,)).fetchone()
        sources = self._items(conn, [s.item_id for s in entry.sources])
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

    @staticmethod
    def _items(conn: sqlite3.Connection, item_ids: list[str]) -> dict[str, MemoryItem]:
        found: dict[str, MemoryItem] = {}
        for chunk in _chunks(item_ids):
            marks = ",".join("?" * len(chunk))
            for (body,) in conn.execute(f"SELECT body FROM items WHERE id IN ({marks})", chunk):
                item = MemoryItem.model_validate_json(body)
                found[item.id] = item
        return found

    @staticmethod
    def _insert_derived(conn: sqlite3.Connection, entry: DerivedEntry) -> None:
        conn.execute(
            "INSERT INTO derived VALUES (?, ?, ?, ?)",
            (entry.id, entry.cube, entry.kind, entry.model_dump_json()),
        )
        conn.executemany(
            "INSERT OR IGNORE INTO derived_sources VALUES (?, ?)",
            [(entry.id, source.item_id) for source in entry.sources],
        )

    @staticmethod
    def _replace_derived(conn: sqlite3.Connection, entry: DerivedEntry) -> None:
        replaced = conn.execute(
            "UPDATE derived SET body = ? WHERE id = ? AND cube = ? AND kind = ?",
            (entry.model_dump_json(), entry.id, entry.cube, entry.kind),
        ).rowcount
        if not replaced:
            raise NotFound(f"cube {entry.cube!r} has no derived artifact {entry.id!r}")

    @staticmethod
    def _delete_derived(conn: sqlite3.Connection, cube: str, derived_id: str) -> None:
        gone = conn.execute(
            "DELETE FROM derived WHERE id = ? AND cube = ?", (derived_id, cube)
        ).rowcount
        if not gone:
            raise NotFound(f"cube {cube!r} has no derived artifact {derived_id!r}")
        conn.execute("DELETE FROM derived_sources WHERE derived_id = ?", (derived_id,))

    @staticmethod
    def _locked_head(conn: sqlite3.Connection, cube: str) -> tuple[int, str]:
        row = conn.execute(
            "SELECT head_seq, head_hash FROM cubes WHERE name = ?", (cube,)
        ).fetchone()
        if row is None:
            raise CubeNotFound(f"no cube named {cube!r}", cube=cube)
        return int(row[0]), str(row[1])

    @staticmethod
    def _check_version(conn: sqlite3.Connection, change: Change) -> None:
        if change.item_id is None or change.expected_version is None:
            return
        row = conn.execute("SELECT version FROM items WHERE id = ?", (change.item_id,)).fetchone()
        rules.check_version(change, None if row is None else int(row[0]))

    @staticmethod
    def _check_cube_info(conn: sqlite3.Connection, change: Change) -> None:
        if change.cube_info is None:
            return
        row = conn.execute("SELECT info FROM cubes WHERE name = ?", (change.cube,)).fetchone()
        rules.check_cube_successor(change, CubeInfo.model_validate_json(row[0]))

    @staticmethod
    def _insert_event(conn: sqlite3.Connection, event: Event) -> None:
        conn.execute(_INSERT_EVENT, _event_row(event))
        conn.execute(_INSERT_PAYLOAD, _payload_row(event))

    @staticmethod
    def _upsert_item(conn: sqlite3.Connection, item: MemoryItem) -> None:
        # The keyword table is keyed by the row's rowid, which a REPLACE changes: the old
        # entry goes first and the new one follows the row, for active items only.
        keyword_table = _fts5.table_name(item.cube)
        old = conn.execute("SELECT rowid FROM items WHERE id = ?", (item.id,)).fetchone()
        if old is not None:
            conn.execute(f"DELETE FROM {keyword_table} WHERE rowid = ?", (old[0],))
        row = conn.execute(
            "INSERT OR REPLACE INTO items VALUES (?, ?, ?, ?, ?, ?, ?, ?)", _item_row(item)
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

    @staticmethod
    def _upsert_vector(conn: sqlite3.Connection, item_id: str, vector: Vector) -> None:
        conn.execute(
            "INSERT OR REPLACE INTO vectors VALUES (?, ?)", (item_id, _vector_bytes(vector))
        )

    # blobs ------------------------------------------------------------------------------

    def _blob_path(self, digest: str) -> Path:
        if not isinstance(digest, str) or not _DIGEST.fullmatch(digest):
            raise InvalidInput(f"not a blob digest: {digest!r}")
        return self.data_dir / BLOB_DIR / f"{digest}.safetensors"

    def put_blob(self, data: bytes) -> str:
        digest = hashlib.sha256(data).hexdigest()
        path = self._blob_path(digest)
        try:
            if path.is_file() and hashlib.sha256(path.read_bytes()).hexdigest() == digest:
                return digest
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{digest}.{os.getpid()}.{threading.get_ident()}.tmp")
            with tmp.open("wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
            _fsync_dir(path.parent)
        except OSError as exc:
            raise StorageError(f"cannot write blob {digest}: {exc}") from exc
        return digest

    def get_blob(self, digest: str) -> bytes | None:
        path = self._blob_path(digest)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StorageError(f"cannot read blob {digest}: {exc}") from exc
        if hashlib.sha256(data).hexdigest() != digest:
            raise IntegrityError(f"blob {digest} does not match its digest", blob=digest)
        return data

    # reads ------------------------------------------------------------------------------

    def get_item(self, item_id: str) -> MemoryItem | None:
        rows = self._read("SELECT body FROM items WHERE id = ?", (item_id,))
        return MemoryItem.model_validate_json(rows[0][0]) if rows else None

    def get_items(self, item_ids: Sequence[str], cube: str | None = None) -> dict[str, MemoryItem]:
        with self._lock, _utf8_bound():
            found = self._items(self._conn, list(item_ids))
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
        conditions, params = _filter_sql(cube, flt)
        return [row[0] for row in self._read(f"SELECT id FROM items WHERE {conditions}", params)]

    def keyword_search(
        self, cube: str, query: str, k: int, flt: ItemFilter
    ) -> list[tuple[str, float]]:
        match = _fts5.match_query(query)
        if match is None or k <= 0 or self.get_cube(cube) is None:
            return []
        table = _fts5.table_name(cube)
        conditions, params = _filter_sql(cube, flt)
        if flt.is_empty:
            # The table holds exactly the cube's active items, so the best k are found in it
            # alone (2-3x faster than joining every match), then named; the join re-checks them.
            sql = (
                f"WITH best AS (SELECT rowid AS row_, bm25({table}) AS rank_ FROM {table}"
                f" WHERE {table} MATCH ? ORDER BY rank_, rowid LIMIT ?)"
                " SELECT items.id, best.rank_ FROM best JOIN items ON items.rowid = best.row_"
                f" WHERE {conditions} ORDER BY best.rank_, best.row_"
            )
            rows = self._read(sql, [match, k, *params])
        else:
            # the filters sit in the same WHERE as the match, so LIMIT counts only matching items
            sql = (
                f"SELECT items.id, bm25({table}) AS rank_ FROM {table}"
                f" JOIN items ON items.rowid = {table}.rowid"
                f" WHERE {table} MATCH ? AND {conditions} ORDER BY rank_, {table}.rowid LIMIT ?"
            )
            rows = self._read(sql, [match, *params, k])
        # bm25() is lower-is-better; negated, higher is better like every other score.
        # Ties go to the row written first (an order an export and import keep).
        return [(item_id, -float(score)) for item_id, score in rows]

    def index_mismatches(self, cube: str, active: Sequence[MemoryItem]) -> list[str]:
        # the filter columns (status, user, session, time, tags) are the item rows' own, which
        # iter_items reads back for verify to compare: only the keyword table is apart
        texts = {item.id: item.text for item in active}
        with self._lock:
            indexed, orphans = _fts5.indexed_texts(self._conn, cube)
            differing = sorted(
                item_id
                for item_id in indexed.keys() | texts.keys()
                if indexed.get(item_id) != texts.get(item_id)
            )
            if differing:
                return differing
            if orphans:
                raise IntegrityError(
                    f"the keyword table of cube {cube!r} has {orphans} rows of no item", cube=cube
                )
            problem = _fts5.table_problem(self._conn, cube)
        if problem is not None:
            raise IntegrityError(problem, cube=cube)
        return []

    def get_vectors(self, item_ids: Sequence[str], cube: str | None = None) -> dict[str, Vector]:
        found: dict[str, Vector] = {}
        for chunk in _chunks(item_ids):
            marks = ",".join("?" * len(chunk))
            sql = f"SELECT item_id, data FROM vectors WHERE item_id IN ({marks})"
            params: list[str] = list(chunk)
            if cube is not None:
                sql = (
                    "SELECT v.item_id, v.data FROM vectors v JOIN items i ON i.id = v.item_id"
                    f" WHERE v.item_id IN ({marks}) AND i.cube = ?"
                )
                params.append(cube)
            for item_id, data in self._read(sql, params):
                found[item_id] = np.frombuffer(data, dtype=np.float32)
        return found

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

    def record_access(self, item_ids: Sequence[str], at: datetime, half_life_s: float) -> None:
        unique = list(dict.fromkeys(item_ids))
        with self._write() as conn:
            before = self._access_rows(conn, unique)
            rows = []
            for item_id in unique:
                stats = accessed(before.get(item_id, AccessStats(item_id=item_id)), at, half_life_s)
                rows.append((item_id, stats.count, sortable_time(at), stats.frequency))
            conn.executemany("INSERT OR REPLACE INTO access VALUES (?, ?, ?, ?)", rows)

    def access_stats(self, item_ids: Sequence[str]) -> dict[str, AccessStats]:
        with self._lock, _utf8_bound():
            return self._access_rows(self._conn, list(item_ids))

    @staticmethod
    def _access_rows(conn: sqlite3.Connection, item_ids: list[str]) -> dict[str, AccessStats]:
        found: dict[str, AccessStats] = {}
        for chunk in _chunks(item_ids):
            marks = ",".join("?" * len(chunk))
            sql = (
                "SELECT item_id, count, last_access, frequency FROM access"
                f" WHERE item_id IN ({marks})"
            )
            for item_id, count, last, frequency in conn.execute(sql, chunk).fetchall():
                found[item_id] = AccessStats(
                    item_id=item_id,
                    count=count,
                    last_access=datetime.fromisoformat(last),
                    frequency=frequency,
                )
        return found

    # API keys --------------------------------------------------------------------------

    def put_api_key(self, key: ApiKey) -> None:
        with self._write() as conn:
            try:
                conn.execute("INSERT INTO api_keys VALUES (?, ?)", (key.id, key.model_dump_json()))
            except sqlite3.IntegrityError:
                raise Conflict(f"an API key with id {key.id!r} exists", key_id=key.id) from None

    def get_api_key(self, key_id: str) -> ApiKey | None:
        rows = self._read("SELECT body FROM api_keys WHERE id = ?", (key_id,))
        return ApiKey.model_validate_json(rows[0][0]) if rows else None

    def list_api_keys(self) -> list[ApiKey]:
        keys = [ApiKey.model_validate_json(body) for (body,) in self._read(
            "SELECT body FROM api_keys"
        )]  # fmt: skip
        return sorted(keys, key=lambda k: (k.created_at, k.id))

    def revoke_api_key(self, key_id: str, at: datetime) -> ApiKey:
        with self._write() as conn:
            row = conn.execute("SELECT body FROM api_keys WHERE id = ?", (key_id,)).fetchone()
            if row is None:
                raise NotFound(f"no API key with id {key_id!r}", key_id=key_id)
            key = ApiKey.model_validate_json(row[0])
            if key.revoked_at is None:
                key = key.model_copy(update={"revoked_at": at})
                conn.execute(
                    "UPDATE api_keys SET body = ? WHERE id = ?", (key.model_dump_json(), key_id)
                )
        return key

    # background jobs ----------------------------------------------------------------------

    def enqueue_job(self, job: Job) -> None:
        with self._write() as conn:
            try:
                conn.execute(
                    "INSERT INTO jobs (id, cube, state, lease_until, body) VALUES (?, ?, ?, ?, ?)",
                    (job.id, job.cube, job.state.value, None, job.model_dump_json()),
                )
            except sqlite3.IntegrityError:
                raise Conflict(f"a job with id {job.id!r} exists", job_id=job.id) from None

    def claim_job(self, worker: str, now: datetime, lease_s: float) -> Job | None:
        sql = (
            "SELECT body FROM jobs WHERE state = 'queued'"
            " OR (state = 'running' AND lease_until <= ?) ORDER BY seq LIMIT 1"
        )
        # idle workers poll: look without the write lock first, so they never hold up writers
        if not self._read(sql, (sortable_time(now),)):
            return None
        with self._write() as conn:
            row = conn.execute(sql, (sortable_time(now),)).fetchone()
            if row is None:
                return None
            job = Job.model_validate_json(row[0])
            if not claimable(job, now):  # the row's columns and its body disagree
                raise IntegrityError(f"job {job.id} is stored inconsistently", job_id=job.id)
            job = claimed(job, worker, now, lease_s)
            self._put_job(conn, job)
        return job

    def renew_job(self, job_id: str, worker: str, now: datetime, lease_s: float) -> Job:
        with self._write() as conn:
            job = renewed(self._job_in(conn, job_id), worker, now, lease_s)
            self._put_job(conn, job)
        return job

    def finish_job(self, job: Job) -> Job:
        if job.worker is None or job.state in UNFINISHED:
            raise InvalidInput(f"job {job.id} is not finished by a worker", job_id=job.id)
        with self._write() as conn:
            held(self._job_in(conn, job.id), job.worker)
            self._put_job(conn, job)
        return job

    def cancel_job(self, job_id: str, now: datetime) -> Job:
        with self._write() as conn:
            job = cancelled(self._job_in(conn, job_id), now)
            self._put_job(conn, job)
        return job

    def get_job(self, job_id: str) -> Job | None:
        rows = self._read("SELECT body FROM jobs WHERE id = ?", (job_id,))
        return Job.model_validate_json(rows[0][0]) if rows else None

    def list_jobs(self, cube: str) -> list[Job]:
        rows = self._read("SELECT body FROM jobs WHERE cube = ? ORDER BY seq", (cube,))
        return [Job.model_validate_json(body) for (body,) in rows]

    def job_counts(self) -> dict[JobState, int]:
        rows = self._read(
            "SELECT state, count(*) FROM jobs WHERE state IN ('queued', 'running') GROUP BY state"
        )
        counts = dict.fromkeys(UNFINISHED, 0)
        counts.update({JobState(state): count for state, count in rows})
        return counts

    @staticmethod
    def _job_in(conn: sqlite3.Connection, job_id: str) -> Job:
        row = conn.execute("SELECT body FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None:
            raise JobNotFound(f"no job with id {job_id!r}", job_id=job_id)
        return Job.model_validate_json(row[0])

    @staticmethod
    def _put_job(conn: sqlite3.Connection, job: Job) -> None:
        lease = None if job.lease_until is None else sortable_time(job.lease_until)
        conn.execute(
            "UPDATE jobs SET state = ?, lease_until = ?, body = ? WHERE id = ?",
            (job.state.value, lease, job.model_dump_json(), job.id),
        )

    def changed_since(self, cube: str, after_seq: int) -> tuple[set[str], int]:
        rows = self._read(
            "SELECT item_id, seq FROM events WHERE cube = ? AND seq > ?", (cube, after_seq)
        )
        changed = {item_id for item_id, _ in rows if item_id is not None}
        return changed, max((seq for _, seq in rows), default=after_seq)


def _filter_sql(cube: str, flt: ItemFilter) -> tuple[str, list[Any]]:
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


def _add_keyword_tables(conn: sqlite3.Connection) -> None:
    """Format 1 -> 2, once: build every cube's keyword table from its active items."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        # re-read under the write lock: another process may have migrated it meanwhile
        row = conn.execute("SELECT value FROM meta WHERE key = 'format_version'").fetchone()
        if int(row[0]) == 1:
            for (name,) in conn.execute("SELECT name FROM cubes").fetchall():
                _fts5.create_table(conn, name)
                _fts5.fill_table(conn, name)
            conn.execute("UPDATE meta SET value = '2' WHERE key = 'format_version'")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


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


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _chunks(values: Sequence[str], size: int = 500) -> Iterator[list[str]]:
    for start in range(0, len(values), size):
        yield list(values[start : start + size])


_INSERT_EVENT = "INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
_INSERT_PAYLOAD = "INSERT INTO payloads VALUES (?, ?, ?)"
_INSERT_ITEM_AT = (
    "INSERT INTO items (rowid, id, cube, status, version, user, session, occurred_at, body) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def _event_row(event: Event) -> tuple[Any, ...]:
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


def _payload_row(event: Event) -> tuple[Any, ...]:
    body = None if event.payload is None else json.dumps(event.payload, ensure_ascii=False)
    return (event.cube, event.seq, body)


def _item_row(item: MemoryItem) -> tuple[Any, ...]:
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


def _vector_bytes(vector: Vector) -> bytes:
    return np.ascontiguousarray(vector, dtype=np.float32).tobytes()


@contextmanager
def _utf8_bound() -> Iterator[None]:
    """SQLite binds text as UTF-8: a string with a lone surrogate that got past the checks at
    the edge (an id, say) is the caller's error, and the transaction writes nothing."""
    try:
        yield
    except UnicodeEncodeError:
        raise InvalidInput("a value is not valid Unicode (a lone surrogate)") from None
