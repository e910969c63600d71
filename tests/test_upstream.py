"""Chat through an OpenAI-compatible upstream model (``memos.llm.OpenAICompatible``,
``memos --llm-url --llm-model serve``).

The main test runs two real ``memos serve`` processes: A answers with the tiny local model, B
has no model of its own and chats through A's ``/v1/chat/completions``; B's answer must be A's
and B's token counts A's. The others hold the client to OpenAI's wire format and its failures
against a real HTTP server on loopback that answers what each test scripts, and against A.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from _models import tiny_model_dir
from _servers import free_port, serve, serve_process
from memos.api import ServerSettings
from memos.api._app import open_memos
from typer.testing import CliRunner

from memos import HashEmbedder, MemOS
from memos.activation import render_block
from memos.cli import app
from memos.errors import InvalidInput, ModelUnavailable, UnsupportedByModel, UpstreamError
from memos.llm import LocalModel, OpenAICompatible, TextChatModel

KEY = "sk-upstream-secret-0123456789"
B_MEMORIES = ("alice moved to lisbon in may", "the capital of france is paris")
QUERY = "where is alice"
STARTUP_S = 60.0

# --- two real servers: B chats through A -------------------------------------------------------


@dataclass(frozen=True)
class Servers:
    a_url: str  # A: the tiny local model; cube "notes", empty; alice's key
    a_key: str
    b_url: str  # B: chats through A; cube "notes" holding B_MEMORIES; bob's key
    b_key: str
    b_root: list[str]  # B's global options: its data dir and its upstream (A)


def _data_dir(path: Path, owner: str, memories: tuple[str, ...]) -> str:
    """A data dir with cube ``notes`` of ``owner`` holding ``memories``; ``owner``'s key."""
    with MemOS.open(path, embedder=HashEmbedder(64)) as mos:
        mos.create_cube("notes", owner=owner, embedder="hash-64")
        for text in memories:
            mos.add(text, cube="notes")
        return mos.keys.create(owner)[1]


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    root = tmp_path_factory.mktemp("upstream")
    model = tiny_model_dir(root)
    a_key = _data_dir(root / "a", "alice", ())
    b_key = _data_dir(root / "b", "bob", B_MEMORIES)
    a_root = ["--data-dir", str(root / "a"), "--model", str(model)]
    a_root += ["--model-cache", str(root / "cache")]
    with serve_process(*a_root) as (a_url, _):
        upstream = ["--llm-url", f"{a_url}/v1", "--llm-model", "memos:notes"]
        b_root = ["--data-dir", str(root / "b"), *upstream]
        with serve_process(*b_root, env={"MEMOS_LLM_API_KEY": a_key}) as (b_url, _):
            yield Servers(a_url, a_key, b_url, b_key, b_root)


def _ask_a(servers: Servers, system: str, max_tokens: int) -> dict[str, Any]:
    """A's own answer to ``[system, QUERY]``, with no memory of A's added (``retrieve``)."""
    body = {
        "model": "memos:notes",
        "messages": [{"role": "system", "content": system}, {"role": "user", "content": QUERY}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "retrieve": False,
    }
    headers = {"Authorization": f"Bearer {servers.a_key}"}
    answer = httpx.post(f"{servers.a_url}/v1/chat/completions", json=body, headers=headers,
                        timeout=STARTUP_S)  # fmt: skip
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


def test_a_chat_on_b_answers_through_a(servers: Servers, tiny_model: LocalModel) -> None:
    with MemOS.connect(servers.b_url, api_key=servers.b_key) as bob:
        stream = bob.chat_stream(QUERY, cube="notes", max_new_tokens=6)
        pieces = list(stream)
        reply = stream.reply
    assert {item.text for item in reply.memories} <= set(B_MEMORIES)
    assert reply.memories, "B retrieves its own memories"
    assert "".join(pieces) == reply.answer
    assert reply.answer.strip(), "A's tiny model answered something"

    same = _ask_a(servers, render_block(reply.memories), 6)
    assert reply.answer == same["choices"][0]["message"]["content"]
    usage = same["usage"]
    assert reply.prompt_tokens == usage["prompt_tokens"] > 0
    assert reply.cached_tokens == usage["prompt_tokens_details"]["cached_tokens"]
    assert reply.completion_tokens == usage["completion_tokens"] > 0
    # A's model answered B's prompt, B's memories in it: the same weights here answer alike
    prompt = tiny_model.split_prompt(render_block(reply.memories), QUERY)
    assert reply.prompt_tokens == len(prompt.ids)
    assert reply.answer == tiny_model.decode(tiny_model.generate(prompt.ids, max_new_tokens=6))
    # what an upstream cannot tell: its token ids; and no cache of B's served the prompt
    assert (reply.tokens, reply.kv_entry, reply.adapter) == ((), None, None)


def test_bs_system_instructions_and_earlier_turns_reach_as_model(
    servers: Servers, tiny_model: LocalModel
) -> None:
    history = [
        {"role": "user", "content": "where is paris"},
        {"role": "assistant", "content": "france"},
    ]
    with MemOS.connect(servers.b_url, api_key=servers.b_key) as bob:
        reply = bob.chat(QUERY, cube="notes", max_new_tokens=6, system="in may", history=history)
    system = f"{render_block(reply.memories)}\n\nin may"
    prompt = tiny_model.split_prompt(system, QUERY, history=history)
    assert reply.prompt_tokens == len(prompt.ids)
    assert reply.answer == tiny_model.decode(tiny_model.generate(prompt.ids, max_new_tokens=6))


def test_kv_blocks_and_adapters_through_an_upstream_are_refused(servers: Servers) -> None:
    with MemOS.connect(servers.b_url, api_key=servers.b_key) as bob:
        with pytest.raises(UnsupportedByModel) as refused:
            bob.chat(QUERY, cube="notes", adapter="recall")
        assert refused.value.status == 409
        assert "memos:notes" in refused.value.message
        with pytest.raises(UnsupportedByModel):
            bob.kv.build("notes", query=QUERY)
        with pytest.raises(UnsupportedByModel):
            bob.lora.consolidate("notes", name="recall", query=QUERY)
        assert bob.kv.list("notes") == []  # reading the (empty) catalog needs no model
        # use_kv is the default: with an upstream it means "no cache", not an error
        assert bob.chat(QUERY, cube="notes", max_new_tokens=2, use_kv=True).kv_entry is None


def test_a_wrong_key_for_the_upstream_is_an_upstream_error(
    servers: Servers, tmp_path: Path
) -> None:
    wrong = OpenAICompatible(f"{servers.a_url}/v1", "memos:notes", api_key=KEY)
    with MemOS.open(tmp_path / "c", embedder=HashEmbedder(64), model=wrong) as mos:
        mos.create_cube("notes", embedder="hash-64")
        with pytest.raises(UpstreamError) as refused:
            mos.chat(QUERY, cube="notes")
    error = refused.value
    assert (error.status, error.details["upstream_status"]) == (502, 401)
    assert servers.a_url in error.message
    assert "API key" in error.message
    assert KEY not in f"{error.message} {error.details} {wrong!r}"


def _upstream_server(tmp_path: Path, llm_url: str, api_key: str) -> AbstractContextManager[str]:
    settings = ServerSettings(
        store=f"sqlite:///{tmp_path / 'd'}", llm_url=llm_url, llm_model="memos:notes",
        llm_api_key=api_key, tick_interval_s=0,
    )  # fmt: skip
    return serve(open_memos(settings), settings)


def test_upstream_failures_reach_a_client_of_the_proxy_typed(
    servers: Servers, tmp_path: Path
) -> None:
    with MemOS.open(tmp_path / "d", embedder=HashEmbedder(64)) as mos:
        mos.create_cube("notes", owner="bob", embedder="hash-64")
        key = mos.keys.create("bob")[1]
    closed = f"http://127.0.0.1:{free_port()}/v1"
    with (
        _upstream_server(tmp_path, closed, servers.a_key) as url,
        MemOS.connect(url, api_key=key) as bob,
    ):
        with pytest.raises(ModelUnavailable) as unreachable:
            bob.chat(QUERY, cube="notes")
        assert type(unreachable.value) is ModelUnavailable
        assert unreachable.value.status == 503
        assert closed in unreachable.value.message
    with (
        _upstream_server(tmp_path, f"{servers.a_url}/v1", KEY) as url,
        MemOS.connect(url, api_key=key) as bob,
    ):
        with pytest.raises(UpstreamError) as refused:
            bob.chat(QUERY, cube="notes")
        assert refused.value.details["upstream_status"] == 401
        assert KEY not in refused.value.message


# --- the wire format, against a scripted server on loopback -----------------------------------


@dataclass
class Scripted:
    """A real HTTP server that answers each POST with ``status``, ``body`` and
    ``content_type`` and keeps what it was sent."""

    url: str
    status: int = 200
    body: bytes = b""
    content_type: str = "text/event-stream"
    requests: list[tuple[dict[str, str], dict[str, Any]]] = field(default_factory=list)

    def events(self, *events: dict[str, Any] | str) -> None:
        lines = [e if isinstance(e, str) else f"data: {json.dumps(e)}\n\n" for e in events]
        self.status, self.body, self.content_type = 200, "".join(lines).encode(), EVENTS


EVENTS = "text/event-stream"


def _piece(text: str, finish: str | None = None) -> dict[str, Any]:
    choice = {"index": 0, "delta": {"content": text}, "finish_reason": finish}
    return {"object": "chat.completion.chunk", "choices": [choice]}


def _usage(prompt: int, completion: int, cached: int) -> dict[str, Any]:
    usage = {"prompt_tokens": prompt, "completion_tokens": completion,
             "total_tokens": prompt + completion,
             "prompt_tokens_details": {"cached_tokens": cached}}  # fmt: skip
    return {"object": "chat.completion.chunk", "choices": [], "usage": usage}


@pytest.fixture
def scripted() -> Iterator[Scripted]:
    state = Scripted(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers["Content-Length"])
            state.requests.append((dict(self.headers), json.loads(self.rfile.read(length))))
            self.send_response(state.status)
            self.send_header("Content-Type", state.content_type)
            self.end_headers()  # HTTP/1.0: the body ends when the connection closes
            self.wfile.write(state.body)

        def log_message(self, *_: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture
def proxy(scripted: Scripted, data_dir: Path) -> Iterator[MemOS]:
    model = OpenAICompatible(scripted.url, "llama-3", api_key=KEY)
    with MemOS.open(data_dir, embedder=HashEmbedder(64), model=model) as mos:
        mos.create_cube("notes", embedder="hash-64")
        for text in B_MEMORIES:
            mos.add(text, cube="notes")
        yield mos
    model.close()


def test_the_request_is_the_chat_prompt_in_openai_format(scripted: Scripted, proxy: MemOS) -> None:
    scripted.events(
        ": a comment the client skips\n\n",
        {"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]},
        _piece("alice is "),
        _piece("in lisbon", finish="stop"),
        _usage(prompt=21, completion=4, cached=16),
        "data: [DONE]\n\n",
    )
    stream = proxy.chat_stream(QUERY, cube="notes", k=2, max_new_tokens=7)
    assert list(stream) == ["alice is ", "in lisbon"]
    reply = stream.reply
    assert (reply.answer, reply.prompt_tokens, reply.cached_tokens) == (
        "alice is in lisbon",
        21,
        16,
    )
    assert reply.tokens == ()
    assert reply.kv_entry is None
    assert reply.retrieved == tuple(item.id for item in reply.memories)
    assert len(reply.memories) == 2

    [(headers, body)] = scripted.requests
    assert headers["Authorization"] == f"Bearer {KEY}"
    assert body == {
        "model": "llama-3",
        "messages": [
            {"role": "system", "content": render_block(reply.memories)},
            {"role": "user", "content": QUERY},
        ],
        "stream": True,
        "stream_options": {"include_usage": True},
        "temperature": 0,
        "max_tokens": 7,
    }
    assert proxy.access_stats(list(reply.retrieved))[reply.retrieved[0]].count == 1


def test_stop_sequences_are_sent_on_and_cut_here_too(scripted: Scripted, proxy: MemOS) -> None:
    """The upstream is asked to stop; an upstream that does not is cut here anyway, and the
    stream is read to its end for the counts."""
    scripted.events(
        _piece("alice is in lis"), _piece("bon. END and more"), _usage(21, 9, 0), "data: [DONE]\n\n"
    )
    stream = proxy.chat_stream(QUERY, cube="notes", k=2, stop=["END", "bon! "])
    assert "".join(stream) == "alice is in lisbon. "
    assert (stream.reply.answer, stream.reply.stop) == ("alice is in lisbon. ", "END")
    assert stream.reply.completion_tokens == 9
    [(_, body)] = scripted.requests
    assert body["stop"] == ["END", "bon! "]


def test_an_upstream_that_sends_no_usage_counts_nothing(scripted: Scripted, proxy: MemOS) -> None:
    # a last event without its blank line and no [DONE]: the finish reason ends the answer
    scripted.events(_piece("paris", finish="length"), f"data: {json.dumps(_piece(''))}")
    reply = proxy.chat("what is the capital of france", cube="notes", retrieve=False)
    assert (reply.answer, reply.prompt_tokens, reply.cached_tokens, reply.memories) == (
        "paris", 0, 0, ()
    )  # fmt: skip
    assert scripted.requests[0][1]["messages"][0]["content"] == render_block([])


def test_the_local_model_tiers_are_refused_before_anything_is_sent(
    scripted: Scripted, proxy: MemOS
) -> None:
    with pytest.raises(UnsupportedByModel, match="llama-3"):
        proxy.chat(QUERY, cube="notes", adapter="recall")
    with pytest.raises(UnsupportedByModel):
        proxy.kv.build("notes", query=QUERY)
    with pytest.raises(UnsupportedByModel):
        proxy.model()
    assert scripted.requests == []
    assert isinstance(OpenAICompatible(scripted.url, "m"), TextChatModel)


@pytest.mark.parametrize(
    ("status", "body", "error", "said"),
    [
        (500, {"error": {"message": "the GPU fell over"}}, ModelUnavailable, "the GPU fell over"),
        (503, {"detail": "loading the model"}, ModelUnavailable, "loading the model"),
        (404, {"error": {"message": "model llama-3 not found"}}, UpstreamError, "not found"),
        (401, {"error": {"code": "unauthenticated", "message": "unknown key"}}, UpstreamError,
         "API key"),
        (429, "too many requests, slow down", UpstreamError, "slow down"),
    ],
)  # fmt: skip
def test_a_refusal_is_typed_by_its_status(
    scripted: Scripted,
    proxy: MemOS,
    status: int,
    body: dict[str, Any] | str,
    error: type[ModelUnavailable],
    said: str,
) -> None:
    scripted.status, scripted.content_type = status, "application/json"
    scripted.body = (body if isinstance(body, str) else json.dumps(body)).encode()
    with pytest.raises(error) as refused:
        proxy.chat(QUERY, cube="notes")
    assert type(refused.value) is error
    assert refused.value.details == {"url": scripted.url, "upstream_status": status}
    assert said in refused.value.message
    assert scripted.url in refused.value.message
    assert KEY not in refused.value.message


@pytest.mark.parametrize(
    ("events", "said"),
    [
        (['data: {"choices": [{"delta": \n\n'], "not a chat completion chunk"),
        ([_piece("alice"), {"choices": "many"}], "not a chat completion chunk"),
        ([_piece("alice")], "ended before it was complete"),
        ([_piece("alice"), {"error": {"message": "the worker died"}}], "the worker died"),
        (["this is not an event stream\n"], "ended before it was complete"),
    ],
)
def test_a_malformed_stream_is_an_upstream_error(
    scripted: Scripted, proxy: MemOS, events: list[dict[str, Any] | str], said: str
) -> None:
    scripted.events(*events)
    stream = proxy.chat_stream(QUERY, cube="notes")  # the status was fine: the stream starts
    with pytest.raises(UpstreamError, match=said):
        list(stream)


def test_an_unreachable_upstream_is_model_unavailable(data_dir: Path) -> None:
    port = free_port()
    closed = f"http://user:{KEY}@127.0.0.1:{port}/v1"
    model = OpenAICompatible(closed, "llama-3", api_key=KEY)
    with MemOS.open(data_dir, embedder=HashEmbedder(64), model=model) as mos:
        mos.create_cube("notes", embedder="hash-64")
        with pytest.raises(ModelUnavailable) as unreachable:
            mos.chat(QUERY, cube="notes")
    assert type(unreachable.value) is ModelUnavailable
    shown = f"http://127.0.0.1:{port}/v1"  # the URL without the user and password in it
    assert unreachable.value.details == {"url": shown}
    assert shown in unreachable.value.message
    assert KEY not in f"{unreachable.value.message} {unreachable.value.details} {model!r}"


@pytest.mark.parametrize(
    ("url", "model"),
    [("ftp://127.0.0.1/v1", "m"), ("localhost:8000/v1", "m"), ("http:///v1", "m"),
     ("http://127.0.0.1/v1", " ")],
)  # fmt: skip
def test_a_bad_upstream_url_or_model_is_invalid_input(url: str, model: str) -> None:
    with pytest.raises(InvalidInput):
        OpenAICompatible(url, model)


@pytest.mark.parametrize(
    ("options", "said"),
    [
        (["--llm-url", "http://127.0.0.1:9/v1"], "--llm-model"),
        (["--llm-model", "memos:notes"], "--llm-url"),
    ],
)
def test_serve_needs_both_upstream_options(data_dir: Path, options: list[str], said: str) -> None:
    result = CliRunner().invoke(app, ["--data-dir", str(data_dir), *options, "serve"])
    assert result.exit_code == 2, result.output
    assert said in result.output


@pytest.mark.parametrize(
    ("options", "said"),
    [
        (["--model", "elsewhere"], "--model"),
        (["--url", "http://127.0.0.1:9", "--api-key", "memos_x"], "--url"),
    ],
)
def test_an_upstream_excludes_a_local_model_and_a_server(
    data_dir: Path, options: list[str], said: str
) -> None:
    upstream = ["--llm-url", "http://127.0.0.1:9/v1", "--llm-model", "m"]
    result = CliRunner().invoke(
        app, ["--data-dir", str(data_dir), *upstream, *options, "chat", "hi", "--cube", "notes"]
    )
    assert result.exit_code == 2, result.output
    assert said in result.output


def test_memos_chat_answers_through_the_upstream(servers: Servers) -> None:
    with MemOS.connect(servers.b_url, api_key=servers.b_key) as bob:
        reply = bob.chat(QUERY, cube="notes", max_new_tokens=6)
    chat = ["chat", QUERY, "--cube", "notes", "--max-new-tokens", "6", "--json"]
    result = CliRunner().invoke(
        app, [*servers.b_root, *chat], env={"MEMOS_LLM_API_KEY": servers.a_key}
    )
    assert result.exit_code == 0, result.output
    answered = json.loads(result.stdout)
    assert answered["answer"] == reply.answer
    assert answered["prompt_tokens"] == reply.prompt_tokens
    assert answered["tokens"] == []
