"""Cubes: create, list, read, grants, log, verify, statistics, codecs, rollback, export and
import."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Query, Response
from pydantic import AwareDatetime

from memos import CubeInfo, VerifyReport
from memos.core._anchor import CubeAnchor
from memos.core._archive import pack, unpack_file
from memos.errors import InvalidInput

from ._deps import Caller, Upload
from ._errors import COMMON_ERRORS

router = APIRouter(prefix="/v1/cubes", tags=["cubes"], responses=COMMON_ERRORS)
TAR = "application/x-tar"


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
