"""Verifying a cube as stored: the chain, and everything the chain vouches for.

:func:`memos.core._chain.verify_chain` is pure; this module feeds it what a store holds (events,
items, vector digests) and turns a store's own integrity errors (rows that no longer parse)
into a report naming the seq to look at, rather than an exception.

Past the chain and the projection it checks everything else that decides what a search
returns: the cube's configuration, its derived artifacts, the keyword index (each active
item's entry is what its verified text gives, and there is no other), the codec's fitted state
(present, hashing to its name, loadable) and, given the cube's indexes, the vector index
snapshot (see :meth:`memos.plaintext._indexes.CubeIndexes.check`). Given an anchor, it also
checks the log still holds the head the anchor witnessed (see :mod:`memos.core._anchor`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from memos.core._anchor import CubeAnchor, anchor_problem
from memos.core._chain import vector_digest, verify_chain
from memos.core._derived import standing
from memos.core._erasure import receipt_problem
from memos.core._store import Store
from memos.core._types import CubeInfo, Event, ItemStatus, MemoryItem, VerifyReport
from memos.errors import IntegrityError
from memos.plaintext._codec_state import load_codec
from memos.plaintext._encoding import configured_cube
from memos.plaintext._indexes import CubeIndexes

if TYPE_CHECKING:
    from memos.core._store import Vector


@dataclass(frozen=True)
class _Stored:
    """What the store holds for the cube, read once; the checks past the chain share it."""

    store: Store
    info: CubeInfo
    events: list[Event]
    items: list[MemoryItem]
    vectors: Mapping[str, Vector]


Check = Callable[[_Stored, VerifyReport], VerifyReport]


def verify_cube(
    store: Store,
    info: CubeInfo,
    *,
    anchor: CubeAnchor | None = None,
    indexes: CubeIndexes | None = None,
    receipt: str | None = None,
) -> VerifyReport:
    head = store.head(info.name)
    try:
        events = store.events(info.name)
    except IntegrityError as exc:
        return VerifyReport(
            cube=info.name,
            ok=False,
            events=0,
            head_seq=head[0],
            first_bad_seq=int(exc.details.get("seq", 0)),
            problem=exc.message,
        )
    anchored = None if anchor is None else _anchored(anchor, events, head[0])
    if anchored is not None:
        # the log's links are checked first: an edit before the anchored seq is the first bad
        report = verify_chain(info.name, events, head=head)
        if report.ok or (report.first_bad_seq or 0) > anchored[0]:
            return _failed(report, *anchored)
        return report
    try:
        items = list(store.iter_items(info.name))
    except IntegrityError as exc:
        # An item row the store cannot read back consistently; the chain is checked first,
        # then the row is named by the last event that wrote that item.
        report = verify_chain(info.name, events, head=head)
        if not report.ok:
            return report
        written = [e.seq for e in events if e.item_id == exc.details.get("item_id")]
        return _failed(report, written[-1] if written else report.head_seq, exc.message)
    vectors = store.get_vectors([item.id for item in items])
    digests = {item_id: vector_digest(vector) for item_id, vector in vectors.items()}
    report = verify_chain(info.name, events, head=head, items=items, vectors=digests)
    stored = _Stored(store, info, events, items, vectors)
    checks: list[Check] = [_verify_config, _verify_derived, _verify_search_indexes, _verify_codec]
    if indexes is not None:
        checks.append(_index_check(indexes))
    if receipt is not None:
        checks.append(_receipt_check(receipt))
    for check in checks:
        if not report.ok:
            break
        report = check(stored, report)
    return report


def _anchored(anchor: CubeAnchor, events: list[Event], head_seq: int) -> tuple[int, str] | None:
    found = next((event for event in events if event.seq == anchor.seq), None)
    last_seq = events[-1].seq if events else 0
    return anchor_problem(anchor, found, last_seq, head_seq)


def _verify_config(stored: _Stored, report: VerifyReport) -> VerifyReport:
    if configured_cube(stored.events) != stored.info:
        problem = "the cube's configuration differs from the one its log set"
        return _failed(report, report.head_seq, problem)
    return report


def _verify_derived(stored: _Stored, report: VerifyReport) -> VerifyReport:
    """The standing derived artifacts (KV caches) are those the log leaves, and their blobs
    are present and intact."""
    store, events = stored.store, stored.events
    expected = standing(events)
    try:
        found = {entry.id: entry for entry in store.derived_entries(stored.info.name)}
    except IntegrityError as exc:
        return _failed(report, report.head_seq, exc.message)
    differing = {i for i in expected.keys() | found.keys() if expected.get(i) != found.get(i)}
    if differing:
        problem = f"derived artifacts {sorted(differing)} differ from those the log leaves"
        return _failed(report, _last_touching(events, differing, report.head_seq), problem)
    for entry in expected.values():
        try:
            present = store.get_blob(entry.blob) is not None
        except IntegrityError as exc:
            present, problem = False, exc.message
        else:
            problem = f"the blob {entry.blob} of derived artifact {entry.id} is missing"
        if not present:
            return _failed(report, _last_touching(events, {entry.id}, report.head_seq), problem)
    return report


def _verify_search_indexes(stored: _Stored, report: VerifyReport) -> VerifyReport:
    """Each active item's entries in the search indexes (its keywords, and its user, session,
    tags and time where the store keeps them apart) are the ones the (verified) item gives, and
    no other entry exists: keyword search and filters read nothing else."""
    active = [item for item in stored.items if item.status == ItemStatus.ACTIVE]
    try:
        differing = stored.store.index_mismatches(stored.info.name, active)
    except IntegrityError as exc:
        return _failed(report, report.head_seq, exc.message)
    if not differing:
        return report
    written = _last_writes(stored.events)
    first = min(differing, key=lambda item_id: (written.get(item_id, report.head_seq), item_id))
    problem = f"the search index entries of item {first} differ from what the item gives"
    return _failed(report, written.get(first, report.head_seq), problem)


def _verify_codec(stored: _Stored, report: VerifyReport) -> VerifyReport:
    """The fitted state the cube's configuration names is present, hashes to its name and
    loads as the codec's state for the cube's dimension."""
    digest = stored.info.codec_state
    if digest is None:
        return report
    try:
        load_codec(stored.store, stored.info)
    except IntegrityError as exc:
        seq = _last_configuring(stored.events, digest, report.head_seq)
        return _failed(report, seq, exc.message)
    return report


def _index_check(indexes: CubeIndexes) -> Check:
    def check(stored: _Stored, report: VerifyReport) -> VerifyReport:
        active = {item.id for item in stored.items if item.status == ItemStatus.ACTIVE}
        indexed = {i: vector for i, vector in stored.vectors.items() if i in active}
        found = indexes.check(stored.info, indexed, report.head_seq)
        return report if found is None else _failed(report, *found)

    return check


def _receipt_check(digest: str) -> Check:
    """The log holds the erasure of receipt ``digest`` and nothing it erased is stored."""

    def check(stored: _Stored, report: VerifyReport) -> VerifyReport:
        found = receipt_problem(stored.store, stored.info.name, stored.events, digest)
        return report if found is None else _failed(report, *found)

    return check


def _last_writes(events: list[Event]) -> dict[str, int]:
    """Each item's id -> the seq of the last event that wrote its state."""
    return {
        event.item_id: event.seq
        for event in events
        if event.item_id is not None and (event.payload or {}).get("after") is not None
    }


def _last_configuring(events: list[Event], codec_state: str, default: int) -> int:
    """The seq of the last event that set the cube's configuration to name ``codec_state``."""
    for event in reversed(events):
        configured = (event.payload or {}).get("cube")
        if isinstance(configured, dict) and configured.get("codec_state") == codec_state:
            return event.seq
    return default


def _last_touching(events: list[Event], ids: set[str], default: int) -> int:
    for event in reversed(events):
        payload = event.payload or {}
        built = payload.get("derived")
        if payload.get("dropped") in ids or (isinstance(built, dict) and built.get("id") in ids):
            return event.seq
    return default


def _failed(report: VerifyReport, seq: int, problem: str) -> VerifyReport:
    return report.model_copy(update={"ok": False, "first_bad_seq": seq, "problem": problem})
