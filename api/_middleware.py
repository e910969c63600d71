"""ASGI middleware: authentication, the request body limit, the latency histogram and the
access log.

A request is authenticated before a byte of its body is read: without a live API key it costs
the server its headers and a short answer (``401`` in the error envelope, and the connection
closed, so the rest of the upload is never taken in). Once authenticated, the body limit is
enforced on the bytes as they arrive, not only on ``Content-Length`` (a chunked upload has
none). A JSON request's body is read whole, up to its small limit, before the app sees the
request; an upload (a tar import) streams through to its route, which spools it to a temporary
file, and the read that crosses the upload limit fails with :class:`RequestTooLarge`. Either
way an oversized body answers ``413`` in the error envelope.
"""

from __future__ import annotations

import logging
import re
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Collection, MutableMapping
from typing import Any

from prometheus_client import Histogram
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from memos.core._keys import authenticate
from memos.core._store import Store
from memos.errors import MemosError, RequestTooLarge

from ._errors import error_response, redacted

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# where the authenticated key is kept for the request (``request.state.api_key``)
API_KEY_STATE = "api_key"
_CLOSE = (b"connection", b"close")


def _has_body(scope: Scope) -> bool:
    headers = dict(scope.get("headers") or [])
    declared = headers.get(b"content-length", b"0").decode("latin-1")
    return b"transfer-encoding" in headers or not declared.isdigit() or int(declared) > 0


async def _answer(scope: Scope, send: Send, error: MemosError) -> None:
    """Answer ``error`` without reading the request's body; a connection whose client may
    still be sending one is closed after the answer rather than drained."""
    response: Response = error_response(redacted(error, scope["app"].state.private_paths))
    if _has_body(scope):
        response.headers["connection"] = "close"
    await response(scope, _no_body, send)


async def _no_body() -> Message:  # pragma: no cover - an answer never reads the request
    return {"type": "http.disconnect"}


def _bearer_token(scope: Scope) -> str | None:
    header = dict(scope.get("headers") or []).get(b"authorization", b"").decode("latin-1")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else None


class Authenticate:
    """Refuse any HTTP request but those to the ``public`` paths (or under the
    ``public_prefixes``, each ending in ``/``) unless it carries a live API key
    (``Authorization: Bearer memos_...``), before its body is read; the key of an accepted
    request is in the request's state (:data:`API_KEY_STATE`)."""

    def __init__(
        self,
        app: ASGIApp,
        store: Store,
        public: Collection[str],
        public_prefixes: Collection[str] = (),
    ) -> None:
        self.app = app
        self.store = store
        self.public = frozenset(public)
        self.public_prefixes = tuple(public_prefixes)

    def _is_public(self, path: str) -> bool:
        return path in self.public or (
            path.startswith(self.public_prefixes) and "/../" not in f"{path}/"
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self._is_public(scope["path"]):
            await self.app(scope, receive, send)
            return
        try:
            key = await run_in_threadpool(authenticate, self.store, _bearer_token(scope))
        except MemosError as error:  # Unauthenticated, or a store that cannot answer (503)
            await _answer(scope, send, error)
            return
        scope.setdefault("state", {})[API_KEY_STATE] = key
        await self.app(scope, receive, send)


def _too_large(limit: int) -> RequestTooLarge:
    message = f"the request body is over the server's limit of {limit} bytes"
    return RequestTooLarge(message, limit=limit)


class BodyLimit:
    """Answer 413 to a request whose body is over ``limit`` bytes. The bodies of the paths
    ``uploads`` names (regular expressions matched whole, each with its own limit) stream
    through to their routes, counted as they go."""

    def __init__(self, app: ASGIApp, limit: int, uploads: dict[str, int] | None = None) -> None:
        self.app = app
        self.limit = limit
        self.uploads = [(re.compile(path), n) for path, n in (uploads or {}).items()]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        upload = next((n for pattern, n in self.uploads if pattern.fullmatch(path)), None)
        limit = self.limit if upload is None else upload
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length", b"").decode("latin-1")
        if declared.isdigit() and int(declared) > limit:
            await _answer(scope, send, _too_large(limit))
            return
        body = _CountedBody(receive, limit, expected=_has_body(scope))
        if upload is not None:
            await self.app(scope, body.receive, body.closing(send))
            return
        whole = await body.read_all()  # so nothing downstream sees a body over the limit
        if whole is None:
            await _answer(scope, send, _too_large(limit))
            return
        await self.app(scope, _replay(whole, receive), send)


class _CountedBody:
    """A request's body as it arrives, counted against ``limit``."""

    def __init__(self, receive: Receive, limit: int, *, expected: bool) -> None:
        self._receive = receive
        self.limit = limit
        self.received = 0
        self.complete = not expected

    async def receive(self) -> Message:
        """The next message; :class:`RequestTooLarge` once the body is over the limit."""
        message = await self._receive()
        if message["type"] == "http.request":
            self.received += len(message.get("body", b""))
            if self.received > self.limit:
                raise _too_large(self.limit)
            self.complete = not message.get("more_body", False)
        return message

    async def read_all(self) -> Message | None:
        """The whole body as one message (or the first message that is not body: a
        disconnect); ``None`` when it is over the limit."""
        body = bytearray()
        while True:
            try:
                message = await self.receive()
            except RequestTooLarge:
                return None
            if message["type"] != "http.request":
                return message
            body += message.get("body", b"")
            if self.complete:
                return {"type": "http.request", "body": bytes(body), "more_body": False}

    def closing(self, send: Send) -> Send:
        """``send``, closing the connection after a response that starts before the body was
        all received (its rest is never read)."""

        async def sent(message: Message) -> None:
            if message["type"] == "http.response.start" and not self.complete:
                message["headers"] = [*message.get("headers", []), _CLOSE]
            await send(message)

        return sent


def _replay(first: Message, receive: Receive) -> Receive:
    """A receive channel that yields ``first``, then the client's own messages (a disconnect)."""
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return first
        return await receive()

    return replayed


class _Answered(ABC):
    """Middleware that calls :meth:`answered` once each HTTP request is answered, with its
    status (500 when the app raised before answering) and seconds."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500
        start = time.perf_counter()

        async def recorded(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, recorded)
        finally:
            self.answered(scope, status, time.perf_counter() - start)

    @abstractmethod
    def answered(self, scope: Scope, status: int, seconds: float) -> None:
        """What to do with an answered request."""


class Timing(_Answered):
    """Observe each request's latency under its route template (``/v1/cubes/{cube}``), so the
    histogram's label set stays bounded whatever ids clients send."""

    def __init__(self, app: ASGIApp, histogram: Histogram) -> None:
        super().__init__(app)
        self.histogram = histogram

    def answered(self, scope: Scope, status: int, seconds: float) -> None:
        route = scope.get("route")
        path = getattr(route, "path", None) or "unmatched"
        self.histogram.labels(scope["method"], path, str(status)).observe(seconds)


class AccessLog(_Answered):
    """One line per request on the ``memos.access`` logger, once it is answered: method, path,
    status and milliseconds. Never the query string, a header (the API key rides in one) or a
    body, so the log holds no key and no memory text."""

    def __init__(self, app: ASGIApp, logger: logging.Logger) -> None:
        super().__init__(app)
        self.logger = logger

    def answered(self, scope: Scope, status: int, seconds: float) -> None:
        self.logger.info("%s %s %d %.1f ms", scope["method"], scope["path"], status, seconds * 1000)
