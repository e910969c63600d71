"""The hash chain: canonical encoding, sealing new events and verifying a cube's log.

Each event's hash covers the previous hash and the event header; the header holds a digest of
the payload rather than the payload itself, so erasing a payload later leaves the chain intact.
Stores call :func:`seal` inside their append transaction; :func:`verify_chain` is pure and runs
over whatever a store returns, so every backend is checked by the same code.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from memos._types import Event, EventOp, MemoryItem, VerifyReport

GENESIS_HASH = "0" * 64


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


def verify_chain(
    cube: str,
    events: Iterable[Event],
    *,
    head: tuple[int, str] | None = None,
    items: Iterable[MemoryItem] | None = None,
) -> VerifyReport:
    """Check seqs are gapless from 1, every hash recomputes, every payload matches its digest,
    the chain ends at the recorded ``head``, and (when given) the item projection equals the
    replay of the events' ``after`` states. Reports the first bad seq."""
    prev_hash, expected_seq, count = GENESIS_HASH, 1, 0
    replayed: dict[str, tuple[int, dict[str, Any]]] = {}

    def bad(seq: int, problem: str) -> VerifyReport:
        return VerifyReport(
            cube=cube,
            ok=False,
            events=count,
            head_seq=expected_seq - 1,
            first_bad_seq=seq,
            problem=problem,
        )

    for event in events:
        if event.cube != cube:
            return bad(expected_seq, f"event of cube {event.cube!r} in the log of {cube!r}")
        if event.seq != expected_seq:
            return bad(expected_seq, f"expected seq {expected_seq}, found seq {event.seq}")
        if event.prev_hash != prev_hash:
            return bad(event.seq, "prev_hash does not match the previous event's hash")
        if event_hash(event) != event.hash:
            return bad(event.seq, "hash does not match the event's contents")
        if event.payload is None:
            return bad(event.seq, "payload is missing")
        if payload_digest(event.payload) != event.payload_digest:
            return bad(event.seq, "payload does not match its digest")
        after = event.payload.get("after")
        if event.item_id is not None and after is not None:
            replayed[event.item_id] = (event.seq, after)
        prev_hash, expected_seq, count = event.hash, expected_seq + 1, count + 1

    last_seq = expected_seq - 1
    if head is not None and head != (last_seq, prev_hash):
        head_seq, _ = head
        first = min(head_seq, last_seq) + 1 if head_seq != last_seq else max(last_seq, 1)
        return bad(first, f"log ends at seq {last_seq} but the cube's head is seq {head_seq}")
    if items is not None:
        problem = _projection_problem(replayed, items, last_seq)
        if problem is not None:
            seq, message = problem
            return bad(seq, message)
    return VerifyReport(cube=cube, ok=True, events=count, head_seq=last_seq)


def _projection_problem(
    replayed: dict[str, tuple[int, dict[str, Any]]], items: Iterable[MemoryItem], last_seq: int
) -> tuple[int, str] | None:
    """The projection is checked after the chain, so a problem is named by the seq of the
    event that last wrote the item (or the head, for an item no event wrote)."""
    seen: set[str] = set()
    for item in items:
        seen.add(item.id)
        if item.id not in replayed:
            return last_seq, f"item {item.id} exists but no event created it"
        seq, expected = replayed[item.id]
        if item.snapshot() != expected:
            return seq, f"item {item.id} differs from the state its events recorded"
    missing = sorted(set(replayed) - seen)
    if missing:
        seq, _ = replayed[missing[0]]
        return seq, f"item {missing[0]} was recorded by events but is missing"
    return None
