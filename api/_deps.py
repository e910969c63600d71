"""Request dependencies: who is calling (the API key), the SDK handle that acts as them, and an
upload's body spooled to a temporary file."""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator
from typing import IO, Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from memos import ApiKey, MemOS
from memos.errors import Unauthenticated

from ._middleware import API_KEY_STATE

# documents the scheme in the OpenAPI document; the key itself is checked by the Authenticate
# middleware, before the body is read
_bearer = HTTPBearer(auto_error=False, description="an API key made by `memos keys create`")
# an upload stays in memory up to this size, then goes on to a file on disk
SPOOL_IN_MEMORY = 1024 * 1024


def root(request: Request) -> MemOS:
    mos: MemOS = request.app.state.mos
    return mos


def api_key(request: Request) -> ApiKey:
    """The key the request was authenticated with (by the ``Authenticate`` middleware)."""
    key = getattr(request.state, API_KEY_STATE, None)
    if not isinstance(key, ApiKey):  # pragma: no cover - a route outside the middleware
        raise Unauthenticated("a valid API key is required (Authorization: Bearer memos_...)")
    return key


def principal_handle(
    request: Request,
    _: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> MemOS:
    """The SDK handle of the key's principal; every route but ``/healthz`` depends on it."""
    return root(request).as_principal(api_key(request).principal, limits=request.app.state.limits)


async def spooled_body(request: Request) -> AsyncIterator[IO[bytes]]:
    """The request's body in a temporary file, written as it arrives and read from its start;
    the ``BodyLimit`` middleware caps it. The file is gone once the request is answered."""
    with tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY, prefix="memos-upload-") as file:
        pending = bytearray()
        async for chunk in request.stream():
            pending += chunk
            if len(pending) >= SPOOL_IN_MEMORY:  # the file may be on disk: write off the loop
                await run_in_threadpool(file.write, bytes(pending))
                pending.clear()
        file.write(bytes(pending))
        file.seek(0)
        yield file


Caller = Annotated[MemOS, Depends(principal_handle)]
Upload = Annotated[IO[bytes], Depends(spooled_body)]
