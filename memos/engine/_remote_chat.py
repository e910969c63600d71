"""``RemoteMemOS.chat_stream``: the server's chat events, read as they arrive.

``POST /v1/cubes/{cube}/chat/stream`` answers server-sent events whose ``data`` is one JSON
object each: ``{"text": ...}`` per piece of the answer, then ``{"reply": ...}``, or
``{"error": ...}`` when generation fails after the stream began. A refusal before that is an
ordinary error answer, raised when the stream is opened (see :meth:`_Connection.send`).
"""

from __future__ import annotations

import functools
from collections.abc import Iterator

from pydantic import TypeAdapter, ValidationError

from memos.core._http import Response, TransportError
from memos.core._sse import event_data
from memos.core._types import ReplyStream
from memos.core._wire import ChatDone, ChatEvent, ChatText
from memos.engine._http_errors import error_named
from memos.errors import MemosError, StorageError


@functools.cache
def _events() -> TypeAdapter[ChatEvent]:
    """The reader of a chat event (made on the first stream read, not at import)."""
    return TypeAdapter(ChatEvent)


class RemoteChatStream(ReplyStream):
    """Text pieces of an answer as the server sends them; ``reply`` once it is exhausted (the
    embedded :class:`memos.engine._chat.ChatStream`, over HTTP)."""

    def __init__(self, response: Response, url: str) -> None:
        self._response = response
        self._url = url

    def __iter__(self) -> Iterator[str]:
        try:
            for data in event_data(self._response.iter_lines()):
                event = self._parsed(data)
                if isinstance(event, ChatText):
                    yield event.text
                elif isinstance(event, ChatDone):
                    self._reply = event.reply
                    return
                else:
                    error = event.error
                    raise error_named(error.code, error.message, error.details, 500)
        except TransportError as exc:
            raise StorageError(
                f"the chat stream from {self._url} broke: {exc}", url=self._url
            ) from exc
        finally:
            self.close()
        raise StorageError(f"the chat stream from {self._url} ended before its reply")

    def _parsed(self, data: str) -> ChatEvent:
        try:
            return _events().validate_json(data)
        except ValidationError as exc:
            raise MemosError(
                f"a chat event from {self._url} is not one this client reads: {exc}"
            ) from exc

    def close(self) -> None:
        """Let go of the connection (a stream read to its end lets go by itself)."""
        self._response.close()
