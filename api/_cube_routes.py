"""Cubes: create, list, read, grants, log, verify, statistics, codecs, rollback, export and
import."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Query, Response
from pydantic import AwareDatetime

from memos import CubeInfo, CubeStats, Event, MemoryItem, VerifyReport
from memos._anchor import CubeAnchor
from memos._archive import pack, unpack_file
from memos.errors import InvalidInput

from ._deps import Caller, ReasonQuery, Upload
from ._errors import COMMON_ERRORS
from ._schemas import CubeCreate, CubeRollback, GrantBody, Reason, Reencode

router = APIRouter(prefix="/v1/cubes", tags=["cubes"], responses=COMMON_ERRORS)
TAR = "application/x-tar"


@router.post("", status_code=201)
def create_cube(body: CubeCreate, mos: Caller) -> CubeInfo:
    return mos.create_cube(
        body.name, embedder=body.embedder, codec=body.codec, kv_dtype=body.kv_dtype
    )


@router.get("")
def list_cubes(mos: Caller) -> list[CubeInfo]:
    return mos.list_cubes()


@router.get("/{cube}")
def get_cube(cube: str, mos: Caller) -> CubeInfo:
    return mos.get_cube(cube)


@router.get("/{cube}/stats")
def cube_stats(cube: str, mos: Caller) -> CubeStats:
    return mos.cube_stats(cube)


@router.post("/{cube}/grants")
def grant(cube: str, body: GrantBody, mos: Caller) -> CubeInfo:
    return mos.grant(cube, body.principal, body.access, reason=body.reason)


@router.delete("/{cube}/grants/{principal:path}")
def revoke(cube: str, principal: str, mos: Caller, reason: ReasonQuery = None) -> CubeInfo:
    return mos.revoke(cube, principal, reason=reason)


@router.get("/{cube}/log")
def log(
    cube: str,
    mos: Caller,
    after_seq: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int | None, Query(ge=0, le=100_000)] = None,
) -> list[Event]:
    return mos.log(cube, after_seq=after_seq, limit=limit)


@router.get("/{cube}/verify")
def verify(
    cube: str,
    mos: Caller,
    anchor_seq: Annotated[int | None, Query(ge=1)] = None,
    anchor_hash: Annotated[str | None, Query(pattern=r"^[0-9a-f]{64}$")] = None,
    anchor_at: Annotated[AwareDatetime | None, Query()] = None,
) -> VerifyReport:
    """Verify the cube; with an anchor's three fields, also against that anchored head."""
    given = (anchor_seq, anchor_hash, anchor_at)
    if all(value is None for value in given):
        return mos.verify(cube)
    if anchor_seq is None or anchor_hash is None or anchor_at is None:
        raise InvalidInput("an anchor is anchor_seq, anchor_hash and anchor_at together")
    named = mos.get_cube(cube).name  # the full name, whatever name the path gave
    anchor = CubeAnchor(cube=named, seq=anchor_seq, hash=anchor_hash, at=anchor_at)
    return mos.verify(cube, anchor=anchor)


@router.post("/{cube}/rollback")
def rollback_cube(cube: str, body: CubeRollback, mos: Caller) -> list[MemoryItem]:
    return mos.rollback_cube(cube, to_seq=body.to_seq, reason=body.reason)


@router.post("/{cube}/refit")
def refit(cube: str, body: Reason, mos: Caller) -> CubeInfo:
    return mos.refit(cube, reason=body.reason)


@router.post("/{cube}/reencode")
def reencode(cube: str, body: Reencode, mos: Caller) -> CubeInfo:
    return mos.reencode(cube, codec=body.codec, reason=body.reason)


@router.get("/{cube}/export", response_class=Response, responses={200: {"content": {TAR: {}}}})
def export_cube(cube: str, mos: Caller) -> Response:
    """The cube as a tar of its export directory (see ``memos cube export``)."""
    with tempfile.TemporaryDirectory(prefix="memos-export-") as tmp:
        directory = mos.export_cube(cube, Path(tmp) / "export")
        return Response(pack(directory), media_type=TAR)


@router.post(
    "/import",
    status_code=201,
    openapi_extra={"requestBody": {"required": True, "content": {TAR: {"schema": {}}}}},
)
def import_cube(mos: Caller, upload: Upload) -> CubeInfo:
    """Import a tar made by the export route; the caller must be the cube's recorded owner."""
    with tempfile.TemporaryDirectory(prefix="memos-import-") as tmp:
        return mos.import_cube(unpack_file(upload, Path(tmp) / "export"))
