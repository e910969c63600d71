"""The routes of the declared operations (see :mod:`memos.engine._operations`), made from their
declarations: a route runs the operation's body on the caller's handle. A streamed operation's
route answers server-sent events (see ``STREAM``); an archive operation's route sends or takes
its directory as a tar, unpacked as strictly as :mod:`memos.core._archive` does, and an upload
to a cube the caller cannot read is refused before a byte of it is read."""

from __future__ import annotations

import inspect
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path as FilePath
from typing import Annotated, Any, cast

from fastapi import APIRouter, Body, Depends, Path, Query, Response
from fastapi.encoders import jsonable_encoder
from fastapi.sse import EventSourceResponse

from memos.core._archive import Layout, pack, unpack_file
from memos.core._types import ReplyStream
from memos.core._wire import ChatDone, ChatEvent, ChatFailed, ChatText, ErrorBody
from memos.engine._handle import Handle
from memos.engine._operations import DIRECTORY, PATH_PARAMETER, Operation, operations_of
from memos.errors import MemosError

from ._deps import Caller, Upload
from ._errors import COMMON_ERRORS

_HANDLE, _REQUEST, _UPLOAD = "mos", "request_", "upload_"
TAR = "application/x-tar"
Run = Callable[[Handle, dict[str, Any]], Any]
# a stream refused before it starts answers the JSON envelope (the schema every other route's
# errors publish); FastAPI would document them under the route's own media type
_ENVELOPE = {"$ref": "#/components/schemas/ErrorEnvelope"}
_JSON_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"content": {"application/json": {"schema": _ENVELOPE}}} for status in COMMON_ERRORS
}
STREAM = """The answer as it is generated, as server-sent events (`text/event-stream`). Each
event's `data` is one JSON object: `{"text": ...}` for each next piece of the answer, then
`{"reply": ...}` (the whole reply, as the route without `/stream` answers it) as the last event.
A refusal found before generation starts (an unknown cube, a bad argument, a stale adapter) is
the usual error answer: its status and the error envelope. An error after that ends the stream
with `{"error": {"code", "message", "details"}}`. Comment lines (`: ping`) keep an idle
connection open."""


def router_of(handle: type[Handle]) -> APIRouter:
    """A router with one route per operation the handle class declares."""
    router = APIRouter(responses=COMMON_ERRORS)
    for op in operations_of(handle):
        if op.stream:
            _add_stream_route(router, op)
        elif op.downloads:
            _add_download_route(router, op)
        elif op.uploads:
            _add_upload_route(router, op)
        else:
            _add_route(router, op)
    return router


def upload_paths(handle: type[Handle]) -> list[str]:
    """The paths (regular expressions) of the routes that take a tar, for the body limit."""
    return [PATH_PARAMETER.sub("[^/]+", op.path) for op in operations_of(handle) if op.uploads]


def _add_route(router: APIRouter, op: Operation) -> None:
    router.add_api_route(
        op.path,
        _endpoint(op),
        methods=[op.method],
        status_code=op.status,
        name=op.name,
        summary=op.summary,
        description=inspect.getdoc(op.function),
        tags=[op.tag],
        response_model=op.reply,
    )


def _add_download_route(router: APIRouter, op: Operation) -> None:
    layout = cast(Layout, op.archive)

    def send_tar(handle: Handle, values: dict[str, Any]) -> Response:
        with tempfile.TemporaryDirectory(prefix="memos-export-") as tmp:
            directory = op.call(handle, values | {DIRECTORY: FilePath(tmp) / "export"})
            return Response(pack(directory, layout), media_type=TAR)

    router.add_api_route(
        op.path, _endpoint(op, send_tar), methods=[op.method], status_code=op.status,
        name=op.name, summary=op.summary, description=inspect.getdoc(op.function),
        tags=[op.tag], response_model=None, response_class=Response,
        responses={200: {"content": {TAR: {}}}},
    )  # fmt: skip


def _add_upload_route(router: APIRouter, op: Operation) -> None:
    layout = cast(Layout, op.archive)

    def take_tar(handle: Handle, values: dict[str, Any]) -> Any:
        upload = values.pop(_UPLOAD)
        with tempfile.TemporaryDirectory(prefix="memos-import-") as tmp:
            directory = unpack_file(upload, FilePath(tmp) / "export", layout)
            return op.call(handle, values | {DIRECTORY: directory})

    # another tenant's cube is not found before its upload is read, whatever the upload holds
    readable = [Depends(_readable_cube)] if "cube" in op.path_parameters else []
    body = {"requestBody": {"required": True, "content": {TAR: {"schema": {}}}}}
    router.add_api_route(
        op.path, _endpoint(op, take_tar, upload=True), methods=[op.method],
        status_code=op.status, response_model=op.reply, name=op.name, summary=op.summary,
        description=inspect.getdoc(op.function), tags=[op.tag], dependencies=readable,
        openapi_extra=body,
    )  # fmt: skip


def _readable_cube(cube: Annotated[str, Path()], mos: Caller) -> None:
    mos.get_cube(cube)


def _endpoint(op: Operation, run: Run | None = None, *, upload: bool = False) -> Callable[..., Any]:
    """A function FastAPI reads as the route: the caller's handle, the path's parameters and
    the request model (the body, or the query string of a GET or DELETE, or of an upload), and
    the upload; ``run`` answers with them (by default: the operation's reply)."""

    def endpoint(**given: Any) -> Any:
        handle, request = given.pop(_HANDLE), given.pop(_REQUEST, None)
        values = dict(given)
        if request is not None:
            values |= {name: getattr(request, name) for name in type(request).model_fields}
        return (run or op.call)(handle, values)

    parameters = [inspect.Parameter(_HANDLE, inspect.Parameter.KEYWORD_ONLY, annotation=Caller)]
    if upload:
        parameters.append(
            inspect.Parameter(_UPLOAD, inspect.Parameter.KEYWORD_ONLY, annotation=Upload)
        )
    for name in op.path_parameters:
        annotation = Annotated[op.path_types[name], Path()]  # type: ignore[name-defined]
        parameters.append(
            inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation)
        )
    if op.request.model_fields:
        where = Query() if op.in_query else Body()
        required = any(f.is_required() for f in op.request.model_fields.values())
        parameters.append(
            inspect.Parameter(
                _REQUEST,
                inspect.Parameter.KEYWORD_ONLY,
                annotation=Annotated[op.request, where],
                default=inspect.Parameter.empty if required else None,
            )
        )
    endpoint.__signature__ = inspect.Signature(parameters, return_annotation=op.reply)  # type: ignore[attr-defined]
    endpoint.__name__ = op.name
    return endpoint


def _add_stream_route(router: APIRouter, op: Operation) -> None:
    """The route of a streamed operation: the body runs as a dependency, before the response
    starts, so a refusal is an ordinary error answer rather than an event."""
    started = _endpoint(op)

    def stream(events: ReplyStream) -> Iterator[ChatEvent]:
        yield from _events(events)

    given = Annotated[ReplyStream, Depends(started)]
    parameter = inspect.Parameter("events", inspect.Parameter.KEYWORD_ONLY, annotation=given)
    signature = inspect.Signature([parameter], return_annotation=Iterator[ChatEvent])
    stream.__signature__ = signature  # type: ignore[attr-defined]
    stream.__name__ = op.name
    router.add_api_route(
        op.path,
        stream,
        methods=[op.method],
        status_code=op.status,
        response_class=EventSourceResponse,
        responses=_JSON_ERRORS,
        name=op.name,
        summary=op.summary,
        description=f"{inspect.getdoc(op.function)}\n\n{STREAM}",
        tags=[op.tag],
    )


def _events(stream: ReplyStream) -> Iterator[ChatEvent]:
    try:
        for piece in stream:
            yield ChatText(text=piece)
    except MemosError as error:  # the status line is sent: the error can only be an event
        details = jsonable_encoder(error.details)
        yield ChatFailed(error=ErrorBody(code=error.code, message=error.message, details=details))
        return
    yield ChatDone(reply=stream.reply)
