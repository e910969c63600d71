"""Imports are a trust boundary: an export is whatever its sender wrote, checksums and hash
chain included (see ``_forge``), so an import is held to what it may write, not to what it
says it is.

An import creates one cube and touches nothing else: ids are global, and an id another cube
holds is refused (409), never overwritten or re-keyed. Every malformed file, however consistent
its checksums and chain, is a typed error. A refused import writes nothing: no row, no key, no
blob, no data directory. The tests import as the attacker into a store that holds a victim's
cube (memories, a KV cache, an adapter version), on SQLite and on Redis, and compare all of the
victim's state, and the store's blobs, before and after. A fuzz run applies random edits to a
valid export, forges it consistent again and imports it, in process and over HTTP.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from _backends import STORES
from _forge import (
    edit_records,
    fix_checksums,
    forge,
    header,
    manifest,
    read_lines,
    replace_everywhere,
    set_header,
    write_lines,
    write_manifest,
)
from _redis import REDIS_URL, drop_redis_store, fresh_redis_url, prefix_of
from _servers import serve
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from memos.api import ServerSettings

from memos import HashEmbedder, MemOS, open_store
from memos.core._archive import pack
from memos.core._store import CubeImport
from memos.core._types import SourceRef
from memos.engine._export import read_export
from memos.errors import (
    AccessDenied,
    Conflict,
    CorruptArtifact,
    InvalidInput,
    MemosError,
    ModelMismatch,
    NotFound,
    TamperedExport,
)
from memos.llm import LocalModel

CUBE, VICTIM = "heist", "ledger"
ATTACKER, OWNER = "mallory", "bob"
# cube names are per owner: the attacker's ``heist`` is ``mallory:heist``, the name the operator
# and the store know it by; the victim's cube is the operator's, with no namespace
ATTACKERS_CUBE = f"{ATTACKER}:{CUBE}"
# trains in well under a second on the tiny model: what is learnt does not matter here
QUICK = {"max_steps": 3, "learning_rate": 0.01, "batch_size": 2, "recall_every": 3}
TYPED = (TamperedExport, InvalidInput, CorruptArtifact)


# the attacker's export ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Source:
    """A valid export of the attacker's cube: an update, a delete and a rollback, a fitted codec
    (``ivf1+sq8`` fits at 39 vectors), a KV cache and an adapter version; and the adapter alone,
    as ``mos.lora.export`` writes it."""

    export: Path
    adapter: Path
    item_ids: list[str]
    kv_id: str
    adapter_id: str


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory, tiny_model: LocalModel) -> Source:
    root = tmp_path_factory.mktemp("attacker")
    with MemOS.open(root / "data", embedder=HashEmbedder(64), model=tiny_model) as operator:
        mos = operator.as_principal(ATTACKER)
        assert mos.create_cube(CUBE, codec="ivf1+sq8").name == ATTACKERS_CUBE
        facts = mos.add_many(
            ["alice moved to lisbon in may", "the capital of france is paris", "paris in june"],
            cube=CUBE,
        )
        mos.update(facts[0].id, "alice moved to porto in june")
        mos.delete(facts[1].id, reason="asked to")
        mos.rollback(facts[0].id, to_version=1)
        facts += mos.add_many([f"fact {n} where alice is in june" for n in range(40)], cube=CUBE)
        assert mos.get_cube(CUBE).codec_state is not None
        kv = mos.kv.build(CUBE, [facts[0].id, facts[2].id])
        adapter = mos.lora.consolidate(CUBE, [facts[2].id], name="trip", recipe=QUICK)
        export = mos.export_cube(CUBE, root / "export")
        adapter_dir = mos.lora.export(CUBE, "trip", root / "adapter")
    return Source(export, adapter_dir, [f.id for f in facts], kv.id, adapter.id)


@pytest.fixture
def export(source: Source, tmp_path: Path) -> Path:
    """A private copy of the attacker's export, to edit."""
    return Path(shutil.copytree(source.export, tmp_path / "export"))


# the store that holds the victim's cube -----------------------------------------------------------


@dataclass
class World:
    """A store holding the victim's cube (two memories, a KV cache, an adapter version), and
    the operator's handle on it."""

    mos: MemOS
    blob_names: Callable[[], set[str]]
    victim: list[str]
    victim_kv: str
    victim_adapter: str
    # what closes the handle and drops the store (a Redis store's keys)
    release: Callable[[], None] = lambda: None
    released: bool = False

    def close(self) -> None:
        if not self.released:
            self.released = True
            self.mos.close()
            self.release()

    def attacker(self) -> MemOS:
        return self.mos.as_principal(ATTACKER)

    def has_blob(self, digest: str) -> bool:
        return any(name.startswith(digest) for name in self.blob_names())

    def state(self) -> dict[str, Any]:
        """Everything an import must leave as it was when it is refused; the victim's
        memories are also read by id alone, as ids are global."""
        store = self.mos.store
        return {
            "cubes": store.list_cubes(),
            "items": sorted(store.iter_items(VICTIM), key=lambda item: item.id),
            "by_id": store.get_items(self.victim),
            "vectors": {k: v.tobytes() for k, v in store.get_vectors(self.victim).items()},
            "head": store.head(VICTIM),
            "log": store.events(VICTIM),
            "derived": store.derived_entries(VICTIM),
            "verify": self.mos.verify(VICTIM),
            "blobs": self.blob_names(),
        }


def _victim(mos: MemOS, blob_names: Callable[[], set[str]], adapter: Path) -> World:
    assert mos.create_cube(VICTIM, owner=OWNER).name == VICTIM
    items = mos.add_many(
        ["bob keeps the ledger in june", "the capital of france is paris"], cube=VICTIM
    )
    kv = mos.kv.build(VICTIM, [item.id for item in items])
    version = mos.lora.import_adapter(VICTIM, adapter, name="trip")
    return World(mos, blob_names, [item.id for item in items], kv.id, version.id)


def _redis_blobs(url: str) -> set[str]:
    pattern = f"{prefix_of(url)}:blob:*"
    with redis.Redis.from_url(REDIS_URL) as client:
        keys = client.scan_iter(match=pattern, count=10_000)
        return {key.decode().rsplit(":", 1)[1] for key in keys}


@pytest.fixture(scope="module", params=STORES)
def new_world(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    source: Source,
    tiny_model: LocalModel,
) -> Iterator[Callable[[], World]]:
    """Makes worlds on the backend the tests are parametrized with."""
    made: list[World] = []

    def make() -> World:
        if request.param == "sqlite":
            data_dir = tmp_path_factory.mktemp("world") / "data"
            mos = MemOS.open(data_dir, embedder=HashEmbedder(64), model=tiny_model)
            blob_dir = data_dir / "blobs"
            world = _victim(mos, lambda: {p.name for p in blob_dir.iterdir()}, source.adapter)
        else:
            url = fresh_redis_url()
            mos = MemOS(open_store(url), embedder=HashEmbedder(64), model=tiny_model)
            world = _victim(mos, lambda: _redis_blobs(url), source.adapter)
            world.release = lambda: drop_redis_store(url)
        made.append(world)
        return world

    yield make
    for world in made:
        world.close()


@pytest.fixture(scope="module")
def world(new_world: Callable[[], World]) -> World:
    """One world per backend for the tests whose imports are refused: a refusal changes
    nothing, so they can share it (an import that succeeds takes a fresh one)."""
    return new_world()


def refused(
    world: World, directory: Path, error: type[MemosError] | tuple[type[MemosError], ...]
) -> MemosError:
    """Import ``directory`` as the attacker: it must raise ``error`` and change nothing."""
    before = world.state()
    with pytest.raises(error) as caught:
        world.attacker().import_cube(directory)
    assert world.state() == before
    return caught.value


def export_blobs(directory: Path) -> set[str]:
    """The digests of the blobs an export carries (codec state, derived artifacts)."""
    paths = [directory / "codec_state.safetensors", *(directory / "derived").glob("*")]
    return {hashlib.sha256(p.read_bytes()).hexdigest() for p in paths if p.is_file()}


# names are per owner: a principal imports into its own namespace alone ----------------------------


def _in_namespace_of_another(export: Path, name: str) -> None:
    """Make the attacker's export one of cube ``name``: an operator's cube with no namespace
    (still owned by the attacker), or a cube of bob's namespace, owned by bob as bob's own
    export of it would be."""
    owner = OWNER if name.startswith(f"{OWNER}:") else ATTACKER
    if owner == OWNER:
        replace_everywhere(export, ATTACKER, OWNER)
    else:
        replace_everywhere(export, ATTACKERS_CUBE, name)
    forge(export)
    cube = manifest(export)["cube"]
    assert (cube["name"], cube["owner"]) == (name, owner)


@pytest.mark.parametrize("name", [CUBE, f"{OWNER}:{CUBE}"])
def test_an_export_of_a_cube_outside_the_importers_namespace_is_refused_alike(
    new_world: Callable[[], World], export: Path, name: str
) -> None:
    """Were a principal to import a cube outside its namespace, the import would collide (409)
    with a cube of that name that another tenant holds and go in where none is: the answer
    would tell the attacker another tenant's cube names. A principal imports only its own
    namespace's cubes, so the answer is the same 403 whether a cube of that name exists or not,
    and nothing changes either way."""
    _in_namespace_of_another(export, name)
    world = new_world()
    assert world.mos.store.get_cube(name) is None
    absent = refused(world, export, AccessDenied)
    assert world.mos.store.get_cube(name) is None
    made = world.mos.create_cube(name, owner=OWNER)
    assert made.name == name
    world.mos.add("bob keeps the vault in june", cube=name)
    held = world.mos.store.head(name), world.mos.store.events(name), world.mos.verify(name)
    present = refused(world, export, AccessDenied)
    assert (world.mos.store.head(name), world.mos.store.events(name)) == held[:2]
    assert world.mos.verify(name) == held[2]
    assert present.status == absent.status == 403
    assert present.to_dict() == absent.to_dict()
    world.close()


def test_a_cube_outside_its_owners_namespace_is_a_tampered_export(
    world: World, export: Path
) -> None:
    """A cube named in one namespace and owned by another principal is no cube this library
    makes: refused as tampered, by the attacker and by the operator alike."""
    replace_everywhere(export, ATTACKERS_CUBE, f"{OWNER}:{CUBE}")
    forge(export)
    assert (manifest(export)["cube"]["owner"], manifest(export)["cube"]["name"]) == (
        ATTACKER, f"{OWNER}:{CUBE}",
    )  # fmt: skip
    refused(world, export, TamperedExport)
    before = world.state()
    with pytest.raises(TamperedExport):
        world.mos.import_cube(export)
    assert world.state() == before


# ids are global: a taken one is refused -----------------------------------------------------------


def test_the_untouched_export_imports_next_to_the_victim(
    new_world: Callable[[], World], export: Path
) -> None:
    """The control: the attacker's export, unedited and forged again (a no-op), imports."""
    world = new_world()
    forge(export)
    before = world.state()
    info = world.attacker().import_cube(export)
    assert (info.name, info.owner) == (ATTACKERS_CUBE, ATTACKER)
    assert world.mos.verify(ATTACKERS_CUBE).ok
    assert {k: v for k, v in world.state().items() if k not in ("cubes", "blobs")} == {
        k: v for k, v in before.items() if k not in ("cubes", "blobs")
    }
    assert all(world.has_blob(digest) for digest in export_blobs(export))


def test_an_item_id_of_another_cube_is_refused_and_nothing_is_written(
    world: World, export: Path, source: Source
) -> None:
    """Before: the import replaced the victim's memory (text, vector, cube) with the
    attacker's, the victim's cube failed verify and could not be rolled back."""
    replace_everywhere(export, source.item_ids[2], world.victim[0])
    forge(export)
    carried = export_blobs(export)
    assert carried
    assert not any(world.has_blob(digest) for digest in carried)
    error = refused(world, export, Conflict)
    assert error.status == 409
    assert world.victim[0] in error.message
    assert VICTIM not in error.message
    assert OWNER not in error.message
    assert not any(world.has_blob(digest) for digest in carried)


@pytest.mark.parametrize("kind", ["kv", "adapter"])
def test_a_derived_artifact_id_of_another_cube_is_refused(
    world: World, export: Path, source: Source, kind: str
) -> None:
    ours, theirs = {
        "kv": (source.kv_id, world.victim_kv),
        "adapter": (source.adapter_id, world.victim_adapter),
    }[kind]
    replace_everywhere(export, ours, theirs)
    forge(export)
    assert refused(world, export, Conflict).status == 409
    assert world.mos.store.derived_entries(ATTACKERS_CUBE) == []


def test_a_derived_artifact_built_from_another_cubes_memory_is_refused(
    world: World, export: Path, source: Source
) -> None:
    """An artifact whose sources name the victim's memory would be retired by the victim's
    next change to it: an event written into the attacker's cube by the victim's commit."""

    def foreign(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for record in events:
            if record["op"] == "kv_build":
                record["payload"]["derived"]["sources"][0]["item_id"] = world.victim[0]
        return events

    edit_records(export / "events.jsonl", foreign)
    forge(export)
    refused(world, export, TamperedExport)


def test_the_store_refuses_a_foreign_source_or_a_misnamed_blob_itself(
    world: World, source: Source
) -> None:
    """The store holds its own line, whoever builds the ``CubeImport``."""
    data = read_export(source.export)
    entry = data.derived[0]
    foreign = entry.model_copy(update={"sources": (SourceRef(item_id=world.victim[0], version=1),)})
    victim_blob = world.mos.store.derived_entries(VICTIM)[0].blob
    stored = world.mos.store.get_blob(victim_blob)
    bad = [
        CubeImport(**{**vars(data), "derived": [foreign, *data.derived[1:]]}),
        CubeImport(**{**vars(data), "blobs": {**data.blobs, victim_blob: b"other bytes"}}),
        CubeImport(**{**vars(data), "items": [*data.items, data.items[0]]}),
        CubeImport(**{**vars(data), "events": []}),
    ]
    for case in bad:
        before = world.state()
        with pytest.raises(InvalidInput):
            world.mos.store.import_cube(case)
        assert world.state() == before
    assert world.mos.store.get_blob(victim_blob) == stored


@pytest.mark.parametrize("field", ["id", "cube"])
def test_a_recorded_state_of_another_item_or_cube_is_refused(
    world: World, export: Path, source: Source, field: str
) -> None:
    """History, diff and rollback bring recorded states back: one that names the victim's
    memory (or cube) would be written there by the attacker's next rollback."""
    value = world.victim[0] if field == "id" else VICTIM

    def edit(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        update = next(e for e in events if e["op"] == "update")
        update["payload"]["after"][field] = value
        return events

    edit_records(export / "events.jsonl", edit)
    forge(export)
    refused(world, export, TamperedExport)


def test_a_configuration_of_another_cube_in_the_log_is_refused(world: World, export: Path) -> None:
    def edit(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        next(e for e in events if e["op"] == "codec_fit")["payload"]["cube"]["name"] = VICTIM
        return events

    edit_records(export / "events.jsonl", edit)
    forge(export)
    refused(world, export, TamperedExport)


def test_memories_with_line_separators_survive_export_and_import(
    world: World, new_world: Callable[[], World], tmp_path: Path
) -> None:
    """JSON Lines end at ``\\n``: before, the reader split lines where ``str.splitlines`` does
    (U+2028, U+0085, U+001C, ...), so a valid export of such a memory was refused."""
    texts = ["one\u2028two", "three\x85four", "five\x1csix", "seven\u2029eight\x0bnine"]
    attacker = world.attacker()
    name = attacker.create_cube("separators").name
    assert name == f"{ATTACKER}:separators"
    added = attacker.add_many(texts, cube="separators")
    exported = attacker.export_cube("separators", tmp_path / "separators")
    target = new_world()
    assert target.attacker().import_cube(exported).name == name
    assert [target.mos.get(item.id).text for item in added] == texts
    assert target.mos.verify(name).ok


# malformed files, checksums and chain forged to match ---------------------------------------------

Edit = Callable[[Path], None]
EventEdit = Callable[[dict[str, Any]], None]


def on_event(op: str, edit: EventEdit, nth: int = 0, **forging: bool) -> Edit:
    """Edit the ``nth`` event of ``op``, then forge the export consistent again."""

    def apply(export: Path) -> None:
        def change(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
            edit([event for event in events if event["op"] == op][nth])
            return events

        edit_records(export / "events.jsonl", change)
        forge(export, **forging)

    return apply


def on_config(edit: Callable[[dict[str, Any]], None]) -> Edit:
    """Edit every configuration the log records (and so the manifest's), then forge."""

    def apply(export: Path) -> None:
        def change(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
            for record in events:
                if "cube" in record["payload"]:
                    edit(record["payload"]["cube"])
            return events

        edit_records(export / "events.jsonl", change)
        forge(export)

    return apply


def on_after(field: str, value: Any) -> Edit:
    """Set a field of a memory's recorded state (and so of the item, once reprojected)."""
    return on_event("create", lambda e: e["payload"]["after"].__setitem__(field, value), nth=10)


def raw(name: str, old: bytes, new: bytes, *, forge_first: Edit | None = None) -> Edit:
    """Replace bytes of a file (after ``forge_first``), then fix the checksums only: bytes no
    JSON encoder writes cannot be sealed into the chain, but the checksums can match."""

    def apply(export: Path) -> None:
        if forge_first is not None:
            forge_first(export)
        for path in (export / name,) if name else (export / "events.jsonl", export / "items.jsonl"):
            data = path.read_bytes()
            assert old in data, (path.name, old)
            path.write_bytes(data.replace(old, new, 1))
        fix_checksums(export)

    return apply


def on_line(name: str, index: int, value: Callable[[Any], Any]) -> Edit:
    def apply(export: Path) -> None:
        lines = read_lines(export / name)
        lines[index] = json.dumps(value(json.loads(lines[index])))
        write_lines(export / name, lines)
        forge(export, reproject=False)

    return apply


def line_text(name: str, index: int, text: str) -> Edit:
    def apply(export: Path) -> None:
        lines = read_lines(export / name)
        lines[index] = text
        write_lines(export / name, lines)
        fix_checksums(export)

    return apply


def on_header(which: str, edit: Callable[[dict[str, Any]], None]) -> Edit:
    """Edit the JSON header of a safetensors file of the export ("vectors", "state", "kv" or
    "adapter"), then forge (renaming an edited blob by its new sha256 where the log names
    it)."""

    def apply(export: Path) -> None:
        set_header(_safetensors(export, which), lambda header: (edit(header), header)[1])
        forge(export)

    return apply


def _safetensors(export: Path, which: str) -> Path:
    if which == "vectors":
        return export / "vectors.safetensors"
    if which == "state":
        return export / "codec_state.safetensors"
    derived = [p for p in (export / "derived").iterdir() if "__metadata__" in header(p)]
    key = "manifest" if which == "kv" else "names"
    return next(p for p in derived if key in header(p)["__metadata__"])


def on_manifest(edit: Callable[[dict[str, Any]], Any]) -> Edit:
    def apply(export: Path) -> None:
        value = manifest(export)
        replaced = edit(value)
        (export / "manifest.json").write_text(
            json.dumps(value if replaced is None else replaced), encoding="utf-8"
        )

    return apply


def _vector_ids(value: Callable[[list[str]], Any]) -> Edit:
    def edit(header: dict[str, Any]) -> None:
        ids = json.loads(header["__metadata__"]["ids"])
        header["__metadata__"]["ids"] = json.dumps(value(ids))

    return on_header("vectors", edit)


def _tensor(name: str, dtype: str, shape: Callable[[list[int]], list[int]]) -> Callable[..., None]:
    def edit(header: dict[str, Any]) -> None:
        header[name] = {**header[name], "dtype": dtype, "shape": shape(header[name]["shape"])}

    return edit


def _nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


def _twice_standing_adapter(export: Path) -> None:
    lines = read_lines(export / "events.jsonl")
    index = next(n for n, line in enumerate(lines) if json.loads(line)["op"] == "adapter_build")
    copy = json.loads(lines[index])
    copy["payload"]["derived"]["id"] = "lora-0000000000000000000000ff"
    lines.insert(index + 1, json.dumps(copy))
    write_lines(export / "events.jsonl", lines)
    forge(export, renumber=True)


def _item_twice(export: Path) -> None:
    lines = read_lines(export / "items.jsonl")
    write_lines(export / "items.jsonl", [*lines, lines[0]])
    fix_checksums(export)


MALFORMED: dict[str, Edit] = {
    # text that is no Unicode
    "events.jsonl not UTF-8": raw("events.jsonl", b"fact 5 ", b"fact \xff "),
    "items.jsonl not UTF-8": raw("items.jsonl", b"fact 5 ", b"fact \xff "),
    "manifest.json not UTF-8": raw("manifest.json", b'"mallory"', b'"mall\xffory"'),
    "a memory with a lone surrogate": on_after("text", "\ud800 escaped"),
    "an actor with a lone surrogate": on_event("create", lambda e: e.update(actor="\udfff")),
    "a metadata key with a lone surrogate": on_after("metadata", {"\udc80": "x"}),
    # records of the wrong shape
    "an event line that is a list": on_line("events.jsonl", 5, lambda r: [r]),
    "an event line that is a string": on_line("events.jsonl", 5, lambda r: "event"),
    "an item line that is a list": on_line("items.jsonl", 0, lambda r: [r]),
    "an item line that is null": on_line("items.jsonl", 0, lambda r: None),
    "an item twice": _item_twice,
    "a payload nested deeply": on_event("create", lambda e: e["payload"].update(x=_nested(60))),
    "a line nested deeper than the parser recurses": line_text(
        "events.jsonl", 9, "[" * 100_000 + "]" * 100_000
    ),
    "a number of 5000 digits": line_text("events.jsonl", 9, '{"seq": 1' + "0" * 5000 + "}"),
    # numbers
    "an integer beyond 64 bits in metadata": on_after("metadata", {"n": 2**64}),
    "a version beyond 64 bits": on_after("version", 2**70),
    "a float beyond the range of a double": raw(
        "", b'"n": 1.5', b'"n": 1e400', forge_first=on_after("metadata", {"n": 1.5})
    ),
    "NaN in a payload": raw(
        "events.jsonl",
        b'"x": 1.5',
        b'"x": NaN',
        forge_first=on_event("create", lambda e: e["payload"].update(x=1.5)),
    ),
    # times
    "a time before year 1 in UTC": on_event(
        "create", lambda e: e.update(ts="0001-01-01T00:00:00+05:00"), nth=10
    ),
    "a time after year 9999 in UTC": on_after("occurred_at", "9999-12-31T23:59:59-05:00"),
    "a time without a zone": on_event("create", lambda e: e.update(ts="2026-01-01T00:00:00")),
    "a time as a huge number": on_after("created_at", 10**30),
    "a time as a number past year 9999": on_after("created_at", 2**62),
    # vectors.safetensors
    "vector ids not JSON": on_header("vectors", lambda h: h["__metadata__"].update(ids="[no")),
    "vector ids an object": _vector_ids(lambda ids: {"a": 1}),
    "vector ids integers": _vector_ids(lambda ids: list(range(len(ids)))),
    "vector ids of mixed types": _vector_ids(lambda ids: [1, "a", {}, *ids[3:]]),
    "vector ids unhashable": _vector_ids(lambda ids: [[1], *ids[1:]]),
    "vector ids duplicated": _vector_ids(lambda ids: [*ids[:-1], ids[0]]),
    "vector ids beyond 64 bits": _vector_ids(lambda ids: [2**64, *ids[1:]]),
    "vector metadata not strings": on_header(
        "vectors", lambda h: h.update(__metadata__={"ids": 5})
    ),
    "vectors bf16": on_header("vectors", _tensor("vectors", "BF16", lambda s: [s[0], 2 * s[1]])),
    "vectors f64": on_header("vectors", _tensor("vectors", "F64", lambda s: [s[0], s[1] // 2])),
    "vectors u8": on_header("vectors", _tensor("vectors", "U8", lambda s: [s[0], 4 * s[1]])),
    "vectors of a negative shape": on_header("vectors", _tensor("vectors", "F32", lambda s: [-1])),
    "vectors past the end of the file": on_header(
        "vectors", lambda h: h["vectors"].update(data_offsets=[0, 10**12])
    ),
    # the codec's fitted state
    "codec state f16": on_header("state", _tensor("centroids", "F16", lambda s: [1, 128])),
    "codec state shapes swapped": on_header(
        "state", _tensor("centroids", "F32", lambda s: [64, 1])
    ),
    "codec state metadata not JSON": on_header(
        "state", lambda h: h.update(__metadata__={"memos": "{"})
    ),
    "codec state of another codec": on_header(
        "state",
        lambda h: h.update(
            __metadata__={"memos": '{"codec": "fp32", "format": "memos-codec-state"}'}
        ),
    ),
    # the KV cache blob
    "kv manifest not JSON": on_header("kv", lambda h: h.update(__metadata__={"manifest": "{"})),
    "kv metadata not strings": on_header("kv", lambda h: h.update(__metadata__={"manifest": 5})),
    "kv token ids as floats": on_header("kv", _tensor("token_ids", "F64", lambda s: s)),
    "kv tensor of another shape": on_header("kv", _tensor("0.k", "F32", lambda s: s[::-1])),
    # the adapter blob
    "adapter metadata of wrong types": on_header(
        "adapter", lambda h: h.update(__metadata__=dict.fromkeys(h["__metadata__"], "[{}]"))
    ),
    "adapter metadata not strings": on_header(
        "adapter", lambda h: h.update(__metadata__={**h["__metadata__"], "names": 5})
    ),
    "adapter mask of another dtype": on_header("adapter", _tensor("mask", "I8", lambda s: s)),
    # derived artifacts as the log records them
    "a derived blob named by a path": on_event(
        "kv_build", lambda e: e["payload"]["derived"].update(blob="../../../../etc/passwd")
    ),
    "adapter parameters beyond 64 bits": on_event(
        "adapter_build", lambda e: e["payload"]["derived"]["manifest"].update(parameters=2**64)
    ),
    "adapter rank a string": on_event(
        "adapter_build", lambda e: e["payload"]["derived"]["manifest"]["lora"].update(r="8")
    ),
    "kv layers a string": on_event(
        "kv_build", lambda e: e["payload"]["derived"]["manifest"].update(layers="2")
    ),
    "a derived artifact of an unknown kind": on_event(
        "kv_build", lambda e: e["payload"]["derived"].update(kind="weird")
    ),
    "two standing versions of one adapter": _twice_standing_adapter,
    # the manifest
    "manifest a list": on_manifest(lambda m: [m]),
    "manifest cube a list": on_manifest(lambda m: m.update(cube=[m["cube"]])),
    "manifest head seq a string": on_manifest(
        lambda m: m["head"].update(seq=str(m["head"]["seq"]))
    ),
    "manifest head seq true": on_manifest(lambda m: m["head"].update(seq=True)),
    "manifest head hash a number": on_manifest(lambda m: m["head"].update(hash=5)),
    "manifest files a list": on_manifest(lambda m: m.update(files=list(m["files"]))),
    "manifest checksums not strings": on_manifest(
        lambda m: m.update(files=dict.fromkeys(m["files"], 5))
    ),
    # configurations this library cannot open
    "a cube of zero dimensions": on_config(lambda c: c.update(dim=0)),
    "an unknown codec": on_config(lambda c: c.update(codec="bogus", codec_state=None)),
    "a projection wider than the vectors": on_config(
        lambda c: c.update(codec="pca128+fp8", codec_state=None)
    ),
    "a codec state that is no digest": on_config(lambda c: c.update(codec_state="../../x")),
    "a cube named by a path": lambda e: (
        replace_everywhere(e, CUBE, "../escape"),
        forge(e),
    )[-1],
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_a_malformed_export_gets_a_typed_error_and_writes_nothing(
    world: World, export: Path, case: str
) -> None:
    MALFORMED[case](export)
    error = refused(world, export, TYPED)
    assert 400 <= error.status < 500


# the CLI ------------------------------------------------------------------------------------------

MEMOS = Path(sys.executable).with_name("memos")


def memos_import(data_dir: Path, export: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(MEMOS), "--data-dir", str(data_dir), "import", str(export)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.slow
def test_a_failed_cli_import_leaves_no_data_dir_behind(export: Path, tmp_path: Path) -> None:
    MALFORMED["a time before year 1 in UTC"](export)
    for data_dir, made in (
        (tmp_path / "new", tmp_path / "new"),
        (tmp_path / "deeper" / "still" / "new", tmp_path / "deeper"),
    ):
        done = memos_import(data_dir, export)
        assert done.returncode == 5, done.stderr
        assert "tampered" in done.stderr or "UTC" in done.stderr
        assert not made.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]


@pytest.mark.slow
def test_a_failed_cli_import_into_a_data_dir_leaves_it_as_it_was(
    export: Path, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    with MemOS.open(data_dir, embedder=HashEmbedder(64)) as mos:
        mos.create_cube(VICTIM, owner=OWNER)
        mos.add("bob keeps the ledger in june", cube=VICTIM)
        before = (mos.list_cubes(), mos.log(VICTIM))
    MALFORMED["vector ids of mixed types"](export)
    done = memos_import(data_dir, export)
    assert done.returncode == 5, done.stderr
    with MemOS.open(data_dir, embedder=HashEmbedder(64), create=False) as mos:
        assert (mos.list_cubes(), mos.log(VICTIM)) == before
        assert mos.verify(VICTIM).ok


# adapters -----------------------------------------------------------------------------------------

DEN = "den"


@pytest.fixture
def den(world: World) -> str:
    """The attacker's own cube in the world, where its adapter imports go: its full name,
    which the attacker, the operator and the store all know it by."""
    name = f"{ATTACKER}:{DEN}"
    if world.mos.store.get_cube(name) is None:
        assert world.attacker().create_cube(DEN).name == name
    return name


def test_an_imported_adapter_is_a_new_version_of_the_importers_cube_alone(
    world: World, den: str, source: Source
) -> None:
    """The victim's adapter was imported from the very same directory: the attacker's import
    is a version of its own, under a fresh id, and the victim's is untouched."""
    before = world.state()
    entry = world.attacker().lora.import_adapter(den, source.adapter, name="trip")
    assert entry.cube == den
    assert entry.id != world.victim_adapter
    after = world.state()
    assert {k: v for k, v in after.items() if k != "blobs"} == {
        k: v for k, v in before.items() if k != "blobs"
    }
    assert world.mos.verify(den).ok
    with pytest.raises((AccessDenied, NotFound)):
        world.attacker().lora.import_adapter(VICTIM, source.adapter, name="trip")
    assert world.state() == after


def _adapter_config(edit: Callable[[dict[str, Any]], Any]) -> Edit:
    def apply(directory: Path) -> None:
        path = directory / "adapter_config.json"
        config = json.loads(path.read_text(encoding="utf-8"))
        replaced = edit(config)
        path.write_text(json.dumps(config if replaced is None else replaced), encoding="utf-8")

    return apply


def _adapter_file(name: str, data: bytes) -> Edit:
    return lambda directory: (directory / name).write_bytes(data)


def _adapter_weights(edit: Callable[[dict[str, Any]], None]) -> Edit:
    def apply(directory: Path) -> None:
        set_header(directory / "adapter_model.safetensors", lambda h: (edit(h), h)[1])

    return apply


def _first_tensor(edit: Callable[[dict[str, Any]], None]) -> Callable[[dict[str, Any]], None]:
    return lambda h: edit(h[next(k for k in sorted(h) if k != "__metadata__")])


MALFORMED_ADAPTERS: dict[str, Edit] = {
    "config not UTF-8": _adapter_file("adapter_config.json", b'{"r": "\xff"}'),
    "config nested deeper than the parser recurses": _adapter_file(
        "adapter_config.json", b"[" * 100_000 + b"]" * 100_000
    ),
    "config a list": _adapter_config(lambda c: [c]),
    "dropout an integer too large for a float": _adapter_config(
        lambda c: c.update(lora_dropout=10**400)
    ),
    "dropout NaN": _adapter_config(lambda c: c.update(lora_dropout=float("nan"))),
    "rank beyond 64 bits": _adapter_config(lambda c: c.update(r=2**70)),
    "targets with a lone surrogate": _adapter_config(lambda c: c.update(target_modules=["\ud800"])),
    "targets of mixed types": _adapter_config(lambda c: c.update(target_modules=[1, "q_proj"])),
    "manifest not UTF-8": _adapter_file("memos_manifest.json", b'{"name": "\xff"}'),
    "manifest a list": _adapter_file("memos_manifest.json", b"[]"),
    "manifest nested deeper than the parser recurses": _adapter_file(
        "memos_manifest.json", b'{"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    ),
    "manifest with a lone surrogate": _adapter_file("memos_manifest.json", b'{"name": "\\ud800"}'),
    "manifest of wrong types": _adapter_file("memos_manifest.json", b'{"base_model": 5}'),
    "weights metadata not strings": _adapter_weights(
        lambda h: h.update(__metadata__={"format": 5})
    ),
    "weights metadata not an object": _adapter_weights(lambda h: h.update(__metadata__=[1])),
    "weights of integers": _adapter_weights(_first_tensor(lambda t: t.update(dtype="I32"))),
    "weights of booleans": _adapter_weights(
        _first_tensor(lambda t: t.update(dtype="BOOL", shape=[t["shape"][0], 4 * t["shape"][1]]))
    ),
    "weights of another shape": _adapter_weights(
        _first_tensor(lambda t: t.update(shape=t["shape"][::-1]))
    ),
    "weights past the end of the file": _adapter_weights(
        _first_tensor(lambda t: t.update(data_offsets=[0, 10**12]))
    ),
    "weights truncated": lambda d: (d / "adapter_model.safetensors").write_bytes(
        (d / "adapter_model.safetensors").read_bytes()[:-7]
    ),
}


@pytest.mark.parametrize("case", sorted(MALFORMED_ADAPTERS))
def test_a_malformed_adapter_directory_gets_a_typed_error_and_writes_nothing(
    world: World, den: str, source: Source, tmp_path: Path, case: str
) -> None:
    directory = Path(shutil.copytree(source.adapter, tmp_path / "adapter"))
    MALFORMED_ADAPTERS[case](directory)
    before = world.state(), world.mos.log(den)
    with pytest.raises((CorruptArtifact, InvalidInput, ModelMismatch)):
        world.attacker().lora.import_adapter(den, directory, name="crafted")
    assert (world.state(), world.mos.log(den)) == before


# fuzz: random edits, forged consistent again ------------------------------------------------------

EXAMPLES = int(os.environ.get("MEMOS_FUZZ_EXAMPLES", "60"))
HTTP_EXAMPLES = 8
# strings that mean something to some check: times beyond UTC, a lone surrogate, a path, names
SPECIAL = (
    "\ud800",
    "0001-01-01T00:00:00+05:00",
    "9999-12-31T23:59:59-05:00",
    "2026-01-01T00:00:00",
    "../../x",
    "",
    CUBE,
    VICTIM,
    OWNER,
    f"{OWNER}:{CUBE}",
    "kv",
    "adapter",
    "0" * 64,
)
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.sampled_from([2**63, -(2**63) - 1, 2**64, 10**30, -1, 0])
    | st.floats()
    | st.text(max_size=6)
    | st.sampled_from(SPECIAL)
)
JSON = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=5,
)


def _paths(value: Any, prefix: tuple[Any, ...] = (), depth: int = 0) -> list[tuple[Any, ...]]:
    """Every place inside a JSON value (keys and indices from the top), to edit one."""
    found = [prefix] if prefix else []
    if depth < 6 and isinstance(value, dict):
        for key, child in value.items():
            found += _paths(child, (*prefix, key), depth + 1)
    elif depth < 6 and isinstance(value, list):
        for index, child in enumerate(value[:8]):
            found += _paths(child, (*prefix, index), depth + 1)
    return found


def _set_in(value: Any, path: tuple[Any, ...], new: Any, *, delete: bool = False) -> None:
    for step in path[:-1]:
        value = value[step]
    if delete and isinstance(value, dict):
        del value[path[-1]]
    else:
        value[path[-1]] = new


def _edit_json(data: st.DataObject, value: Any, specials: list[str]) -> Any:
    """``value`` with one place replaced by any JSON (or one key deleted)."""
    paths = _paths(value)
    if not paths:
        return data.draw(JSON)
    path = data.draw(st.sampled_from(paths))
    new = data.draw(JSON | st.sampled_from(specials))
    _set_in(value, path, new, delete=data.draw(st.booleans()))
    return value


def _loaded(line: str) -> Any:
    """A line as JSON, or as a JSON string when an earlier edit left it no JSON."""
    try:
        return json.loads(line)
    except ValueError:
        return line


def _mutate(data: st.DataObject, export: Path, ours: list[str], theirs: list[str]) -> bool:
    """One random edit of the export; whether it edited ``items.jsonl`` (which the forger
    then leaves as it is, rather than rewriting it from the log)."""
    files = sorted(p for p in export.rglob("*") if p.is_file())
    kinds = ["flip", "truncate", "record", "lines", "header", "manifest", "collide", "rename"]
    kind = data.draw(st.sampled_from(kinds))
    if kind in ("flip", "truncate"):
        path = data.draw(st.sampled_from(files))
        blob = bytearray(path.read_bytes())
        at = data.draw(st.integers(0, max(len(blob) - 1, 0)))
        if kind == "truncate":
            del blob[at:]
        elif blob:
            blob[at] = data.draw(st.integers(0, 255))
        path.write_bytes(bytes(blob))
        return path.name == "items.jsonl"
    if kind in ("record", "lines"):
        path = export / data.draw(st.sampled_from(["events.jsonl", "items.jsonl"]))
        lines = read_lines(path)
        at = data.draw(st.integers(0, len(lines) - 1))
        if kind == "record":
            lines[at] = json.dumps(_edit_json(data, _loaded(lines[at]), [*theirs, *SPECIAL]))
        else:
            other = data.draw(st.integers(0, len(lines) - 1))
            how = data.draw(st.sampled_from(["duplicate", "drop", "swap"]))
            if how == "duplicate":
                lines.insert(other, lines[at])
            elif how == "drop":
                del lines[at]
            else:
                lines[at], lines[other] = lines[other], lines[at]
        write_lines(path, lines)
        return path.name == "items.jsonl"
    if kind == "header":
        path = data.draw(st.sampled_from([p for p in files if p.suffix == ".safetensors"]))
        # (an earlier edit may have left no JSON header to edit)
        with contextlib.suppress(ValueError):
            set_header(path, lambda value: _edit_json(data, value, [*theirs, *SPECIAL]))
    elif kind == "manifest":
        write_manifest(export, _edit_json(data, manifest(export), [*theirs, *SPECIAL]))
    else:
        # an id of the attacker's becomes one of the victim's, or any special string
        targets = theirs if kind == "collide" else list(SPECIAL)
        replace_everywhere(
            export, data.draw(st.sampled_from(ours)), data.draw(st.sampled_from(targets))
        )
    return False


def _shape(message: str) -> str:
    """A refusal's message without its ids and numbers: which check refused, for the
    statistics ``--hypothesis-show-statistics`` prints."""
    return re.sub(r"[0-9a-f]{8,}|[0-9]+", "N", message)[:60]


def _blobs_named(mos: MemOS, cube: str) -> set[str]:
    info = mos.store.get_cube(cube)
    assert info is not None
    named = {entry.blob for entry in mos.store.derived_entries(cube)}
    return named | ({info.codec_state} if info.codec_state else set())


class Fuzzed:
    """The world a fuzz run imports into: a fresh one after an import that succeeds."""

    def __init__(self, make: Callable[[], World]) -> None:
        self.make = make
        self.world = make()

    def theirs(self) -> list[str]:
        """The victim's ids, for the attacker to take."""
        world = self.world
        return [*world.victim, world.victim_kv, world.victim_adapter]

    def attempt(self, export: Path) -> None:
        """Import as the attacker: a typed 4xx that changes nothing, or a cube that verifies
        beside the victim's, which stays as it was. Any other exception fails the test."""
        world = self.world
        before = world.state()
        try:
            info = world.attacker().import_cube(export)
        except MemosError as error:
            refusal = error
        else:
            refusal = None
        if refusal is not None:
            event(f"refused: {refusal.code}: {_shape(refusal.message)}")
            assert 400 <= refusal.status < 500, refusal.to_dict()
            assert world.state() == before
            return
        event("imported")
        assert world.mos.verify(info.name).ok
        after = world.state()
        for key in ("items", "by_id", "vectors", "head", "log", "derived", "verify"):
            assert after[key] == before[key], key
        new = {name[:64] for name in after["blobs"] - before["blobs"]}
        assert new <= _blobs_named(world.mos, info.name)
        world.close()
        self.world = self.make()


# replayable runs (no example database, a fixed seed); setup is slow by design
FUZZING = settings(
    deadline=None, database=None, derandomize=True, suppress_health_check=list(HealthCheck)
)


def _fresh_copy(source: Source, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """A copy of the attacker's export to mutate, and the ids of its own that it holds."""
    export = Path(shutil.copytree(source.export, tmp_path_factory.mktemp("fuzz") / "export"))
    return export, [source.item_ids[3], source.kv_id, source.adapter_id]


@pytest.fixture(scope="module")
def fuzzed(new_world: Callable[[], World]) -> Fuzzed:
    return Fuzzed(new_world)


@settings(FUZZING, max_examples=EXAMPLES)
@given(data=st.data())
def test_fuzzed_exports_are_refused_typed_or_import_harmlessly(
    fuzzed: Fuzzed, source: Source, tmp_path_factory: pytest.TempPathFactory, data: st.DataObject
) -> None:
    export, ours = _fresh_copy(source, tmp_path_factory)
    for _ in range(data.draw(st.integers(1, 2))):
        edited_items = _mutate(data, export, ours, fuzzed.theirs())
    # mostly the forger's full move; sometimes less, which some edits need to get through
    mostly = st.sampled_from([True, True, True, False])
    forge(
        export,
        reseal=data.draw(mostly),
        renumber=not data.draw(mostly),
        reproject=not edited_items and data.draw(mostly),
    )
    fuzzed.attempt(export)


class Served:
    """A world behind a real server, with an API key of the attacker's; a fresh one (world
    and server) after an import that succeeds."""

    def __init__(self, backend: str, root: Path, source: Source, model: LocalModel) -> None:
        self.backend, self.root, self.source, self.model = backend, root, source, model
        self._stack = contextlib.ExitStack()
        self.world, self.url, self.token = self._start()

    def _start(self) -> tuple[World, str, str]:
        if self.backend == "redis":
            store_url = fresh_redis_url()
            self._stack.callback(drop_redis_store, store_url)
            names: Callable[[], set[str]] = lambda: _redis_blobs(store_url)  # noqa: E731
        else:
            data_dir = Path(tempfile.mkdtemp(dir=self.root)) / "data"
            store_url = f"sqlite:///{data_dir}"
            names = lambda: {p.name for p in (data_dir / "blobs").iterdir()}  # noqa: E731
        mos = MemOS(open_store(store_url), embedder=HashEmbedder(64), model=self.model)
        world = _victim(mos, names, self.source.adapter)
        _, token = mos.keys.create(ATTACKER)
        base = self._stack.enter_context(serve(mos, ServerSettings(store=store_url)))
        return world, base, token

    def restart(self) -> None:
        self.close()
        self._stack = contextlib.ExitStack()
        self.world, self.url, self.token = self._start()

    def close(self) -> None:
        self._stack.close()

    def attempt(self, export: Path) -> None:
        """Post the export's tar as the attacker: 201, or a 4xx that changed nothing."""
        before = self.world.state()
        reply = httpx.post(
            f"{self.url}/v1/cubes/import",
            content=pack(export),
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/x-tar"},
            timeout=60,
        )
        if reply.status_code == 201:
            event("imported")
            assert self.world.mos.verify(reply.json()["name"]).ok
            after = self.world.state()
            for key in ("items", "by_id", "vectors", "head", "log", "derived", "verify"):
                assert after[key] == before[key], key
            self.restart()
            return
        event(f"refused: {reply.status_code}")
        assert 400 <= reply.status_code < 500, reply.text
        assert reply.json()["error"]["code"], reply.text
        assert self.world.state() == before


@pytest.fixture(scope="module", params=STORES)
def served(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    source: Source,
    tiny_model: LocalModel,
) -> Iterator[Served]:
    server = Served(request.param, tmp_path_factory.mktemp("served"), source, tiny_model)
    yield server
    server.close()


@settings(FUZZING, max_examples=HTTP_EXAMPLES)
@given(data=st.data())
def test_fuzzed_exports_over_http_get_4xx_never_5xx(
    served: Served, source: Source, tmp_path_factory: pytest.TempPathFactory, data: st.DataObject
) -> None:
    export, ours = _fresh_copy(source, tmp_path_factory)
    world = served.world
    edited_items = _mutate(data, export, ours, [*world.victim, world.victim_kv])
    forge(export, reproject=not edited_items)
    served.attempt(export)
