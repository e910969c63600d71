"""The OpenAI-compatible endpoint (``/v1/chat/completions``, ``/v1/models``) with the official
``openai`` client, sync and async, streamed and not, against a real uvicorn server over the
tiny random Llama: the answer and the usage counts are those of ``mos.chat`` on the same cube
and options, a key sees only the cubes it may read, what the endpoint cannot honour is refused
with the client's typed errors, and ``remember`` writes the exchange back into the cube."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from _servers import serve
from memos.api import ServerSettings
from openai import AsyncOpenAI, OpenAI

from memos import CubePolicies, MemOS
from memos.core._policies import Quotas

FACTS = [
    "alice moved to lisbon in may",
    "the capital of france is paris",
    "alice moved to porto in june",
    "paris is where alice moved in june",
]
QUESTION = "where did alice move in may"
SYSTEM = "answer briefly"  # the client's system message: chat's ``system`` instructions
# the turns before the question: chat's ``history``
HISTORY = [
    {"role": "user", "content": "an earlier question"},
    {"role": "assistant", "content": "an earlier answer"},
]
MAX_TOKENS = 12


@dataclass
class Served:
    url: str
    alice: MemOS  # the handles the server's keys act as, over the same engine
    bob: MemOS
    alice_key: str
    bob_key: str

    client: OpenAI  # alice's
    bob_client: OpenAI

    def async_client(self) -> AsyncOpenAI:
        return AsyncOpenAI(base_url=f"{self.url}/v1", api_key=self.alice_key, max_retries=0)


@pytest.fixture
def served(chat_mos: MemOS, data_dir: Path) -> Iterator[Served]:
    _, alice_key = chat_mos.keys.create("alice")
    _, bob_key = chat_mos.keys.create("bob")
    alice, bob = chat_mos.as_principal("alice"), chat_mos.as_principal("bob")
    alice.create_cube("notes")
    alice.add_many(FACTS, cube="notes")
    bob.create_cube("secrets")
    bob.add("the vault code is 0451", cube="secrets")
    # no scheduler ticks: nothing builds a KV block between two answers compared
    settings = ServerSettings(store=f"sqlite:///{data_dir}", tick_interval_s=0)
    with (
        serve(chat_mos, settings) as url,
        OpenAI(base_url=f"{url}/v1", api_key=alice_key, max_retries=0) as alice_client,
        OpenAI(base_url=f"{url}/v1", api_key=bob_key, max_retries=0) as bob_client,
    ):
        yield Served(url, alice, bob, alice_key, bob_key, alice_client, bob_client)


def _messages(question: str = QUESTION) -> list[Any]:
    return [
        {"role": "system", "content": SYSTEM},
        *HISTORY,
        {"role": "user", "content": question},
    ]


def test_an_answer_and_its_usage_are_those_of_mos_chat(served: Served) -> None:
    expected = served.alice.chat(
        QUESTION, cube="notes", k=2, max_new_tokens=MAX_TOKENS, system=SYSTEM, history=HISTORY
    )
    completion = served.client.chat.completions.create(
        model="memos:notes",
        messages=_messages(),
        max_tokens=MAX_TOKENS,
        temperature=0.7,  # accepted; decoding stays greedy
        extra_body={"k": 2},
    )
    assert completion.id.startswith("chatcmpl-")
    assert completion.object == "chat.completion"
    assert completion.model == "memos:alice:notes"
    [choice] = completion.choices
    assert choice.message.role == "assistant"
    assert choice.message.content == expected.answer
    finish = "length" if len(expected.tokens) == MAX_TOKENS else "stop"
    assert choice.finish_reason == finish
    assert completion.usage is not None
    assert completion.usage.prompt_tokens == expected.prompt_tokens
    assert completion.usage.completion_tokens == expected.completion_tokens == len(expected.tokens)
    assert completion.usage.total_tokens == expected.prompt_tokens + len(expected.tokens)
    without = served.alice.chat(QUESTION, cube="notes", k=2, max_new_tokens=MAX_TOKENS)
    assert without.prompt_tokens < expected.prompt_tokens  # the system message and turns too
    assert completion.usage.prompt_tokens_details is not None
    assert completion.usage.prompt_tokens_details.cached_tokens == 0
    details = (completion.model_extra or {})["memos"]
    assert details["memories"] == [item.id for item in expected.memories]
    assert details["retrieved"] == list(expected.retrieved)
    assert len(details["retrieved"]) == 2


def test_a_kv_block_serves_the_prompt_and_usage_counts_its_tokens(served: Served) -> None:
    items = served.alice.search(QUESTION, cube="notes", k=len(FACTS))
    entry = served.alice.kv.build("notes", [hit.item.id for hit in items])
    expected = served.alice.chat(
        QUESTION, cube="notes", k=2, max_new_tokens=MAX_TOKENS, system=SYSTEM, history=HISTORY
    )
    assert expected.cached_tokens == entry.tokens > 0
    client = served.client
    cached = client.chat.completions.create(
        model="memos", messages=_messages(), max_completion_tokens=MAX_TOKENS,
        extra_body={"cube": "notes", "k": 2},
    )  # fmt: skip
    recomputed = client.chat.completions.create(
        model="memos:alice:notes", messages=_messages(), max_tokens=MAX_TOKENS,
        extra_body={"k": 2, "use_kv": False},
    )  # fmt: skip
    for completion, cached_tokens in ((cached, entry.tokens), (recomputed, 0)):
        assert completion.choices[0].message.content == expected.answer
        assert completion.usage is not None
        assert completion.usage.prompt_tokens == expected.prompt_tokens
        assert completion.usage.prompt_tokens_details is not None
        assert completion.usage.prompt_tokens_details.cached_tokens == cached_tokens
    assert (cached.model_extra or {})["memos"]["kv_entry"] == entry.id


def test_a_stream_adds_up_to_the_answer_and_ends_with_usage(served: Served) -> None:
    client = served.client
    whole = client.chat.completions.create(
        model="memos:notes", messages=_messages(), max_tokens=MAX_TOKENS
    )
    chunks = list(
        client.chat.completions.create(
            model="memos:notes", messages=_messages(), max_tokens=MAX_TOKENS, stream=True,
            stream_options={"include_usage": True},
        )
    )  # fmt: skip
    assert {chunk.object for chunk in chunks} == {"chat.completion.chunk"}
    assert len({chunk.id for chunk in chunks}) == 1
    assert chunks[0].choices[0].delta.role == "assistant"
    *answer, finish, usage = chunks
    text = "".join(chunk.choices[0].delta.content or "" for chunk in answer)
    assert text == whole.choices[0].message.content
    assert all(chunk.choices[0].finish_reason is None for chunk in answer)
    assert finish.choices[0].finish_reason == whole.choices[0].finish_reason
    assert all(chunk.usage is None for chunk in [*answer, finish])
    assert usage.choices == []
    assert usage.usage == whole.usage


def test_the_async_client_streams_and_answers_concurrently(served: Served) -> None:
    async def ask() -> tuple[list[tuple[str, int]], list[str]]:
        async with served.async_client() as client:
            whole = [
                client.chat.completions.create(
                    model="memos:notes", messages=_messages(q), max_tokens=MAX_TOKENS
                )
                for q in (QUESTION, "what is the capital of france")
            ]
            answers = [
                (c.choices[0].message.content or "", c.usage.prompt_tokens if c.usage else 0)
                for c in await asyncio.gather(*whole)
            ]
            streamed = []
            for question in (QUESTION, "what is the capital of france"):
                stream = await client.chat.completions.create(
                    model="memos:notes", messages=_messages(question), max_tokens=MAX_TOKENS,
                    stream=True,
                )  # fmt: skip
                streamed.append("".join([c.choices[0].delta.content or "" async for c in stream]))
            return answers, streamed

    answers, streamed = asyncio.run(ask())
    expected = [
        served.alice.chat(
            q, cube="notes", max_new_tokens=MAX_TOKENS, system=SYSTEM, history=HISTORY
        )
        for q in (QUESTION, "what is the capital of france")
    ]
    assert answers == [(reply.answer, reply.prompt_tokens) for reply in expected]
    assert streamed == [reply.answer for reply in expected]


def test_models_are_the_cubes_the_key_reads_and_no_other(served: Served) -> None:
    served.bob.create_cube("shared")
    served.bob.grant("shared", "alice", "read")
    models = served.client.models.list().data
    assert sorted((m.id, m.owned_by) for m in models) == [
        ("memos:alice:notes", "alice"),
        ("memos:bob:shared", "bob"),
    ]
    assert [m.id for m in served.bob_client.models.list().data] == [
        "memos:bob:secrets",
        "memos:bob:shared",
    ]
    with pytest.raises(openai.NotFoundError) as refused:
        served.client.chat.completions.create(
            model="memos:bob:secrets", messages=_messages("what is the vault code")
        )
    rest = httpx.post(
        f"{served.url}/v1/cubes/bob:secrets/chat",
        json={"query": "what is the vault code"},
        headers={"Authorization": f"Bearer {served.alice_key}"},
    )
    assert rest.status_code == refused.value.status_code == 404
    assert refused.value.code == rest.json()["error"]["code"] == "cube_not_found"
    assert "0451" not in refused.value.message


def test_a_stop_sequence_ends_the_answer_before_it(served: Served) -> None:
    """``stop`` ends the answer before the first of its sequences, streamed or not, with
    ``finish_reason: stop`` and only the tokens generated until then counted."""
    full = served.alice.chat(QUESTION, cube="notes", k=2, max_new_tokens=MAX_TOKENS)
    word = full.answer.split()[1]
    arguments = {
        "model": "memos:notes", "messages": [{"role": "user", "content": QUESTION}],
        "max_tokens": MAX_TOKENS, "stop": ["never said", word], "extra_body": {"k": 2},
    }  # fmt: skip
    completion = served.client.chat.completions.create(**arguments)
    [choice] = completion.choices
    assert choice.message.content == full.answer[: full.answer.index(word)]
    assert choice.finish_reason == "stop"
    assert completion.usage is not None
    assert completion.usage.completion_tokens < len(full.tokens)
    chunks = served.client.chat.completions.create(**arguments, stream=True)
    pieces, finishes = [], []
    for chunk in chunks:
        for streamed in chunk.choices:
            pieces.append(streamed.delta.content or "")
            finishes.append(streamed.finish_reason)
    assert "".join(pieces) == choice.message.content
    assert finishes[-1] == "stop"


@pytest.mark.parametrize(
    ("request_", "error", "says"),
    [
        ({"model": "gpt-4o"}, openai.NotFoundError, "no model named 'gpt-4o'"),
        ({"model": "memos"}, openai.UnprocessableEntityError, "needs a `cube`"),
        ({"messages": [{"role": "system", "content": "hi"}]}, openai.UnprocessableEntityError,
         "no user message"),
        ({"n": 2}, openai.UnprocessableEntityError, "n must be 1"),
        ({"messages": [*_messages(), {"role": "assistant", "content": "I think"}]},
         openai.UnprocessableEntityError, "must be the user's question"),
        ({"messages": [{"role": "tool", "content": "42", "tool_call_id": "c"}, *_messages()]},
         openai.UnprocessableEntityError, "tools are not supported"),
        ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]},
         openai.UnprocessableEntityError, "tools"),
        ({"stop": ["a", "b", "c", "d", "e"]}, openai.UnprocessableEntityError,
         "stop holds 5 sequences"),
        ({"stop": [""]}, openai.UnprocessableEntityError, "stop[0] must be a string of 1"),
        ({"stop": "x" * 257}, openai.UnprocessableEntityError, "stop[0] must be a string of 1"),
        ({"messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]}]},
         openai.UnprocessableEntityError, "'image_url' parts"),
        ({"extra_body": {"k": 0}}, openai.UnprocessableEntityError, "does not match its schema"),
        ({"max_tokens": 10**6}, openai.UnprocessableEntityError, "max_new_tokens"),
    ],
)  # fmt: skip
def test_what_the_endpoint_cannot_honour_is_a_typed_error(
    served: Served, request_: dict[str, Any], error: type[openai.APIStatusError], says: str
) -> None:
    before = [e.hash for e in served.alice.log("notes")]
    arguments = {"model": "memos:notes", "messages": _messages(), **request_}
    for stream in (False, True):
        with pytest.raises(error) as refused:
            served.client.chat.completions.create(**arguments, stream=stream)
        assert says in refused.value.message
        assert refused.value.code in ("invalid_input", "not_found")
    assert [e.hash for e in served.alice.log("notes")] == before


def test_a_stream_refused_at_its_first_token_is_an_error_answer(served: Served) -> None:
    # within the server's limit on generated tokens, beyond the tiny model's 256 positions
    with pytest.raises(openai.UnprocessableEntityError) as refused:
        served.client.chat.completions.create(
            model="memos:notes", messages=_messages(), max_tokens=300, stream=True
        )
    assert "positions" in refused.value.message


def test_remember_adds_the_question_and_the_answer(served: Served) -> None:
    question = "who moved to porto"
    completion = served.client.chat.completions.create(
        model="memos:notes", messages=_messages(question), max_tokens=MAX_TOKENS,
        extra_body={"remember": True, "user": "carol"},
    )  # fmt: skip
    remembered = (completion.model_extra or {})["memos"]["remembered"]
    answer = completion.choices[0].message.content or ""
    texts = [served.alice.get(item_id).text for item_id in remembered]
    assert texts == ([question, answer] if answer.strip() else [question])
    assert {served.alice.get(item_id).user for item_id in remembered} == {"carol"}
    hits = served.alice.search(question, cube="notes", k=1, mode="keyword")
    assert hits[0].item.id == remembered[0]
    assert [h.event.op.value for h in served.alice.history(remembered[0])] == ["create"]
    # not asked: nothing is written
    before = len(served.alice.log("notes"))
    served.client.chat.completions.create(model="memos:notes", messages=_messages(question))
    assert len(served.alice.log("notes")) == before


def test_remember_on_a_cube_read_only_to_the_key_is_refused_before_answering(
    served: Served,
) -> None:
    served.bob.grant("secrets", "alice", "read")
    before = [e.hash for e in served.bob.log("secrets")]
    with pytest.raises(openai.PermissionDeniedError) as refused:
        served.client.chat.completions.create(
            model="memos:bob:secrets", messages=_messages(), stream=True,
            extra_body={"remember": True},
        )  # fmt: skip
    assert refused.value.code == "access_denied"
    assert [e.hash for e in served.bob.log("secrets")] == before


def test_an_error_after_the_stream_began_is_raised_by_the_client(served: Served) -> None:
    # the quota is met: the answer streams, then writing it back is refused
    full = CubePolicies(quotas=Quotas(items=len(FACTS)))
    served.alice.governance.set_policies("notes", full)
    stream = served.client.chat.completions.create(
        model="memos:notes", messages=_messages(), max_tokens=MAX_TOKENS, stream=True,
        extra_body={"remember": True},
    )  # fmt: skip
    received: list[Any] = []
    with pytest.raises(openai.APIError) as failed:
        received.extend(stream)
    assert received[0].choices[0].delta.role == "assistant"
    assert all(chunk.choices[0].finish_reason is None for chunk in received)
    assert "quota" in failed.value.message
    assert failed.value.code == "quota_exceeded"
    assert len(served.alice.search(QUESTION, cube="notes", k=10)) == len(FACTS)


def test_a_client_that_goes_away_stops_the_generation(served: Served) -> None:
    ids = [e.item_id for e in served.alice.log("notes") if e.item_id is not None]
    asked: dict[str, Any] = {
        "model": "memos:notes",
        "messages": _messages(),
        "extra_body": {"k": len(FACTS)},
    }
    stream = served.client.chat.completions.create(**asked, max_tokens=150, stream=True)
    next(iter(stream))
    stream.close()
    deadline = time.monotonic() + 60
    while any(t.name == "memos-chat-completion" for t in threading.enumerate()):
        assert time.monotonic() < deadline, "the generation went on"
        time.sleep(0.01)
    # a chat counts the use of its memories once its answer is complete: this one never was
    assert served.alice.access_stats(ids) == {}
    served.client.chat.completions.create(**asked, max_tokens=2)
    assert {stats.count for stats in served.alice.access_stats(ids).values()} == {1}
