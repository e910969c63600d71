"""``verify`` covers what decides an answer beyond the log, the items and the vectors: the
keyword index, the codec's fitted state and the vector index snapshot; and, given an anchor
kept outside the data directory, a log whose newest events were cut off.

Each test builds a history, closes MemOS, changes the store behind its back (SQLite with the
stdlib ``sqlite3`` module, Redis with raw commands), reopens and checks what ``verify`` says.
The ``notes`` log built by ``history`` is (as in tests/test_verify_tamper.py)::

    1 cube_create   2 create a   3 create b   4 create c   5 update a   6 delete b   7 update c
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
import redis
from _backends import STORES
from _redis import REDIS_URL, drop_redis_store, fresh_redis_url, prefix_of
from memos.stores import _fts5
from memos.stores.redis._keywords import tokens
from memos.stores.sqlite import DB_FILE
from test_cli import Result, run_memos

from memos import CubeAnchor, EventOp, HashEmbedder, MemOS, VerifyReport, open_store
from memos.cli import ExitCode
from memos.codecs import FIT_MIN
from memos.errors import InvalidInput

CUBE, OTHER = "notes", "other"
LAST_SEQ = 7
LAST_WRITE = {"a": 5, "b": 6, "c": 7}
TEXTS = {"a": "Alice moved to Porto", "b": "Alice has a cat", "c": "Alice works at Initech"}


@dataclass
class Backend:
    """A store with the ``notes`` history, reopened by :meth:`open`."""

    kind: str
    location: str  # the data dir (sqlite) or the store URL (redis)
    ids: dict[str, str]

    def open(self) -> MemOS:
        if self.kind == "sqlite":
            return MemOS.open(self.location, embedder=HashEmbedder(64))
        return MemOS(open_store(self.location), embedder=HashEmbedder(64))

    def db(self) -> closing[sqlite3.Connection]:
        return closing(sqlite3.connect(Path(self.location) / DB_FILE, isolation_level=None))

    def redis(self) -> redis.Redis:
        return redis.Redis.from_url(REDIS_URL)

    def key(self, name: str, cube: str = CUBE) -> str:
        return f"{prefix_of(self.location)}:{{{cube}}}:{name}"

    def verify(self, anchor: CubeAnchor | None = None) -> VerifyReport:
        with self.open() as mos:
            other = mos.verify(OTHER)
            assert other.ok, other
            return mos.verify(CUBE, anchor=anchor)


def _history(mos: MemOS) -> dict[str, str]:
    mos.create_cube(CUBE, owner="alice")
    mos.create_cube(OTHER, owner="bob")
    a = mos.add("Alice moved to Lisbon", cube=CUBE, user="alice", tags=["travel"])
    # words FTS5 and the Redis tokenizer treat alike only where it matters: no false alarm
    mos.add("Zoë peignit 🎨 au café, naïvement", cube=OTHER, user="bob")
    b = mos.add(TEXTS["b"], cube=CUBE, user="alice")
    c = mos.add("Alice works at Acme", cube=CUBE, user="alice")
    assert not isinstance(a, list)
    assert not isinstance(b, list)
    assert not isinstance(c, list)
    mos.update(a.id, TEXTS["a"], user="alice", expected_version=1)
    mos.delete(b.id, user="alice", reason="user asked")
    mos.update(c.id, TEXTS["c"], user="alice")
    assert len(mos.log(CUBE)) == LAST_SEQ
    return {"a": a.id, "b": b.id, "c": c.id}


def _backend(kind: str, tmp_path: Path) -> Iterator[Backend]:
    location = str(tmp_path / "data") if kind == "sqlite" else fresh_redis_url()
    backend = Backend(kind, location, {})
    try:
        with backend.open() as mos:
            backend.ids = _history(mos)
        yield backend
    finally:
        if kind == "redis":
            drop_redis_store(location)


@pytest.fixture(params=STORES)
def history(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    yield from _backend(request.param, tmp_path)


@pytest.fixture
def sqlite_history(tmp_path: Path) -> Iterator[Backend]:
    yield from _backend("sqlite", tmp_path)


@pytest.fixture
def redis_history(tmp_path: Path) -> Iterator[Backend]:
    yield from _backend("redis", tmp_path)


def assert_bad(report: VerifyReport, seq: int, *words: str) -> None:
    assert not report.ok, report
    assert report.cube == CUBE
    assert report.first_bad_seq == seq, report
    assert report.problem is not None
    for word in words:
        assert word in report.problem, report


def keyword_ids(backend: Backend, query: str) -> list[str]:
    with backend.open() as mos:
        return [hit.item.id for hit in mos.search(query, cube=CUBE, k=5, mode="keyword")]


def test_an_untouched_store_verifies(history: Backend) -> None:
    with history.open() as mos:
        assert all(report.ok for report in mos.verify_all()), mos.verify_all()
        active = [item for item in mos.store.iter_items(CUBE) if item.id != history.ids["b"]]
        assert mos.store.index_mismatches(CUBE, active) == []
        assert mos.store.index_mismatches(CUBE, []) == sorted(item.id for item in active)


# the keyword index: SQLite --------------------------------------------------------------------


def _rowid(conn: sqlite3.Connection, item_id: str) -> int:
    row = conn.execute("SELECT rowid FROM items WHERE id = ?", (item_id,)).fetchone()
    assert row is not None
    return int(row[0])


def _fts_edit(name: str, sql: str, *values: object) -> Callable[[Backend], None]:
    """Run ``sql`` with ``{t}`` the keyword table and ``?`` ``values``, ``"@a"`` standing for the
    rowid of item a's row."""

    def edit(backend: Backend) -> None:
        with backend.db() as conn:
            table = _fts5.table_name(CUBE)
            params = [
                _rowid(conn, backend.ids[v[1:]]) if isinstance(v, str) and v[:1] == "@" else v
                for v in values
            ]
            assert conn.execute(sql.format(t=table), params).rowcount != 0

    edit.__name__ = name
    return edit


@pytest.mark.parametrize(
    ("edit", "seq"),
    [
        (_fts_edit("reworded", "UPDATE {t} SET text = ? WHERE rowid = ?", "forged", "@a"), 5),
        (_fts_edit("reworded_c", "UPDATE {t} SET text = ? WHERE rowid = ?", "forged", "@c"), 7),
        (_fts_edit("dropped", "DELETE FROM {t} WHERE rowid = ?", "@c"), 7),
        (_fts_edit("deleted_item", "INSERT INTO {t} (rowid, text) VALUES (?, ?)", "@b", "x"), 6),
        (_fts_edit("no_item", "INSERT INTO {t} (rowid, text) VALUES (99999, 'forged')"), LAST_SEQ),
        # the shadow tables FTS5 keeps: its stored text, and the lengths bm25 reads
        (_fts_edit("content", "UPDATE {t}_content SET c0 = ? WHERE id = ?", "forged", "@a"), 5),
        (_fts_edit("docsize", "UPDATE {t}_docsize SET sz = X'09' WHERE id = ?", "@c"), LAST_SEQ),
    ],
    ids=lambda value: getattr(value, "__name__", str(value)),
)
def test_sqlite_keyword_rows(
    sqlite_history: Backend, edit: Callable[[Backend], None], seq: int
) -> None:
    edit(sqlite_history)
    assert_bad(sqlite_history.verify(), seq)


def test_sqlite_a_forged_keyword_row_is_what_verify_reports(sqlite_history: Backend) -> None:
    """The edit that matters: a search for a word the memory never held finds it."""
    a = sqlite_history.ids["a"]
    _fts_edit("forged", "UPDATE {t} SET text = ? WHERE rowid = ?", "launch codes", "@a")(
        sqlite_history
    )
    assert keyword_ids(sqlite_history, "launch codes") == [a]
    assert_bad(sqlite_history.verify(), 5, a, "search index")


def test_sqlite_a_redefined_keyword_table(sqlite_history: Backend) -> None:
    """Another tokenizer indexes other terms; the table's texts are all still right."""
    with sqlite_history.db() as conn:
        table = _fts5.table_name(CUBE)
        rows = conn.execute(f"SELECT rowid, text FROM {table}").fetchall()
        conn.execute(f"DROP TABLE {table}")
        conn.execute(f"CREATE VIRTUAL TABLE {table} USING fts5(text, tokenize='trigram')")
        conn.executemany(f"INSERT INTO {table} (rowid, text) VALUES (?, ?)", rows)
    assert_bad(sqlite_history.verify(), LAST_SEQ, "defined")


def test_sqlite_a_missing_keyword_table(sqlite_history: Backend) -> None:
    with sqlite_history.db() as conn:
        conn.execute(f"DROP TABLE {_fts5.table_name(CUBE)}")
    assert_bad(sqlite_history.verify(), LAST_SEQ, "keyword table")


# the keyword index: Redis ---------------------------------------------------------------------


def _redis_edit(name: str, *command: str | int) -> Callable[[Backend], None]:
    """A raw command; ``"@a"`` stands for item a's id, ``"key:..."`` for a key of the cube."""

    def edit(backend: Backend) -> None:
        args = [
            backend.ids[part[1:]]
            if isinstance(part, str) and part[:1] == "@"
            else backend.key(part[4:])
            if isinstance(part, str) and part.startswith("key:")
            else part
            for part in command
        ]
        with backend.redis() as client:
            client.execute_command(*args)

    edit.__name__ = name
    return edit


INITECH = tokens("Initech")[0]


@pytest.mark.parametrize(
    ("edit", "seq"),
    [
        (_redis_edit("posting_added", "HSET", "key:terms:forged", "@a", 1), 5),
        (_redis_edit("frequency", "HSET", f"key:terms:{INITECH}", "@c", 2), 7),
        (_redis_edit("zero_frequency", "HSET", "key:terms:forged", "@a", 0), 5),
        (_redis_edit("not_a_count", "HSET", f"key:terms:{INITECH}", "@c", "x"), 7),
        (_redis_edit("posting_dropped", "HDEL", f"key:terms:{INITECH}", "@c"), 7),
        (_redis_edit("deleted_item", "HSET", "key:terms:cat", "@b", 1), 6),
        (_redis_edit("length", "HINCRBY", "key:lengths", "@a", 1), 5),
        (_redis_edit("deleted_length", "HSET", "key:lengths", "@b", 3), 6),
        (_redis_edit("no_item", "HSET", "key:terms:forged", "ghost", 1), LAST_SEQ),
        (_redis_edit("total", "INCRBY", "key:total-length", 3), LAST_SEQ),
    ],
    ids=lambda value: getattr(value, "__name__", str(value)),
)
def test_redis_keyword_index(
    redis_history: Backend, edit: Callable[[Backend], None], seq: int
) -> None:
    edit(redis_history)
    assert_bad(redis_history.verify(), seq)


def test_redis_a_forged_posting_is_what_verify_reports(redis_history: Backend) -> None:
    a = redis_history.ids["a"]
    _redis_edit("forged", "HSET", "key:terms:launch", "@a", 1)(redis_history)
    assert keyword_ids(redis_history, "launch") == [a]
    assert_bad(redis_history.verify(), 5, a, "search index")


# the filter indexes: Redis keeps them apart from the item rows ----------------------------------


def _redis_active(name: str, day: str, item: str) -> Callable[[Backend], None]:
    """Item ``item`` entered in the time-ordered set of active items at ``day``."""

    def edit(backend: Backend) -> None:
        member = f"{day}T00:00:00.000000+00:00 {backend.ids[item]}"
        with backend.redis() as client:
            client.zadd(backend.key("active"), {member: 0})

    edit.__name__ = name
    return edit


@pytest.mark.parametrize(
    ("edit", "seq"),
    [
        (_redis_edit("user_member_added", "SADD", "key:user:mallory", "@a"), 5),
        (_redis_edit("user_member_dropped", "SREM", "key:user:alice", "@c"), 7),
        (_redis_edit("deleted_item_in_user", "SADD", "key:user:alice", "@b"), 6),
        (_redis_edit("tag_member_added", "SADD", "key:tag:travel", "@c"), 7),
        (_redis_edit("tag_member_dropped", "SREM", "key:tag:travel", "@a"), 5),
        (_redis_edit("session_member_added", "SADD", "key:session:s1", "@a"), 5),
        (_redis_edit("no_item_in_a_set", "SADD", "key:tag:travel", "ghost"), LAST_SEQ),
        (_redis_active("time_moved", "1999-01-01", "a"), 5),
        (_redis_active("deleted_item_active", "2026-01-01", "b"), 6),
    ],
    ids=lambda value: getattr(value, "__name__", str(value)),
)
def test_redis_filter_indexes(
    redis_history: Backend, edit: Callable[[Backend], None], seq: int
) -> None:
    edit(redis_history)
    assert_bad(redis_history.verify(), seq, "search index")


def test_redis_a_forged_filter_member_is_what_verify_reports(redis_history: Backend) -> None:
    a, c = redis_history.ids["a"], redis_history.ids["c"]
    _redis_edit("forged", "SADD", "key:tag:travel", "@c")(redis_history)
    with redis_history.open() as mos:
        found = mos.search("Alice", cube=CUBE, tags=["travel"], mode="keyword", k=5)
    assert {hit.item.id for hit in found} == {a, c}
    assert_bad(redis_history.verify(), 7, c)


# the codec's fitted state ---------------------------------------------------------------------


@pytest.fixture(params=STORES)
def fitted(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Backend, str, int]]:
    """A history whose cube ``notes`` has a fitted int8 codec: the backend, the digest of the
    state blob and the seq of the ``codec_fit`` event that named it."""
    for backend in _backend(request.param, tmp_path):
        with backend.open() as mos:
            mos.reencode(CUBE, codec="int8")
            mos.add_many([f"memory {i} about topic {i % 31}" for i in range(FIT_MIN)], cube=CUBE)
            info = mos.get_cube(CUBE)
            fits = [e.seq for e in mos.log(CUBE) if e.op == EventOp.CODEC_FIT]
            assert mos.verify(CUBE).ok
        assert info.codec_state is not None
        assert fits
        yield backend, info.codec_state, fits[-1]


def _put_blob(backend: Backend, digest: str, data: bytes | None) -> None:
    if backend.kind == "sqlite":
        path = Path(backend.location) / "blobs" / f"{digest}.safetensors"
        if data is None:
            path.unlink()
        else:
            path.write_bytes(data)
        return
    with backend.redis() as client:
        key = f"{prefix_of(backend.location)}:blob:{digest}"
        if data is None:
            client.delete(key)
        else:
            client.set(key, data)


@pytest.mark.parametrize("change", ["flipped", "replaced", "deleted"])
def test_codec_state_blob(fitted: tuple[Backend, str, int], change: str) -> None:
    backend, digest, fit_seq = fitted
    with backend.open() as mos:
        blob = mos.store.get_blob(digest)
    assert blob is not None
    data = {
        "flipped": blob[:-1] + bytes([blob[-1] ^ 1]),
        "replaced": b"not a safetensors file",
        "deleted": None,
    }[change]
    _put_blob(backend, digest, data)
    assert_bad(backend.verify(), fit_seq, digest)


# the vector index snapshot (embedded data dirs keep snapshots) ---------------------------------

QUERIES = ("memory 7 about topic 7", "topic 3", "Alice moved to Porto", "number 40")


@pytest.fixture
def snapshotted(sqlite_history: Backend) -> tuple[Backend, list[list[str]]]:
    """The SQLite history with 60 more memories, closed (so its snapshot is saved), and the
    ids that dense searches for ``QUERIES`` return."""
    with sqlite_history.open() as mos:
        mos.add_many([f"memory {i} about topic {i % 9}" for i in range(60)], cube=CUBE)
    answers = _dense(sqlite_history)
    assert _snapshot_dir(sqlite_history).joinpath(f"{CUBE}.json").exists()
    return sqlite_history, answers


def _dense(backend: Backend, mos: MemOS | None = None) -> list[list[str]]:
    if mos is None:
        with backend.open() as opened:
            return _dense(backend, opened)
    return [[h.item.id for h in mos.search(q, cube=CUBE, k=5, mode="dense")] for q in QUERIES]


def _snapshot_dir(backend: Backend) -> Path:
    return Path(backend.location) / "index"


def _sidecar(backend: Backend) -> dict[str, object]:
    loaded = json.loads((_snapshot_dir(backend) / f"{CUBE}.json").read_text())
    assert isinstance(loaded, dict)
    return loaded


def _write_sidecar(backend: Backend, sidecar: dict[str, object], *, reseal: bool) -> None:
    """Write ``sidecar``; resealed, its checksums fit again (as a forger would make them)."""
    if reseal:
        table = (_snapshot_dir(backend) / f"{CUBE}.codes").read_bytes()
        sidecar["table_sha256"] = hashlib.sha256(table).hexdigest()
        sidecar.pop("sidecar_sha256", None)
        body = json.dumps(sidecar, sort_keys=True).encode()
        sidecar["sidecar_sha256"] = hashlib.sha256(body).hexdigest()
    (_snapshot_dir(backend) / f"{CUBE}.json").write_text(json.dumps(sidecar))


def _swapped_ids(sidecar: dict[str, object], first: int = 0, second: int = 1) -> None:
    ids = sidecar["ids"]
    assert isinstance(ids, list)
    ids[first], ids[second] = ids[second], ids[first]


def test_a_snapshot_that_fits_verifies(snapshotted: tuple[Backend, list[list[str]]]) -> None:
    backend, answers = snapshotted
    with backend.open() as mos:
        assert mos.verify(CUBE).ok
        assert _dense(backend, mos) == answers
    assert (_snapshot_dir(backend) / f"{CUBE}.json").exists()


@pytest.mark.parametrize("codec", ["fp16", "fp8", "int8", "ivf4+sq8", "ivf4+fp16"])
def test_a_snapshot_kept_through_deletes_and_updates_verifies(data_dir: Path, codec: str) -> None:
    """Codes removed from a table move others (an inverted file fills a list's gap with its
    last entry): a snapshot caught up that way still holds what a rebuild holds."""
    texts = [f"memory {i} about topic {i % 13}" for i in range(FIT_MIN + 40)]
    with MemOS.open(data_dir, embedder=HashEmbedder(64)) as mos:
        mos.create_cube(CUBE, codec=codec)
        added = mos.add_many(texts, cube=CUBE)
        assert mos.get_cube(CUBE).codec_state is not None or codec in ("fp16", "fp8")
        for item in added[:60:3]:
            mos.delete(item.id)
    assert (data_dir / "index" / f"{CUBE}.json").exists()
    with MemOS.open(data_dir, embedder=HashEmbedder(64)) as mos:
        for item in added[100:160:4]:
            mos.update(item.id, item.text + " and more")
        for item in added[200:260:5]:
            mos.delete(item.id)
        assert mos.verify(CUBE).ok  # the snapshot with the tail replayed
    with MemOS.open(data_dir, embedder=HashEmbedder(64)) as mos:
        assert mos.verify(CUBE).ok  # the snapshot saved with the tail in it


@pytest.mark.parametrize("part", ["sidecar ids", "sidecar seq", "table"])
def test_an_edited_snapshot_is_rebuilt_on_open(
    snapshotted: tuple[Backend, list[list[str]]], part: str
) -> None:
    backend, answers = snapshotted
    sidecar = _sidecar(backend)
    if part == "sidecar ids":
        _swapped_ids(sidecar)
        _write_sidecar(backend, sidecar, reseal=False)
    elif part == "sidecar seq":
        sidecar["seq"] = int(str(sidecar["seq"])) - 1
        _write_sidecar(backend, sidecar, reseal=False)
    else:
        codes = _snapshot_dir(backend) / f"{CUBE}.codes"
        data = codes.read_bytes()
        codes.write_bytes(data[:-4] + bytes(4))
    with backend.open() as mos:
        assert mos.verify(CUBE).ok
        assert _dense(backend, mos) == answers
    # closing saved the rebuilt index over the edited snapshot
    assert _sealed(backend)
    assert _dense(backend) == answers


def _sealed(backend: Backend) -> bool:
    """Whether the snapshot's checksums fit it."""
    sidecar = _sidecar(backend)
    table = (_snapshot_dir(backend) / f"{CUBE}.codes").read_bytes()
    digest = sidecar.pop("sidecar_sha256", None)
    body = json.dumps(sidecar, sort_keys=True).encode()
    fits = sidecar["table_sha256"] == hashlib.sha256(table).hexdigest()
    return fits and digest == hashlib.sha256(body).hexdigest()


@pytest.mark.parametrize("forgery", ["swapped ids", "deleted item", "codes"])
def test_a_resealed_snapshot_is_caught_by_verify(
    snapshotted: tuple[Backend, list[list[str]]], forgery: str
) -> None:
    """Checksums a forger wrote again fit: opening uses the snapshot, ``verify`` compares it
    with the store, reports it at the seq it covered, discards it, and search is right again."""
    backend, answers = snapshotted
    sidecar = _sidecar(backend)
    covered = int(str(sidecar["seq"]))
    ids = sidecar["ids"]
    assert isinstance(ids, list)
    if forgery == "swapped ids":
        # a's and the first memory's codes trade names
        _swapped_ids(sidecar, ids.index(backend.ids["a"]), ids.index(backend.ids["c"]) + 1)
    elif forgery == "deleted item":
        ids[ids.index(backend.ids["a"])] = backend.ids["b"]
    else:
        # the last memory's fp32 codes (the file's last 64 floats) made those of a query
        codes = _snapshot_dir(backend) / f"{CUBE}.codes"
        lure = np.asarray(HashEmbedder(64).embed([QUERIES[0]])[0], dtype="<f4").tobytes()
        codes.write_bytes(codes.read_bytes()[: -len(lure)] + lure)
    _write_sidecar(backend, sidecar, reseal=True)
    with backend.open() as mos:
        assert _dense(backend, mos) != answers  # the forgery took effect
        assert_bad(mos.verify(CUBE), covered, "snapshot")
        assert not (_snapshot_dir(backend) / f"{CUBE}.json").exists()
        assert _dense(backend, mos) == answers
        assert mos.verify(CUBE).ok
    with backend.open() as mos:
        assert _dense(backend, mos) == answers


# truncation and anchors -----------------------------------------------------------------------


@dataclass(frozen=True)
class Tail:
    """The history with two grants appended (seqs 8 and 9), what the cube looked like before
    them (head hash and configuration as stored) and anchors taken before and after them."""

    backend: Backend
    head_hash: str
    info: bytes
    before: CubeAnchor
    after: CubeAnchor


def _raw_info(backend: Backend) -> bytes:
    if backend.kind == "sqlite":
        with backend.db() as conn:
            row = conn.execute("SELECT info FROM cubes WHERE name = ?", (CUBE,)).fetchone()
        return str(row[0]).encode()
    with backend.redis() as client:
        info = client.get(backend.key("info"))
    assert isinstance(info, bytes)
    return info


@pytest.fixture
def tail(history: Backend) -> Tail:
    info = _raw_info(history)
    with history.open() as mos:
        before = mos.anchor(CUBE)
        mos.grant(CUBE, "bob")
        mos.grant(CUBE, "carol")
        after = mos.anchor(CUBE)
    assert (before.seq, after.seq) == (LAST_SEQ, LAST_SEQ + 2)
    return Tail(history, before.hash, info, before, after)


def truncate(tail: Tail, keep: int = LAST_SEQ) -> None:
    """Delete the events after ``keep`` and set the head and configuration back, as someone
    with write access to the store would: the chain that is left is whole."""
    backend = tail.backend
    if backend.kind == "sqlite":
        with backend.db() as conn:
            for table in ("events", "payloads"):
                conn.execute(f"DELETE FROM {table} WHERE cube = ? AND seq > ?", (CUBE, keep))
            conn.execute(
                "UPDATE cubes SET head_seq = ?, head_hash = ?, info = ? WHERE name = ?",
                (keep, tail.head_hash, tail.info.decode(), CUBE),
            )
        return
    with backend.redis() as client:
        for seq in range(keep + 1, tail.after.seq + 1):
            client.xdel(backend.key("log"), f"{seq}-0")
            client.hdel(backend.key("payloads"), str(seq))
        client.hset(backend.key("head"), mapping={"seq": keep, "hash": tail.head_hash})
        client.set(backend.key("info"), tail.info)


def test_an_anchor_of_an_untouched_log_verifies(tail: Tail) -> None:
    assert tail.backend.verify(tail.after).ok
    assert tail.backend.verify(tail.before).ok


def test_a_truncated_tail_is_caught_only_with_an_anchor(tail: Tail) -> None:
    truncate(tail)
    plain = tail.backend.verify()
    assert plain.ok, plain  # the chain that is left is whole: it cannot see what is gone
    assert tail.backend.verify(tail.before).ok  # an anchor from before the cut still holds
    assert_bad(tail.backend.verify(tail.after), LAST_SEQ + 1, "gone")


def test_a_rewritten_tail_is_caught_with_an_anchor(sqlite_history: Backend) -> None:
    backend = sqlite_history
    info = _raw_info(backend)
    with backend.open() as mos:
        head = mos.anchor(CUBE)
        mos.grant(CUBE, "bob")
        anchor = mos.anchor(CUBE)
    truncate(Tail(backend, head.hash, info, head, anchor))
    with backend.open() as mos:
        mos.grant(CUBE, "mallory")  # a new seq 8 in place of the anchored one
        assert mos.verify(CUBE).ok
        assert_bad(mos.verify(CUBE, anchor=anchor), LAST_SEQ + 1, "rewritten")


def test_an_erased_memory_is_caught_with_an_anchor(sqlite_history: Backend) -> None:
    """The newest memory and every trace of it removed: row, vector, tags, keyword row, event."""
    backend = sqlite_history
    info = _raw_info(backend)
    with backend.open() as mos:
        head = mos.anchor(CUBE)
        added = mos.add("Alice buried the treasure under the oak", cube=CUBE, tags=["secret"])
        assert not isinstance(added, list)
        anchor = mos.anchor(CUBE)
    with backend.db() as conn:
        table = _fts5.table_name(CUBE)
        conn.execute(f"DELETE FROM {table} WHERE rowid = ?", (_rowid(conn, added.id),))
        for sql in (
            "DELETE FROM items WHERE id = ?",
            "DELETE FROM vectors WHERE item_id = ?",
            "DELETE FROM item_tags WHERE item_id = ?",
        ):
            conn.execute(sql, (added.id,))
    truncate(Tail(backend, head.hash, info, head, anchor))
    assert keyword_ids(backend, "treasure oak") == []
    assert backend.verify().ok
    assert_bad(backend.verify(anchor), LAST_SEQ + 1, "gone")


def test_an_anchor_of_another_cube_is_refused(history: Backend) -> None:
    with history.open() as mos:
        anchor = mos.anchor(OTHER)
        with pytest.raises(InvalidInput):
            mos.verify(CUBE, anchor=anchor)


def test_an_anchor_past_the_head_is_caught(history: Backend) -> None:
    with history.open() as mos:
        anchor = mos.anchor(CUBE)
    later = anchor.model_copy(update={"seq": anchor.seq + 3})
    assert_bad(history.verify(later), LAST_SEQ + 1, "gone")
    forged = anchor.model_copy(update={"hash": "0" * 64})
    assert_bad(history.verify(forged), LAST_SEQ, "rewritten")


# the command line -----------------------------------------------------------------------------


def memos(data_dir: Path, *args: str, key_env: Path | None = None) -> Result:
    env = None if key_env is None else {"MEMOS_ANCHOR_KEY_FILE": str(key_env)}
    return run_memos(*args, data_dir=data_dir, env=env)


@pytest.fixture
def cli_tail(sqlite_history: Backend, tmp_path: Path) -> tuple[Tail, Path]:
    """The SQLite tail, and where its anchor file goes (outside the data dir)."""
    info = _raw_info(sqlite_history)
    with sqlite_history.open() as mos:
        before = mos.anchor(CUBE)
        mos.grant(CUBE, "bob")
        mos.grant(CUBE, "carol")
        after = mos.anchor(CUBE)
    return Tail(sqlite_history, before.hash, info, before, after), tmp_path / "anchor.json"


def test_cli_anchor_catches_a_truncated_tail(cli_tail: tuple[Tail, Path]) -> None:
    tail, anchor = cli_tail
    data_dir = Path(tail.backend.location)
    written = memos(data_dir, "log", "--anchor", str(anchor), "--limit", "1")
    assert written.code == ExitCode.OK, written.err
    heads = {h["cube"]: h for h in json.loads(anchor.read_text())["heads"]}
    assert (heads[CUBE]["seq"], heads[CUBE]["hash"]) == (tail.after.seq, tail.after.hash)
    assert set(heads) == {CUBE, OTHER}
    assert memos(data_dir, "verify", "--anchor", str(anchor)).code == ExitCode.OK

    truncate(tail)
    assert memos(data_dir, "verify").code == ExitCode.OK
    failed = memos(data_dir, "verify", "--anchor", str(anchor))
    assert failed.code == ExitCode.INTEGRITY
    assert f"first bad seq {LAST_SEQ + 1}" in failed.err
    as_json = memos(data_dir, "verify", "--cube", CUBE, "--anchor", str(anchor), "--json")
    assert as_json.code == ExitCode.INTEGRITY
    [report] = json.loads(as_json.out)["cubes"]
    assert (report["ok"], report["first_bad_seq"]) == (False, LAST_SEQ + 1)

    # the anchor is not moved forward onto the cut log
    kept = anchor.read_text()
    again = memos(data_dir, "log", "--anchor", str(anchor))
    assert again.code == ExitCode.INTEGRITY
    assert anchor.read_text() == kept


def test_cli_a_signed_anchor(cli_tail: tuple[Tail, Path], tmp_path: Path) -> None:
    tail, anchor = cli_tail
    data_dir = Path(tail.backend.location)
    key = tmp_path / "anchor.key"
    key.write_bytes(os.urandom(32))
    args = ("--anchor", str(anchor), "--anchor-key", str(key))
    assert memos(data_dir, "log", "--cube", CUBE, *args).code == ExitCode.OK
    assert json.loads(anchor.read_text())["hmac_sha256"]
    assert memos(data_dir, "verify", *args).code == ExitCode.OK
    assert memos(data_dir, "verify", "--anchor", str(anchor), key_env=key).code == ExitCode.OK
    # a signed anchor is not checked without its key
    unkeyed = memos(data_dir, "verify", "--anchor", str(anchor))
    assert unkeyed.code == ExitCode.INVALID_INPUT

    # moved back to fit a cut log, the anchor no longer matches its signature
    truncate(tail)
    body = json.loads(anchor.read_text())
    body["heads"][0].update(seq=tail.before.seq, hash=tail.before.hash)
    anchor.write_text(json.dumps(body))
    assert memos(data_dir, "verify", *args).code == ExitCode.INTEGRITY
    # and with the signature stripped, a key still demands one
    body["hmac_sha256"] = None
    anchor.write_text(json.dumps(body))
    assert memos(data_dir, "verify", *args).code == ExitCode.INTEGRITY
    assert memos(data_dir, "verify", "--anchor", str(anchor)).code == ExitCode.OK


def test_cli_anchor_usage_errors(cli_tail: tuple[Tail, Path], tmp_path: Path) -> None:
    tail, anchor = cli_tail
    data_dir = Path(tail.backend.location)
    inside = data_dir / "anchor.json"
    assert memos(data_dir, "log", "--anchor", str(inside)).code == ExitCode.INVALID_INPUT
    assert not inside.exists()
    key = data_dir / "anchor.key"
    key.write_bytes(os.urandom(32))
    with_key = memos(data_dir, "log", "--anchor", str(anchor), "--anchor-key", str(key))
    assert with_key.code == ExitCode.INVALID_INPUT
    missing = memos(data_dir, "verify", "--anchor", str(tmp_path / "none.json"))
    assert missing.code == ExitCode.INVALID_INPUT
    assert memos(data_dir, "log", "--cube", OTHER, "--anchor", str(anchor)).code == ExitCode.OK
    lacking = memos(data_dir, "verify", "--cube", CUBE, "--anchor", str(anchor))
    assert lacking.code == ExitCode.INVALID_INPUT
    not_anchor = tmp_path / "not-an-anchor.json"
    not_anchor.write_text('{"hello": 1}')
    assert memos(data_dir, "verify", "--anchor", str(not_anchor)).code == ExitCode.INVALID_INPUT


# over HTTP ------------------------------------------------------------------------------------


def test_anchors_over_http(data_dir: Path) -> None:
    from _servers import serve
    from memos.api import ServerSettings

    mos = MemOS.open(data_dir, embedder=HashEmbedder(64))
    _, token = mos.keys.create("alice")
    with (
        serve(mos, ServerSettings(store=f"sqlite:///{data_dir}")) as url,
        MemOS.connect(url, api_key=token) as alice,
    ):
        name = alice.create_cube(CUBE).name
        alice.add("Alice moved to Lisbon", cube=CUBE)
        anchor = alice.anchor(CUBE)
        assert (anchor.cube, anchor.seq, anchor.hash) == (name, 2, alice.log(CUBE)[-1].hash)
        assert alice.verify(CUBE, anchor=anchor).ok
        report = alice.verify(CUBE, anchor=anchor.model_copy(update={"seq": 5}))
        assert (report.ok, report.first_bad_seq) == (False, 3)
        with pytest.raises(InvalidInput):
            alice.verify(CUBE, anchor=anchor.model_copy(update={"cube": OTHER}))
        half = httpx.get(
            f"{url}/v1/cubes/{CUBE}/verify",
            params={"anchor": json.dumps({"seq": 2})},  # a partial anchor
            headers={"Authorization": f"Bearer {token}"},
        )
        assert half.status_code == InvalidInput.status
