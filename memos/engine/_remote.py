"""``MemOS.connect(url, api_key=...)``: the SDK's methods over a MemOS server's HTTP API.

:class:`RemoteMemOS` has the methods of an embedded :class:`memos.MemOS` that the server exposes,
with the same signatures, and returns the SDK's own models, so code (and a test suite) runs
unchanged against either face. Both are a :class:`memos.Handle`: every operation declared
there and in its namespaces (see :mod:`memos.engine._operations`) is sent by
:meth:`RemoteMemOS._perform_on` to the route its declaration names, as JSON, a stream of
server-sent events or a tar of a directory; the only method written here is ``add_many``,
which sends a large batch in parts. It acts as the API key's principal, exactly as
``mos.as_principal(principal)`` does embedded: ``user=`` names no actor (the log names the
principal), and is only checked.

A failure the server reports in its JSON error envelope is raised as the
:class:`memos.errors.MemosError` subclass with the same ``code``, message and details; a server
that cannot be reached is a :class:`memos.errors.StorageError` naming the URL.

What HTTP cannot mirror exactly: ``add_many`` sends one request per ``batch_size`` records,
so a bad record in a later batch leaves the earlier batches added; ``lora.import_adapter``
and ``import_cube`` check the directory before the cube (an unknown cube with a missing
directory is :class:`InvalidInput`); API keys have no route and are absent. A
``chat_stream`` reads the server's events as they arrive and holds its connection until it is
read to the end (or closed).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar, cast
from urllib.parse import quote, urlsplit

from pydantic import BaseModel, TypeAdapter, ValidationError
from pydantic_core import PydanticSerializationError, to_jsonable_python

from memos.core import _validation as check
from memos.core._archive import Layout, pack, unpack
from memos.core._http import Client, QueryValue, Response, TransportError
from memos.core._jobs import checked_job_id
from memos.core._records import parse_records
from memos.core._types import (
    MemoryItem,
    MetadataValue,
)
from memos.core._validation import Limits
from memos.engine._handle import Handle
from memos.engine._http_errors import error_from
from memos.engine._operations import DIRECTORY, PATH_PARAMETER, Operation, Performs
from memos.engine._remote_chat import RemoteChatStream
from memos.errors import (
    InvalidInput,
    ItemNotFound,
    KVEntryNotFound,
    MemosError,
    StorageError,
)

T = TypeVar("T")
Progress = Callable[[int], None]
TrainProgress = Callable[[int, int, float], None]

CONNECT_TIMEOUT_S = 5.0
TAR = "application/x-tar"
_LIMITS = Limits()  # for arguments the server never sees (user=, batch_size=)


# the wire -----------------------------------------------------------------------------------


def _encode(body: object) -> bytes:
    try:
        return json.dumps(to_jsonable_python(body), allow_nan=False).encode()
    except (PydanticSerializationError, ValueError) as exc:
        raise InvalidInput(f"the arguments cannot be sent as JSON: {exc}") from None


def _parsed(adapter: TypeAdapter[T], response: Response) -> T:
    try:
        return adapter.validate_json(response.content)
    except ValidationError as exc:
        raise MemosError(
            f"the server's answer to {response.method} {response.path} "
            f"is not what this client reads: {exc}"
        ) from exc


class _Connection:
    """One keep-alive HTTP client of a server, authenticated as one API key."""

    def __init__(self, url: str, api_key: str, timeout: float) -> None:
        self.url = url
        self._client = Client(
            url,
            headers={"Authorization": f"Bearer {api_key}"},
            timeout=timeout,
            connect_timeout=min(timeout, CONNECT_TIMEOUT_S),
        )

    def send(
        self,
        method: str,
        path: str,
        *,
        body: object = None,
        params: Mapping[str, object] | None = None,
        content: bytes | None = None,
        content_type: str = "application/json",
        stream: bool = False,
    ) -> Response:
        """The server's 2xx answer to the request, else its error raised as a ``MemosError``.
        With ``stream``, a 2xx answer's body is left unread, for the caller to read as it
        arrives and then close."""
        if content is None and body is not None:
            content = _encode(body)
        query = {k: _query_value(k, v) for k, v in (params or {}).items() if v is not None}
        headers = {} if content is None else {"Content-Type": content_type}
        try:
            response = self._client.request(
                method, path, params=query, content=content, headers=headers, stream=stream
            )
            if not response.is_success:
                response.read()  # a streamed answer's error envelope is still to come
        except TransportError as exc:
            raise self._unreachable(exc) from exc
        if not response.is_success:
            raise error_from(response)
        return response

    def _unreachable(self, exc: TransportError) -> StorageError:
        return StorageError(f"cannot reach the MemOS server at {self.url}: {exc}", url=self.url)

    def call(self, adapter: TypeAdapter[T], method: str, path: str, **kwargs: Any) -> T:
        return _parsed(adapter, self.send(method, path, **kwargs))

    def close(self) -> None:
        self._client.close()


def _server_url(url: object) -> str:
    """A server's base URL as the client uses it: ``http(s)://host[:port][/prefix]``."""
    if not isinstance(url, str) or not check.is_unicode(url):
        raise InvalidInput(f"a server URL is a string, not {url!r}")
    try:
        parts = urlsplit(url)
        valid = (
            parts.scheme in ("http", "https")
            and bool(parts.hostname)
            and (parts.port is None or parts.port > 0)  # a port that is no number raises
            and not (parts.query or parts.fragment)
        )
    except ValueError:
        valid = False
    if not valid:
        raise InvalidInput(f"a server URL is http(s)://host[:port][/path], not {url!r}")
    return url.rstrip("/")


# paths --------------------------------------------------------------------------------------


def _routable(segment: str) -> bool:
    """Whether ``segment`` survives as one path segment: URL normalisation drops ``.`` and
    ``..``, the server decodes ``%2F`` before routing, and a lone surrogate has no UTF-8."""
    return segment not in ("", ".", "..") and "/" not in segment and check.is_unicode(segment)


def _cube_segment(cube: object) -> str:
    return quote(check.cube_ref(cube), safe="")


def _item_segment(item_id: object) -> str:
    if not isinstance(item_id, str) or not _routable(item_id):
        raise ItemNotFound(f"no memory with id {item_id!r}", item_id=str(item_id))
    return quote(item_id, safe="")


def _principal_segment(principal: object) -> str:
    principal = check.principal(principal, "principal", _LIMITS)
    if principal in (".", ".."):  # URL normalisation would drop the segment
        raise InvalidInput(f"principal {principal!r} cannot be named over HTTP")
    return quote(principal, safe="")


def _entry_segment(entry_id: object) -> str:
    if not isinstance(entry_id, str) or not _routable(entry_id):
        raise KVEntryNotFound(f"no KV entry {entry_id!r}", entry=str(entry_id))
    return quote(entry_id, safe="")


def _adapter_segment(name: object) -> str:
    return _segment(name, "adapter name")


# how a path parameter is checked and encoded, by its name; any other is a plain segment
_SEGMENTS: dict[str, Callable[[object], str]] = {
    "cube": _cube_segment,
    "item_id": _item_segment,
    "principal": _principal_segment,
    "job_id": checked_job_id,  # a job id's characters need no quoting
    "entry_id": _entry_segment,
    "name": _adapter_segment,  # only adapters are named in a path
    "seq": lambda value: _number_segment(value, "seq"),
}


def _segment_of(name: str, values: Mapping[str, object]) -> str:
    encode = _SEGMENTS.get(name) or functools.partial(_segment, field=name)
    return encode(values[name])


def _cube_path(cube: str) -> str:
    return f"/v1/cubes/{_cube_segment(cube)}"


def _item_path(item_id: str) -> str:
    return f"/v1/memories/{_item_segment(item_id)}"


def _job_path(job_id: str) -> str:
    return f"/v1/jobs/{checked_job_id(job_id)}"  # the id's characters need no quoting


def _query_value(field: str, value: object) -> QueryValue:
    """A query parameter as sent: a string must be valid Unicode to be percent-encoded, and a
    model travels as its JSON."""
    if isinstance(value, BaseModel):
        return value.model_dump_json()
    return check.unicode(value, field) if isinstance(value, str) else cast(QueryValue, value)


def _number_segment(value: object, field: str) -> str:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidInput(f"{field} is a positive whole number, not {value!r}", field=field)
    return str(value)


def _segment(value: object, field: str) -> str:
    if not isinstance(value, str) or not _routable(value):
        raise InvalidInput(f"{field} {value!r} cannot name a resource over HTTP", field=field)
    return quote(value, safe="")


def _wire_value(value: object) -> object:
    """An argument as JSON carries it (see :mod:`memos.engine._operations`); anything else is
    sent as it is, for the server to refuse as the embedded SDK does."""
    if isinstance(value, BaseModel):  # iterable, but sent as itself
        return value
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, Iterable) and not isinstance(value, str | bytes):
        return list(value)
    return value


def _unpacked(data: bytes, target: Path, layout: Layout) -> Path:
    """Unpack a downloaded export into ``target`` (new, or an empty directory)."""
    try:
        if target.exists():
            if not target.is_dir() or any(target.iterdir()):
                raise InvalidInput(f"export directory {target} exists and is not empty")
            target.rmdir()  # unpack makes it afresh
        return unpack(data, target, layout)
    except OSError as exc:
        raise StorageError(f"cannot write the export to {target}: {exc}") from exc


def _packed(source: Path, layout: Layout) -> bytes:
    try:
        return pack(source, layout)
    except OSError as exc:
        raise StorageError(f"cannot read the export in {source}: {exc}") from exc


# the client ---------------------------------------------------------------------------------


class RemoteMemOS(Handle):
    """A MemOS server, as its API key's principal sees it; see the module docstring."""

    def __init__(
        self,
        url: str,
        *,
        api_key: str,
        timeout: float = 600.0,
    ) -> None:
        url = _server_url(url)
        if not isinstance(api_key, str) or not api_key.isascii() or not api_key.isprintable():
            raise InvalidInput("api_key must be a printable ASCII string", field="api_key")
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
            raise InvalidInput(f"timeout must be a positive number of seconds, not {timeout!r}")
        self._http = _Connection(url, api_key, float(timeout))

    @property
    def url(self) -> str:
        return self._http.url

    def _perform_on(
        self, target: Performs, op: Operation, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        """Send a declared operation to its route and read the reply (the body never runs
        here)."""
        values = op.arguments(args, kwargs)
        directory = Path(values.pop(DIRECTORY)) if op.archive is not None else None
        path = PATH_PARAMETER.sub(lambda m: _segment_of(m.group(1), values), op.path)
        rest = {k: _wire_value(v) for k, v in values.items() if k not in op.path_parameters}
        if op.archive is not None and directory is not None:
            return self._move_archive(op, directory, path, rest)
        if op.stream:  # read as it arrives; a refusal is raised here, before any piece
            response = self._http.send(op.method, path, body=rest, stream=True)
            return RemoteChatStream(response, self.url)
        if op.in_query:
            return self._http.call(op.reply_adapter, op.method, path, params=rest)
        return self._http.call(op.reply_adapter, op.method, path, body=rest)

    def _move_archive(
        self, op: Operation, directory: Path, path: str, params: dict[str, Any]
    ) -> Any:
        """Download the tar a route answers into ``directory``, or upload ``directory`` as a
        tar (checked here first: what is not sent is refused before any request)."""
        layout = cast(Layout, op.archive)
        if op.downloads:
            data = self._http.send(op.method, path, params=params).content
            return _unpacked(data, directory, layout)
        layout.check(directory)
        data = _packed(directory, layout)
        return self._http.call(
            op.reply_adapter, op.method, path, params=params, content=data, content_type=TAR
        )

    def close(self) -> None:
        self._http.close()

    # cubes ------------------------------------------------------------------------------

    # writes -----------------------------------------------------------------------------

    def add_many(
        self,
        records: Iterable[str | Mapping[str, Any]],
        *,
        cube: str,
        user: str | None = None,
        tags: Iterable[str] | None = None,
        metadata: Mapping[str, MetadataValue] | None = None,
        session: str | None = None,
        batch_size: int = 256,
        progress: Progress | None = None,
    ) -> list[MemoryItem]:
        """Add many memories, ``batch_size`` records per request (texts or record mappings).

        Every record is checked here before the first request, as the embedded SDK checks
        them before the first commit, so a bad record makes the call write nothing. (A server
        with tighter size limits than the SDK's defaults may still refuse a later request.)"""
        if isinstance(records, str | bytes) or not isinstance(records, Iterable):
            raise InvalidInput("add_many takes a list of texts or records")
        batch_size = check.positive(batch_size, "batch_size", 100_000)
        records = list(records)
        parse_records(
            records, user=user, tags=tags, metadata=metadata, session=session, limits=_LIMITS
        )
        send = functools.partial(
            Handle.add_many, self, cube=cube, user=user, tags=tags, metadata=metadata,
            session=session,
        )  # fmt: skip
        added: list[MemoryItem] = []
        for start in range(0, len(records), batch_size):
            batch = records[start : start + batch_size]
            added.extend(send(batch))
            if progress is not None:
                progress(len(batch))
        return added
