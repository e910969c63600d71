"""Memories: add (one or a batch), read, update, delete, history, diff, rollback; search and
access statistics."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from memos import MemoryItem
from memos.errors import InvalidInput

from ._deps import Caller, Settings
from ._errors import COMMON_ERRORS
from ._schemas import (
    MemoryBatch,
    MemoryCreate,
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
