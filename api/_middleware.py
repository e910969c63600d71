"""ASGI middleware: the request body limit and the latency histogram.

The body limit is enforced on the bytes as they arrive, not only on ``Content-Length`` (a
chunked upload has none): the body is read up to the limit before the app sees the request, and
a request over it is answered ``413`` in the error envelope without reaching any handler.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from prometheus_client import Histogram

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def _too_large_body(limit: int) -> bytes:
    message = f"the request body is over the server's limit of {limit} bytes"
    error = {"code": "request_too_large", "message": message, "details": {"limit": limit}}
    return json.dumps({"error": error}).encode()


class BodyLimit:
    """Answer 413 to a request whose body is over ``limit`` bytes (``by_path`` names other
    limits for the paths a regular expression matches whole)."""

    def __init__(self, app: ASGIApp, limit: int, by_path: dict[str, int] | None = None) -> None:
        self.app = app
        self.limit = limit
        self.by_path = [(re.compile(path), n) for path, n in (by_path or {}).items()]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        limit = next((n for pattern, n in self.by_path if pattern.fullmatch(path)), self.limit)
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length", b"").decode("latin-1")
        if declared.isdigit() and int(declared) > limit:
            await self._reject(send, limit)
            return
        body = bytearray()
        more = True
        while more:  # read it all first, so nothing downstream sees a body over the limit
            message = await receive()
            if message["type"] != "http.request":
                await self.app(scope, _replay(message, receive), send)
                return
            body += message.get("body", b"")
            more = bool(message.get("more_body", False))
            if len(body) > limit:
                await self._reject(send, limit)
                return
        whole = {"type": "http.request", "body": bytes(body), "more_body": False}
        await self.app(scope, _replay(whole, receive), send)

    @staticmethod
    async def _reject(send: Send, limit: int) -> None:
        body = _too_large_body(limit)
        headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})


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


class Timing:
    """Observe each request's latency under its route template (``/v1/cubes/{cube}``), so the
    histogram's label set stays bounded whatever ids clients send."""

    def __init__(self, app: ASGIApp, histogram: Histogram) -> None:
        self.app = app
        self.histogram = histogram

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
            route = scope.get("route")
            path = getattr(route, "path", None) or "unmatched"
            self.histogram.labels(scope["method"], path, str(status)).observe(
                time.perf_counter() - start
            )
