"""KV caches under audit: ``verify`` checks the standing entries and their blobs against the
log, and exports carry the caches so that an imported cube chats from them unchanged.

The ``notes`` log built here is::

    1 cube_create   2 create a   3 create b   4 kv_build [a, b]   5 kv_build [b]
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest
from memos.stores.sqlite import BLOB_DIR, DB_FILE

from memos import EventOp, HashEmbedder, MemOS
from memos.activation import KVEntry
from memos.errors import TamperedExport
from memos.llm import LocalModel

CUBE = "notes"


@pytest.fixture
def built(chat_mos: MemOS) -> tuple[KVEntry, KVEntry]:
    chat_mos.create_cube(CUBE)
    a = chat_mos.add("alice moved to lisbon in may", cube=CUBE)
    b = chat_mos.add("the capital of france is paris", cube=CUBE)
    return chat_mos.kv.build(CUBE, [a.id, b.id]), chat_mos.kv.build(CUBE, [b.id])


def reopened(data_dir: Path, model: LocalModel) -> MemOS:
    return MemOS.open(data_dir, embedder=HashEmbedder(64), model=model)


def edit_db(data_dir: Path, sql: str, *params: object) -> None:
    with closing(sqlite3.connect(data_dir / DB_FILE)) as conn, conn:
        conn.execute(sql, params)


def test_standing_entries_verify(chat_mos: MemOS, built: tuple[KVEntry, KVEntry]) -> None:
    report = chat_mos.verify(CUBE)
    assert report.ok
    assert report.head_seq == 5


@pytest.mark.parametrize(
    ("sql", "bad_seq"),
    [
        ("DELETE FROM derived WHERE id = ?", 4),
        ("UPDATE derived SET body = replace(body, '\"size\":', '\"size\":1') WHERE id = ?", 4),
        ("UPDATE derived SET id = id || 'x', body = replace(body, ?, ? || 'x')", 5),
    ],
    ids=["deleted row", "edited row", "renamed rows"],
)
def test_an_edited_entry_row_is_reported_at_its_build(
    chat_mos: MemOS,
    built: tuple[KVEntry, KVEntry],
    data_dir: Path,
    tiny_model: LocalModel,
    sql: str,
    bad_seq: int,
) -> None:
    first = built[0]
    chat_mos.close()
    params = (first.id, first.id) if sql.count("?") == 2 else (first.id,)
    edit_db(data_dir, sql, *params)
    with reopened(data_dir, tiny_model) as mos:
        report = mos.verify(CUBE)
    assert not report.ok
    assert report.first_bad_seq in {bad_seq, 4}
    assert report.problem is not None
    assert "derived" in report.problem


def test_an_entry_row_added_behind_the_logs_back_is_reported(
    chat_mos: MemOS, built: tuple[KVEntry, KVEntry], data_dir: Path, tiny_model: LocalModel
) -> None:
    chat_mos.close()
    with closing(sqlite3.connect(data_dir / DB_FILE)) as conn, conn:
        (body,) = conn.execute("SELECT body FROM derived ORDER BY rowid LIMIT 1").fetchone()
        forged = json.loads(body) | {"id": "kv-forged"}
        conn.execute(
            "INSERT INTO derived VALUES (?, ?, ?, ?)", ("kv-forged", CUBE, "kv", json.dumps(forged))
        )
    with reopened(data_dir, tiny_model) as mos:
        report = mos.verify(CUBE)
    assert not report.ok
    assert report.problem is not None
    assert "kv-forged" in report.problem


@pytest.mark.parametrize("damage", ["missing", "changed"])
def test_a_missing_or_changed_blob_is_reported(
    chat_mos: MemOS, built: tuple[KVEntry, KVEntry], data_dir: Path, damage: str
) -> None:
    path = data_dir / BLOB_DIR / f"{built[1].blob}.safetensors"
    if damage == "missing":
        path.unlink()
    else:
        data = bytearray(path.read_bytes())
        data[-1] ^= 0xFF
        path.write_bytes(bytes(data))
    report = chat_mos.verify(CUBE)
    assert not report.ok
    assert report.first_bad_seq == 5
    assert report.problem is not None
    assert built[1].blob in report.problem


def test_a_dropped_entry_leaves_a_verifying_log(
    chat_mos: MemOS, built: tuple[KVEntry, KVEntry]
) -> None:
    event = chat_mos.kv.drop(CUBE, built[0].id, reason="not needed")
    assert event.op == EventOp.KV_DROP
    assert event.seq == 6
    assert event.reason == "not needed"
    assert [e.id for e in chat_mos.kv.list(CUBE)] == [built[1].id]
    assert chat_mos.verify(CUBE).ok


def test_export_and_import_carry_the_caches(
    chat_mos: MemOS, built: tuple[KVEntry, KVEntry], tmp_path: Path, tiny_model: LocalModel
) -> None:
    chat_mos.kv.drop(CUBE, built[0].id)
    exported = chat_mos.export_cube(CUBE, tmp_path / "export")
    assert [p.name for p in (exported / "derived").iterdir()] == [f"{built[1].blob}.safetensors"]
    expected = chat_mos.chat("paris", cube=CUBE, k=1)
    with reopened(tmp_path / "elsewhere", tiny_model) as mos:
        mos.import_cube(exported)
        assert mos.kv.list(CUBE) == [built[1]]
        assert mos.verify(CUBE).ok
        assert mos.log(CUBE) == chat_mos.log(CUBE)
        reply = mos.chat("paris", cube=CUBE, k=1)
    assert reply.kv_entry == built[1].id
    assert reply.cached_tokens == built[1].tokens
    assert reply.tokens == expected.tokens


@pytest.mark.parametrize("damage", ["missing", "changed"])
def test_an_export_with_a_damaged_cache_is_refused(
    chat_mos: MemOS,
    built: tuple[KVEntry, KVEntry],
    tmp_path: Path,
    tiny_model: LocalModel,
    damage: str,
) -> None:
    exported = chat_mos.export_cube(CUBE, tmp_path / "export")
    path = exported / "derived" / f"{built[0].blob}.safetensors"
    if damage == "missing":
        path.unlink()
    else:
        path.write_bytes(path.read_bytes()[:-1] + b"\0")
        assert hashlib.sha256(path.read_bytes()).hexdigest() != built[0].blob
    with reopened(tmp_path / "elsewhere", tiny_model) as mos:
        with pytest.raises(TamperedExport):
            mos.import_cube(exported)
        assert mos.list_cubes() == []


def test_a_damaged_entry_record_makes_chat_recompute_and_verify_fail(
    chat_mos: MemOS, built: tuple[KVEntry, KVEntry], data_dir: Path, tiny_model: LocalModel
) -> None:
    chat_mos.close()
    edit_db(data_dir, "UPDATE derived SET body = replace(body, '\"layers\":', '\"layers\":-')")
    with reopened(data_dir, tiny_model) as mos:
        reply = mos.chat("paris", cube=CUBE, k=1)
        assert not mos.verify(CUBE).ok
    assert reply.kv_entry is None
    assert reply.cached_tokens == 0
    # every record is damaged, so the prompt holds the retrieved memory, not a block's
    assert [m.text for m in reply.memories] == ["the capital of france is paris"]
