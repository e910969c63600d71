"""Verifying a cube as stored: the chain, and everything the chain vouches for.

:func:`memos._chain.verify_chain` is pure; this module feeds it what a store holds (events,
items, vector digests) and turns a store's own integrity errors (rows that no longer parse)
into a report naming the seq to look at, rather than an exception.
"""

from __future__ import annotations

from memos._chain import vector_digest, verify_chain
from memos._derived import standing
from memos._encoding import configured_cube
from memos._store import Store
from memos._types import CubeInfo, Event, VerifyReport
from memos.errors import IntegrityError


def verify_cube(store: Store, info: CubeInfo) -> VerifyReport:
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
    if report.ok and configured_cube(events) != info:
        problem = "the cube's configuration differs from the one its log set"
        return _failed(report, report.head_seq, problem)
    if report.ok:
        return _verify_derived(store, info, events, report)
    return report


def _verify_derived(
    store: Store, info: CubeInfo, events: list[Event], report: VerifyReport
) -> VerifyReport:
    """The standing derived artifacts (KV caches) are those the log leaves, and their blobs
    are present and intact."""
    expected = standing(events)
    try:
        stored = {entry.id: entry for entry in store.derived_entries(info.name)}
    except IntegrityError as exc:
        return _failed(report, report.head_seq, exc.message)
    differing = {i for i in expected.keys() | stored.keys() if expected.get(i) != stored.get(i)}
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


def _last_touching(events: list[Event], ids: set[str], default: int) -> int:
    for event in reversed(events):
        payload = event.payload or {}
        built = payload.get("derived")
        if payload.get("dropped") in ids or (isinstance(built, dict) and built.get("id") in ids):
            return event.seq
    return default


def _failed(report: VerifyReport, seq: int, problem: str) -> VerifyReport:
    return report.model_copy(update={"ok": False, "first_bad_seq": seq, "problem": problem})
