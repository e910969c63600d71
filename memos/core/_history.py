"""Reading the past out of the log: an item's versions, a cube's state at a seq, diffs."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Any

from pydantic import ConfigDict

from memos.core._model import Model
from memos.core._types import Event, HistoryEntry, MemoryItem
from memos.errors import VersionNotFound


class FieldChange(Model):
    model_config = ConfigDict(frozen=True)

    field: str
    old: Any
    new: Any


class ItemDiff(Model):
    """What changed in an item between two of its versions."""

    model_config = ConfigDict(frozen=True)

    item_id: str
    from_version: int
    to_version: int
    changes: tuple[FieldChange, ...]
    text_diff: str

    @property
    def unchanged(self) -> bool:
        return not self.changes


_COMPARED = ("text", "status", "user", "tags", "metadata", "occurred_at")


def history(events: Iterable[Event]) -> list[HistoryEntry]:
    """Every version an item had, oldest first, each with the event that produced it."""
    entries: list[HistoryEntry] = []
    for event in events:
        after = event.after
        if after is not None:
            entries.append(HistoryEntry(version=after.version, item=after, event=event))
    return entries


def version(entries: list[HistoryEntry], item_id: str, number: int) -> MemoryItem:
    for entry in entries:
        if entry.version == number:
            return entry.item
    known = ", ".join(str(e.version) for e in entries)
    raise VersionNotFound(
        f"memory {item_id} has no version {number} (versions: {known})",
        item_id=item_id,
        version=number,
    )


def state_at(events: Iterable[Event]) -> dict[str, MemoryItem]:
    """Each item's state after the given events (pass the log up to a seq)."""
    state: dict[str, MemoryItem] = {}
    for event in events:
        after = event.after
        if event.item_id is not None and after is not None:
            state[event.item_id] = after
    return state


def diff(old: MemoryItem, new: MemoryItem) -> ItemDiff:
    old_data, new_data = old.snapshot(), new.snapshot()
    changes = tuple(
        FieldChange(field=name, old=old_data[name], new=new_data[name])
        for name in _COMPARED
        if old_data[name] != new_data[name]
    )
    text_diff = "\n".join(
        difflib.unified_diff(
            old.text.splitlines(),
            new.text.splitlines(),
            fromfile=f"v{old.version}",
            tofile=f"v{new.version}",
            lineterm="",
        )
    )
    return ItemDiff(
        item_id=old.id,
        from_version=old.version,
        to_version=new.version,
        changes=changes,
        text_diff=text_diff,
    )
