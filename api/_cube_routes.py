"""A cube's export and import, which travel as tars; the other cube routes follow from the
operation declarations (``memos.engine._handle``)."""

from __future__ import annotations

import tempfile
from pathlib import Path

from fastapi import APIRouter, Response

from memos import CubeInfo
from memos.core._archive import pack, unpack_file

from ._deps import Caller, Upload
from ._errors import COMMON_ERRORS

router = APIRouter(prefix="/v1/cubes", tags=["cubes"], responses=COMMON_ERRORS)
TAR = "application/x-tar"


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
