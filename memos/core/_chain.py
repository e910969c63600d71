"""The hash chain: canonical encoding, sealing new events and verifying a cube's log.

Each event's hash covers the previous hash and the event header; the header holds a digest of
the payload rather than the payload itself, so erasing a payload later leaves the chain intact.
Stores call :func:`seal` inside their append transaction; :func:`verify_chain` is pure and runs
over whatever a store returns, so every backend is checked by the same code.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from memos.core._types import Event, EventOp, MemoryItem, VerifyReport

if TYPE_CHECKING:  # numpy loads where a vector is digested: the HTTP client never does
    import numpy as np
    from numpy.typing import NDArray

GENESIS_HASH = "0" * 64
# the key of an ``erase`` event's payload that holds its record (see memos.core._erasure)
ERASURE_KEY = "erasure"


def canonical_json(value: Any) -> bytes:
    """Deterministic JSON bytes: sorted keys, no spaces, UTF-8, no NaN."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def payload_digest(payload: dict[str, Any]) -> str:
    return hashlib.sha256(canonical_json(payload)).hexdigest()


def _header(
    *,
    cube: str,
    seq: int,
    ts: str,
    actor: str,
    op: str,
    item_id: str | None,
    reason: str | None,
    digest: str,
) -> dict[str, Any]:
    return {
        "cube": cube,
        "seq": seq,
        "ts": ts,
        "actor": actor,
        "op": op,
        "item_id": item_id,
        "reason": reason,
        "payload_digest": digest,
    }


def _ts(value: datetime) -> str:
    return value.astimezone(UTC).isoformat(timespec="microseconds")


def event_hash(event: Event) -> str:
    """Recompute an event's hash from its fields (the stored ``hash`` is ignored)."""
    header = _header(
        cube=event.cube,
        seq=event.seq,
        ts=_ts(event.ts),
        actor=event.actor,
        op=event.op.value,
        item_id=event.item_id,
        reason=event.reason,
        digest=event.payload_digest,
    )
    return hashlib.sha256(event.prev_hash.encode("ascii") + canonical_json(header)).hexdigest()


def seal(
    *,
    cube: str,
    seq: int,
    prev_hash: str,
    ts: datetime,
    actor: str,
    op: EventOp,
    item_id: str | None,
    reason: str | None,
    payload: dict[str, Any],
) -> Event:
    """Build the event that follows ``prev_hash`` at ``seq``."""
    draft = Event(
        cube=cube,
        seq=seq,
        ts=ts,
        actor=actor,
        op=op,
        item_id=item_id,
        reason=reason,
        payload=payload,
        payload_digest=payload_digest(payload),
        prev_hash=prev_hash,
        hash="",
    )
    return draft.model_copy(update={"hash": event_hash(draft)})


def vector_digest(vector: NDArray[np.floating[Any]]) -> str:
    """sha256 of a vector as little-endian float32: events commit to the embeddings too."""
    import numpy as np

    return hashlib.sha256(np.ascontiguousarray(vector, dtype="<f4").tobytes()).hexdigest()


@dataclass
class _Walk:
    """What walking a log yields: how far it verified and the item state it implies."""

    count: int = 0
    last_hash: str = GENESIS_HASH
    bad: tuple[int, str] | None = None
    items: dict[str, tuple[int, dict[str, Any]]] = field(default_factory=dict)
    vectors: dict[str, tuple[int, str]] = field(default_factory=dict)


def verify_chain(
    cube: str,
    events: Iterable[Event],
    *,
    head: tuple[int, str] | None = None,
    items: Iterable[MemoryItem] | None = None,
    vectors: Mapping[str, str] | None = None,
) -> VerifyReport:
    """Check seqs are gapless from 1, every hash recomputes, every payload matches its digest,
    the chain ends at the recorded ``head``, and (when given) the item projection and the
    vector digests equal what the events recorded. Reports the first bad seq."""
    walk = _walk(cube, events)
    problem = walk.bad or _head_problem(walk, head)
    if problem is None and items is not None:
        problem = _projection_problem(walk, items)
    if problem is None and vectors is not None:
        problem = _vector_problem(walk, vectors)
    if problem is not None:
        seq, message = problem
        return VerifyReport(
            cube=cube,
            ok=False,
            events=walk.count,
            head_seq=walk.count,
            first_bad_seq=seq,
            problem=message,
        )
    return VerifyReport(cube=cube, ok=True, events=walk.count, head_seq=walk.count)


def _walk(cube: str, events: Iterable[Event]) -> _Walk:
    walk, listed = _Walk(), list(events)
    erased = erasures(listed)
    for event in listed:
        walk.bad = _event_problem(cube, event, walk.count + 1, walk.last_hash)
        if walk.bad is not None and not (event.payload is None and erased_before(event, erased)):
            return walk
        walk.bad = None
        walk.count, walk.last_hash = event.seq, event.hash
        if event.payload is None:
            continue  # erased: the item it wrote is gone, and so is its vector
        after, digest = event.payload.get("after"), event.payload.get("vector_sha256")
        if event.item_id is not None and after is not None:
            walk.items[event.item_id] = (event.seq, after)
        if event.item_id is not None and isinstance(digest, str):
            walk.vectors[event.item_id] = (event.seq, digest)
    return walk


def erased_in(payload: Mapping[str, Any]) -> list[str]:
    """The ids of the items an ``erase`` event's payload names."""
    record = payload.get(ERASURE_KEY)
    items = record.get("items") if isinstance(record, dict) else None
    return [item for item in items if isinstance(item, str)] if isinstance(items, list) else []


def erasures(events: Iterable[Event]) -> dict[str, int]:
    """Each erased item's id -> the seq of the last ``erase`` event that named it."""
    erased: dict[str, int] = {}
    for event in events:
        if event.op == EventOp.ERASE and event.payload is not None:
            erased.update(dict.fromkeys(erased_in(event.payload), event.seq))
    return erased


def erased_before(event: Event, erased: Mapping[str, int]) -> bool:
    """Whether ``event``'s payload may be missing: a later ``erase`` event named its item."""
    return event.item_id is not None and erased.get(event.item_id, 0) > event.seq


def _event_problem(cube: str, event: Event, seq: int, prev_hash: str) -> tuple[int, str] | None:
    if event.cube != cube:
        return seq, f"event of cube {event.cube!r} in the log of {cube!r}"
    if event.seq != seq:
        return seq, f"expected seq {seq}, found seq {event.seq}"
    if event.prev_hash != prev_hash:
        return seq, "prev_hash does not match the previous event's hash"
    if event_hash(event) != event.hash:
        return seq, "hash does not match the event's contents"
    if event.payload is None:
        return seq, "payload is missing (and no erasure names it)"
    if payload_digest(event.payload) != event.payload_digest:
        return seq, "payload does not match its digest"
    return None


def _head_problem(walk: _Walk, head: tuple[int, str] | None) -> tuple[int, str] | None:
    if head is None or head == (walk.count, walk.last_hash):
        return None
    head_seq, _ = head
    if head_seq == walk.count:
        return max(walk.count, 1), f"the cube's head hash differs from event {walk.count}'s"
    first = min(head_seq, walk.count) + 1
    return first, f"log ends at seq {walk.count} but the cube's head is seq {head_seq}"


def _projection_problem(walk: _Walk, items: Iterable[MemoryItem]) -> tuple[int, str] | None:
    """The projection is checked after the chain, so a problem is named by the seq of the
    event that last wrote the item (or the head, for an item no event wrote)."""
    seen: set[str] = set()
    for item in items:
        seen.add(item.id)
        if item.id not in walk.items:
            return walk.count, f"item {item.id} exists but no event created it"
        seq, expected = walk.items[item.id]
        if item.snapshot() != expected:
            return seq, f"item {item.id} differs from the state its events recorded"
    missing = sorted(set(walk.items) - seen)
    if missing:
        seq, _ = walk.items[missing[0]]
        return seq, f"item {missing[0]} was recorded by events but is missing"
    return None


def _vector_problem(walk: _Walk, vectors: Mapping[str, str]) -> tuple[int, str] | None:
    for item_id, (seq, recorded) in sorted(walk.vectors.items(), key=lambda kv: kv[1][0]):
        if vectors.get(item_id) != recorded:
            return seq, f"the vector of item {item_id} differs from the one its events recorded"
    extra = sorted(set(vectors) - set(walk.vectors))
    if extra:
        return walk.count, f"item {extra[0]} has a vector that no event recorded"
    return None
