"""Shapes that travel over HTTP and that both faces read: the server writes them, the client
(:mod:`memos.engine._remote`) parses them. One definition, so the two cannot drift apart.

- :class:`ErrorBody`: the ``error`` of the one JSON error envelope (``MemosError.to_dict``).
- The events of a streamed chat (``POST /v1/cubes/{cube}/chat/stream``, server-sent events whose
  ``data`` is one JSON object each): :class:`ChatText` per piece of the answer, then
  :class:`ChatDone`, or :class:`ChatFailed` when generation fails after the stream began.
"""

from __future__ import annotations

from typing import Any

from pydantic import ConfigDict

from memos.core._model import Model
from memos.core._types import ChatReply


class ErrorBody(Model):
    code: str
    message: str
    details: dict[str, Any]


class _Event(Model):
    model_config = ConfigDict(extra="forbid")


class ChatText(_Event):
    """The next piece of the answer."""

    text: str


class ChatDone(_Event):
    """The whole reply, as ``POST /chat`` answers it; the stream's last event."""

    reply: ChatReply


class ChatFailed(_Event):
    """An error after the stream began (before, the request fails with the error envelope);
    the stream's last event."""

    error: ErrorBody


ChatEvent = ChatText | ChatDone | ChatFailed
