"""Export/import: a portable, checksummed, pickle-free directory that imports into a fresh data
dir with an identical, verifying log; any tampering is refused and changes nothing."""

from __future__ import annotations

import hashlib
import json
import shutil
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray
from safetensors.numpy import load_file, save_file

from memos import HashEmbedder, ItemStatus, MemOS
from memos.errors import CubeExists, InvalidInput, MemosError, TamperedExport

CUBE = "travel"
FILES = ("events.jsonl", "items.jsonl", "vectors.safetensors")
QUERIES = ("where does Alice live", "Bob likes hiking", "coffee", "Lisbon in May")


def _open(data_dir: Path) -> MemOS:
    return MemOS.open(data_dir, embedder=HashEmbedder(64))


def _fill(mos: MemOS) -> None:
    mos.create_cube(CUBE, owner="alice")
    lisbon = mos.add(
        "Alice moved to Lisbon in May 2023",
        cube=CUBE,
        user="alice",
        tags=["travel", "home"],
        metadata={"source": "chat", "session": "s1", "confidence": 0.9, "pinned": True},
    )
    mos.add_many(
        [
            "Bob likes hiking in the Alps",
            {"text": "Carol drinks her coffee black", "tags": ["food"], "user": "carol"},
            "Dave has a cat named Miso — ünïcode ✓",
        ],
        cube=CUBE,
        user="bob",
    )
    mos.add(
        [
            {"role": "user", "content": "I will visit Porto next week"},
            {"role": "assistant", "content": "Enjoy the trip to Porto!"},
        ],
        cube=CUBE,
        session="chat-7",
    )
    gone = mos.add("a memory that gets deleted", cube=CUBE)
    mos.update(lisbon.id, "Alice moved to Porto in June 2023", user="alice", expected_version=1)
    mos.delete(gone.id, reason="user asked")
    mos.rollback(lisbon.id, to_version=1, user="alice", reason="bad edit")


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data_dir = tmp_path_factory.mktemp("source") / "data"
    with _open(data_dir) as mos:
        _fill(mos)
    return data_dir


@pytest.fixture(scope="module")
def exported(source: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("export") / "out"
    with _open(source) as mos:
        assert mos.export_cube(CUBE, out) == out
    return out


@pytest.fixture
def export_copy(exported: Path, tmp_path: Path) -> Path:
    """A private copy of the export for a test to tamper with."""
    return Path(shutil.copytree(exported, tmp_path / "export"))


def _results(mos: MemOS) -> dict[str, list[tuple[str, float]]]:
    return {
        query: [(hit.item.id, hit.score) for hit in mos.search(query, cube=CUBE, k=20)]
        for query in QUERIES
    }


# --- the format -------------------------------------------------------------------------------


def test_export_writes_a_checksummed_manifest(exported: Path, source: Path) -> None:
    assert sorted(p.name for p in exported.iterdir()) == sorted(["manifest.json", *FILES])
    manifest = json.loads((exported / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["format"] == "memos-cube-export"
    assert manifest["format_version"] == 1
    assert manifest["cube"]["name"] == CUBE
    assert manifest["cube"]["owner"] == "alice"
    for name in FILES:
        digest = hashlib.sha256((exported / name).read_bytes()).hexdigest()
        assert manifest["files"][name] == digest
    with _open(source) as mos:
        events, items = mos.log(CUBE), list(mos.store.iter_items(CUBE))
    assert manifest["head"] == {"seq": events[-1].seq, "hash": events[-1].hash}
    assert manifest["counts"]["events"] == len(events)
    assert manifest["counts"]["items"] == len(items)
    lines = (exported / "events.jsonl").read_text(encoding="utf-8").splitlines()
    assert [json.loads(line)["seq"] for line in lines] == [e.seq for e in events]
    item_lines = (exported / "items.jsonl").read_text(encoding="utf-8").splitlines()
    assert {json.loads(line)["id"] for line in item_lines} == {i.id for i in items}
    # Deleted items travel too, so the projection can be checked against the log.
    assert any(json.loads(line)["status"] == "deleted" for line in item_lines)


def test_export_holds_no_pickle(exported: Path) -> None:
    for path in exported.iterdir():
        data = path.read_bytes()
        # Every pickle protocol >= 2 starts with PROTO (0x80); protocols 0-1 are not JSON.
        assert not data.startswith(b"\x80"), path.name
        assert b"numpy.core.multiarray" not in data
        assert b"torch._utils" not in data
    for name in ("manifest.json",):
        json.loads((exported / name).read_text(encoding="utf-8"))
    for name in ("events.jsonl", "items.jsonl"):
        for line in (exported / name).read_text(encoding="utf-8").splitlines():
            json.loads(line)
    # safetensors: an 8-byte little-endian header length, a JSON header, then raw bytes.
    raw = (exported / "vectors.safetensors").read_bytes()
    (header_len,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + header_len])
    assert header["vectors"]["dtype"] == "F32"
    assert header["vectors"]["shape"][1] == 64
    tensors = load_file(exported / "vectors.safetensors")
    assert set(tensors) == {"vectors"}
    assert np.isfinite(tensors["vectors"]).all()


# --- round trip -------------------------------------------------------------------------------


def test_import_into_a_fresh_data_dir_is_identical(
    source: Path, export_copy: Path, tmp_path: Path
) -> None:
    with _open(source) as mos:
        events = mos.log(CUBE)
        items = {item.id: item for item in mos.store.iter_items(CUBE)}
        vectors = mos.store.get_vectors(sorted(items))
        results = _results(mos)
        cube_info = mos.get_cube(CUBE)

    with _open(tmp_path / "target") as target:
        assert target.import_cube(export_copy) == cube_info
        assert target.get_cube(CUBE) == cube_info
        # The same events: seqs, hashes, payloads, timestamps, actors, all of it.
        imported = target.log(CUBE)
        assert imported == events
        assert [e.hash for e in imported] == [e.hash for e in events]
        assert [e.payload for e in imported] == [e.payload for e in events]
        assert target.store.head(CUBE) == (events[-1].seq, events[-1].hash)
        report = target.verify(CUBE)
        assert report.ok, report
        assert report.events == len(events)
        assert {item.id: item for item in target.store.iter_items(CUBE)} == items
        got_vectors = target.store.get_vectors(sorted(items))
        assert set(got_vectors) == set(vectors)
        for item_id, vector in vectors.items():
            np.testing.assert_array_equal(got_vectors[item_id], vector)
        assert _results(target) == results
        # History, diff and rollback work on the imported cube as on the original.
        lisbon = next(i for i in items.values() if i.text.startswith("Alice moved to Lisbon"))
        assert [h.version for h in target.history(lisbon.id)] == [1, 2, 3]
        target.update(lisbon.id, "Alice now lives in Madrid", user="alice")
        assert target.verify(CUBE).ok

    # The imported history survives a reopen unchanged.
    with _open(tmp_path / "target") as target:
        assert target.log(CUBE)[: len(events)] == events


def test_import_then_export_round_trips(export_copy: Path, tmp_path: Path) -> None:
    with _open(tmp_path / "target") as target:
        target.import_cube(export_copy)
        again = target.export_cube(CUBE, tmp_path / "again")
    for name in FILES:
        assert (again / name).read_bytes() == (export_copy / name).read_bytes(), name


def test_import_over_an_existing_cube_is_refused(source: Path, export_copy: Path) -> None:
    with _open(source) as mos:
        before = mos.log(CUBE)
        with pytest.raises(CubeExists) as caught:
            mos.import_cube(export_copy)
        assert caught.value.status == 409
        assert mos.log(CUBE) == before
        assert mos.verify(CUBE).ok


def test_export_into_a_non_empty_dir_is_refused(source: Path, tmp_path: Path) -> None:
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("mine", encoding="utf-8")
    a_file = tmp_path / "a-file"
    a_file.write_text("mine", encoding="utf-8")
    with _open(source) as mos:
        for target in (busy, a_file):
            with pytest.raises(InvalidInput) as caught:
                mos.export_cube(CUBE, target)
            assert caught.value.status == 422
    assert [p.name for p in busy.iterdir()] == ["keep.txt"]
    assert a_file.read_text(encoding="utf-8") == "mine"


# --- tampering --------------------------------------------------------------------------------


def _read_lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


def _write_lines(path: Path, lines: list[str]) -> None:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def _edit_line(
    name: str, index: int, edit: Callable[[dict[str, Any]], None]
) -> Callable[[Path], None]:
    def apply(export: Path) -> None:
        lines = _read_lines(export / name)
        record = json.loads(lines[index])
        edit(record)
        lines[index] = json.dumps(record)
        _write_lines(export / name, lines)

    return apply


def _fix_checksums(export: Path) -> None:
    """What a careful forger does after an edit: make the manifest agree with the files."""
    manifest_path = export / "manifest.json"
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    for name in FILES:
        manifest["files"][name] = hashlib.sha256((export / name).read_bytes()).hexdigest()
    manifest_path.write_text(json.dumps(manifest), encoding="utf-8")


def _edit_manifest(edit: Callable[[dict[str, Any]], None]) -> Callable[[Path], None]:
    def apply(export: Path) -> None:
        path = export / "manifest.json"
        manifest = json.loads(path.read_text(encoding="utf-8"))
        edit(manifest)
        path.write_text(json.dumps(manifest), encoding="utf-8")

    return apply


def _then(*steps: Callable[[Path], None]) -> Callable[[Path], None]:
    def apply(export: Path) -> None:
        for step in steps:
            step(export)

    return apply


def _set_event_text(record: dict[str, Any]) -> None:
    record["payload"]["after"]["text"] = "Alice moved to Mars"


def _set_item_text(record: dict[str, Any]) -> None:
    record["text"] = "a quietly rewritten memory"


def _resurrect_deleted_item(export: Path) -> None:
    lines = _read_lines(export / "items.jsonl")
    records = [json.loads(line) for line in lines]
    index = next(n for n, r in enumerate(records) if r["status"] == "deleted")
    records[index]["status"] = "active"
    _write_lines(export / "items.jsonl", [json.dumps(r) for r in records])


def _drop_last(name: str) -> Callable[[Path], None]:
    def apply(export: Path) -> None:
        _write_lines(export / name, _read_lines(export / name)[:-1])

    return apply


def _swap_events(export: Path) -> None:
    lines = _read_lines(export / "events.jsonl")
    lines[2], lines[3] = lines[3], lines[2]
    _write_lines(export / "events.jsonl", lines)


def _duplicate_event(export: Path) -> None:
    lines = _read_lines(export / "events.jsonl")
    _write_lines(export / "events.jsonl", [*lines[:3], lines[2], *lines[3:]])


def _head_to_previous_event(export: Path) -> None:
    lines = _read_lines(export / "events.jsonl")
    last = json.loads(lines[-1])
    manifest_path = export / "manifest.json"
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    manifest["head"] = {"seq": last["seq"], "hash": last["hash"]}
    manifest_path.write_text(json.dumps(manifest), encoding="utf-8")


def _flip_vector_bytes(export: Path) -> None:
    path = export / "vectors.safetensors"
    data = bytearray(path.read_bytes())
    data[-8:] = b"\xff" * 8
    path.write_bytes(bytes(data))


Matrix = NDArray[Any]
VectorEdit = Callable[[Matrix, list[str]], tuple[Matrix, list[str]]]


def _rewrite_vectors(change: VectorEdit) -> Callable[[Path], None]:
    def apply(export: Path) -> None:
        path = export / "vectors.safetensors"
        matrix = load_file(path)["vectors"]
        with path.open("rb") as handle:
            (header_len,) = struct.unpack("<Q", handle.read(8))
            ids = json.loads(json.loads(handle.read(header_len))["__metadata__"]["ids"])
        matrix, ids = change(matrix, ids)
        save_file({"vectors": matrix}, path, metadata={"ids": json.dumps(ids)})

    return apply


def _nan_vector(matrix: Matrix, ids: list[str]) -> tuple[Matrix, list[str]]:
    matrix = matrix.copy()
    matrix[0, 0] = np.nan
    return matrix, ids


def _drop_vector(matrix: Matrix, ids: list[str]) -> tuple[Matrix, list[str]]:
    return matrix[1:], ids[1:]


def _wrong_dim(matrix: Matrix, ids: list[str]) -> tuple[Matrix, list[str]]:
    return np.ascontiguousarray(matrix[:, :32]), ids


def _foreign_id(matrix: Matrix, ids: list[str]) -> tuple[Matrix, list[str]]:
    return matrix, ["f" * 32, *ids[1:]]


def _wrong_dtype(matrix: Matrix, ids: list[str]) -> tuple[Matrix, list[str]]:
    return matrix.astype(np.float16), ids


TAMPERINGS: dict[str, Callable[[Path], None]] = {
    "event-line-edited": _edit_line("events.jsonl", 2, _set_event_text),
    "event-line-edited-checksum-fixed": _then(
        _edit_line("events.jsonl", 2, _set_event_text), _fix_checksums
    ),
    "event-actor-edited-checksum-fixed": _then(
        _edit_line("events.jsonl", 3, lambda r: r.update(actor="mallory")), _fix_checksums
    ),
    "event-digest-and-payload-edited-checksum-fixed": _then(
        _edit_line(
            "events.jsonl", 2, lambda r: (_set_event_text(r), r.update(payload_digest="0" * 64))
        ),
        _fix_checksums,
    ),
    "events-reordered-checksum-fixed": _then(_swap_events, _fix_checksums),
    "event-duplicated-checksum-fixed": _then(_duplicate_event, _fix_checksums),
    "event-not-json-checksum-fixed": _then(
        lambda e: (e / "events.jsonl").write_text("{not json\n", encoding="utf-8"), _fix_checksums
    ),
    "last-event-dropped": _drop_last("events.jsonl"),
    "last-event-dropped-checksum-fixed": _then(_drop_last("events.jsonl"), _fix_checksums),
    "last-event-dropped-head-and-checksum-fixed": _then(
        _drop_last("events.jsonl"), _head_to_previous_event, _fix_checksums
    ),
    "item-line-edited": _edit_line("items.jsonl", 0, _set_item_text),
    "item-line-edited-checksum-fixed": _then(
        _edit_line("items.jsonl", 0, _set_item_text), _fix_checksums
    ),
    "item-resurrected-checksum-fixed": _then(_resurrect_deleted_item, _fix_checksums),
    "item-dropped-checksum-fixed": _then(_drop_last("items.jsonl"), _fix_checksums),
    "item-moved-to-other-cube-checksum-fixed": _then(
        _edit_line("items.jsonl", 0, lambda r: r.update(cube="elsewhere")), _fix_checksums
    ),
    "manifest-owner-changed": _edit_manifest(lambda m: m["cube"].update(owner="mallory")),
    "manifest-cube-renamed": _edit_manifest(lambda m: m["cube"].update(name="stolen")),
    "manifest-dim-changed": _edit_manifest(lambda m: m["cube"].update(dim=32)),
    "manifest-head-hash-changed": _edit_manifest(lambda m: m["head"].update(hash="a" * 64)),
    "manifest-head-seq-changed": _edit_manifest(lambda m: m["head"].update(seq=3)),
    "manifest-checksum-removed": _edit_manifest(lambda m: m["files"].pop("items.jsonl")),
    "manifest-not-json": lambda e: (e / "manifest.json").write_text("{", encoding="utf-8"),
    "manifest-wrong-format": _edit_manifest(lambda m: m.update(format="zip")),
    "manifest-without-head": _edit_manifest(lambda m: m.pop("head")),
    "vectors-corrupted": _flip_vector_bytes,
    "vectors-garbage-checksum-fixed": _then(
        lambda e: (e / "vectors.safetensors").write_bytes(b"\x80\x04garbage"), _fix_checksums
    ),
    "vectors-truncated-checksum-fixed": _then(
        lambda e: (e / "vectors.safetensors").write_bytes(
            (e / "vectors.safetensors").read_bytes()[:100]
        ),
        _fix_checksums,
    ),
    "vectors-nan-checksum-fixed": _then(_rewrite_vectors(_nan_vector), _fix_checksums),
    "vectors-row-dropped-checksum-fixed": _then(_rewrite_vectors(_drop_vector), _fix_checksums),
    "vectors-wrong-dim-checksum-fixed": _then(_rewrite_vectors(_wrong_dim), _fix_checksums),
    "vectors-foreign-id-checksum-fixed": _then(_rewrite_vectors(_foreign_id), _fix_checksums),
    "vectors-fp16-checksum-fixed": _then(_rewrite_vectors(_wrong_dtype), _fix_checksums),
    "events-missing": lambda e: (e / "events.jsonl").unlink(),
    "items-missing": lambda e: (e / "items.jsonl").unlink(),
    "vectors-missing": lambda e: (e / "vectors.safetensors").unlink(),
}


@pytest.fixture
def bystander(tmp_path: Path) -> Path:
    """A target data dir that already holds another cube, which an import must not touch."""
    data_dir = tmp_path / "target"
    with _open(data_dir) as mos:
        mos.create_cube("bystander", owner="bob")
        mos.add("an unrelated memory", cube="bystander")
    return data_dir


def _state(data_dir: Path) -> tuple[list[Any], list[Any], list[Any]]:
    with _open(data_dir) as mos:
        cubes = mos.list_cubes()
        return cubes, mos.log("bystander"), list(mos.store.iter_items("bystander"))


def _assert_refused(
    data_dir: Path, export: Path, error: type[MemosError] = TamperedExport
) -> MemosError:
    before = _state(data_dir)
    with _open(data_dir) as mos, pytest.raises(error) as caught:
        mos.import_cube(export)
    assert _state(data_dir) == before
    with _open(data_dir) as mos:
        assert [c.name for c in mos.list_cubes()] == ["bystander"]
        assert mos.get_cube("bystander").owner == "bob"
        assert mos.verify("bystander").ok
    assert not (data_dir / "index" / f"{CUBE}.json").exists()
    return caught.value


@pytest.mark.parametrize("tampering", sorted(TAMPERINGS))
def test_tampered_export_is_refused(export_copy: Path, bystander: Path, tampering: str) -> None:
    TAMPERINGS[tampering](export_copy)
    error = _assert_refused(bystander, export_copy)
    assert error.status == 422
    assert error.code == "tampered_export"
    assert error.to_dict()["error"]["code"] == "tampered_export"


def test_export_without_manifest_is_not_an_export(export_copy: Path, bystander: Path) -> None:
    (export_copy / "manifest.json").unlink()
    _assert_refused(bystander, export_copy, InvalidInput)
    _assert_refused(bystander, export_copy.parent / "no-such-dir", InvalidInput)


def test_unsupported_format_version_is_refused(export_copy: Path, bystander: Path) -> None:
    _edit_manifest(lambda m: m.update(format_version=99))(export_copy)
    _assert_refused(bystander, export_copy, InvalidInput)


def test_untampered_copy_imports_next_to_a_bystander(export_copy: Path, bystander: Path) -> None:
    """The control for the tampering tests: the same copy, untouched, imports fine."""
    with _open(bystander) as mos:
        mos.import_cube(export_copy)
        assert sorted(c.name for c in mos.list_cubes()) == ["bystander", CUBE]
        assert mos.verify(CUBE).ok
        assert mos.verify("bystander").ok
        statuses = {item.status for item in mos.store.iter_items(CUBE)}
        assert statuses == {ItemStatus.ACTIVE, ItemStatus.DELETED}
