"""A cube's codec over its life: fitted once the cube is big enough, refitted and re-encoded on
demand, each an event on the hash chain; no item is ever lost, snapshots of another codec
version are never used, an index rebuilt on open answers exactly like the incremental one, and
export/import carries the fitted state."""

from __future__ import annotations

import hashlib
import json
import shutil
import sqlite3
from contextlib import closing
from pathlib import Path

import numpy as np
import pytest
from memos.stores.sqlite import DB_FILE

from memos import CubeInfo, EventOp, HashEmbedder, ItemStatus, MemOS, SearchHit
from memos.codecs import FIT_MIN, make_codec, state_to_bytes
from memos.core._chain import payload_digest
from memos.errors import IntegrityError, InvalidInput, TamperedExport, VersionConflict
from memos.plaintext._codec_state import codec_from_blob
from memos.plaintext._encoding import reconfigure
from memos.plaintext._vector_index import VectorIndex

CUBE = "notes"
PCA = "pca32+fp8"  # half of the test embedder's 64 dimensions
CODECS = ("fp32", "fp16", "fp8", "int8", PCA)
QUERIES = ("memory 17 about topic 3", "topic 5", "number 999", "about topic 30 number 12")


def _open(data_dir: Path) -> MemOS:
    return MemOS.open(data_dir, embedder=HashEmbedder(64))


def _texts(n: int, start: int = 0) -> list[str]:
    return [f"memory number {i} about topic {i % 37}" for i in range(start, start + n)]


def _index_ids(mos: MemOS, cube: str = CUBE) -> set[str]:
    return mos._engine.indexes.current(mos.get_cube(cube)).ids()


def _active_ids(mos: MemOS, cube: str = CUBE) -> set[str]:
    return {i.id for i in mos.store.iter_items(cube) if i.status == ItemStatus.ACTIVE}


def _answers(mos: MemOS, k: int = 8) -> list[list[tuple[str, float]]]:
    return [_pairs(mos.search(q, cube=CUBE, k=k, mode="dense")) for q in QUERIES]


def _pairs(hits: list[SearchHit]) -> list[tuple[str, float]]:
    return [(hit.item.id, hit.score) for hit in hits]


def _config_events(mos: MemOS) -> list[tuple[EventOp, dict[str, object]]]:
    return [
        (e.op, e.payload or {})
        for e in mos.log(CUBE)
        if e.op in (EventOp.CODEC_FIT, EventOp.REENCODE)
    ]


# fitting --------------------------------------------------------------------------------------


@pytest.mark.parametrize("codec", ["int8", PCA])
def test_a_fitted_codec_is_exact_until_the_cube_reaches_fit_min(
    mos: MemOS, data_dir: Path, codec: str
) -> None:
    mos.create_cube(CUBE, codec=codec)
    mos.add_many(_texts(FIT_MIN - 1), cube=CUBE)
    stats = mos.cube_stats(CUBE)
    assert (stats.fitted, stats.encoding, stats.codec_version, stats.codec_state) == (
        False,
        "fp32",
        0,
        None,
    )
    assert stats.ram_bytes_per_vector == 4 * 64
    assert _config_events(mos) == []

    mos.add("the memory that reaches the threshold", cube=CUBE)
    info = mos.get_cube(CUBE)
    assert info.codec_version == 1
    assert info.codec_state is not None
    [(op, payload)] = _config_events(mos)
    assert op == EventOp.CODEC_FIT
    assert payload["codec"] == info.codec
    assert payload["codec_version"] == 1
    assert payload["codec_state"] == info.codec_state
    assert payload["fit_vectors"] == FIT_MIN
    assert payload["cube"] == info.model_dump(mode="json")
    assert (data_dir / "blobs" / f"{info.codec_state}.safetensors").is_file()
    stats = mos.cube_stats(CUBE)
    assert (stats.fitted, stats.encoding, stats.items_active) == (True, codec, FIT_MIN)
    assert stats.ram_bytes_per_vector == {"int8": 64, PCA: 32 + 4}[codec]
    assert _index_ids(mos) == _active_ids(mos)
    assert mos.verify(CUBE).ok


def test_the_fit_is_not_repeated_and_other_codecs_never_fit(mos: MemOS) -> None:
    mos.create_cube(CUBE, codec=PCA)
    mos.create_cube("plain", codec="fp8")
    mos.add_many(_texts(FIT_MIN + 10), cube=CUBE)
    mos.add_many(_texts(FIT_MIN + 10), cube="plain")
    mos.add_many(_texts(50, start=5000), cube=CUBE)
    assert len(_config_events(mos)) == 1
    assert not [e for e in mos.log("plain") if e.op == EventOp.CODEC_FIT]
    assert mos.get_cube("plain").codec_version == 0


def test_a_rollback_that_restores_enough_memories_fits(mos: MemOS) -> None:
    mos.create_cube(CUBE, codec="int8")
    added = mos.add_many(_texts(FIT_MIN - 1), cube=CUBE)
    seq_before_delete = mos.store.head(CUBE)[0]
    mos.delete(added[0].id)
    mos.add("one more", cube=CUBE)
    assert mos.get_cube(CUBE).codec_state is None  # 999 active
    mos.rollback_cube(CUBE, to_seq=seq_before_delete)
    # the rollback deleted "one more" and restored the first: still 999
    assert mos.get_cube(CUBE).codec_state is None
    mos.add("and another", cube=CUBE)
    mos.rollback(added[0].id, to_version=1)
    assert mos.get_cube(CUBE).codec_state is not None
    assert _index_ids(mos) == _active_ids(mos)


def test_creating_a_cube_checks_the_codec(mos: MemOS) -> None:
    with pytest.raises(InvalidInput, match="unknown codec"):
        mos.create_cube(CUBE, codec="zip")
    with pytest.raises(InvalidInput, match="cannot project"):
        mos.create_cube(CUBE, codec="pca65+fp8")
    assert mos.list_cubes() == []
    assert mos.create_cube(CUBE, codec="pca064+fp8").codec == "pca64+fp8"


# refit and re-encode --------------------------------------------------------------------------


@pytest.mark.parametrize("start", CODECS)
@pytest.mark.parametrize("target", CODECS)
def test_reencoding_never_loses_an_item_and_is_in_the_log(
    mos: MemOS, start: str, target: str
) -> None:
    mos.create_cube(CUBE, codec=start)
    added = mos.add_many(_texts(FIT_MIN + 30), cube=CUBE)
    mos.delete(added[3].id)
    mos.update(added[4].id, "an updated memory")
    before = mos.get_cube(CUBE)
    info = mos.reencode(CUBE, codec=target, reason="testing")
    assert info == mos.get_cube(CUBE)
    assert (info.codec, info.codec_version) == (target, before.codec_version + 1)
    assert (info.codec_state is not None) == bool(make_codec(target).fit_min)
    op, payload = _config_events(mos)[-1]
    assert op == EventOp.REENCODE
    assert payload["previous"] == {"codec": start, "codec_version": before.codec_version}
    assert mos.log(CUBE)[-1].reason == "testing"
    assert _index_ids(mos) == _active_ids(mos)
    assert len(_index_ids(mos)) == FIT_MIN + 29
    for item in added[10:400:37]:
        assert mos.search(item.text, cube=CUBE, k=1, mode="dense")[0].item.id == item.id
    stats = mos.cube_stats(CUBE)
    assert (stats.codec, stats.index_vectors, stats.items_active) == (
        target,
        FIT_MIN + 29,
        FIT_MIN + 29,
    )
    assert stats.items_total == FIT_MIN + 30
    assert mos.verify(CUBE).ok


def test_reencoding_a_small_cube_to_a_fitted_codec_waits_for_the_fit(mos: MemOS) -> None:
    mos.create_cube(CUBE, codec="fp16")
    mos.add_many(_texts(100), cube=CUBE)
    info = mos.reencode(CUBE, codec=PCA)
    assert (info.codec, info.codec_state, info.codec_version) == (PCA, None, 1)
    assert mos.cube_stats(CUBE).encoding == "fp32"
    mos.add_many(_texts(FIT_MIN, start=100), cube=CUBE)
    info = mos.get_cube(CUBE)
    assert (info.codec_version, info.codec_state is not None) == (2, True)
    assert [op for op, _ in _config_events(mos)] == [EventOp.REENCODE, EventOp.CODEC_FIT]


def test_refit_is_an_event_and_keeps_every_item(mos: MemOS) -> None:
    mos.create_cube(CUBE, codec=PCA)
    mos.add_many(_texts(FIT_MIN), cube=CUBE)
    first = mos.get_cube(CUBE)
    mos.add_many(_texts(500, start=FIT_MIN), cube=CUBE)
    info = mos.refit(CUBE, reason="drift")
    assert info.codec_version == first.codec_version + 1
    assert info.codec_state != first.codec_state
    [(_, fit), (_, refit)] = _config_events(mos)
    assert (fit["fit_vectors"], refit["fit_vectors"]) == (FIT_MIN, FIT_MIN + 500)
    assert mos.log(CUBE)[-1].reason == "drift"
    assert _index_ids(mos) == _active_ids(mos)
    # refitting an unchanged cube gives the same state again: same content address
    assert mos.refit(CUBE).codec_state == info.codec_state
    assert mos.verify(CUBE).ok


def test_refit_is_refused_where_it_means_nothing(mos: MemOS) -> None:
    mos.create_cube(CUBE, codec="fp8")
    mos.create_cube("small", codec="int8")
    mos.add_many(_texts(20), cube="small")
    with pytest.raises(InvalidInput, match="not fitted"):
        mos.refit(CUBE)
    with pytest.raises(InvalidInput, match="needs 1000"):
        mos.refit("small")
    with pytest.raises(InvalidInput, match="unknown codec"):
        mos.reencode(CUBE, codec="nope")
    with pytest.raises(InvalidInput, match="cannot project"):
        mos.reencode(CUBE, codec="pca100+fp8")
    assert [e.op for e in mos.log("small")][-1] == EventOp.CREATE
    assert mos.get_cube("small").codec_version == 0


def test_a_stale_configuration_change_is_refused(mos: MemOS) -> None:
    mos.create_cube(CUBE, codec="fp16")
    mos.add_many(_texts(10), cube=CUBE)
    stale = mos.get_cube(CUBE)
    mos.reencode(CUBE, codec="fp8")
    with pytest.raises(VersionConflict):
        reconfigure(
            mos.store,
            mos._engine.indexes,
            stale,
            codec="fp32",
            op=EventOp.REENCODE,
            actor="x",
            reason=None,
        )
    assert mos.get_cube(CUBE).codec == "fp8"
    assert mos.cube_stats(CUBE).codec == "fp8"


def test_readers_keep_a_complete_index_during_a_reencode(mos: MemOS) -> None:
    mos.create_cube(CUBE, codec="fp32")
    mos.add_many(_texts(300), cube=CUBE)
    old = mos._engine.indexes.current(mos.get_cube(CUBE))
    before = _answers(mos)
    mos.reencode(CUBE, codec="fp8")
    new = mos._engine.indexes.current(mos.get_cube(CUBE))
    # the new index was built aside and swapped in; the old one was never emptied or changed
    assert new is not old
    assert old.ids() == new.ids()
    assert old.codec.name == "fp32"
    assert _answers(mos) == [[(i, pytest.approx(s, abs=1e-6)) for i, s in a] for a in before]


# snapshots and rebuilds -----------------------------------------------------------------------


def _build(mos: MemOS, codec: str) -> None:
    """An incrementally built cube past its fit, with updates, deletes and a rollback."""
    mos.create_cube(CUBE, codec=codec)
    added = mos.add_many(_texts(700), cube=CUBE)
    added += mos.add_many(_texts(700, start=700), cube=CUBE)
    for item in added[::50]:
        mos.update(item.id, f"{item.text} (revised)")
    for item in added[7::60]:
        mos.delete(item.id)
    mos.rollback(added[7].id, to_version=1)


@pytest.mark.parametrize("codec", CODECS)
def test_rebuilt_on_open_answers_exactly_as_built_incrementally(data_dir: Path, codec: str) -> None:
    with _open(data_dir) as mos:
        _build(mos, codec)
        incremental = _answers(mos)
        ids = _index_ids(mos)
        fitted = make_codec(codec).fit_min == 0 or mos.get_cube(CUBE).codec_state is not None
        assert fitted
    with _open(data_dir) as mos:  # from the snapshot written on close
        assert mos.cube_stats(CUBE).snapshot_seq == mos.store.head(CUBE)[0]
        assert _answers(mos) == incremental
        assert _index_ids(mos) == ids
    shutil.rmtree(data_dir / "index")
    with _open(data_dir) as mos:  # rebuilt from the store
        assert _answers(mos) == incremental
        assert _index_ids(mos) == ids


def test_a_snapshot_of_another_codec_version_is_not_used(data_dir: Path, tmp_path: Path) -> None:
    with _open(data_dir) as mos:
        _build(mos, PCA)
        first = mos.get_cube(CUBE)
    kept = tmp_path / "v1-snapshot"
    shutil.copytree(data_dir / "index", kept)
    with _open(data_dir) as mos:
        mos.add_many(_texts(400, start=9000), cube=CUBE)
        second = mos.refit(CUBE)
        assert second.codec_state != first.codec_state
        answers = _answers(mos)
    # put the version-1 snapshot back: its seq is still in the log with the same hash
    shutil.rmtree(data_dir / "index")
    shutil.copytree(kept, data_dir / "index")
    sidecar = json.loads((data_dir / "index" / f"{CUBE}.json").read_text())
    assert (sidecar["codec_version"], sidecar["codec_state"]) == (1, first.codec_state)
    for info, usable in ((first, True), (second, False)):
        blob = (data_dir / "blobs" / f"{info.codec_state}.safetensors").read_bytes()
        config = {"codec_version": info.codec_version, "codec_state": info.codec_state}
        loaded = VectorIndex.load(
            data_dir / "index", CUBE, codec_from_blob(info, blob), 64, **config
        )
        assert (loaded is not None) == usable
    with _open(data_dir) as mos:
        stats = mos.cube_stats(CUBE)
        assert (stats.codec_version, stats.codec_state) == (2, second.codec_state)
        assert _answers(mos) == answers
        assert _index_ids(mos) == _active_ids(mos)
    sidecar = json.loads((data_dir / "index" / f"{CUBE}.json").read_text())
    assert (sidecar["codec_version"], sidecar["codec_state"]) == (2, second.codec_state)


def test_another_process_reencoding_is_picked_up(data_dir: Path) -> None:
    with _open(data_dir) as reader, _open(data_dir) as writer:
        reader.create_cube(CUBE, codec="fp32")
        reader.add_many(_texts(200), cube=CUBE)
        before = _answers(reader)
        writer.reencode(CUBE, codec="fp16")
        after = _answers(reader)
        assert reader._engine.indexes.current(reader.get_cube(CUBE)).codec.name == "fp16"
        # the same hits at the same scores; fp32 scan and fp16 re-rank round differently, so
        # exact ties (the hash embedder makes some) may come out in either order
        for old, new in zip(before, after, strict=True):
            assert {i for i, _ in new} == {i for i, _ in old}
            assert [s for _, s in new] == pytest.approx([s for _, s in old], abs=1e-6)


# the chain ------------------------------------------------------------------------------------


def test_the_fit_event_is_chained_and_tampering_with_it_is_caught(data_dir: Path) -> None:
    with _open(data_dir) as mos:
        mos.create_cube(CUBE, codec=PCA)
        mos.add_many(_texts(FIT_MIN), cube=CUBE)
        fit = mos.log(CUBE)[-1]
        assert fit.op == EventOp.CODEC_FIT
        assert fit.item_id is None
        assert fit.prev_hash == mos.log(CUBE)[-2].hash
        assert fit.payload is not None
        assert fit.payload_digest == payload_digest(fit.payload)
        assert mos.verify(CUBE).ok
    with closing(sqlite3.connect(data_dir / DB_FILE)) as conn, conn:
        body = json.loads(
            conn.execute(
                "SELECT body FROM payloads WHERE cube = ? AND seq = ?", (CUBE, fit.seq)
            ).fetchone()[0]
        )
        body["codec_state"] = "0" * 64
        conn.execute(
            "UPDATE payloads SET body = ? WHERE cube = ? AND seq = ?",
            (json.dumps(body), CUBE, fit.seq),
        )
    with _open(data_dir) as mos:
        report = mos.verify(CUBE)
        assert (report.ok, report.first_bad_seq) == (False, fit.seq)


def test_a_cube_configuration_edited_behind_the_log_is_caught(data_dir: Path) -> None:
    with _open(data_dir) as mos:
        mos.create_cube(CUBE, codec="int8")
        mos.add_many(_texts(FIT_MIN), cube=CUBE)
        info = mos.get_cube(CUBE)
    edited = info.model_copy(update={"codec": "fp8", "codec_state": None})
    with closing(sqlite3.connect(data_dir / DB_FILE)) as conn, conn:
        conn.execute("UPDATE cubes SET info = ? WHERE name = ?", (edited.model_dump_json(), CUBE))
    with _open(data_dir) as mos:
        report = mos.verify(CUBE)
        assert not report.ok
        assert "configuration" in (report.problem or "")


# export / import ------------------------------------------------------------------------------


@pytest.fixture
def exported_pca(tmp_path: Path) -> tuple[Path, list[list[tuple[str, float]]], CubeInfo]:
    source = tmp_path / "source"
    with _open(source) as mos:
        _build(mos, PCA)
        mos.refit(CUBE)
        answers = _answers(mos)
        info = mos.get_cube(CUBE)
        target = mos.export_cube(CUBE, tmp_path / "export")
    return target, answers, info


def test_export_import_of_a_fitted_pca_cube_answers_identically(
    exported_pca: tuple[Path, list[list[tuple[str, float]]], CubeInfo], tmp_path: Path
) -> None:
    directory, answers, info = exported_pca
    manifest = json.loads((directory / "manifest.json").read_text())
    assert manifest["files"]["codec_state.safetensors"] == info.codec_state
    assert manifest["cube"] == info.model_dump(mode="json")
    with _open(tmp_path / "fresh") as mos:
        assert mos.import_cube(directory) == info
        assert (tmp_path / "fresh" / "blobs" / f"{info.codec_state}.safetensors").is_file()
        assert _answers(mos) == answers
        assert mos.cube_stats(CUBE).fitted
        assert mos.verify(CUBE).ok


@pytest.mark.parametrize("damage", ["missing", "edited", "swapped"])
def test_an_export_with_a_bad_codec_state_is_refused(
    exported_pca: tuple[Path, list[list[tuple[str, float]]], CubeInfo],
    tmp_path: Path,
    damage: str,
) -> None:
    directory, _, _ = exported_pca
    state = directory / "codec_state.safetensors"
    if damage == "missing":
        state.unlink()
    elif damage == "edited":
        data = bytearray(state.read_bytes())
        data[-5] ^= 0x40
        state.write_bytes(bytes(data))
    else:  # a valid state of the codec, another fit, with the manifest's checksum updated
        other = make_codec(PCA).fit(np.eye(64, dtype=np.float32))
        blob = state_to_bytes(PCA, other)
        state.write_bytes(blob)
        manifest = json.loads((directory / "manifest.json").read_text())
        manifest["files"]["codec_state.safetensors"] = hashlib.sha256(blob).hexdigest()
        (directory / "manifest.json").write_text(json.dumps(manifest))
    with _open(tmp_path / "fresh") as mos, pytest.raises(TamperedExport):
        mos.import_cube(directory)
    with _open(tmp_path / "fresh") as mos:
        assert mos.list_cubes() == []


@pytest.mark.parametrize("damage", ["edited", "missing"])
def test_a_damaged_state_blob_is_an_integrity_error(data_dir: Path, damage: str) -> None:
    with _open(data_dir) as mos:
        mos.create_cube(CUBE, codec=PCA)
        mos.add_many(_texts(FIT_MIN), cube=CUBE)
        digest = mos.get_cube(CUBE).codec_state
    assert digest is not None
    blob = data_dir / "blobs" / f"{digest}.safetensors"
    shutil.rmtree(data_dir / "index")
    if damage == "missing":
        blob.unlink()
    else:
        data = bytearray(blob.read_bytes())
        data[-3] ^= 0x01
        blob.write_bytes(bytes(data))
    with _open(data_dir) as mos:
        if damage == "edited":
            with pytest.raises(IntegrityError, match="does not match its digest"):
                mos.store.get_blob(digest)
        with pytest.raises(IntegrityError, match=r"blob|state"):
            mos.search("anything", cube=CUBE, mode="dense")
