"""Crash safety: a writer killed with SIGKILL mid-stream loses no acknowledged write, leaves a
verifying chain, and the reopened search index (snapshot + tail, or a rebuild) agrees with the
items. Torn or edited index snapshots are ignored, never trusted."""

from __future__ import annotations

import json
import shutil
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from _workers import HASH_DIM, LineReader, spawn

from memos import HashEmbedder, ItemStatus, Limits, MemOS
from memos.codecs import make_codec
from memos.plaintext._indexes import _SNAPSHOT_MIN_EVENTS
from memos.plaintext._vector_index import VectorIndex, _sidecar_digest

CUBE = "crashy"
QUERIES = ("note on subject 7", "revised note", "prefill memory about topic 3", "writer 1")


def _open(data_dir: Path) -> MemOS:
    # k may reach the number of active items, which exceeds the default max_k here.
    return MemOS.open(data_dir, embedder=HashEmbedder(HASH_DIM), limits=Limits(max_k=100_000))


def _create_cube(data_dir: Path) -> None:
    with _open(data_dir) as mos:
        mos.create_cube(CUBE, owner="crash-test")


def _run_and_kill(
    data_dir: Path, tmp_path: Path, *, prefill: int, acks: int, seed: int
) -> list[dict[str, Any]]:
    """Start a writer, SIGKILL it as soon as ``prefill + acks`` writes are acknowledged, and
    return every acknowledgement it managed to print."""
    stderr_path = tmp_path / f"writer-{seed}.stderr"
    args = ("crash-writer", str(data_dir), CUBE, str(prefill), str(seed))
    with spawn(*args, stderr_path=stderr_path) as proc:
        lines = LineReader(proc, stderr_path)
        lines.wait_for(prefill + acks)
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=60) == -signal.SIGKILL
        return lines.drain()


def _assert_acknowledged(mos: MemOS, acks: list[dict[str, Any]]) -> None:
    """Every acknowledged write is there, at its acknowledged version or a later one, and the
    item's history holds exactly what was acknowledged at that version."""
    latest: dict[str, dict[str, Any]] = {}
    for ack in acks:
        latest[ack["id"]] = ack
    for item_id, ack in latest.items():
        item = mos.get(item_id)
        assert item.version >= ack["version"], (item_id, item.version, ack)
        entry = next(e for e in mos.history(item_id) if e.version == ack["version"])
        assert entry.item.text == ack["text"]
        assert entry.item.status.value == ack["status"]
        if item.version == ack["version"]:
            assert item.text == ack["text"]
            assert item.status.value == ack["status"]


def _active_ids(mos: MemOS) -> set[str]:
    return {i.id for i in mos.store.iter_items(CUBE) if i.status == ItemStatus.ACTIVE}


def _scores(mos: MemOS, query: str) -> dict[str, float]:
    """Every active item's score for ``query`` (k = the number of active items)."""
    k = len(_active_ids(mos))
    return {hit.item.id: hit.score for hit in mos.search(query, cube=CUBE, k=k)}


def _assert_index_agrees(mos: MemOS) -> None:
    active = _active_ids(mos)
    assert active
    for query in QUERIES:
        assert set(_scores(mos, query)) == active
    assert mos._engine.indexes.current(mos.get_cube(CUBE)).ids() == active


def _assert_same_scores(a: dict[str, float], b: dict[str, float]) -> None:
    assert set(a) == set(b)
    ids = sorted(a)
    np.testing.assert_allclose([a[i] for i in ids], [b[i] for i in ids], rtol=1e-6, atol=1e-6)


def _assert_seqs_gapless(mos: MemOS) -> None:
    seqs = [event.seq for event in mos.log(CUBE)]
    assert seqs == list(range(1, len(seqs) + 1))


def _snapshot_seq(data_dir: Path) -> int:
    sidecar = json.loads((data_dir / "index" / f"{CUBE}.json").read_text(encoding="utf-8"))
    return int(sidecar["seq"])


@pytest.mark.slow
def test_killed_writer_loses_no_acknowledged_write(data_dir: Path, tmp_path: Path) -> None:
    _create_cube(data_dir)
    acks = _run_and_kill(data_dir, tmp_path, prefill=0, acks=150, seed=1)
    assert len(acks) >= 150
    assert {a["op"] for a in acks} == {"add", "update", "delete"}

    with _open(data_dir) as mos:
        report = mos.verify(CUBE)
        assert report.ok, report
        _assert_seqs_gapless(mos)
        _assert_acknowledged(mos, acks)
        _assert_index_agrees(mos)
        # The store stays writable after the crash, and the chain keeps verifying.
        mos.add("written after the crash", cube=CUBE)
        assert mos.verify(CUBE).ok
        _assert_index_agrees(mos)


@pytest.mark.slow
def test_repeated_kills_keep_every_acknowledged_write(data_dir: Path, tmp_path: Path) -> None:
    _create_cube(data_dir)
    acks: list[dict[str, Any]] = []
    for seed, count in ((2, 40), (3, 75), (4, 20)):
        acks += _run_and_kill(data_dir, tmp_path, prefill=0, acks=count, seed=seed)
        with _open(data_dir) as mos:
            assert mos.verify(CUBE).ok
            _assert_seqs_gapless(mos)
            _assert_acknowledged(mos, acks)
            _assert_index_agrees(mos)


@pytest.mark.slow
def test_reopen_loads_the_snapshot_and_replays_the_tail(data_dir: Path, tmp_path: Path) -> None:
    _create_cube(data_dir)
    prefill = _SNAPSHOT_MIN_EVENTS + 100
    acks = _run_and_kill(data_dir, tmp_path, prefill=prefill, acks=120, seed=5)

    # The writer snapshotted its index after the prefill and was killed before the next one.
    snapshot_seq = _snapshot_seq(data_dir)
    assert snapshot_seq > _SNAPSHOT_MIN_EVENTS
    with _open(data_dir) as mos:
        head_seq, _ = mos.store.head(CUBE)
        assert snapshot_seq < head_seq
        assert mos.verify(CUBE).ok
        _assert_seqs_gapless(mos)
        _assert_acknowledged(mos, acks)

        index = mos._engine.indexes.current(mos.get_cube(CUBE))
        # Loaded from the snapshot (a rebuild would have re-saved at the head) and caught up.
        assert index.saved_seq == snapshot_seq
        assert index.seq == head_seq
        _assert_index_agrees(mos)
        from_snapshot = {query: _scores(mos, query) for query in QUERIES}

    # A rebuild from the store alone gives the same answers.
    shutil.rmtree(data_dir / "index")
    with _open(data_dir) as mos:
        _assert_index_agrees(mos)
        for query in QUERIES:
            _assert_same_scores(_scores(mos, query), from_snapshot[query])


# --- torn and edited snapshots ----------------------------------------------------------------


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _edit_sidecar(edit: Callable[[dict[str, Any]], None]) -> Callable[[Path], None]:
    def apply(path: Path) -> None:
        sidecar = json.loads(path.read_text(encoding="utf-8"))
        edit(sidecar)
        path.write_text(json.dumps(sidecar), encoding="utf-8")

    return apply


def _resealed(edit: Callable[[dict[str, Any]], None]) -> Callable[[dict[str, Any]], None]:
    """An edit whose sidecar checksum is recomputed, so only the history check can catch it."""

    def apply(sidecar: dict[str, Any]) -> None:
        edit(sidecar)
        sidecar.pop("sidecar_sha256")
        sidecar["sidecar_sha256"] = _sidecar_digest(sidecar)

    return apply


def _swap_two_ids(sidecar: dict[str, Any]) -> None:
    ids = sidecar["ids"]
    ids[0], ids[1] = ids[1], ids[0]


def _flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


CORRUPTIONS: dict[str, tuple[str, Callable[[Path], None]]] = {
    "codes-truncated": ("codes", _truncate),
    "codes-empty": ("codes", lambda p: p.write_bytes(b"")),
    "codes-garbage": ("codes", lambda p: p.write_bytes(b"\x00garbage" * 100)),
    "codes-bit-flip": ("codes", _flip_byte),
    "codes-missing": ("codes", lambda p: p.unlink()),
    "json-truncated": ("json", _truncate),
    "json-not-an-object": ("json", lambda p: p.write_text("[]", encoding="utf-8")),
    "json-missing": ("json", lambda p: p.unlink()),
    "json-future-seq": ("json", _edit_sidecar(lambda s: s.update(seq=s["seq"] + 5))),
    "json-older-seq": ("json", _edit_sidecar(lambda s: s.update(seq=s["seq"] - 50))),
    "json-other-hash": ("json", _edit_sidecar(lambda s: s.update(head_hash="f" * 64))),
    "json-swapped-ids": ("json", _edit_sidecar(_swap_two_ids)),
    "json-dropped-id": ("json", _edit_sidecar(lambda s: s["ids"].pop())),
    "json-bad-ids": ("json", _edit_sidecar(lambda s: s.update(ids={"x": "not a list"}))),
    "json-duplicated-id": (
        "json",
        _edit_sidecar(lambda s: s["ids"].__setitem__(1, s["ids"][0])),
    ),
    "json-wrong-dim": ("json", _edit_sidecar(lambda s: s.update(dim=32))),
    "json-future-seq-resealed": (
        "json",
        _edit_sidecar(_resealed(lambda s: s.update(seq=s["seq"] + 5))),
    ),
    "json-older-seq-resealed": (
        "json",
        _edit_sidecar(_resealed(lambda s: s.update(seq=s["seq"] - 50))),
    ),
    "json-other-hash-resealed": (
        "json",
        _edit_sidecar(_resealed(lambda s: s.update(head_hash="f" * 64))),
    ),
    "json-dropped-id-resealed": (
        "json",
        _edit_sidecar(_resealed(lambda s: s["ids"].pop())),
    ),
}


@pytest.fixture(scope="module")
def snapshotted_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data dir whose index snapshot covers its head: enough events to snapshot, with
    updates and deletes, closed cleanly."""
    data_dir = tmp_path_factory.mktemp("snapshotted") / "data"
    with _open(data_dir) as mos:
        mos.create_cube(CUBE)
        texts = [f"prefill memory {n} about topic {n % 37}" for n in range(1200)]
        items = mos.add_many(texts, cube=CUBE)
        for n, item in enumerate(items[:60]):
            if n % 2:
                mos.delete(item.id)
            else:
                mos.update(item.id, f"revised note {n} on subject {n % 7}")
        mos.add("writer 1 note on subject 7", cube=CUBE)
    with _open(data_dir) as mos:
        assert _snapshot_seq(data_dir) == mos.store.head(CUBE)[0]
    return data_dir


def _rebuilt_scores(data_dir: Path, scratch: Path) -> dict[str, dict[str, float]]:
    """The ground truth: answers from an index rebuilt from the store alone."""
    shutil.copytree(data_dir, scratch)
    shutil.rmtree(scratch / "index")
    with _open(scratch) as mos:
        return {query: _scores(mos, query) for query in QUERIES}


@pytest.fixture(scope="module")
def snapshotted_scores(
    snapshotted_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, dict[str, float]]:
    return _rebuilt_scores(snapshotted_dir, tmp_path_factory.mktemp("rebuilt") / "data")


@pytest.mark.parametrize("corruption", sorted(CORRUPTIONS))
def test_untrustworthy_snapshot_is_ignored_and_rebuilt(
    snapshotted_dir: Path,
    snapshotted_scores: dict[str, dict[str, float]],
    tmp_path: Path,
    corruption: str,
) -> None:
    expected = snapshotted_scores
    data_dir = tmp_path / "corrupted"
    shutil.copytree(snapshotted_dir, data_dir)
    suffix, corrupt = CORRUPTIONS[corruption]
    corrupt(data_dir / "index" / f"{CUBE}.{suffix}")

    with _open(data_dir) as mos:
        _assert_index_agrees(mos)
        for query in QUERIES:
            _assert_same_scores(_scores(mos, query), expected[query])
        assert mos.verify(CUBE).ok
        # Writes after the rebuild land in the index too.
        fresh = mos.add("a memory written after the rebuild", cube=CUBE)
        assert fresh.id in _scores(mos, "a memory written after the rebuild")
        _assert_index_agrees(mos)


def test_intact_snapshot_is_trusted(snapshotted_dir: Path, tmp_path: Path) -> None:
    """The control for the test above: the untouched snapshot loads and covers the head."""
    data_dir = tmp_path / "intact"
    shutil.copytree(snapshotted_dir, data_dir)
    with _open(data_dir) as mos:
        info = mos.get_cube(CUBE)
        loaded = VectorIndex.load(data_dir / "index", CUBE, make_codec(info.codec), info.dim)
        assert loaded is not None
        assert loaded.seq == mos.store.head(CUBE)[0]
        assert loaded.ids() == _active_ids(mos)


def test_snapshot_from_another_history_is_ignored(
    snapshotted_dir: Path,
    snapshotted_scores: dict[str, dict[str, float]],
    tmp_path: Path,
) -> None:
    """A genuine, intact snapshot of a same-named cube in another data dir is not ours."""
    data_dir = tmp_path / "ours"
    shutil.copytree(snapshotted_dir, data_dir)
    foreign = tmp_path / "foreign"
    with _open(foreign) as mos:
        mos.create_cube(CUBE)
        mos.add_many([f"foreign memory {n}" for n in range(1100)], cube=CUBE)
    shutil.rmtree(data_dir / "index")
    shutil.copytree(foreign / "index", data_dir / "index")

    with _open(data_dir) as mos:
        _assert_index_agrees(mos)
        for query in QUERIES:
            _assert_same_scores(_scores(mos, query), snapshotted_scores[query])
