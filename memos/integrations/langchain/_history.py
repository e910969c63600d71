"""A chat session's messages as memories, for LangChain's ``RunnableWithMessageHistory``.

Each message is one memory of the cube, in the session (``session`` metadata) with its
``role`` (``user``, ``assistant``, ``system``, or a tool's or chat message's own) and its
``turn`` (its position in the session), as ``mos.add`` stores a chat message list (which adds
no turn: such messages come first, in the order of their ids, which begin with their creation
time). So the conversation is
searchable with ``mos.search(..., session=...)`` like any memory, each message's creation is
an event in the cube's log, and :meth:`MemOSChatMessageHistory.clear` deletes them (new
versions, rolled back as any memory is).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from langchain_core.chat_history import BaseChatMessageHistory
from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    ChatMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)

from memos.core._types import MemoryItem
from memos.engine._handle import Handle
from memos.errors import InvalidInput

ROLE_KEY, TURN_KEY = "role", "turn"
_ROLES = {"human": "user", "ai": "assistant", "system": "system"}


class MemOSChatMessageHistory(BaseChatMessageHistory):
    """The session ``session_id`` of the cube ``cube`` of ``handle`` (``MemOS.open(...)`` or
    ``MemOS.connect(...)``); ``user`` is whose messages they are (the log names them).

    The session is read page by page with ``list_memories`` (nothing embedded, no use of a
    memory counted), whatever its length."""

    def __init__(
        self,
        handle: Handle,
        cube: str,
        session_id: str,
        *,
        user: str | None = None,
    ) -> None:
        self.handle = handle
        self.cube = cube
        self.session_id = session_id
        self.user = user

    @property
    def messages(self) -> list[BaseMessage]:  # type: ignore[override]
        """The session's messages, oldest first; each one's ``id`` is its memory's."""
        return [as_message(item) for item in self._items()]

    def add_messages(self, messages: Sequence[BaseMessage]) -> None:
        """Store the messages as memories of the session, one ``create`` event each."""
        if not messages:
            return
        first = len(self._items())
        records = [
            {"text": message.text, "metadata": _metadata(message, first + n)}
            for n, message in enumerate(messages)
        ]
        self.handle.add_many(records, cube=self.cube, user=self.user, session=self.session_id)

    def clear(self) -> None:
        """Delete the session's messages (each a new, deleted version: rollback brings it
        back)."""
        for item in self._items():
            self.handle.delete(item.id, user=self.user, reason="chat history cleared")

    def search(self, query: str, *, k: int = 5, mode: str = "hybrid") -> list[BaseMessage]:
        """The ``k`` messages of the session that best match ``query``."""
        hits = self.handle.search(query, cube=self.cube, k=k, session=self.session_id, mode=mode)
        return [as_message(hit.item) for hit in hits]

    def _items(self) -> list[MemoryItem]:
        items: list[MemoryItem] = []
        after = None
        while page := self.handle.list_memories(
            cube=self.cube, session=self.session_id, after=after
        ):
            items.extend(item for item in page if ROLE_KEY in item.metadata)
            after = page[-1].id
        return sorted(items, key=_turn)


def _turn(item: MemoryItem) -> tuple[int, str]:
    turn = item.metadata.get(TURN_KEY)
    # memory ids begin with their creation time, so they order what has no turn
    return (turn if isinstance(turn, int) else 0, item.id)


def _metadata(message: BaseMessage, turn: int) -> dict[str, Any]:
    if not message.text:
        raise InvalidInput(f"a {message.type} message without text cannot be stored")
    role = message.role if isinstance(message, ChatMessage) else _ROLES.get(message.type)
    metadata: dict[str, Any] = {ROLE_KEY: role or message.type, TURN_KEY: turn}
    if message.name is not None:
        metadata["name"] = message.name
    if isinstance(message, ToolMessage):
        metadata["tool_call_id"] = message.tool_call_id
    return metadata


def as_message(item: MemoryItem) -> BaseMessage:
    """The memory of a message as the LangChain message it was stored from."""
    role = item.metadata.get(ROLE_KEY)
    name = item.metadata.get("name")
    fields: dict[str, Any] = {"content": item.text, "id": item.id}
    if isinstance(name, str):
        fields["name"] = name
    if role == "user":
        return HumanMessage(**fields)
    if role == "assistant":
        return AIMessage(**fields)
    if role == "system":
        return SystemMessage(**fields)
    if role == "tool":
        return ToolMessage(tool_call_id=str(item.metadata.get("tool_call_id", "")), **fields)
    return ChatMessage(role=str(role), **fields)
