"""The full-precision vectors a lossy codec re-ranks with live beside the index (a memory-mapped
file per cube next to its snapshot; a temporary file of each process on Redis), derived from
the store's vectors: rebuilt when missing or stale, caught up with the log, checked by
``verify``, and never used once found to differ.

Every search here is compared with the exact answer computed from the store's own vectors."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from _redis import drop_redis_store, fresh_redis_url

from memos import HashEmbedder, ItemFilter, MemOS, open_store

CUBE = "notes"
CODEC = "fp8"  # lossy, needs no fit: every search re-ranks its candidates
DIM = 64
QUERIES = ("memory 7 about topic 7", "topic 3", "number 40 about topic 4", "memory 123")
ROW_BYTES = DIM * 4


def _texts(n: int, start: int = 0) -> list[str]:
    return [f"memory {i} about topic {i % 11} number {i % 97}" for i in range(start, start + n)]


def _open(data_dir: Path) -> MemOS:
    return MemOS.open(data_dir, embedder=HashEmbedder(DIM))


def _query(text: str) -> np.ndarray:
    return np.asarray(HashEmbedder(DIM).embed([text])[0], dtype=np.float32)


def _exact(mos: MemOS, text: str, k: int) -> list[tuple[str, float]]:
    """The top ``k`` by the store's vectors of the cube's active items."""
    ids = mos.store.filter_item_ids(CUBE, ItemFilter())
    vectors = mos.store.get_vectors(ids, cube=CUBE)
    scored = [(i, float(vectors[i] @ _query(text))) for i in ids]
    return sorted(scored, key=lambda pair: (-pair[1], pair[0]))[:k]


def _dense(mos: MemOS, text: str, k: int = 5) -> list[tuple[str, float]]:
    return [(hit.item.id, hit.score) for hit in mos.search(text, cube=CUBE, k=k, mode="dense")]


def assert_exact(mos: MemOS) -> None:
    for text in QUERIES:
        found, exact = _dense(mos, text), _exact(mos, text, 5)
        assert [i for i, _ in found] == [i for i, _ in exact]
        assert np.allclose([s for _, s in found], [s for _, s in exact], atol=1e-6)


def _index(data_dir: Path) -> Path:
    return data_dir / "index"


def _rows_file(data_dir: Path) -> Path:
    return _index(data_dir) / f"{CUBE}.rows"


def _sidecar(data_dir: Path) -> dict[str, object]:
    loaded = json.loads((_index(data_dir) / f"{CUBE}.json").read_text())
    assert isinstance(loaded, dict)
    return loaded


@pytest.fixture
def built(data_dir: Path) -> Path:
    """A closed data dir with a 300-memory ``fp8`` cube, some updated and deleted, and its
    snapshot (codes, sidecar and rows) saved on close."""
    with _open(data_dir) as mos:
        mos.create_cube(CUBE, codec=CODEC)
        added = mos.add_many(_texts(300), cube=CUBE)
        for item in added[::25]:
            mos.update(item.id, item.text + " revised")
        for item in added[3::40]:
            mos.delete(item.id)
        assert_exact(mos)
    return data_dir


def test_rows_are_saved_with_the_snapshot_and_searched_exactly(built: Path) -> None:
    sidecar = _sidecar(built)
    ids = sidecar["ids"]
    assert isinstance(ids, list)
    assert isinstance(sidecar["rows_token"], str)
    # the header, then one float32 row per position of the snapshot
    assert _rows_file(built).stat().st_size == 64 + len(ids) * ROW_BYTES
    with _open(built) as mos:
        stored = mos.store.get_vectors(ids, cube=CUBE)
        rows = np.fromfile(_rows_file(built), dtype=np.float32, offset=64).reshape(-1, DIM)
        assert all(np.array_equal(rows[n], stored[i]) for n, i in enumerate(ids))
        assert_exact(mos)
        mos.add_many(_texts(50, start=1000), cube=CUBE)  # rows past the snapshot
        assert_exact(mos)
        assert mos.verify(CUBE).ok
    with _open(built) as mos:
        assert_exact(mos)
        assert mos.verify(CUBE).ok


def test_a_missing_rows_file_is_rebuilt(built: Path) -> None:
    _rows_file(built).unlink()
    with _open(built) as mos:
        assert_exact(mos)
        assert mos.verify(CUBE).ok
        assert_exact(mos)
    # closing saved the rebuilt index, rows and all
    assert _rows_file(built).exists()
    assert _rows_file(built).stat().st_size == 64 + len(_ids(built)) * ROW_BYTES


def _ids(data_dir: Path) -> list[object]:
    ids = _sidecar(data_dir)["ids"]
    assert isinstance(ids, list)
    return ids


def test_a_rows_file_of_another_save_is_not_used(built: Path, tmp_path: Path) -> None:
    """Rows of a later save beside the sidecar of an earlier one (a crash between renames,
    or another process's save) fail the pairing: the index is rebuilt from the store."""
    early = tmp_path / "early"
    shutil.copytree(_index(built), early)
    with _open(built) as mos:
        added = mos.add_many(_texts(40, start=2000), cube=CUBE)
        mos.delete(added[0].id)
    shutil.copy(_rows_file(built), early / f"{CUBE}.rows")
    shutil.rmtree(_index(built))
    shutil.copytree(early, _index(built))
    with _open(built) as mos:
        assert_exact(mos)
        assert mos.verify(CUBE).ok


def test_an_earlier_snapshot_with_its_rows_is_caught_up(built: Path, tmp_path: Path) -> None:
    early = tmp_path / "early"
    shutil.copytree(_index(built), early)
    with _open(built) as mos:
        added = mos.add_many(_texts(40, start=2000), cube=CUBE)
        for item in added[::3]:
            mos.update(item.id, item.text + " again")
        mos.delete(added[1].id)
        answers = [_dense(mos, text) for text in QUERIES]
    shutil.rmtree(_index(built))
    shutil.copytree(early, _index(built))
    with _open(built) as mos:
        assert [_dense(mos, text) for text in QUERIES] == answers
        assert_exact(mos)
        assert mos.verify(CUBE).ok


def test_rows_of_a_later_seq_than_the_store_are_rebuilt(built: Path, tmp_path: Path) -> None:
    """The store restored to an earlier state (its last commits lost) while the index files
    kept the later ones: the snapshot's seq no longer matches the log, so nothing of it is
    used, rows included."""
    kept = tmp_path / "db"
    kept.mkdir()
    for file in built.glob("memos.db*"):
        shutil.copy(file, kept / file.name)
    with _open(built) as mos:
        added = mos.add_many(_texts(40, start=3000), cube=CUBE)
        for item in added[::2]:
            mos.update(item.id, "rewritten " + item.text)
    for file in built.glob("memos.db*"):
        file.unlink()
    for file in kept.iterdir():
        shutil.copy(file, built / file.name)
    with _open(built) as mos:
        assert_exact(mos)
        assert mos.verify(CUBE).ok


def _lure(mos: MemOS, text: str) -> tuple[str, bytes]:
    """An item ranked 30th for ``text`` (among the codec's candidates, out of the top 5) and
    its stored vector's bytes: a row made equal to the query would put it first."""
    item_id = _exact(mos, text, 30)[-1][0]
    vector = mos.store.get_vectors([item_id], cube=CUBE)[item_id]
    return item_id, np.asarray(vector, dtype="<f4").tobytes()


def _overwrite_row(handle_path: Path | str, row: bytes, text: str) -> bool:
    """Write the query vector of ``text`` over ``row`` where the file holds it."""
    with open(handle_path, "r+b") as handle:
        data = handle.read()
        at = data.find(row)
        if at < 0:
            return False
        handle.seek(at)
        handle.write(_query(text).astype("<f4").tobytes())
    return True


def test_a_tampered_rows_file_is_reported_and_not_used(built: Path) -> None:
    text = QUERIES[0]
    with _open(built) as mos:
        target, row = _lure(mos, text)
        answers = _dense(mos, text)
    covered = int(str(_sidecar(built)["seq"]))
    assert _overwrite_row(_rows_file(built), row, text)
    with _open(built) as mos:
        assert _dense(mos, text)[0][0] == target  # the forgery took effect
        report = mos.verify(CUBE)
        assert (report.ok, report.first_bad_seq) == (False, covered)
        assert report.problem is not None
        assert "re-rank vector" in report.problem
        assert target in report.problem
        assert not _rows_file(built).exists()
        assert _dense(mos, text) == answers
        assert_exact(mos)
        assert mos.verify(CUBE).ok
    with _open(built) as mos:
        assert _dense(mos, text) == answers
        assert mos.verify(CUBE).ok


def test_processes_sharing_a_data_dir_keep_their_rows_apart(built: Path) -> None:
    """Two handles over one data dir (as two processes): each maps the saved rows and adds
    its own; saving one never changes what the other re-ranks with."""
    with _open(built) as first, _open(built) as second:
        assert_exact(first)
        assert_exact(second)
        first.add_many(_texts(30, start=4000), cube=CUBE)
        first.close()  # saves its snapshot over the one ``second`` mapped
        assert_exact(second)
        second.add_many(_texts(30, start=5000), cube=CUBE)
        assert_exact(second)
    with _open(built) as mos:
        assert_exact(mos)
        assert mos.verify(CUBE).ok


# Redis: no snapshot folder; each process's rows are its own, caught up from the stream -------


@pytest.fixture
def redis_url() -> Iterator[str]:
    url = fresh_redis_url()
    yield url
    drop_redis_store(url)


def _redis_handle(url: str) -> MemOS:
    return MemOS(open_store(url), embedder=HashEmbedder(DIM))


def test_redis_rows_are_caught_up_from_the_stream(redis_url: str) -> None:
    with _redis_handle(redis_url) as writer, _redis_handle(redis_url) as reader:
        writer.create_cube(CUBE, codec=CODEC)
        added = writer.add_many(_texts(200), cube=CUBE)
        assert_exact(reader)
        for item in added[::9]:
            writer.update(item.id, "changed " + item.text)
        writer.delete(added[4].id)
        writer.add_many(_texts(30, start=600), cube=CUBE)
        assert_exact(reader)
        assert_exact(writer)
        assert reader.verify(CUBE).ok


def _rows_files_of_this_process() -> Iterator[str]:
    """This process's unlinked temporary files (the tail rows live in such files)."""
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.endswith("(deleted)"):
            yield f"/proc/self/fd/{fd}"


def test_redis_tampered_rows_are_reported_and_not_used(redis_url: str) -> None:
    text = QUERIES[1]
    with _redis_handle(redis_url) as mos:
        mos.create_cube(CUBE, codec=CODEC)
        mos.add_many(_texts(200), cube=CUBE)
        answers = _dense(mos, text)
        target, row = _lure(mos, text)
        assert any(_overwrite_row(path, row, text) for path in _rows_files_of_this_process())
        assert _dense(mos, text)[0][0] == target  # the forgery took effect
        head = mos.store.head(CUBE)[0]
        report = mos.verify(CUBE)
        assert (report.ok, report.first_bad_seq) == (False, head)
        assert report.problem is not None
        assert "re-rank vector" in report.problem
        assert _dense(mos, text) == answers
        assert mos.verify(CUBE).ok


def _file_holding(row: bytes) -> str:
    for path in _rows_files_of_this_process():
        with open(path, "rb") as handle:
            if row in handle.read():
                return path
    raise AssertionError("no temporary file of this process holds the row")


def test_redis_rows_stay_bounded_through_updates(redis_url: str) -> None:
    """With no snapshot to save them into, replaced rows are dropped from the process's file
    once they outnumber the live ones, instead of growing it with every update."""
    with _redis_handle(redis_url) as mos:
        mos.create_cube(CUBE, codec=CODEC)
        added = mos.add_many(_texts(100), cube=CUBE)
        for round_ in range(25):
            for item in added:
                mos.update(item.id, f"{item.text} v{round_}")
            assert_exact(mos)  # each search catches the index up: 100 rows replaced
        vector = mos.store.get_vectors([added[0].id], cube=CUBE)[added[0].id]
        held = os.stat(_file_holding(np.asarray(vector, dtype="<f4").tobytes())).st_size
        # 2,600 rows were written; at most twice the threshold of unused rows is kept
        assert held <= 2048 * ROW_BYTES
        assert mos.verify(CUBE).ok
