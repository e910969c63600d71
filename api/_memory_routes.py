"""A batch of memories: its size is the server's own limit, so its route is written here; the
other memory routes follow from the operation declarations (``memos.engine._handle``)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from memos import MemoryItem
from memos.errors import InvalidInput

from ._deps import Caller, Settings
from ._errors import COMMON_ERRORS
from ._schemas import MemoryBatch

router = APIRouter(prefix="/v1", tags=["memories"], responses=COMMON_ERRORS)


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
