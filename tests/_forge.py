"""The attacker's toolkit for crafted cube exports: after editing any file of an export, make
every check that only proves consistency pass again, so that the edit reaches the checks that
prove something.

A forger who edits ``events.jsonl`` recomputes each event's payload digest and hash (the chain
is public: sha256 over the previous hash and the event's header), points the manifest's head
at the new last event, rewrites ``items.jsonl`` to the state the edited log replays to, names
edited blobs by their new sha256 wherever the log names them, and recomputes every checksum in
``manifest.json``. What is left to refuse such an export is what the import checks beyond
self-consistency.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from memos.core._chain import GENESIS_HASH, event_hash, payload_digest
from memos.core._types import Event
from memos.plaintext._encoding import CONFIG_OPS

Record = dict[str, Any]
_DIGEST_NAME = re.compile(r"[0-9a-f]{64}")


def read_lines(path: Path) -> list[str]:
    return path.read_bytes().decode("utf-8", "surrogateescape").split("\n")[:-1]


def write_lines(path: Path, lines: list[str]) -> None:
    path.write_bytes("".join(f"{line}\n" for line in lines).encode("utf-8", "surrogateescape"))


def records(path: Path) -> list[Record]:
    return [json.loads(line) for line in read_lines(path)]


def write_records(path: Path, values: list[Any]) -> None:
    write_lines(path, [json.dumps(value) for value in values])


def edit_records(path: Path, edit: Callable[[list[Record]], list[Any]]) -> None:
    write_records(path, edit(records(path)))


def manifest(directory: Path) -> Record:
    """The manifest, or an empty one when an edit left it no JSON object (the forger then
    has nothing to fix in it)."""
    try:
        value = json.loads((directory / "manifest.json").read_bytes())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def write_manifest(directory: Path, value: Record) -> None:
    if value:
        (directory / "manifest.json").write_text(json.dumps(value), encoding="utf-8")


def replace_everywhere(directory: Path, old: str, new: str) -> None:
    """Replace a string (an id, a digest, a name) in every text file and safetensors header
    of the export, as a forger renaming something does (escaped as JSON strings are)."""
    old_text, new_text = json.dumps(old)[1:-1], json.dumps(new)[1:-1]
    for path in directory.rglob("*"):
        if path.suffix in (".json", ".jsonl"):
            text = path.read_bytes().decode("utf-8", "surrogateescape")
            path.write_bytes(text.replace(old_text, new_text).encode("utf-8", "surrogateescape"))
        elif path.suffix == ".safetensors":
            # (an earlier edit may have left no JSON header: nothing to rename in it)
            with contextlib.suppress(ValueError):
                set_header(path, lambda value: _replaced(value, old, new))


def _replaced(value: Any, old: str, new: str) -> Any:
    if isinstance(value, str):
        return value.replace(old, new)
    if isinstance(value, list):
        return [_replaced(item, old, new) for item in value]
    if isinstance(value, dict):
        return {_replaced(k, old, new): _replaced(v, old, new) for k, v in value.items()}
    return value


# safetensors ----------------------------------------------------------------------------------


def header(path: Path) -> Any:
    data = path.read_bytes()
    size = int.from_bytes(data[:8], "little")
    return json.loads(data[8 : 8 + size])


def set_header(path: Path, edit: Callable[[Any], Any]) -> None:
    """Rewrite a safetensors file's JSON header (the tensor bytes stay where they were)."""
    data = path.read_bytes()
    size = int.from_bytes(data[:8], "little")
    body = data[8 + size :]
    text = json.dumps(edit(json.loads(data[8 : 8 + size]))).encode("utf-8", "surrogateescape")
    text += b" " * (-len(text) % 8)
    path.write_bytes(len(text).to_bytes(8, "little") + text + body)


# making the consistency checks pass ------------------------------------------------------------


def forge(
    directory: Path, *, reseal: bool = True, renumber: bool = False, reproject: bool = True
) -> None:
    """Make the export consistent again after an edit: blob names, then the chain (``reseal``;
    ``renumber`` gives the events seqs 1..n first), the items (``reproject``), the manifest's
    cube and head, and every checksum."""
    rename_blobs(directory)
    if reseal:
        reseal_chain(directory, renumber=renumber)
    if reproject:
        reproject_items(directory)
    fix_checksums(directory)


def rename_blobs(directory: Path) -> None:
    """Name each blob file by its sha256 again, and the log and manifest with it."""
    state = directory / "codec_state.safetensors"
    named = manifest(directory).get("cube", {})
    old_state = named.get("codec_state") if isinstance(named, dict) else None
    if state.is_file() and isinstance(old_state, str):
        new = hashlib.sha256(state.read_bytes()).hexdigest()
        if new != old_state:
            _rename_text(directory, old_state, new)
    for path in sorted((directory / "derived").glob("*.safetensors")):
        new = hashlib.sha256(path.read_bytes()).hexdigest()
        if _DIGEST_NAME.fullmatch(path.stem) and new != path.stem:
            _rename_text(directory, path.stem, new)
            path.rename(path.with_name(f"{new}.safetensors"))


def _rename_text(directory: Path, old: str, new: str) -> None:
    for name in ("events.jsonl", "manifest.json"):
        path = directory / name
        if path.is_file():
            text = path.read_bytes().decode("utf-8", "surrogateescape")
            path.write_bytes(text.replace(old, new).encode("utf-8", "surrogateescape"))


def reseal_chain(directory: Path, *, renumber: bool = False) -> None:
    """Recompute every event's payload digest, prev_hash and hash, and the manifest's head and
    cube (the configuration the log ends with). Lines that are no event are left as they are,
    and the chain goes on past them."""
    path = directory / "events.jsonl"
    lines = read_lines(path)
    previous, head, cube = GENESIS_HASH, None, None
    for number, line in enumerate(lines):
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if not isinstance(record, dict):
            continue
        if renumber:
            record["seq"] = number + 1
        record["prev_hash"] = previous
        sealed = _sealed(record)
        if sealed is None:
            lines[number] = json.dumps(record)
            continue
        lines[number] = json.dumps(sealed)
        previous, head = sealed["hash"], {"seq": sealed["seq"], "hash": sealed["hash"]}
        payload = sealed.get("payload")
        if sealed.get("op") in CONFIG_OPS and isinstance(payload, dict) and "cube" in payload:
            cube = payload["cube"]
    write_lines(path, lines)
    value = manifest(directory)
    if head is not None:
        value["head"] = head
    if cube is not None:
        value["cube"] = cube
    write_manifest(directory, value)


def _sealed(record: Record) -> Record | None:
    """``record`` with its digest and hash recomputed, or None when it is no event the chain
    can hash (then no forger can seal it either)."""
    payload = record.get("payload")
    try:
        if isinstance(payload, dict):
            record = record | {"payload_digest": payload_digest(payload)}
        event = Event.model_validate(record | {"hash": ""})
        return record | {"hash": event_hash(event)}
    except (ValidationError, ValueError, TypeError, OverflowError, UnicodeEncodeError):
        return None


def reproject_items(directory: Path) -> None:
    """Write ``items.jsonl`` as the state the log replays to: each item's last recorded state."""
    state: dict[str, Any] = {}
    for record in _parsed(directory / "events.jsonl"):
        payload = record.get("payload")
        item_id = record.get("item_id")
        if isinstance(item_id, str) and isinstance(payload, dict) and payload.get("after"):
            state[item_id] = payload["after"]
    if state:
        write_records(directory / "items.jsonl", list(state.values()))


def _parsed(path: Path) -> list[Record]:
    found = []
    for line in read_lines(path):
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            found.append(record)
    return found


def fix_checksums(directory: Path) -> None:
    value = manifest(directory)
    files = value.get("files")
    if isinstance(files, dict):
        names = [*files, *(f"derived/{p.name}" for p in (directory / "derived").glob("*"))]
        value["files"] = {
            name: hashlib.sha256((directory / name).read_bytes()).hexdigest()
            for name in dict.fromkeys(names)
            if (directory / name).is_file()
        }
    write_manifest(directory, value)
