"""Portable cube exports: a directory of JSON, JSON Lines and safetensors, never pickle.

::

    manifest.json        format, version, cube config, chain head, counts, sha256 of each file
    events.jsonl         the full event log, payloads included, oldest first
    items.jsonl          the item projection (every status)
    vectors.safetensors  one float32 row per item; the row order is in the header's "ids"
    codec_state.safetensors   only for a cube whose codec is fitted: the state blob the cube's
                         configuration names (its sha256 is that name), so the imported cube
                         encodes exactly as the exported one
    derived/<sha256>.safetensors   the blob of each derived artifact (KV cache) the log
                         leaves standing; the log's ``kv_build`` event names its sha256

An import trusts nothing: every checksum, the hash chain, the head, the cube record in the
first event and the items (which must equal the replay of the events) are checked first.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import ValidationError
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save_file

from memos._chain import vector_digest, verify_chain
from memos._codec_state import codec_from_blob
from memos._derived import ADAPTER_KIND, KV_KIND, standing
from memos._encoding import configured_cube
from memos._store import CubeImport, Store, Vector
from memos._types import CubeInfo, DerivedEntry, Event, EventOp, MemoryItem, utcnow
from memos.errors import (
    CorruptArtifact,
    IntegrityError,
    InvalidInput,
    StorageError,
    TamperedExport,
)

FORMAT = "memos-cube-export"
FORMAT_VERSION = 1
_FILES = ("events.jsonl", "items.jsonl", "vectors.safetensors")
STATE_FILE = "codec_state.safetensors"
DERIVED_DIR = "derived"


def export_cube(store: Store, info: CubeInfo, directory: Path) -> Path:
    if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
        raise InvalidInput(f"export directory {directory} exists and is not empty")
    try:
        directory.mkdir(parents=True, exist_ok=True)
        _write_export(store, info, directory)
    except OSError as exc:
        raise StorageError(f"cannot write the export to {directory}: {exc}") from exc
    return directory


def _write_export(store: Store, info: CubeInfo, directory: Path) -> None:
    events = store.events(info.name)
    items = list(store.iter_items(info.name))
    vectors = store.get_vectors([item.id for item in items])
    ids = [item.id for item in items if item.id in vectors]
    _write_lines(directory / "events.jsonl", (e.model_dump_json() for e in events))
    _write_lines(directory / "items.jsonl", (i.model_dump_json() for i in items))
    matrix = np.stack([vectors[i] for i in ids]) if ids else np.zeros((0, info.dim), np.float32)
    save_file(
        {"vectors": matrix.astype(np.float32)},
        directory / "vectors.safetensors",
        metadata={"ids": json.dumps(ids)},
    )
    files = list(_FILES)
    if info.codec_state is not None:
        blob = store.get_blob(info.codec_state)
        if blob is None:
            raise IntegrityError(
                f"cube {info.name!r}: the state blob {info.codec_state} of its codec is missing"
            )
        (directory / STATE_FILE).write_bytes(blob)
        files.append(STATE_FILE)
    files.extend(_write_derived(store, events, directory))
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "exported_at": utcnow().isoformat(),
        "cube": info.model_dump(mode="json"),
        "head": {"seq": events[-1].seq, "hash": events[-1].hash},
        "counts": {"events": len(events), "items": len(items), "vectors": len(ids)},
        "files": {name: _sha256(directory / name) for name in files},
    }
    (directory / "manifest.json").write_text(json.dumps(manifest, indent=2), encoding="utf-8")


def _write_derived(store: Store, events: list[Event], directory: Path) -> list[str]:
    names = []
    for entry in standing(events).values():
        blob = store.get_blob(entry.blob)
        if blob is None:
            raise IntegrityError(f"the blob {entry.blob} of derived artifact {entry.id} is missing")
        name = f"{DERIVED_DIR}/{entry.blob}.safetensors"
        (directory / DERIVED_DIR).mkdir(exist_ok=True)
        (directory / name).write_bytes(blob)
        names.append(name)
    return names


def read_export(directory: Path) -> CubeImport:
    manifest = _manifest(directory)
    fitted = isinstance(manifest.get("cube"), dict) and manifest["cube"].get("codec_state")
    for name in (*_FILES, STATE_FILE) if fitted else _FILES:
        if _sha256(directory / name) != manifest["files"].get(name):
            raise TamperedExport(f"{name} does not match its checksum in the manifest", file=name)
    try:
        cube = CubeInfo.model_validate(manifest["cube"])
        events = [Event.model_validate_json(line) for line in _read_lines(directory, "events")]
        items = [MemoryItem.model_validate_json(line) for line in _read_lines(directory, "items")]
    except (ValidationError, KeyError, TypeError) as exc:
        raise TamperedExport(f"export records are malformed: {exc}") from exc
    vectors = _vectors(directory, cube, items)
    _check_history(manifest, cube, events, items, vectors)
    blobs = {} if cube.codec_state is None else {cube.codec_state: _codec_state(directory, cube)}
    derived = _standing_derived(events, cube)
    blobs.update({entry.blob: _derived_blob(directory, entry) for entry in derived})
    return CubeImport(
        cube=cube, events=events, items=items, vectors=vectors, blobs=blobs, derived=derived
    )


def _standing_derived(events: list[Event], cube: CubeInfo) -> list[DerivedEntry]:
    try:
        derived = list(standing(events).values())
    except ValidationError as exc:
        raise TamperedExport(f"the log records a malformed derived artifact: {exc}") from exc
    if any(entry.cube != cube.name for entry in derived):
        raise TamperedExport("a derived artifact of the log belongs to another cube")
    return derived


def _derived_blob(directory: Path, entry: DerivedEntry) -> bytes:
    """A derived artifact's blob: the one its (verified) ``kv_build`` event names, and a KV
    cache that passes the strict loader, so importing runs none of its content."""
    path = directory / DERIVED_DIR / f"{entry.blob}.safetensors"
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise TamperedExport(f"the blob of derived artifact {entry.id} is missing") from exc
    if hashlib.sha256(data).hexdigest() != entry.blob:
        raise TamperedExport(f"the blob of derived artifact {entry.id} is not the one logged")
    try:
        _check_artifact(entry, data)
    except CorruptArtifact as exc:
        raise TamperedExport(f"derived artifact {entry.id}: {exc.message}") from exc
    return data


def _check_artifact(entry: DerivedEntry, data: bytes) -> None:
    """The strict loader of the artifact's kind accepts ``data``; no model is needed."""
    if entry.kind == KV_KIND:
        from memos.activation import KVEntry, cache_from_bytes

        cache_from_bytes(data, KVEntry.from_derived(entry).manifest)
    elif entry.kind == ADAPTER_KIND:
        from memos.parametric import AdapterEntry
        from memos.parametric._weights import check_blob

        check_blob(data, AdapterEntry.from_derived(entry).manifest)
    else:
        raise CorruptArtifact(f"unknown kind of derived artifact {entry.kind!r}")


def _manifest(directory: Path) -> dict[str, Any]:
    path = directory / "manifest.json"
    if not path.is_file():
        raise InvalidInput(f"{directory} is not a MemOS export (no manifest.json)")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise TamperedExport(f"manifest.json is unreadable: {exc}") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise TamperedExport("manifest.json is not a MemOS cube export manifest")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise InvalidInput(f"export format version {manifest.get('format_version')} unsupported")
    if not isinstance(manifest.get("files"), dict) or not isinstance(manifest.get("head"), dict):
        raise TamperedExport("manifest.json lacks its file checksums or chain head")
    return manifest


def _check_history(
    manifest: dict[str, Any],
    cube: CubeInfo,
    events: list[Event],
    items: list[MemoryItem],
    vectors: dict[str, Vector],
) -> None:
    if not events or events[0].op != EventOp.CUBE_CREATE:
        raise TamperedExport("the log does not start with the cube's creation")
    head = (manifest["head"].get("seq"), manifest["head"].get("hash"))
    digests = {item_id: vector_digest(vector) for item_id, vector in vectors.items()}
    report = verify_chain(cube.name, events, head=head, items=items, vectors=digests)
    if not report.ok:
        raise TamperedExport(
            f"the exported log does not verify at seq {report.first_bad_seq}: {report.problem}",
            seq=report.first_bad_seq,
        )
    try:
        configured = configured_cube(events)
    except ValidationError as exc:
        raise TamperedExport(f"the log records a malformed cube configuration: {exc}") from exc
    if configured != cube:
        raise TamperedExport("the manifest's cube differs from the one the log configured")
    if any(item.cube != cube.name for item in items):
        raise TamperedExport("an exported item belongs to another cube")


def _vectors(directory: Path, cube: CubeInfo, items: list[MemoryItem]) -> dict[str, Vector]:
    path = directory / "vectors.safetensors"
    try:
        with safe_open(path, framework="numpy") as handle:
            names = set(handle.keys())
            ids = json.loads((handle.metadata() or {}).get("ids", "[]"))
            matrix = handle.get_tensor("vectors") if names == {"vectors"} else None
    except (SafetensorError, OSError, ValueError) as exc:
        raise TamperedExport(f"vectors.safetensors is unreadable: {exc}") from exc
    if (
        matrix is None
        or not isinstance(ids, list)
        or matrix.dtype != np.float32
        or matrix.shape != (len(ids), cube.dim)
        or sorted(ids) != sorted(item.id for item in items)
        or not np.isfinite(matrix).all()
    ):
        raise TamperedExport("vectors.safetensors does not hold one finite vector per item")
    return {item_id: matrix[row] for row, item_id in enumerate(ids)}


def _codec_state(directory: Path, cube: CubeInfo) -> bytes:
    """The state blob, which must be the one the (verified) configuration names, and usable."""
    data = (directory / STATE_FILE).read_bytes()
    if hashlib.sha256(data).hexdigest() != cube.codec_state:
        raise TamperedExport(f"{STATE_FILE} is not the codec state the cube's log names")
    try:
        codec_from_blob(cube, data)
    except IntegrityError as exc:
        raise TamperedExport(exc.message) from exc
    return data


def _write_lines(path: Path, lines: Any) -> None:
    with path.open("w", encoding="utf-8") as handle:
        for line in lines:
            handle.write(line + "\n")


def _read_lines(directory: Path, stem: str) -> list[str]:
    text = (directory / f"{stem}.jsonl").read_text(encoding="utf-8")
    return [line for line in text.splitlines() if line.strip()]


def _sha256(path: Path) -> str:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError as exc:
        raise TamperedExport(f"{path.name} is missing from the export", file=path.name) from exc
