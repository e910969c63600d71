"""How values are stored and read back: times, text, JSON records and events.

Everything read is checked: a value of the wrong type, or a record that no longer parses,
was edited outside MemOS and raises ``IntegrityError``.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any, TypeVar

from pydantic import BaseModel

from memos.core._types import Event, EventOp, MemoryItem
from memos.errors import IntegrityError

M = TypeVar("M", bound=BaseModel)


def _time_text(value: datetime) -> str:
    """Fixed-width UTC ISO 8601, so that string (and lex) order is time order."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat(timespec="microseconds")


def _text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, str):
        return value
    raise IntegrityError(f"unexpected value {value!r} read from Redis")


def _raw(value: object) -> bytes:
    if isinstance(value, bytes):
        return value
    raise IntegrityError(f"unexpected value {value!r} read from Redis")


def _parsed(model: type[M], body: object, what: str, **details: str) -> M:
    """A stored JSON record; one that no longer parses was edited outside MemOS."""
    try:
        return model.model_validate_json(_raw(body))
    except ValueError as exc:
        raise IntegrityError(f"{what} is malformed", **details) from exc


def _item_from(item_id: str, body: object) -> MemoryItem:
    return _parsed(MemoryItem, body, f"item {item_id}", item_id=item_id)


def _event_fields(event: Event) -> list[str]:
    fields = {
        "cube": event.cube,
        "seq": str(event.seq),
        "ts": _time_text(event.ts),
        "actor": event.actor,
        "op": event.op.value,
        "item_id": event.item_id,
        "reason": event.reason,
        "payload_digest": event.payload_digest,
        "prev_hash": event.prev_hash,
        "hash": event.hash,
    }
    # a missing field is None: "" is a reason like any other
    return [part for name, value in fields.items() if value is not None for part in (name, value)]


def _event_from(cube: str, entry_id: object, fields: dict[Any, Any], body: object) -> Event:
    seq_text = _text(entry_id).partition("-")[0]
    try:
        got = {_text(name): _text(value) for name, value in fields.items()}
        return Event(
            cube=got["cube"],
            seq=int(got["seq"]),
            ts=datetime.fromisoformat(got["ts"]),
            actor=got["actor"],
            op=EventOp(got["op"]),
            item_id=got.get("item_id"),
            reason=got.get("reason"),
            payload=None if body is None else json.loads(_raw(body)),
            payload_digest=got["payload_digest"],
            prev_hash=got["prev_hash"],
            hash=got["hash"],
        )
    except (KeyError, ValueError, TypeError, IntegrityError) as exc:
        # an entry that no longer parses was edited outside MemOS; verify names its seq
        seq = int(seq_text) if seq_text.isdigit() else 0
        raise IntegrityError(f"event {seq_text} of cube {cube!r} is malformed", seq=seq) from exc


def _loose(value: object) -> str:
    """Text read from a key or field that may have been written outside MemOS: bytes that are
    not UTF-8 still give a name (one that names nothing MemOS wrote)."""
    return _raw(value).decode("utf-8", errors="replace")
