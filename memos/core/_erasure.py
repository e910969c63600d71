"""Erasure as the log sees it: the record an ``erase`` event holds, the receipt a ``forget``
returns, and what the chain accepts as erased.

An ``erase`` event names the items it erased; in the same transaction the store removes their
rows, vectors, keyword entries and access statistics and the payloads of every earlier event of
theirs. The chain commits to each payload's digest, not to the payload, so it still verifies:
a missing payload is accepted exactly when a later ``erase`` event names the event's item
(:func:`memos.core._chain.erased_before`). The event's record names the KV blocks and adapter
versions dropped with the items and the blobs deleted after; its digest is the receipt's, so a
receipt is checked against the log with nothing but that digest (:func:`receipt_problem`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from pydantic import Field

from memos.core._chain import ERASURE_KEY, canonical_json
from memos.core._types import Event, EventOp, MetadataValue, _Frozen

if TYPE_CHECKING:
    from memos.core._store import Store


class ErasureRecord(_Frozen):
    """What one ``erase`` event erased from one cube: the items (every version, every event
    payload), the KV blocks and adapter versions built from them (dropped by events of their
    own in the same transaction), and the blobs deleted (those artifacts', and those of earlier
    artifacts built from the items)."""

    user: str | None = None
    where: dict[str, MetadataValue] = Field(default_factory=dict)
    items: tuple[str, ...]
    blocks: tuple[str, ...] = ()
    adapters: tuple[str, ...] = ()
    blobs: tuple[str, ...] = ()

    @property
    def digest(self) -> str:
        return hashlib.sha256(canonical_json(self.model_dump(mode="json"))).hexdigest()


class CubeErasure(_Frozen):
    """One cube's part of a receipt: the ``erase`` event (its seq and hash), its record, the
    events whose payloads went, and the adapter versions trained again without the items or
    dampened for them."""

    cube: str
    seq: int
    hash: str
    record: ErasureRecord
    events: tuple[int, ...]
    retrained: tuple[str, ...] = ()
    dampened: tuple[str, ...] = ()  # adapter versions dampened (SSD) instead
    digest: str


class ErasureReceipt(_Frozen):
    """What ``forget`` returns: one part per cube it erased from. Each part's ``digest`` is the
    digest of the record its ``erase`` event holds; ``verify(cube, receipt=digest)`` checks the
    log has that event and that nothing it names is still stored."""

    at: datetime
    user: str | None = None
    where: dict[str, MetadataValue] = Field(default_factory=dict)
    cubes: tuple[CubeErasure, ...] = ()
    # what the store did to its own files afterwards (``rewrite=True``), in words
    files: tuple[str, ...] = ()

    @property
    def items(self) -> int:
        return sum(len(part.record.items) for part in self.cubes)


def record_of(event: Event) -> ErasureRecord | None:
    """The record of an ``erase`` event (``None`` for any other event or a malformed one)."""
    if event.op != EventOp.ERASE or event.payload is None:
        return None
    raw = event.payload.get(ERASURE_KEY)
    try:
        return ErasureRecord.model_validate(raw)
    except ValueError:
        return None


def erased_events(events: Iterable[Event], record: ErasureRecord, seq: int) -> tuple[int, ...]:
    """The seqs of the events before ``seq`` whose payloads ``record`` erased."""
    items = set(record.items)
    return tuple(e.seq for e in events if e.seq < seq and e.item_id in items)


def receipt_problem(
    store: Store, cube: str, events: list[Event], digest: str
) -> tuple[int, str] | None:
    """What contradicts the receipt of digest ``digest`` (the seq to look at, and what): no
    ``erase`` event of the cube holds it, an event it erased still has its payload, or an
    item, artifact or blob it names is still stored. ``None`` when the receipt holds."""
    found = next(
        (
            (event, record)
            for event in events
            if (record := record_of(event)) is not None and record.digest == digest
        ),
        None,
    )
    if found is None:
        head = events[-1].seq if events else 0
        return head, f"no erasure event of this cube has the receipt's digest {digest}"
    event, record = found
    items = set(record.items)
    kept = [e.seq for e in events if e.seq < event.seq and e.item_id in items and e.payload]
    if kept:
        return kept[0], f"event {kept[0]} still holds a payload erasure {event.seq} erased"
    artifacts = set(record.blocks) | set(record.adapters)
    left = (
        ("item", sorted(store.get_items(record.items))),
        ("artifact", sorted(e.id for e in store.derived_entries(cube) if e.id in artifacts)),
        ("blob", sorted(set(record.blobs).intersection(store.blob_ages()))),
    )
    for what, ids in left:
        if ids:
            return event.seq, f"the {what} {ids[0]} erased by event {event.seq} is still stored"
    return None


def record_payload(record: ErasureRecord) -> dict[str, Any]:
    """The ``extra`` of the ``erase`` change: the record, under its key."""
    return {ERASURE_KEY: record.model_dump(mode="json")}
