"""The database file: its tables, its format version, and opening it.

One database, ``<data_dir>/memos.db``, in WAL mode with full fsync. The format version in
``meta`` says which tables a data dir has; an older format is brought up to date when opened.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from memos.errors import DataDirError

from .. import _fts5  # relative: this package is installed as memos.stores

DB_FILE = "memos.db"
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
CREATE TABLE IF NOT EXISTS cube_access (
    cube TEXT NOT NULL,
    item_id TEXT NOT NULL,
    PRIMARY KEY (cube, item_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS co_access (
    cube TEXT NOT NULL,
    a TEXT NOT NULL,
    b TEXT NOT NULL,
    count INTEGER NOT NULL,
    last_access TEXT NOT NULL,
    frequency REAL NOT NULL,
    PRIMARY KEY (cube, a, b)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS refusals (
    cube TEXT NOT NULL,
    ts TEXT NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS refusals_by_cube ON refusals (cube, ts);
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


def connect(data_dir: Path, create: bool) -> sqlite3.Connection:
    """The connection to the database of ``data_dir``, its tables made and its format checked
    (``DataDirError`` when there is none and ``create`` is false, or it cannot be used)."""
    db_path = data_dir / DB_FILE
    if data_dir.exists() and not data_dir.is_dir():
        raise DataDirError(f"data dir {data_dir} is not a directory")
    if not db_path.exists():
        if not create:
            raise DataDirError(f"no MemOS data dir at {data_dir}")
        data_dir.mkdir(parents=True, exist_ok=True)
    try:
        conn = sqlite3.connect(db_path, isolation_level=None, check_same_thread=False, timeout=60)
    except sqlite3.Error as exc:
        raise DataDirError(f"cannot open data dir {data_dir}: {exc}") from exc
    try:
        conn.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = FULL")
        # freed space is zeroed: an erased memory leaves no bytes in free pages
        conn.execute("PRAGMA secure_delete = ON")
        conn.executescript(_SCHEMA)
        _check_format(conn)
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise DataDirError(f"data dir {data_dir} is corrupt: {exc}") from exc
    except DataDirError:
        conn.close()
        raise
    return conn


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
