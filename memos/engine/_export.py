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
first event and the items (which must equal the replay of the events) are checked first. A
sender can recompute checksums and the chain after any edit, so that proves only that the
files agree; past it, every file must also be what this library writes: UTF-8 JSON objects of
finite numbers, 64-bit integers and valid Unicode, times that exist in UTC, a cube name and
configuration this library can open, states, configurations and derived artifacts of this cube
alone (what rollback brings back never names another), and blobs that pass the strict loaders.
Anything else is a typed error before the store is touched.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import re
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
from pydantic import BaseModel, ValidationError
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save_file

from memos.codecs import make_codec
from memos.core import _validation as check
from memos.core._chain import vector_digest, verify_chain
from memos.core._derived import ADAPTER_KIND, BUILD_OPS, KV_KIND, REPLACE_OPS, slot_key, standing
from memos.core._store import CubeImport, Store
from memos.core._types import CubeInfo, DerivedEntry, Event, EventOp, MemoryItem, utcnow
from memos.errors import (
    CorruptArtifact,
    IntegrityError,
    InvalidInput,
    StorageError,
    TamperedExport,
)
from memos.plaintext._codec_state import codec_from_blob
from memos.plaintext._encoding import CONFIG_OPS, configured_cube

if TYPE_CHECKING:
    from memos.core._store import Vector

FORMAT = "memos-cube-export"
FORMAT_VERSION = 1
_FILES = ("events.jsonl", "items.jsonl", "vectors.safetensors")
STATE_FILE = "codec_state.safetensors"
DERIVED_DIR = "derived"
# deeper than any record this library writes (an event payload holds an item's metadata)
MAX_DEPTH = 32
_DIGEST = re.compile(r"[0-9a-f]{64}")
# text decoded from UTF-8 holds no surrogate: one can only come from a \uD800-\uDFFF escape
_ESCAPED_SURROGATE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")
# numbers pydantic's own JSON parser would let through: NaN or Infinity, an integer that may
# pass 64 bits, a float whose exponent may overflow (a number starts after a colon, a comma or
# a bracket; text of that shape inside a string only sends the line the careful way)
_RISKY_NUMBER = re.compile(r"[:,\[]\s*-?(?:NaN|Infinity|\d{19,}|\d[\d.]*[eE][+-]?\d{3,})")
_DERIVED_OPS = frozenset(BUILD_OPS.values()) | REPLACE_OPS
M = TypeVar("M", bound=BaseModel)


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
    cube = _cube(manifest["cube"])
    for name in (*_FILES, STATE_FILE) if cube.codec_state is not None else _FILES:
        if _sha256(directory / name) != manifest["files"].get(name):
            raise TamperedExport(f"{name} does not match its checksum in the manifest", file=name)
    events = _records(directory, "events", Event)
    items = _records(directory, "items", MemoryItem)
    vectors = _vectors(directory, cube, items)
    _check_history(manifest, cube, events, items, vectors)
    _check_payloads(cube, events)
    blobs = {} if cube.codec_state is None else {cube.codec_state: _codec_state(directory, cube)}
    derived = _standing_derived(events, cube, items)
    blobs.update({entry.blob: _derived_blob(directory, entry) for entry in derived})
    return CubeImport(
        cube=cube, events=events, items=items, vectors=vectors, blobs=blobs, derived=derived
    )


def _cube(record: Any) -> CubeInfo:
    """The manifest's cube, a configuration this library can open: a valid name (it becomes
    keys and file names), a positive dimension and a codec that encodes it."""
    cube = _model(CubeInfo, record, "the manifest's cube")
    namespace, _ = check.split_cube_ref(check.cube_ref(cube.name))
    if namespace not in (None, cube.owner):
        raise TamperedExport(f"the manifest's cube {cube.name!r} is not in its owner's namespace")
    if cube.dim < 1:
        raise TamperedExport(f"the manifest's cube has {cube.dim} dimensions")
    if cube.codec_state is not None and not _DIGEST.fullmatch(cube.codec_state):
        raise TamperedExport("the manifest's cube names a codec state that is no sha256")
    if cube.codec_state is None:
        make_codec(cube.codec).projected_dim(cube.dim)
    return cube


def _standing_derived(
    events: list[Event], cube: CubeInfo, items: list[MemoryItem]
) -> list[DerivedEntry]:
    try:
        derived = list(standing(events).values())
    except ValidationError as exc:
        raise TamperedExport(f"the log records a malformed derived artifact: {exc}") from exc
    slots = [slot_key(entry) for entry in derived]
    if len(set(slots) - {None}) != len(slots) - slots.count(None):
        raise TamperedExport("two standing adapter versions of the log share a name and version")
    known = {item.id for item in items}
    for entry in derived:
        if any(source.item_id not in known for source in entry.sources):
            raise TamperedExport(f"derived artifact {entry.id} was built from another cube's item")
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
        raise InvalidInput("the directory is not a MemOS export (no manifest.json)")
    manifest = _json(_text(path), "manifest.json")
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise TamperedExport("manifest.json is not a MemOS cube export manifest")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise InvalidInput(f"export format version {manifest.get('format_version')} unsupported")
    files, head = manifest.get("files"), manifest.get("head")
    if not isinstance(files, dict) or not isinstance(head, dict) or "cube" not in manifest:
        raise TamperedExport("manifest.json lacks its cube, file checksums or chain head")
    seq = head.get("seq")
    if isinstance(seq, bool) or not isinstance(seq, int) or not isinstance(head.get("hash"), str):
        raise TamperedExport("the chain head in manifest.json is not a seq and a hash")
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
    head = (manifest["head"]["seq"], manifest["head"]["hash"])
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


def _check_payloads(cube: CubeInfo, events: list[Event]) -> None:
    """Every state the log records is one of this cube's: what history, diff and rollback
    bring back later must never name another cube or another item."""
    for event in events:
        payload = event.payload or {}
        what = f"event {event.seq}"
        after = payload.get("after")
        if after is not None:
            item = _model(MemoryItem, after, f"the item state of {what}")
            if item.id != event.item_id or item.cube != cube.name:
                raise TamperedExport(f"{what} records the state of another item", seq=event.seq)
        if event.op in CONFIG_OPS and "cube" in payload:
            info = _model(CubeInfo, payload["cube"], f"the configuration of {what}")
            if info.name != cube.name:
                raise TamperedExport(f"{what} configures another cube", seq=event.seq)
        built = payload.get("derived")
        if event.op in _DERIVED_OPS and built is not None:
            entry = _model(DerivedEntry, built, f"the derived artifact of {what}")
            if entry.cube != cube.name:
                raise TamperedExport(f"{what} records a derived artifact of another cube")
            if not _DIGEST.fullmatch(entry.blob):
                raise TamperedExport(f"{what} names a blob by something other than its sha256")


def _vectors(directory: Path, cube: CubeInfo, items: list[MemoryItem]) -> dict[str, Vector]:
    """One finite float32 vector per item; the layout is checked before any tensor is read."""
    path = directory / "vectors.safetensors"
    shape = [len(items), cube.dim]
    try:
        with safe_open(path, framework="numpy") as handle:
            metadata = handle.metadata() or {}
            layout = None
            if set(handle.keys()) == {"vectors"}:
                part = handle.get_slice("vectors")
                layout = (part.get_dtype(), part.get_shape())
            matrix = handle.get_tensor("vectors") if layout == ("F32", shape) else None
    except (SafetensorError, OSError, ValueError) as exc:
        raise TamperedExport(f"vectors.safetensors is unreadable: {exc}") from exc
    ids = _json(metadata.get("ids", "[]"), "the ids of vectors.safetensors")
    if (
        matrix is None
        or not isinstance(ids, list)
        or not all(isinstance(item_id, str) for item_id in ids)
        or len(set(ids)) != len(ids)
        or set(ids) != {item.id for item in items}
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


# reading untrusted files -----------------------------------------------------------------------


def _records(directory: Path, stem: str, model: type[M]) -> list[M]:
    """The records of a JSON Lines file, one object per line. Lines end at ``\n`` only: a
    text may hold U+2028 or other characters ``str.splitlines`` would break it at."""
    name = f"{stem}.jsonl"
    records = []
    for number, line in enumerate(_text(directory / name).split("\n"), start=1):
        if line.strip():
            what = f"line {number} of {name}"
            records.append(_record(model, line, what))
    return records


def _record(model: type[M], line: str, what: str) -> M:
    """One line as ``model``. A line that holds nothing the careful read looks for (a surrogate
    escape, a number too large for 64 bits or a float, NaN, nesting past MAX_DEPTH) is parsed
    by pydantic straight from the text, which finds everything else; any other line is read
    carefully first."""
    if _escapes_surrogate(line) or _RISKY_NUMBER.search(line) or _deep(line):
        return _model(model, _json(line, what), what)
    try:
        record = model.model_validate_json(line)
    except ValidationError as exc:
        raise TamperedExport(f"{what} is malformed: {exc}") from None
    return _times_checked(record, what)


def _model(model: type[M], value: Any, what: str) -> M:
    """``value`` (checked JSON) as ``model``, its times aware and still times once in UTC."""
    if not isinstance(value, dict):
        raise TamperedExport(f"{what} is not a JSON object")
    try:
        record = model.model_validate(value)
    except ValidationError as exc:
        raise TamperedExport(f"{what} is malformed: {exc}") from None
    return _times_checked(record, what)


def _times_checked(record: M, what: str) -> M:
    for field in _time_fields(type(record)):
        moment = getattr(record, field)
        if moment is not None and not _utc_safe(moment):
            raise TamperedExport(f"{what}: {field} {moment.isoformat()} is no time in UTC")
    return record


@functools.cache
def _time_fields(model: type[BaseModel]) -> tuple[str, ...]:
    """The fields of ``model`` that hold a time (or ``None``)."""
    return tuple(
        name
        for name, field in model.model_fields.items()
        if field.annotation in (datetime, datetime | None)
    )


def _utc_safe(moment: datetime) -> bool:
    """Whether the chain (which hashes times in UTC) and the stores can hold ``moment``: a
    naive time has no UTC, and 0001-01-01 east of UTC or 9999-12-31 west of it has none
    that a datetime can hold."""
    if moment.utcoffset() is None:
        return False
    if 1 < moment.year < 9999:
        return True  # no offset (under a day) moves it out of the years 1-9999
    try:
        moment.astimezone(UTC)
    except OverflowError:
        return False
    return True


def _json(text: str, what: str) -> Any:
    """Parsed JSON that the chain's canonical encoding and every store can hold again: finite
    numbers, 64-bit integers, valid Unicode, shallow enough to encode without recursion."""
    try:
        value = json.loads(text, parse_constant=_no_constant, parse_float=_finite, parse_int=_int64)
    except (ValueError, RecursionError) as exc:
        raise TamperedExport(f"{what} is not valid JSON: {exc}") from None
    # most lines need no walk at all
    strings = _escapes_surrogate(text)
    problem = _json_problem(value, strings=strings) if strings or _deep(text) else None
    if problem is not None:
        raise TamperedExport(f"{what} {problem}")
    return value


def _escapes_surrogate(text: str) -> bool:
    """Whether ``text`` (decoded from UTF-8, so holding no surrogate itself) may parse into a
    lone surrogate: only a \\uD800-\\uDFFF escape gives one."""
    return "\\u" in text and _ESCAPED_SURROGATE.search(text) is not None


def _deep(text: str) -> bool:
    """Whether ``text`` may nest deeper than MAX_DEPTH: fewer brackets cannot."""
    return text.count("{") + text.count("[") > MAX_DEPTH


def _no_constant(name: str) -> float:
    raise ValueError(f"{name} is not a JSON number")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} is out of the range of a float")
    return value


def _int64(text: str) -> int:
    value = int(text)
    if not -check.INT64 <= value < check.INT64:
        raise ValueError("it holds an integer beyond 64 bits")
    return value


def _json_problem(value: Any, *, strings: bool) -> str | None:
    """What makes parsed JSON unfit beyond what parsing checked: nesting deeper than
    :data:`MAX_DEPTH`, and (only when ``strings``: the text escapes a surrogate) a lone
    surrogate in a key or a value. Only containers are walked unless strings must be read."""
    pending = [(value, 0)]
    while pending:
        node, depth = pending.pop()
        if depth > MAX_DEPTH:
            return f"nests deeper than {MAX_DEPTH} levels"
        if isinstance(node, dict):
            children: Iterable[Any] = node.values()
            if strings and not all(map(check.is_unicode, node)):
                return _LONE_SURROGATE
        elif isinstance(node, list):
            children = node
        else:
            if strings and isinstance(node, str) and not check.is_unicode(node):
                return _LONE_SURROGATE
            continue
        pending.extend(
            (child, depth + 1) for child in children if strings or isinstance(child, dict | list)
        )
    return None


_LONE_SURROGATE = "holds a lone surrogate, which is not Unicode"


def _text(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8")
    except OSError as exc:
        raise TamperedExport(f"{path.name} is missing from the export", file=path.name) from exc
    except UnicodeDecodeError as exc:
        raise TamperedExport(
            f"{path.name} is not UTF-8 (byte {exc.start})", file=path.name
        ) from None


def _write_lines(path: Path, lines: Any) -> None:
    with path.open("w", encoding="utf-8") as handle:
        for line in lines:
            handle.write(line + "\n")


def _sha256(path: Path) -> str:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError as exc:
        raise TamperedExport(f"{path.name} is missing from the export", file=path.name) from exc
