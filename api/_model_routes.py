"""What needs the language model and does not travel as JSON: the chat stream (server-sent
events) and adapter directories (tars). The model is loaded on the first such request; the
other chat, KV and adapter routes follow from the operation declarations."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Depends, Query, Response
from fastapi.encoders import jsonable_encoder
from fastapi.sse import EventSourceResponse

from memos.core._archive import ADAPTER_EXPORT, pack, unpack_file
from memos.core._wire import ChatDone, ChatEvent, ChatFailed, ChatText, ErrorBody
from memos.errors import MemosError
from memos.parametric import AdapterEntry

from ._cube_routes import TAR
from ._deps import Caller, ReasonQuery, Upload
from ._errors import COMMON_ERRORS
from ._schemas import ChatBody

if TYPE_CHECKING:
    from memos.engine._chat import ChatStream

router = APIRouter(prefix="/v1/cubes/{cube}", tags=["models"], responses=COMMON_ERRORS)
# the adapter upload, which the app lets be as large as a cube import
ADAPTER_IMPORT_PATH = r"/v1/cubes/[^/]+/adapters/[^/]+/import"
# a stream refused before it starts answers the JSON envelope (the schema every other route's
# errors publish); FastAPI would document them under the route's own media type
_ENVELOPE = {"$ref": "#/components/schemas/ErrorEnvelope"}
_JSON_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"content": {"application/json": {"schema": _ENVELOPE}}} for status in COMMON_ERRORS
}

CHAT_STREAM = """The answer of `POST /chat` as it is generated, as server-sent events
(`text/event-stream`). Each event's `data` is one JSON object: `{"text": ...}` for each next piece
of the answer, then `{"reply": ...}` (the whole reply, as `POST /chat` answers it) as the last
event. A refusal found before generation starts (an unknown cube, a bad argument, a stale adapter)
is answered as by `POST /chat`: its status and the error envelope. An error after that ends the
stream with `{"error": {"code", "message", "details"}}`. Comment lines (`: ping`) keep an idle
connection open."""


# chat ---------------------------------------------------------------------------------------


def _started_chat(cube: str, body: ChatBody, mos: Caller) -> Iterator[ChatEvent]:
    """The chat's events, once everything ``chat_stream`` checks before generating has passed:
    as a dependency it runs before the response starts, so a refusal is an ordinary error
    answer rather than an event."""
    stream = mos.chat_stream(
        body.query, cube=cube, user=body.user, k=body.k, max_new_tokens=body.max_new_tokens,
        use_kv=body.use_kv, adapter=body.adapter, retrieve=body.retrieve,
    )  # fmt: skip
    return _events(stream)


def _events(stream: ChatStream) -> Iterator[ChatEvent]:
    try:
        for piece in stream:
            yield ChatText(text=piece)
    except MemosError as error:  # the status line is sent: the error can only be an event
        details = jsonable_encoder(error.details)
        yield ChatFailed(error=ErrorBody(code=error.code, message=error.message, details=details))
        return
    yield ChatDone(reply=stream.reply)


@router.post(
    "/chat/stream",
    response_class=EventSourceResponse,
    description=CHAT_STREAM,
    responses=_JSON_ERRORS,
)
def chat_stream(
    events: Annotated[Iterator[ChatEvent], Depends(_started_chat)],
) -> Iterator[ChatEvent]:
    yield from events


# adapter directories, which travel as tars --------------------------------------------


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
