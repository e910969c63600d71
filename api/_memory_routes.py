"""Memories: add (one or a batch), read, update, delete, history, diff, rollback; search and
access statistics."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from memos import AccessStats, HistoryEntry, ItemDiff, MemoryItem, SearchHit
from memos.errors import InvalidInput

from ._deps import Caller, ReasonQuery, Settings
from ._errors import COMMON_ERRORS
from ._schemas import (
    AccessStatsBody,
    ItemRollback,
    MemoryBatch,
    MemoryCreate,
    MemoryUpdate,
    SearchBody,
)

router = APIRouter(prefix="/v1", tags=["memories"], responses=COMMON_ERRORS)


@router.post("/cubes/{cube}/memories", status_code=201)
def add(cube: str, body: MemoryCreate, mos: Caller) -> MemoryItem:
    return mos.add(
        body.text,
        cube=cube,
        user=body.user,
        tags=body.tags,
        metadata=body.metadata,
        session=body.session,
        occurred_at=body.occurred_at,
    )


@router.post("/cubes/{cube}/memories/batch", status_code=201)
def add_many(cube: str, body: MemoryBatch, mos: Caller, settings: Settings) -> list[MemoryItem]:
    if len(body.records) > settings.max_batch:
        raise InvalidInput(
            f"a batch holds at most {settings.max_batch} records, not {len(body.records)}",
            field="records",
            limit=settings.max_batch,
        )
    records: list[dict[str, Any]] = [r.model_dump(exclude_none=True) for r in body.records]
    return mos.add_many(
        records, cube=cube, user=body.user, tags=body.tags, metadata=body.metadata,
        session=body.session,
    )  # fmt: skip


@router.post("/cubes/{cube}/search")
def search(cube: str, body: SearchBody, mos: Caller) -> list[SearchHit]:
    return mos.search(
        body.query, cube=cube, k=body.k, user=body.user, tags=body.tags, session=body.session,
        since=body.since, until=body.until, where=body.where, mode=body.mode,
    )  # fmt: skip


@router.get("/memories/{item_id}")
def get(item_id: str, mos: Caller) -> MemoryItem:
    return mos.get(item_id)


@router.patch("/memories/{item_id}")
def update(item_id: str, body: MemoryUpdate, mos: Caller) -> MemoryItem:
    return mos.update(
        item_id, body.text, tags=body.tags, metadata=body.metadata,
        expected_version=body.expected_version, reason=body.reason,
    )  # fmt: skip


@router.delete("/memories/{item_id}")
def delete(
    item_id: str,
    mos: Caller,
    expected_version: int | None = None,
    reason: ReasonQuery = None,
) -> MemoryItem:
    return mos.delete(item_id, expected_version=expected_version, reason=reason)


@router.post("/memories/{item_id}/rollback")
def rollback(item_id: str, body: ItemRollback, mos: Caller) -> MemoryItem:
    return mos.rollback(
        item_id, to_version=body.to_version, expected_version=body.expected_version,
        reason=body.reason,
    )  # fmt: skip


@router.get("/memories/{item_id}/history")
def history(item_id: str, mos: Caller) -> list[HistoryEntry]:
    return mos.history(item_id)


@router.get("/memories/{item_id}/diff")
def diff(item_id: str, from_version: int, to_version: int, mos: Caller) -> ItemDiff:
    return mos.diff(item_id, from_version, to_version)


@router.post("/access-stats")
def access_stats(body: AccessStatsBody, mos: Caller) -> dict[str, AccessStats]:
    return mos.access_stats(body.item_ids)
