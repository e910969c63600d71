"""``verify`` catches tampering done to the database file behind MemOS's back.

Each test builds a small history, closes MemOS, edits ``memos.db`` with the stdlib ``sqlite3``
module on its own connection, reopens the data dir and checks that ``verify`` names the first
bad seq of the tampered cube while the other cube in the same file still verifies.

The ``notes`` log built by ``history`` is::

    1 cube_create   2 create a   3 create b   4 create c   5 update a   6 delete b   7 update c
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from memos.stores.sqlite import DB_FILE

from memos import EventOp, HashEmbedder, MemOS, VerifyReport
from memos.core._chain import seal

CUBE, OTHER = "notes", "other"
LAST_SEQ = 7


@dataclass(frozen=True)
class History:
    data_dir: Path
    ids: dict[str, str]  # a, b, c -> item id
    other_events: int


@pytest.fixture
def history(data_dir: Path) -> History:
    with MemOS.open(data_dir, embedder=HashEmbedder(64)) as mos:
        mos.create_cube(CUBE, owner="alice")
        mos.create_cube(OTHER, owner="bob")
        a = mos.add("Alice moved to Lisbon", cube=CUBE, user="alice", tags=["travel"])
        mos.add("bob likes tea", cube=OTHER, user="bob")
        b = mos.add("Alice has a cat", cube=CUBE, user="alice")
        c = mos.add("Alice works at Acme", cube=CUBE, user="alice", metadata={"source": "hr"})
        assert not isinstance(a, list)
        assert not isinstance(b, list)
        assert not isinstance(c, list)
        mos.update(a.id, "Alice moved to Porto", user="alice", expected_version=1)
        mos.delete(b.id, user="alice", reason="user asked")
        mos.update(c.id, "Alice works at Initech", user="alice")
        other_item = mos.add("bob likes coffee now", cube=OTHER, user="bob")
        assert not isinstance(other_item, list)
        mos.update(other_item.id, "bob likes coffee", user="bob")
        assert [e.op for e in mos.log(CUBE)] == [
            EventOp.CUBE_CREATE,
            EventOp.CREATE,
            EventOp.CREATE,
            EventOp.CREATE,
            EventOp.UPDATE,
            EventOp.DELETE,
            EventOp.UPDATE,
        ]
        other_events = len(mos.log(OTHER))
    return History(data_dir, {"a": a.id, "b": b.id, "c": c.id}, other_events)


@contextmanager
def raw_db(history: History) -> Iterator[sqlite3.Connection]:
    """A plain sqlite3 connection to the closed data dir's database; commits on exit."""
    with closing(sqlite3.connect(history.data_dir / DB_FILE)) as conn:
        conn.execute("BEGIN")
        yield conn
        conn.commit()


def reverify(history: History) -> VerifyReport:
    """Reopen the data dir and verify both cubes; the untouched one must still verify."""
    with MemOS.open(history.data_dir, embedder=HashEmbedder(64)) as mos:
        other = mos.verify(OTHER)
        assert other.ok, other
        assert other.events == history.other_events
        return mos.verify(CUBE)


def assert_bad(report: VerifyReport, seq: int) -> None:
    assert not report.ok, report
    assert report.cube == CUBE
    assert report.first_bad_seq == seq, report
    assert report.problem


def one(conn: sqlite3.Connection, sql: str, *params: object) -> tuple[object, ...]:
    row = conn.execute(sql, params).fetchone()
    assert row is not None
    return tuple(row)


def test_untampered_log_verifies(history: History) -> None:
    with MemOS.open(history.data_dir, embedder=HashEmbedder(64)) as mos:
        report = mos.verify(CUBE)
        assert report.ok, report
        assert report.events == LAST_SEQ
        assert report.head_seq == LAST_SEQ
        assert report.first_bad_seq is None
        assert report.problem is None
        assert all(r.ok for r in mos.verify_all())


def test_reopening_without_changes_verifies(history: History) -> None:
    # a connection that rewrites nothing must not disturb anything
    with raw_db(history) as conn:
        conn.execute("UPDATE events SET actor = actor")
    assert reverify(history).ok


# payloads -------------------------------------------------------------------------------------


@pytest.mark.parametrize("seq", [2, 5, LAST_SEQ])
def test_edited_payload_text(history: History, seq: int) -> None:
    with raw_db(history) as conn:
        conn.execute(
            "UPDATE payloads SET body = json_set(body, '$.after.text', 'forged') "
            "WHERE cube = ? AND seq = ?",
            (CUBE, seq),
        )
    assert_bad(reverify(history), seq)


def test_edited_cube_create_payload(history: History) -> None:
    with raw_db(history) as conn:
        conn.execute(
            "UPDATE payloads SET body = json_set(body, '$.cube.owner', 'mallory') "
            "WHERE cube = ? AND seq = 1",
            (CUBE,),
        )
    assert_bad(reverify(history), 1)


def test_reformatted_payload_is_not_tampering(history: History) -> None:
    # the digest covers the payload's canonical form, not the bytes it is stored as
    with raw_db(history) as conn:
        (body,) = one(conn, "SELECT body FROM payloads WHERE cube = ? AND seq = 5", CUBE)
        assert isinstance(body, str)
        reformatted = json.dumps(json.loads(body), indent=2, sort_keys=False)
        assert reformatted != body
        conn.execute("UPDATE payloads SET body = ? WHERE cube = ? AND seq = 5", (reformatted, CUBE))
    assert reverify(history).ok


def test_edited_payload_with_its_digest_and_hash_resealed(history: History) -> None:
    """A forger who re-seals the edited event still breaks the link to the next one."""
    with MemOS.open(history.data_dir, embedder=HashEmbedder(64)) as mos:
        original = mos.log(CUBE)[4 - 1]
    assert original.payload is not None
    payload = json.loads(json.dumps(original.payload))
    payload["after"]["text"] = "Alice never had a cat"
    forged = seal(
        cube=CUBE,
        seq=4,
        prev_hash=original.prev_hash,
        ts=original.ts,
        actor=original.actor,
        op=original.op,
        item_id=original.item_id,
        reason=original.reason,
        payload=payload,
    )
    with raw_db(history) as conn:
        conn.execute(
            "UPDATE events SET payload_digest = ?, hash = ? WHERE cube = ? AND seq = 4",
            (forged.payload_digest, forged.hash, CUBE),
        )
        conn.execute(
            "UPDATE payloads SET body = ? WHERE cube = ? AND seq = 4",
            (json.dumps(payload), CUBE),
        )
    assert_bad(reverify(history), 5)


# event headers --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("actor", "mallory"),
        ("op", "rollback"),
        ("ts", "2020-01-01T00:00:00.000000+00:00"),
        ("reason", "it was always like this"),
        ("item_id", "0" * 32),
        ("payload_digest", "f" * 64),
        ("prev_hash", "e" * 64),
        ("hash", "d" * 64),
    ],
)
@pytest.mark.parametrize("seq", [3, 6])
def test_edited_event_header(history: History, column: str, value: str, seq: int) -> None:
    with raw_db(history) as conn:
        (old,) = one(conn, f"SELECT {column} FROM events WHERE cube = ? AND seq = ?", CUBE, seq)
        assert old != value
        conn.execute(
            f"UPDATE events SET {column} = ? WHERE cube = ? AND seq = ?", (value, CUBE, seq)
        )
    assert_bad(reverify(history), seq)


def test_ts_shifted_by_one_microsecond(history: History) -> None:
    with raw_db(history) as conn:
        (ts,) = one(conn, "SELECT ts FROM events WHERE cube = ? AND seq = 5", CUBE)
        assert isinstance(ts, str)
        shifted = datetime.fromisoformat(ts).replace(
            microsecond=(datetime.fromisoformat(ts).microsecond + 1) % 1_000_000
        )
        conn.execute(
            "UPDATE events SET ts = ? WHERE cube = ? AND seq = 5",
            (shifted.astimezone(UTC).isoformat(timespec="microseconds"), CUBE),
        )
    assert_bad(reverify(history), 5)


# dropped, inserted and reordered events -------------------------------------------------------


@pytest.mark.parametrize("seq", [1, 3, 5])
@pytest.mark.parametrize("with_payload", [True, False])
def test_deleted_event_in_the_middle(history: History, seq: int, with_payload: bool) -> None:
    with raw_db(history) as conn:
        conn.execute("DELETE FROM events WHERE cube = ? AND seq = ?", (CUBE, seq))
        if with_payload:
            conn.execute("DELETE FROM payloads WHERE cube = ? AND seq = ?", (CUBE, seq))
    assert_bad(reverify(history), seq)


def test_deleted_event_with_later_seqs_renumbered(history: History) -> None:
    with raw_db(history) as conn:
        for table in ("events", "payloads"):
            conn.execute(f"DELETE FROM {table} WHERE cube = ? AND seq = 3", (CUBE,))
            conn.execute(f"UPDATE {table} SET seq = -seq WHERE cube = ? AND seq > 3", (CUBE,))
            conn.execute(f"UPDATE {table} SET seq = -seq - 1 WHERE cube = ? AND seq < 0", (CUBE,))
        conn.execute("UPDATE cubes SET head_seq = head_seq - 1 WHERE name = ?", (CUBE,))
    assert_bad(reverify(history), 3)


@pytest.mark.parametrize("dropped", [1, 2, 3])
def test_truncated_log_is_caught_by_the_head(history: History, dropped: int) -> None:
    first_dropped = LAST_SEQ - dropped + 1
    with raw_db(history) as conn:
        for table in ("events", "payloads"):
            conn.execute(f"DELETE FROM {table} WHERE cube = ? AND seq >= ?", (CUBE, first_dropped))
    assert_bad(reverify(history), first_dropped)


def test_missing_payload(history: History) -> None:
    with raw_db(history) as conn:
        conn.execute("DELETE FROM payloads WHERE cube = ? AND seq = 4", (CUBE,))
    assert_bad(reverify(history), 4)


def test_null_payload(history: History) -> None:
    with raw_db(history) as conn:
        conn.execute("UPDATE payloads SET body = NULL WHERE cube = ? AND seq = 4", (CUBE,))
    assert_bad(reverify(history), 4)


def _insert_event(conn: sqlite3.Connection, row: tuple[object, ...], body: str | None) -> None:
    conn.execute("INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", row)
    conn.execute("INSERT INTO payloads VALUES (?, ?, ?)", (row[0], row[1], body))


def test_forged_event_appended_after_the_head(history: History) -> None:
    """A correctly chained event past the head: the chain holds, the head does not."""
    with raw_db(history) as conn:
        (head_hash,) = one(conn, "SELECT head_hash FROM cubes WHERE name = ?", CUBE)
        assert isinstance(head_hash, str)
        payload: dict[str, object] = {"after": None}
        forged = seal(
            cube=CUBE,
            seq=LAST_SEQ + 1,
            prev_hash=head_hash,
            ts=datetime(2030, 1, 1, tzinfo=UTC),
            actor="mallory",
            op=EventOp.UPDATE,
            item_id=history.ids["a"],
            reason=None,
            payload=payload,
        )
        _insert_event(
            conn,
            (CUBE, forged.seq, "2030-01-01T00:00:00.000000+00:00", forged.actor, "update",
             forged.item_id, None, forged.payload_digest, forged.prev_hash, forged.hash),
            json.dumps(payload),
        )  # fmt: skip
    assert_bad(reverify(history), LAST_SEQ + 1)


def test_forged_event_inserted_in_the_middle(history: History) -> None:
    """Later events are shifted up to make room; the forged event itself does not chain."""
    with raw_db(history) as conn:
        for table in ("events", "payloads"):
            conn.execute(f"UPDATE {table} SET seq = -seq - 1 WHERE cube = ? AND seq >= 4", (CUBE,))
            conn.execute(f"UPDATE {table} SET seq = -seq WHERE cube = ? AND seq < 0", (CUBE,))
        row = one(conn, "SELECT * FROM events WHERE cube = ? AND seq = 3", CUBE)
        (body,) = one(conn, "SELECT body FROM payloads WHERE cube = ? AND seq = 3", CUBE)
        assert isinstance(body, str)
        _insert_event(conn, (CUBE, 4, *row[2:]), body.replace("cat", "dog"))
        conn.execute("UPDATE cubes SET head_seq = head_seq + 1 WHERE name = ?", (CUBE,))
    assert_bad(reverify(history), 4)


def test_resealed_event_inserted_in_the_middle(history: History) -> None:
    """A forged event that chains onto seq 3 passes itself; the event it displaced does not."""
    with MemOS.open(history.data_dir, embedder=HashEmbedder(64)) as mos:
        third = mos.log(CUBE)[3 - 1]
    payload: dict[str, object] = {"after": None}
    forged = seal(
        cube=CUBE,
        seq=4,
        prev_hash=third.hash,
        ts=third.ts,
        actor="mallory",
        op=EventOp.UPDATE,
        item_id=None,
        reason=None,
        payload=payload,
    )
    with raw_db(history) as conn:
        for table in ("events", "payloads"):
            conn.execute(f"UPDATE {table} SET seq = -seq - 1 WHERE cube = ? AND seq >= 4", (CUBE,))
            conn.execute(f"UPDATE {table} SET seq = -seq WHERE cube = ? AND seq < 0", (CUBE,))
        _insert_event(
            conn,
            (CUBE, 4, third.ts.astimezone(UTC).isoformat(timespec="microseconds"), "mallory",
             "update", None, None, forged.payload_digest, forged.prev_hash, forged.hash),
            json.dumps(payload),
        )  # fmt: skip
        conn.execute("UPDATE cubes SET head_seq = head_seq + 1 WHERE name = ?", (CUBE,))
    assert_bad(reverify(history), 5)


@pytest.mark.parametrize(("x", "y"), [(3, 4), (2, 6), (6, 7)])
@pytest.mark.parametrize("with_payloads", [True, False])
def test_swapped_events(history: History, x: int, y: int, with_payloads: bool) -> None:
    tables = ("events", "payloads") if with_payloads else ("events",)
    with raw_db(history) as conn:
        for table in tables:
            for old, new in ((x, -1), (y, x), (-1, y)):
                conn.execute(
                    f"UPDATE {table} SET seq = ? WHERE cube = ? AND seq = ?", (new, CUBE, old)
                )
    assert_bad(reverify(history), x)


def test_event_moved_to_another_cube(history: History) -> None:
    with raw_db(history) as conn:
        for table in ("events", "payloads"):
            conn.execute(f"UPDATE {table} SET cube = 'ghost' WHERE cube = ? AND seq = 5", (CUBE,))
    assert_bad(reverify(history), 5)


def test_edited_cube_head(history: History) -> None:
    with raw_db(history) as conn:
        conn.execute("UPDATE cubes SET head_hash = ? WHERE name = ?", ("a" * 64, CUBE))
    assert_bad(reverify(history), LAST_SEQ)


# malformed rows -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("table", "column", "value"),
    [
        ("events", "op", "explode"),
        ("events", "ts", "yesterday"),
        ("events", "seq", "four"),
        ("payloads", "body", "{not json"),
        ("payloads", "body", "[1, 2]"),
    ],
)
def test_malformed_row(history: History, table: str, column: str, value: str) -> None:
    with raw_db(history) as conn:
        conn.execute(f"UPDATE {table} SET {column} = ? WHERE cube = ? AND seq = 4", (value, CUBE))
    report = reverify(history)
    assert not report.ok, report
    assert report.first_bad_seq == 4, report


# the item projection --------------------------------------------------------------------------


def _last_write(history: History, name: str) -> int:
    return {"a": 5, "b": 6, "c": 7}[name]


@pytest.mark.parametrize("name", ["a", "b", "c"])
def test_edited_item_text(history: History, name: str) -> None:
    with raw_db(history) as conn:
        conn.execute(
            "UPDATE items SET body = json_set(body, '$.text', 'forged') WHERE id = ?",
            (history.ids[name],),
        )
    assert_bad(reverify(history), _last_write(history, name))


@pytest.mark.parametrize(
    ("path", "value", "name"),
    [
        ("$.status", "active", "b"),
        ("$.version", 9, "a"),
        ("$.user", "mallory", "c"),
        ("$.tags", "[]", "a"),
        ("$.metadata.source", "forged", "c"),
        ("$.created_at", "2001-01-01T00:00:00Z", "a"),
    ],
)
def test_edited_item_body_fields(history: History, path: str, value: object, name: str) -> None:
    with raw_db(history) as conn:
        expr = "json(?)" if path == "$.tags" else "?"
        conn.execute(
            f"UPDATE items SET body = json_set(body, '{path}', {expr}) WHERE id = ?",
            (value, history.ids[name]),
        )
    assert_bad(reverify(history), _last_write(history, name))


@pytest.mark.parametrize("body", ["{not json", "[]", '{"id": "x"}'])
def test_malformed_item_row(history: History, body: str) -> None:
    with raw_db(history) as conn:
        conn.execute("UPDATE items SET body = ? WHERE id = ?", (body, history.ids["a"]))
    assert_bad(reverify(history), _last_write(history, "a"))


@pytest.mark.parametrize(
    ("column", "value", "name"),
    [
        ("status", "active", "b"),
        ("status", "deleted", "a"),
        ("version", 9, "a"),
        ("user", "mallory", "a"),
        ("session", "s-forged", "a"),
        ("occurred_at", "1999-01-01T00:00:00.000000+00:00", "a"),
    ],
)
def test_edited_item_columns(history: History, column: str, value: object, name: str) -> None:
    """The columns searches filter on are part of the projection too."""
    with raw_db(history) as conn:
        conn.execute(f"UPDATE items SET {column} = ? WHERE id = ?", (value, history.ids[name]))
    report = reverify(history)
    assert_bad(report, _last_write(history, name))


def test_item_moved_to_another_cube(history: History) -> None:
    with raw_db(history) as conn:
        conn.execute("UPDATE items SET cube = ? WHERE id = ?", (OTHER, history.ids["a"]))
    with MemOS.open(history.data_dir, embedder=HashEmbedder(64)) as mos:
        assert_bad(mos.verify(CUBE), _last_write(history, "a"))
        other = mos.verify(OTHER)
    assert not other.ok
    assert other.first_bad_seq == other.head_seq == history.other_events


@pytest.mark.parametrize("change", ["add", "drop"])
def test_edited_item_tags(history: History, change: str) -> None:
    with raw_db(history) as conn:
        if change == "add":
            conn.execute("INSERT INTO item_tags VALUES (?, 'forged')", (history.ids["a"],))
        else:
            conn.execute("DELETE FROM item_tags WHERE item_id = ?", (history.ids["a"],))
    assert_bad(reverify(history), _last_write(history, "a"))


def test_deleted_item_row(history: History) -> None:
    with raw_db(history) as conn:
        conn.execute("DELETE FROM items WHERE id = ?", (history.ids["c"],))
    assert_bad(reverify(history), _last_write(history, "c"))


def test_item_row_without_an_event(history: History) -> None:
    with raw_db(history) as conn:
        row = one(conn, "SELECT * FROM items WHERE id = ?", history.ids["a"])
        body = json.loads(str(row[-1]))
        body["id"] = "f" * 32
        conn.execute(
            "INSERT INTO items VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            ("f" * 32, *row[1:-1], json.dumps(body)),
        )
    assert_bad(reverify(history), LAST_SEQ)


# vectors --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "last_vector_write"), [("a", 5), ("b", 3), ("c", 7)])
def test_edited_vector(history: History, name: str, last_vector_write: int) -> None:
    with raw_db(history) as conn:
        (blob,) = one(conn, "SELECT data FROM vectors WHERE item_id = ?", history.ids[name])
        assert isinstance(blob, bytes)
        forged = bytes([blob[0] ^ 1]) + blob[1:]
        conn.execute("UPDATE vectors SET data = ? WHERE item_id = ?", (forged, history.ids[name]))
    assert_bad(reverify(history), last_vector_write)


def test_deleted_vector(history: History) -> None:
    with raw_db(history) as conn:
        conn.execute("DELETE FROM vectors WHERE item_id = ?", (history.ids["c"],))
    assert_bad(reverify(history), 7)
