"""One JSON error envelope for every failure the server answers with.

``{"error": {"code": ..., "message": ..., "details": {...}}}`` with the status of the
:class:`memos.errors.MemosError` class: the same body the CLI prints with ``--json``. FastAPI's
own failures (a malformed body, an unknown route, a wrong method) and an unexpected exception
(a bug: ``500``, ``internal``, nothing of the server's internals) are put in the same shape, so a
client parses one thing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException

from memos.core._wire import ErrorBody
from memos.errors import MemosError


class ErrorEnvelope(BaseModel):
    """What every failed request answers."""

    error: ErrorBody


def documented(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` naming the envelope for each of ``statuses``."""
    return {status: {"model": ErrorEnvelope} for status in statuses}


# what any authenticated route may answer besides its success (502: an upstream model refused a
# chat, see memos.errors.UpstreamError)
COMMON_ERRORS = documented(400, 401, 403, 404, 409, 413, 422, 500, 502, 503)

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthenticated",
    403: "access_denied",
    404: "not_found",
    405: "method_not_allowed",
    413: "request_too_large",
    415: "unsupported_media_type",
}


def envelope(status: int, code: str, message: str, **details: Any) -> JSONResponse:
    body = {"error": {"code": code, "message": message, "details": jsonable_encoder(details)}}
    return JSONResponse(body, status_code=status)


def error_response(error: MemosError) -> JSONResponse:
    response = envelope(error.status, error.code, error.message, **error.details)
    if error.status == 401:
        response.headers["WWW-Authenticate"] = "Bearer"
    return response


def redacted(error: MemosError, paths: Mapping[str, str]) -> MemosError:
    """``error`` with each of ``paths`` (a path on the server -> what a client reads in its
    place) replaced in its message and details: the SDK's messages, written for a caller who
    chose the path, name it whole, and where a server keeps its files is no client's business.
    Longer paths are replaced first, so a folder inside another keeps its own name."""

    longest_first = sorted(paths.items(), key=lambda pair: len(pair[0]), reverse=True)

    def strip(value: Any) -> Any:
        if isinstance(value, str):
            for path, label in longest_first:
                value = value.replace(path, label)
            return value
        if isinstance(value, dict):
            return {key: strip(item) for key, item in value.items()}
        if isinstance(value, list | tuple):
            return [strip(item) for item in value]
        return value

    if not paths:
        return error
    return type(error)(strip(error.message), **strip(error.details))


def install(app: FastAPI, private_paths: Mapping[str, str]) -> None:
    """Register the handlers that turn every error into the envelope; ``private_paths`` are
    the server's own folders, never named to a client (see :func:`redacted`)."""
    app.state.private_paths = dict(private_paths)

    async def memos_error(_: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, MemosError)
        return error_response(redacted(error, private_paths))

    async def invalid_request(_: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, RequestValidationError)
        problems = [
            {"loc": [str(part) for part in e.get("loc", ())], "msg": str(e.get("msg", ""))}
            for e in error.errors()
        ]
        return envelope(422, "invalid_input", "the request does not match its schema",
                        problems=problems)  # fmt: skip

    async def http_error(_: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, HTTPException)
        code = _HTTP_CODES.get(error.status_code, "http_error")
        return envelope(error.status_code, code, str(error.detail))

    async def unexpected(_: Request, __: Exception) -> JSONResponse:
        # A bug: the traceback goes to the server's log (the exception is raised on after this
        # answer), the client gets the envelope and nothing of the server's internals.
        return envelope(500, MemosError.code, "the server failed to answer this request")

    app.add_exception_handler(MemosError, memos_error)
    app.add_exception_handler(Exception, unexpected)
    app.add_exception_handler(RequestValidationError, invalid_request)
    app.add_exception_handler(HTTPException, http_error)
