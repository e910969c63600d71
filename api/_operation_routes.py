"""The routes of the declared operations (see :mod:`memos.engine._operations`), made from their
declarations: a route runs the operation's body on the caller's handle."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Body, Path, Query

from memos.engine._handle import Handle
from memos.engine._operations import Operation, operations_of

from ._deps import Caller
from ._errors import COMMON_ERRORS

_HANDLE, _REQUEST = "mos", "request_"


def router_of(handle: type[Handle]) -> APIRouter:
    """A router with one route per operation the handle class declares."""
    router = APIRouter(responses=COMMON_ERRORS)
    for op in operations_of(handle):
        router.add_api_route(
            op.path,
            _endpoint(op),
            methods=[op.method],
            status_code=op.status,
            response_model=op.reply,
            name=op.name,
            summary=op.summary,
            description=inspect.getdoc(op.function),
            tags=[op.tag],
        )
    return router


def _endpoint(op: Operation) -> Callable[..., Any]:
    """A function FastAPI reads as the route: the caller's handle, the path's parameters and
    the request model (the body, or the query string of a GET or DELETE)."""

    def endpoint(**given: Any) -> Any:
        handle, request = given.pop(_HANDLE), given.pop(_REQUEST, None)
        values = dict(given)
        if request is not None:
            values |= {name: getattr(request, name) for name in type(request).model_fields}
        return op.call(handle, values)

    parameters = [inspect.Parameter(_HANDLE, inspect.Parameter.KEYWORD_ONLY, annotation=Caller)]
    for name in op.path_parameters:
        annotation = Annotated[str, Path()]
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
