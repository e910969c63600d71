"""``RemoteMemOS.chat_stream``: the server's chat events, read as they arrive.

``POST /v1/cubes/{cube}/chat/stream`` answers server-sent events whose ``data`` is one JSON
object each: ``{"text": ...}`` per piece of the answer, then ``{"reply": ...}``, or
``{"error": ...}`` when generation fails after the stream began. A refusal before that is an
ordinary error answer, raised when the stream is opened (see :meth:`_Connection.send`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError

from memos._remote import error_named
from memos._types import ChatReply
from memos.errors import MemosError, StorageError


class _Event(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Text(_Event):
    text: str


class _Done(_Event):
    reply: ChatReply


class _ErrorBody(_Event):
    code: str
    message: str
    details: dict[str, Any]


class _Failed(_Event):
    error: _ErrorBody


_EVENT: TypeAdapter[_Text | _Done | _Failed] = TypeAdapter(_Text | _Done | _Failed)


def event_data(lines: Iterable[str]) -> Iterator[str]:
    """The ``data`` of each complete server-sent event in ``lines`` (comments, other fields and
    an event cut off by the end of the stream are skipped)."""
    data: list[str] = []
    for line in lines:
        if not line:
            if data:
                yield "\n".join(data)
            data = []
        elif line.startswith("data:"):
            data.append(line[5:].removeprefix(" "))


class RemoteChatStream:
    """Text pieces of an answer as the server sends them; ``reply`` once it is exhausted (the
    embedded :class:`memos._chat.ChatStream`, over HTTP)."""

    def __init__(self, response: httpx.Response, url: str) -> None:
        self._response = response
        self._url = url
        self._reply: ChatReply | None = None

    def __iter__(self) -> Iterator[str]:
        try:
            for data in event_data(self._response.iter_lines()):
                event = self._parsed(data)
                if isinstance(event, _Text):
                    yield event.text
                elif isinstance(event, _Done):
                    self._reply = event.reply
                    return
                else:
                    error = event.error
                    raise error_named(error.code, error.message, error.details, 500)
        except httpx.RequestError as exc:
            raise StorageError(
                f"the chat stream from {self._url} broke: {type(exc).__name__}: {exc}",
                url=self._url,
            ) from exc
        finally:
            self.close()
        raise StorageError(f"the chat stream from {self._url} ended before its reply")

    def _parsed(self, data: str) -> _Text | _Done | _Failed:
        try:
            return _EVENT.validate_json(data)
        except ValidationError as exc:
            raise MemosError(
                f"a chat event from {self._url} is not one this client reads: {exc}"
            ) from exc

    @property
    def reply(self) -> ChatReply:
        if self._reply is None:
            raise RuntimeError("the reply is complete only once the stream is exhausted")
        return self._reply

    def run(self) -> ChatReply:
        for _ in self:
            pass
        return self.reply

    def close(self) -> None:
        """Let go of the connection (a stream read to its end lets go by itself)."""
        self._response.close()
