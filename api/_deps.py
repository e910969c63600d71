"""Request dependencies: who is calling (the API key) and the SDK handle that acts as them."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Query, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from memos import MemOS
from memos._keys import authenticate

from ._settings import ServerSettings

_bearer = HTTPBearer(auto_error=False, description="an API key made by `memos keys create`")


def root(request: Request) -> MemOS:
    mos: MemOS = request.app.state.mos
    return mos


def settings(request: Request) -> ServerSettings:
    value: ServerSettings = request.app.state.settings
    return value


def principal_handle(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> MemOS:
    """The SDK handle of the key's principal; every route but ``/healthz`` depends on it."""
    mos = root(request)
    key = authenticate(mos.store, None if credentials is None else credentials.credentials)
    return mos.as_principal(key.principal, limits=request.app.state.limits)


Caller = Annotated[MemOS, Depends(principal_handle)]
# why a DELETE was made; it has no body, so the reason travels in the query
ReasonQuery = Annotated[str | None, Query(max_length=4096, description="why; kept in the log")]
Settings = Annotated[ServerSettings, Depends(settings)]
