"""A keep-alive HTTP/1.1 client on the standard library, for :class:`memos.RemoteMemOS`.

What the client of a MemOS server needs is small: one base URL (its path a prefix of every
request's), JSON and tar bodies, a query string, an answer read whole or line by line as it
arrives, a connect timeout apart from the read timeout, TLS with the system's certificates for
``https``, and connections kept alive and shared by threads. :mod:`http.client` does the
protocol (framing, chunked answers); this module adds the pool. A general client would cost a
command against a server a third of its start-up in imports alone.

A connection goes back to the pool once its answer is read to the end and the server keeps it
open; one the server closed while it waited there is dropped before it is used (as a reading
end that is readable while no request is out can only be at its end). No request is retried:
a request that fails is reported, never sent twice.
"""

from __future__ import annotations

import http.client
import json
import select
import threading
from base64 import b64encode
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlencode, urlsplit

if TYPE_CHECKING:
    import ssl

QueryValue = str | int | float | bool | list[Any] | tuple[Any, ...]


class TransportError(Exception):
    """The request could not be sent or its answer not read (the server unreachable, the
    connection broken, a timeout): ``kind`` names the failure (``ConnectionRefusedError``,
    ``TimeoutError``...), ``str()`` adds its details."""

    def __init__(self, cause: BaseException) -> None:
        self.kind = type(cause).__name__
        super().__init__(f"{self.kind}: {cause}")


def _query(params: Mapping[str, QueryValue]) -> str:
    """A query string: a list or tuple is the key repeated, a boolean ``true``/``false``."""
    pairs: list[tuple[str, str]] = []
    for key, value in params.items():
        for one in value if isinstance(value, list | tuple) else (value,):
            pairs.append((key, str(one).lower() if isinstance(one, bool) else str(one)))
    return urlencode(pairs)


class Response:
    """A server's answer: its status and headers at once, its body read whole
    (:attr:`content`) or line by line as it arrives (:meth:`iter_lines`)."""

    def __init__(
        self,
        method: str,
        path: str,
        connection: http.client.HTTPConnection,
        raw: http.client.HTTPResponse,
        pool: Pool,
    ) -> None:
        self.method = method
        self.path = path
        self.status = raw.status
        self.reason = raw.reason
        self.headers = raw.headers
        self._raw = raw
        self._pool = pool
        self._connection: http.client.HTTPConnection | None = connection
        self._content: bytes | None = None

    @property
    def is_success(self) -> bool:
        return 200 <= self.status < 300

    @property
    def content(self) -> bytes:
        """The whole body (read on first use)."""
        return self.read()

    def read_at_most(self, limit: int) -> bytes:
        """The body's first ``limit`` bytes (all of a shorter one); the rest is left unread and
        the connection closed. A broken connection gives what arrived before."""
        try:
            body = self._raw.read(limit)
        except (OSError, http.client.HTTPException):
            body = b""
        self.close()
        return body

    def read(self) -> bytes:
        """Read the whole body, once; the connection goes back to the pool."""
        if self._content is None:
            try:
                self._content = self._raw.read()
            except (OSError, http.client.HTTPException) as exc:
                self.close()
                raise TransportError(exc) from exc
            self._finish()
        return self._content

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", errors="replace")

    def json(self) -> Any:
        """The body as JSON (``ValueError`` when it is not)."""
        return json.loads(self.content)

    def iter_lines(self) -> Iterator[str]:
        """The body's lines as they arrive, without their line ends."""
        try:
            while line := self._raw.readline():
                yield line.decode("utf-8", errors="replace").rstrip("\r\n")
        except (OSError, http.client.HTTPException) as exc:
            self.close()
            raise TransportError(exc) from exc
        self._finish()

    def close(self) -> None:
        """Let go of the answer: a connection whose answer was not read to its end is
        closed."""
        self._raw.close()
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def _finish(self) -> None:
        """The body is read: its connection goes back to the pool, if the server keeps it."""
        connection, self._connection = self._connection, None
        if connection is not None:
            self._pool.put(connection, reusable=not self._raw.will_close)


class Pool:
    """Idle keep-alive connections to one server, shared by threads."""

    def __init__(
        self, url: str, *, timeout: float, connect_timeout: float, context: ssl.SSLContext | None
    ) -> None:
        parts = urlsplit(url)
        self.host = parts.hostname or ""
        self.port = parts.port  # ValueError for a port that is not one
        self.https = parts.scheme == "https"
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self._context = context
        self._idle: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()
        self._closed = False

    def take(self) -> http.client.HTTPConnection:
        """An idle connection the server has not closed, else a new one, connected."""
        with self._lock:
            while self._idle:
                connection = self._idle.pop()
                if _open(connection):
                    return connection
                connection.close()
        return self._connect()

    def put(self, connection: http.client.HTTPConnection, *, reusable: bool) -> None:
        with self._lock:
            if reusable and not self._closed:
                self._idle.append(connection)
                return
        connection.close()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()

    def _connect(self) -> http.client.HTTPConnection:
        connection: http.client.HTTPConnection
        if self.https:
            connection = http.client.HTTPSConnection(
                self.host, self.port, timeout=self.connect_timeout, context=self._tls()
            )
        else:
            connection = http.client.HTTPConnection(
                self.host, self.port, timeout=self.connect_timeout
            )
        try:
            connection.connect()
        except OSError as exc:
            connection.close()
            raise TransportError(exc) from exc
        if connection.sock is not None:
            connection.sock.settimeout(self.timeout)
        return connection

    def _tls(self) -> ssl.SSLContext:
        if self._context is None:
            import ssl  # only for https

            self._context = ssl.create_default_context()
        return self._context


def _open(connection: http.client.HTTPConnection) -> bool:
    """Whether an idle connection is still open: with no request out, a readable socket is at
    its end (or holds bytes no request asked for, as useless)."""
    sock = connection.sock
    if sock is None:
        return False
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):  # closed under us
        return False
    return not readable


class Client:
    """Requests to one server: ``url`` is its base (scheme, host, port and an optional path
    prefix; a user and password in it are sent as basic authentication unless ``headers``
    authorize), ``headers`` go with every request."""

    def __init__(
        self,
        url: str,
        *,
        headers: Mapping[str, str],
        timeout: float,
        connect_timeout: float,
        context: ssl.SSLContext | None = None,
    ) -> None:
        self.url = url
        parts = urlsplit(url)
        self._prefix = parts.path.rstrip("/")
        self._headers = dict(headers)
        if parts.username is not None and "Authorization" not in self._headers:
            said = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
            self._headers["Authorization"] = "Basic " + b64encode(said.encode()).decode()
        self._pool = Pool(url, timeout=timeout, connect_timeout=connect_timeout, context=context)

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, QueryValue] | None = None,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        stream: bool = False,
    ) -> Response:
        """The server's answer to one request, read whole unless ``stream`` (then the caller
        reads it and closes it); :class:`TransportError` when there is none."""
        target = self._prefix + path
        if params:
            target += "?" + _query(params)
        connection = self._pool.take()
        try:
            connection.request(method, target, content, self._headers | dict(headers or {}))
            raw = connection.getresponse()
        except (OSError, http.client.HTTPException) as exc:
            connection.close()
            raise TransportError(exc) from exc
        response = Response(method, path, connection, raw, self._pool)
        if not stream:
            response.read()
        return response

    def close(self) -> None:
        self._pool.close()
