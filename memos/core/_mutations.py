"""Pure constructors for the item states that mutations produce."""

from __future__ import annotations

import os
import time
from datetime import datetime

from memos.core._types import ItemStatus, MemoryItem, MetadataValue

_CONTENT = ("text", "status", "user", "tags", "metadata", "occurred_at")


def new_item_id() -> str:
    """A 32-hex-digit id whose prefix is the creation time, so ids sort by age."""
    return f"{time.time_ns() // 1_000_000:012x}{os.urandom(10).hex()}"


def new_item(
    *,
    cube: str,
    text: str,
    user: str | None,
    tags: tuple[str, ...],
    metadata: dict[str, MetadataValue],
    occurred_at: datetime | None,
    now: datetime,
) -> MemoryItem:
    return MemoryItem(
        id=new_item_id(),
        cube=cube,
        text=text,
        user=user,
        tags=tags,
        metadata=metadata,
        occurred_at=occurred_at or now,
        created_at=now,
        updated_at=now,
    )


def revised(
    item: MemoryItem,
    *,
    now: datetime,
    text: str | None = None,
    tags: tuple[str, ...] | None = None,
    metadata: dict[str, MetadataValue] | None = None,
    status: ItemStatus | None = None,
) -> MemoryItem:
    """The next version of ``item`` with the given fields replaced."""
    changes: dict[str, object] = {"version": item.version + 1, "updated_at": now}
    for name, value in (("text", text), ("tags", tags), ("metadata", metadata), ("status", status)):
        if value is not None:
            changes[name] = value
    return item.model_copy(update=changes)


def restored(current: MemoryItem, target: MemoryItem, *, now: datetime) -> MemoryItem:
    """``target``'s content as the version after ``current``: history only moves forward."""
    return target.model_copy(
        update={
            "version": current.version + 1,
            "created_at": current.created_at,
            "updated_at": now,
        }
    )


def same_content(a: MemoryItem, b: MemoryItem) -> bool:
    return all(getattr(a, name) == getattr(b, name) for name in _CONTENT)
