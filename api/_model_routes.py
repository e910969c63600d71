"""Adapter directories, which travel as tars; the other chat, KV and adapter routes follow from
the operation declarations (``memos.engine._kv``, ``memos.engine._lora``)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response

from memos.core._archive import ADAPTER_EXPORT, pack, unpack_file
from memos.parametric import AdapterEntry

from ._cube_routes import TAR
from ._deps import Caller, ReasonQuery, Upload
from ._errors import COMMON_ERRORS

router = APIRouter(prefix="/v1/cubes/{cube}", tags=["lora"], responses=COMMON_ERRORS)
# the adapter upload, which the app lets be as large as a cube import
ADAPTER_IMPORT_PATH = r"/v1/cubes/[^/]+/adapters/[^/]+/import"


@router.get(
    "/adapters/{name}/export", response_class=Response, responses={200: {"content": {TAR: {}}}}
)
def export_adapter(cube: str, name: str, mos: Caller, version: int | None = None) -> Response:
    """Adapter ``name`` (at ``version``; its latest by default) as a tar of the peft directory
    ``mos.lora.export`` writes: ``adapter_config.json``, ``adapter_model.safetensors`` (fp32)
    and ``memos_manifest.json``."""
    with tempfile.TemporaryDirectory(prefix="memos-adapter-") as tmp:
        directory = mos.lora.export(cube, name, Path(tmp) / "adapter", version=version)
        return Response(pack(directory, ADAPTER_EXPORT), media_type=TAR)


def _readable_cube(cube: str, mos: Caller) -> None:
    """Another tenant's cube is not found before its upload is read, whatever the upload
    holds."""
    mos.get_cube(cube)


@router.post(
    "/adapters/{name}/import",
    status_code=201,
    dependencies=[Depends(_readable_cube)],
    openapi_extra={"requestBody": {"required": True, "content": {TAR: {"schema": {}}}}},
)
def import_adapter(
    cube: str,
    name: str,
    mos: Caller,
    upload: Upload,
    density: Annotated[float | None, Query(gt=0, le=1)] = None,
    reason: ReasonQuery = None,
) -> AdapterEntry:
    """A new version of adapter ``name`` from a tar of a peft directory (as the export route
    sends): ``adapter_config.json`` and ``adapter_model.safetensors``, and optionally
    ``memos_manifest.json``; any other entry is refused. Stored ComPEFT-compressed at
    ``density`` when given."""
    with tempfile.TemporaryDirectory(prefix="memos-adapter-") as tmp:
        directory = unpack_file(upload, Path(tmp) / "adapter", ADAPTER_EXPORT)
        return mos.lora.import_adapter(cube, directory, name=name, density=density, reason=reason)
