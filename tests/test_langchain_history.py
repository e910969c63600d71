"""``MemOSChatMessageHistory``: a session's messages as memories, embedded and over HTTP, and
with ``RunnableWithMessageHistory`` around ``ChatMemOS`` on the tiny random Llama.

``langchain-tests`` has no standard suite for chat message histories, so nothing of one is
turned off here.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from _langchain import FACES, fresh_cube, principal
from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    ChatMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
from langchain_core.prompt_values import ChatPromptValue
from langchain_core.prompts import ChatPromptTemplate, MessagesPlaceholder
from langchain_core.runnables.history import RunnableWithMessageHistory

from memos import EventOp, HashEmbedder, ItemStatus
from memos.errors import InvalidInput
from memos.integrations.langchain import ChatMemOS, MemOSChatMessageHistory
from memos.llm import LocalModel


@pytest.fixture(scope="module", params=FACES)
def alice(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    tiny_model: LocalModel,
) -> Iterator[Any]:
    directory = tmp_path_factory.mktemp("data")
    with principal(request.param, directory, embedder=HashEmbedder(64), model=tiny_model) as handle:
        yield handle


@pytest.fixture
def history(alice: Any) -> MemOSChatMessageHistory:
    return MemOSChatMessageHistory(alice, fresh_cube(alice), "s1", user="alice")


def _contents(messages: list[BaseMessage]) -> list[tuple[str, str]]:
    return [(m.type, str(m.content)) for m in messages]


def test_messages_come_back_in_order_with_their_memory_ids(
    history: MemOSChatMessageHistory,
) -> None:
    assert history.messages == []
    history.add_messages([SystemMessage("be brief"), HumanMessage("hi, I am Alice")])
    history.add_ai_message("hello Alice")
    history.add_messages(
        [
            HumanMessage("my dog is Pixel", name="alice"),
            ToolMessage("42", tool_call_id="call-1"),
            ChatMessage(role="narrator", content="later that day"),
        ]
    )
    messages = history.messages
    assert _contents(messages) == [
        ("system", "be brief"),
        ("human", "hi, I am Alice"),
        ("ai", "hello Alice"),
        ("human", "my dog is Pixel"),
        ("tool", "42"),
        ("chat", "later that day"),
    ]
    assert messages[3].name == "alice"
    assert isinstance(messages[4], ToolMessage)
    assert messages[4].tool_call_id == "call-1"
    assert isinstance(messages[5], ChatMessage)
    assert messages[5].role == "narrator"
    item = history.handle.get(messages[1].id)
    assert (item.session, item.user, item.metadata["role"]) == ("s1", "alice", "user")
    other = MemOSChatMessageHistory(history.handle, history.cube, "s2")
    assert other.messages == []


def test_messages_are_searchable_audited_and_rolled_back(
    history: MemOSChatMessageHistory,
) -> None:
    alice = history.handle
    history.add_user_message("I adopted a collie called Pixel")
    history.add_ai_message("what a lovely name")
    found = history.search("collie Pixel", k=1)
    assert _contents(found) == [("human", "I adopted a collie called Pixel")]
    hits = alice.search("collie", cube=history.cube, session="s1", k=5)
    assert {h.item.text for h in hits} >= {"I adopted a collie called Pixel"}
    ids = [m.id for m in history.messages]
    history.clear()
    assert history.messages == []
    assert all(alice.get(i).status == ItemStatus.DELETED for i in ids)
    ops = [e.op for e in alice.log(history.cube)]
    assert ops.count(EventOp.CREATE) == 2
    assert ops.count(EventOp.DELETE) == 2
    for memory_id in ids:
        alice.rollback(memory_id, to_version=1, reason="cleared by mistake")
    assert _contents(history.messages) == [
        ("human", "I adopted a collie called Pixel"),
        ("ai", "what a lovely name"),
    ]


def test_messages_the_sdk_added_are_part_of_the_session(history: MemOSChatMessageHistory) -> None:
    history.handle.add([{"role": "user", "content": "first"}], cube=history.cube, session="s1")
    history.add_ai_message("second")
    assert _contents(history.messages) == [("human", "first"), ("ai", "second")]


def test_a_long_session_is_read_whole_without_counting_uses(
    history: MemOSChatMessageHistory,
) -> None:
    said = [
        HumanMessage(f"question {n}") if n % 2 else AIMessage(f"answer {n}") for n in range(230)
    ]
    history.add_messages(said)
    messages = history.messages  # over HTTP, three pages of a default server (max_k 100)
    assert [m.text for m in messages] == [m.text for m in said]
    ids = [m.id for m in messages if m.id is not None]
    assert history.handle.access_stats(ids) == {}


def test_a_message_without_text_is_refused(history: MemOSChatMessageHistory) -> None:
    with pytest.raises(InvalidInput):
        history.add_messages([HumanMessage("kept?"), AIMessage("")])
    assert history.messages == []  # all or nothing


# langchain-core 1.x deprecates RunnableWithMessageHistory for LangGraph, but it is the
# interface a chat message history exists for
@pytest.mark.filterwarnings("ignore:RunnableWithMessageHistory is deprecated")
def test_runnable_with_message_history_around_chat_memos(alice: Any) -> None:
    cube = fresh_cube(alice)
    alice.add_many(["alice moved to lisbon in may"], cube=cube)
    prompt = ChatPromptTemplate.from_messages(
        [MessagesPlaceholder("history"), ("human", "{question}")]
    )
    seen: list[list[BaseMessage]] = []

    def model_input(value: ChatPromptValue) -> ChatPromptValue:
        seen.append(value.to_messages())
        return value

    chain = prompt | model_input | ChatMemOS(handle=alice, cube=cube, max_tokens=4, k=1)
    sessions: dict[str, MemOSChatMessageHistory] = {}

    def session(session_id: str) -> MemOSChatMessageHistory:
        return sessions.setdefault(session_id, MemOSChatMessageHistory(alice, cube, session_id))

    with_history = RunnableWithMessageHistory(
        chain, session, input_messages_key="question", history_messages_key="history"
    )
    config = {"configurable": {"session_id": "chat-1"}}
    first = with_history.invoke({"question": "where did alice move"}, config=config)
    second = with_history.invoke({"question": "when did she move"}, config=config)
    assert _contents(session("chat-1").messages) == [
        ("human", "where did alice move"),
        ("ai", str(first.content)),
        ("human", "when did she move"),
        ("ai", str(second.content)),
    ]
    # the model was given the first turn with the second question
    assert _contents(seen[1]) == _contents(session("chat-1").messages)[:3]
