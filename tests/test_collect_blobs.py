"""Garbage collection of blobs: what nothing can read goes, what something may read stays."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from test_cli_kv import EMBEDDER, Cli, cli, model_dir

from memos import MemOS
from memos.errors import AccessDenied, InvalidInput

__all__ = ["cli", "model_dir"]  # the fixtures shared with test_cli_kv

FAST = {"max_steps": 4, "learning_rate": 0.01, "batch_size": 2, "recall_every": 4}


def test_dropped_caches_and_orphans_go_what_may_be_read_stays(chat_mos: MemOS) -> None:
    mos = chat_mos
    mos.create_cube("notes")
    items = mos.add_many(["alice moved to lisbon", "bob likes tea", "carol runs"], cube="notes")
    ids = [i.id for i in items]
    dropped = mos.kv.build("notes", ids[:2])
    standing = mos.kv.build("notes", ids[1:])
    mos.kv.drop("notes", dropped.id)
    first = mos.lora.consolidate("notes", ids[:2], name="x", recipe=FAST, density=None)
    second = mos.lora.consolidate("notes", ids, name="x", recipe=FAST, density=None)
    mos.lora.rollback("notes", "x", to_version=first.version)  # v3: v1's weights again
    orphan = mos.store.put_blob(b"left by a refused commit")
    assert mos.collect_blobs(grace_s=3600).deleted == ()  # all young: nothing goes
    done = mos.collect_blobs(grace_s=0)
    assert set(done.deleted) == {dropped.blob, orphan}
    left = set(mos.store.blob_ages())
    assert {standing.blob, first.blob, second.blob} <= left
    assert mos.verify("notes").ok
    (older,) = [v for v in mos.lora.list("notes") if v.version == second.version]
    mos.lora.rollback("notes", "x", to_version=older.version)  # its weights are still there
    assert mos.collect_blobs(grace_s=0).deleted == ()


def test_only_the_operator_collects(mos: MemOS) -> None:
    with pytest.raises(AccessDenied):
        mos.as_principal("alice").collect_blobs()
    for bad in (-1, "3", True):
        with pytest.raises(InvalidInput):
            mos.collect_blobs(grace_s=bad)  # type: ignore[arg-type]


def test_gc_on_the_command_line(cli: Cli, data_dir: Path) -> None:
    with MemOS.open(data_dir) as mos:
        mos.create_cube("notes", embedder=EMBEDDER)
        orphan = mos.store.put_blob(b"orphan")
    done = cli("gc", "--grace-s", "0", "--json")
    assert done.code == 0, done.err
    assert done.json()["deleted"] == [orphan]
    assert orphan == hashlib.sha256(b"orphan").hexdigest()
    assert "deleted 0 blob(s)" in cli("gc").out
