"""Derived artifacts (KV caches) as the log sees them: what a source change invalidates, and
the standing set a log leaves, which a store's projection must equal.

The policy lives here, in the core; a store calls :func:`invalidations` inside its commit
transaction, so an artifact never outlives the item versions it was built from.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from memos.core._store import Change
from memos.core._types import DerivedEntry, Event, EventOp, ItemStatus, MemoryItem
from memos.errors import CorruptArtifact

KV_KIND = "kv"
ADAPTER_KIND = "adapter"
# the event that builds / drops an artifact of each kind
BUILD_OPS = {KV_KIND: EventOp.KV_BUILD, ADAPTER_KIND: EventOp.ADAPTER_BUILD}
DROP_OPS = {KV_KIND: EventOp.KV_DROP, ADAPTER_KIND: EventOp.ADAPTER_DROP}
# events whose ``derived`` replaces the standing record of the same id
REPLACE_OPS = frozenset({EventOp.ADAPTER_STALE})


def slot_key(entry: DerivedEntry) -> str | None:
    """What must be unique among a cube's standing artifacts besides the id: an adapter's
    name and version (two trainings of one adapter finishing together must not both be v2)."""
    if entry.kind != ADAPTER_KIND:
        return None
    return f"{entry.manifest.get('name')}@{entry.manifest.get('version')}"


def invalidations(
    entries: Sequence[DerivedEntry], item: MemoryItem, *, actor: str, ts: datetime
) -> list[Change]:
    """The changes that retire the artifacts built from an older version of ``item``: a KV
    cache is dropped; an adapter is kept (its versions can be rolled back to) but marked stale,
    so chat stops using it until it is retrained or rolled back."""
    changes = []
    for entry in entries:
        stale = [s for s in entry.sources if s.item_id == item.id and s.version != item.version]
        if not stale or entry.stale:
            continue
        what = "was deleted" if item.status == ItemStatus.DELETED else "changed"
        reason = f"source {item.id} {what} (v{stale[0].version} -> v{item.version})"
        if entry.kind == ADAPTER_KIND:
            change = Change(
                op=EventOp.ADAPTER_STALE, cube=entry.cube, actor=actor, ts=ts, reason=reason,
                derived=entry.model_copy(update={"stale": True}),
            )  # fmt: skip
        else:
            change = Change(
                op=DROP_OPS[entry.kind], cube=entry.cube, actor=actor, ts=ts, reason=reason,
                dropped=entry.id,
            )  # fmt: skip
        changes.append(change)
    return changes


def standing(events: Iterable[Event]) -> dict[str, DerivedEntry]:
    """The derived artifacts the log leaves standing, by id, in build order."""
    entries: dict[str, DerivedEntry] = {}
    builds = set(BUILD_OPS.values()) | REPLACE_OPS
    drops = set(DROP_OPS.values())
    for event in events:
        if event.payload is None:
            continue
        if event.op in builds and isinstance(event.payload.get("derived"), dict):
            entry = DerivedEntry.model_validate(event.payload["derived"])
            entries[entry.id] = entry
        elif event.op in drops:
            entries.pop(str(event.payload.get("dropped")), None)
    return entries


M = TypeVar("M", bound=BaseModel)


def checked_manifest(entry: DerivedEntry, manifest: type[M], what: str) -> M:
    """The manifest a derived record holds, as ``manifest`` (strict: read through JSON, where
    its tuples are arrays), naming the same sources as the record; :class:`CorruptArtifact`
    (naming ``what`` and the entry) otherwise."""
    try:
        parsed: M = manifest.model_validate_json(json.dumps(entry.manifest))
    except ValidationError as exc:
        raise CorruptArtifact(f"{what} {entry.id} has a malformed manifest: {exc}") from exc
    if getattr(parsed, "sources", None) != entry.sources:
        raise CorruptArtifact(f"{what} {entry.id}: manifest and record name other sources")
    return parsed
