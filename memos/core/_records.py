"""Turning what callers pass to ``add``/``add_many`` into validated records.

A record is a plain text, a mapping with ``text`` (plus optional ``user``, ``tags``,
``metadata``, ``session``, ``occurred_at``), or a chat message with ``role`` and ``content``
(plus optional ``timestamp`` and ``name``), which becomes a memory whose metadata keeps the role.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from memos.core import _validation as check
from memos.core._types import MetadataValue
from memos.core._validation import Limits
from memos.errors import InvalidInput

_RECORD_KEYS = frozenset({"text", "user", "tags", "metadata", "session", "occurred_at"})
_MESSAGE_KEYS = frozenset({"role", "content", "timestamp", "name"})


@dataclass(frozen=True)
class Record:
    text: str
    user: str | None
    tags: tuple[str, ...]
    metadata: dict[str, MetadataValue]
    occurred_at: datetime | None


def parse_records(
    records: Iterable[str | Mapping[str, Any]],
    *,
    user: str | None,
    tags: Iterable[str] | None,
    metadata: Mapping[str, MetadataValue] | None,
    session: str | None,
    limits: Limits,
) -> list[Record]:
    """Validate every record before any is written, so bad input changes nothing."""
    if isinstance(records, str | bytes) or not isinstance(records, Iterable):
        raise InvalidInput("add_many takes a list of texts or records")
    base = {
        "user": check.optional_principal(user, "user", limits),
        "tags": check.tags(tags, limits),
        "metadata": check.metadata(metadata, limits),
        "session": check.optional_principal(session, "session", limits),
    }
    parsed: list[Record] = []
    for position, raw in enumerate(records):
        try:
            parsed.append(_parse_one(raw, base, limits))
        except InvalidInput as exc:
            raise type(exc)(f"record {position}: {exc.message}", **exc.details) from exc
    if not parsed:
        raise InvalidInput("nothing to add: the list of records is empty")
    return parsed


def _parse_one(raw: object, base: Mapping[str, Any], limits: Limits) -> Record:
    if isinstance(raw, str):
        return _record(base, {"text": raw}, limits)
    if not isinstance(raw, Mapping):
        raise InvalidInput(f"a record is a text or a mapping, not {type(raw).__name__}")
    if "content" in raw or "role" in raw:
        return _record(base, _from_message(raw), limits)
    unknown = set(raw) - _RECORD_KEYS
    if unknown:
        raise InvalidInput(f"unknown record fields: {', '.join(sorted(map(str, unknown)))}")
    return _record(base, raw, limits)


def _from_message(message: Mapping[str, Any]) -> dict[str, Any]:
    unknown = set(message) - _MESSAGE_KEYS
    if unknown:
        raise InvalidInput(f"unknown message fields: {', '.join(sorted(map(str, unknown)))}")
    role = message.get("role")
    if not isinstance(role, str) or not role:
        raise InvalidInput("a chat message needs a role (user, assistant, system, ...)")
    meta: dict[str, Any] = {"role": role}
    if message.get("name") is not None:
        meta["name"] = message["name"]
    return {
        "text": message.get("content"),
        "metadata": meta,
        "occurred_at": message.get("timestamp"),
    }


def _record(base: Mapping[str, Any], raw: Mapping[str, Any], limits: Limits) -> Record:
    meta = dict(base["metadata"])
    meta.update(check.metadata(raw.get("metadata"), limits))
    session = check.optional_principal(raw.get("session"), "session", limits) or base["session"]
    if session is not None:
        meta["session"] = session
    tags = check.tags(raw["tags"], limits) if raw.get("tags") is not None else base["tags"]
    occurred = raw.get("occurred_at")
    return Record(
        text=check.text(raw.get("text"), limits),
        user=check.optional_principal(raw.get("user"), "user", limits) or base["user"],
        tags=tags,
        metadata=check.metadata(meta, limits),
        occurred_at=None if occurred is None else check.timestamp(occurred, "occurred_at"),
    )
