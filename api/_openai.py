"""The OpenAI-compatible face of ``memos serve``: ``GET /v1/models`` and
``POST /v1/chat/completions`` in OpenAI's wire format (:mod:`memos.api._openai_wire`), so any
OpenAI client gets a cube's memory by pointing its base URL at the server.

A model is a cube: ``memos:<cube>`` (or ``memos`` with a ``cube`` key). The question is the
last ``user`` message; it goes through :meth:`memos.MemOS.chat_stream` on the caller's handle,
with retrieval, KV reuse and adapters as there, so the answer is the one ``mos.chat`` gives
(greedy decoding). The client's ``system`` (and ``developer``) messages are chat's ``system``
instructions: they follow the memory block in the system message, or are the whole of it when
no memory is retrieved (``retrieve: false``), which makes a ``memos serve`` a plain model to a
client that sends its own memories, such as another server's :class:`memos.llm.OpenAICompatible`.
Earlier user and assistant turns are chat's ``history``, between the system message and the
question (the memories are retrieved for the question alone). Errors are the server's one JSON
envelope, whose ``error.code`` and ``error.message`` are where OpenAI's clients read them.

The chat, and SQLite and the model behind it, block: the routes are plain functions, which
FastAPI runs in its thread pool, and a stream is generated in a thread of its own.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import threading
import time
import uuid
from collections.abc import AsyncIterator, Generator, Iterator
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel

from memos import MemOS
from memos.core._types import Access, ChatReply, CubeInfo, ReplyStream
from memos.core._wire import ErrorBody
from memos.engine._scope import Scope
from memos.errors import InvalidInput, MemosError, NotFound

from . import _errors
from ._deps import Caller
from ._openai_wire import (
    DEFAULT_MAX_NEW_TOKENS,
    AssistantMessage,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatMessage,
    Choice,
    ChunkChoice,
    Delta,
    FinishReason,
    MemosDetails,
    Model,
    ModelList,
    PromptTokensDetails,
    StreamError,
    Usage,
)

MODEL_PREFIX = "memos"
SEPARATOR = ":"
EVENT_STREAM = "text/event-stream"
DONE = "data: [DONE]\n\n"
STREAM_DOC = """With `"stream": true` the answer comes as server-sent events, OpenAI's
`chat.completion.chunk` objects as `data: {...}` lines: the role, the answer's pieces, a chunk
with `finish_reason` (and a `memos` key), the usage chunk when
`stream_options.include_usage`, then `data: [DONE]`. A refusal found before generation is an
ordinary error answer; an error after the stream began is its last event,
`data: {"error": {"code", "message", "details"}}`."""
_EVENTS: dict[str, Any] = {
    "itemSchema": {
        "type": "object",
        "properties": {
            "data": {
                "type": "string",
                "description": "a chat.completion.chunk, an error, or [DONE]",
            }
        },
        "required": ["data"],
    }
}


@dataclass(frozen=True)
class Call:
    """A request, checked: the cube and what to ask it."""

    cube: CubeInfo
    query: str
    system: str | None
    history: list[dict[str, str]]
    max_new_tokens: int
    body: ChatCompletionRequest
    id: str
    created: int

    @property
    def model(self) -> str:
        return f"{MODEL_PREFIX}{SEPARATOR}{self.cube.name}"


def openai_router() -> APIRouter:
    """The two routes, with the envelope documented for their errors."""
    router = APIRouter(tags=["openai"], responses=_errors.COMMON_ERRORS)
    router.add_api_route(
        "/v1/models", list_models, methods=["GET"], response_model=ModelList, name="list_models"
    )
    router.add_api_route(
        "/v1/chat/completions",
        chat_completions,
        methods=["POST"],
        response_model=ChatCompletion,
        responses={200: {"content": {EVENT_STREAM: _EVENTS}}},
        name="chat_completions",
        description=f"{inspect.getdoc(chat_completions)}\n\n{STREAM_DOC}",
    )
    return router


def list_models(mos: Caller) -> ModelList:
    """One model per cube the key may read, `memos:<cube>` by the cube's full name, owned by
    the cube's owner."""
    return ModelList(
        data=[
            Model(
                id=f"{MODEL_PREFIX}{SEPARATOR}{info.name}",
                created=int(info.created_at.timestamp()),
                owned_by=info.owner,
            )
            for info in mos.list_cubes()
        ]
    )


def chat_completions(body: ChatCompletionRequest, mos: Caller, request: Request) -> Response:
    """Answer the last user message with the memories of the cube the model names, as
    `mos.chat` does (greedy decoding: `temperature`, `top_p` and the like are accepted and
    ignored); the system messages follow the memories in the prompt's system message (they are
    all of it with `retrieve: false`), and the earlier turns come between it and the question.
    The memos options are extra top-level keys: `cube`, `k`, `use_kv`, `adapter`, `retrieve`,
    `user`, and `remember` (add the question and the answer to the cube as memories). `stop`
    ends the answer before the first of its sequences. `n > 1`, tools and functions,
    `logprobs`, a non-text `response_format` or content part are refused (422)."""
    call = prepare(mos, body)
    stream = mos.chat_stream(
        call.query, cube=call.cube.name, user=body.user, k=body.k,
        max_new_tokens=call.max_new_tokens, use_kv=body.use_kv, adapter=body.adapter,
        retrieve=body.retrieve, system=call.system, history=call.history, stop=body.stop,
    )  # fmt: skip
    if not body.stream:
        reply = stream.run()
        completion = _completion(call, reply, _remember(mos, call, reply))
        return JSONResponse(jsonable_encoder(completion))
    pieces = iter(stream)
    # the first piece is asked for here, so a refusal at the first token is an error answer
    first = next(pieces, None)
    private = request.app.state.private_paths
    events = _events(mos, call, stream, _chained(first, pieces), private)
    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(_pipelined(events), media_type=EVENT_STREAM, headers=headers)


def prepare(mos: MemOS, body: ChatCompletionRequest) -> Call:
    """The request checked before anything is generated: what it asks is supported, the
    model names a cube the caller may read (and change, to ``remember``), and the question."""
    check_supported(body)
    info = mos.get_cube(_cube_name(body))
    if body.cube is not None and body.model != MODEL_PREFIX:
        named = mos.get_cube(body.cube)
        if named.name != info.name:
            raise InvalidInput(
                f"the model names cube {info.name!r} and `cube` names {named.name!r}",
                model=body.model,
                cube=body.cube,
            )
    if body.remember:  # refused now rather than after the answer was generated
        Scope(mos.store, mos.principal, mos.limits).cube(info.name, Access.WRITE)
    requested = body.max_completion_tokens or body.max_tokens
    limit = mos.limits.max_new_tokens
    return Call(
        cube=info,
        query=question(body.messages),
        system=instructions(body.messages),
        history=earlier_turns(body.messages),
        max_new_tokens=requested or min(DEFAULT_MAX_NEW_TOKENS, limit),
        body=body,
        id=f"chatcmpl-{uuid.uuid4().hex}",
        created=int(time.time()),
    )


def _cube_name(body: ChatCompletionRequest) -> str:
    prefix = f"{MODEL_PREFIX}{SEPARATOR}"
    if body.model.startswith(prefix) and len(body.model) > len(prefix):
        return body.model.removeprefix(prefix)
    if body.model == MODEL_PREFIX and body.cube:
        return body.cube
    if body.model == MODEL_PREFIX:
        raise InvalidInput("model `memos` needs a `cube`; or name the model `memos:<cube>`")
    raise NotFound(
        f"no model named {body.model!r}: the models here are `memos:<cube>` (GET /v1/models)",
        model=body.model,
    )


def check_supported(body: ChatCompletionRequest) -> None:
    """Refuse what the endpoint cannot honour rather than answer as if it had."""
    refused = {
        "n": body.n not in (None, 1),
        "tools": bool(body.tools) or body.tool_choice not in (None, "none"),
        "functions": bool(body.functions) or body.function_call not in (None, "none"),
        "logprobs": bool(body.logprobs),
        "response_format": (body.response_format or {}).get("type", "text") != "text",
    }
    reasons = {
        "n": "n must be 1: decoding is greedy, so every answer would be the same",
        "tools": "tools (function calling) are not supported",
        "functions": "functions (function calling) are not supported",
        "logprobs": "logprobs are not supported",
        "response_format": "only the text response format is supported",
    }
    for field, is_refused in refused.items():
        if is_refused:
            raise InvalidInput(reasons[field], field=field)
    for number, message in enumerate(body.messages):
        if isinstance(message.content, list):
            kinds = sorted({part.type for part in message.content} - {"text"})
            if kinds:
                raise InvalidInput(
                    f"only text content is supported; message {number} has {kinds[0]!r} parts",
                    message_index=number,
                )


def question(messages: list[ChatMessage]) -> str:
    """The text of the last message, the user's (its text parts joined by newlines)."""
    return _text(messages[_last_user(messages)])


def earlier_turns(messages: list[ChatMessage]) -> list[dict[str, str]]:
    """The user and assistant messages before the question, oldest first: chat's
    ``history``."""
    asked = _last_user(messages)
    turns = [m for m in messages[:asked] if m.role in ("user", "assistant")]
    return [{"role": m.role, "content": _text(m)} for m in turns]


def _last_user(messages: list[ChatMessage]) -> int:
    """Where the question is: the last message, which must be the user's (a system message
    may follow it)."""
    for number, message in enumerate(messages):
        if message.role in ("tool", "function"):
            raise InvalidInput(
                f"message {number} is a {message.role} result: tools are not supported",
                message_index=number,
            )
    asked = [n for n, message in enumerate(messages) if message.role == "user"]
    if not asked:
        raise InvalidInput("the messages hold no user message to answer")
    after = [m.role for m in messages[asked[-1] + 1 :] if m.role not in ("system", "developer")]
    if after:
        raise InvalidInput(
            "the last message must be the user's question; an assistant message follows it",
            message_index=asked[-1] + 1,
        )
    return asked[-1]


def instructions(messages: list[ChatMessage]) -> str | None:
    """The text of the system (and developer) messages, in order, or ``None``."""
    given = [_text(m) for m in messages if m.role in ("system", "developer")]
    joined = "\n\n".join(text for text in given if text.strip())
    return joined or None


def _text(message: ChatMessage) -> str:
    content = message.content
    if isinstance(content, list):
        return "\n".join(part.text or "" for part in content)
    return content or ""


def _remember(mos: MemOS, call: Call, reply: ChatReply) -> list[str]:
    """The question and the answer added to the cube as chat messages, when asked to."""
    if not call.body.remember:
        return []
    messages = [{"role": "user", "content": call.query}]
    if reply.answer.strip():
        messages.append({"role": "assistant", "content": reply.answer})
    added = mos.add(messages, cube=call.cube.name, user=call.body.user)
    return [item.id for item in added]


def _finish_reason(call: Call, reply: ChatReply) -> FinishReason:
    stopped = reply.stop is not None or reply.completion_tokens < call.max_new_tokens
    return "stop" if stopped else "length"


def _usage(reply: ChatReply) -> Usage:
    return Usage(
        prompt_tokens=reply.prompt_tokens,
        completion_tokens=reply.completion_tokens,
        total_tokens=reply.prompt_tokens + reply.completion_tokens,
        prompt_tokens_details=PromptTokensDetails(cached_tokens=reply.cached_tokens),
    )


def _details(call: Call, reply: ChatReply, remembered: list[str]) -> MemosDetails:
    return MemosDetails(
        cube=call.cube.name,
        memories=[item.id for item in reply.memories],
        retrieved=list(reply.retrieved),
        kv_entry=reply.kv_entry,
        adapter=reply.adapter,
        remembered=remembered,
    )


def _completion(call: Call, reply: ChatReply, remembered: list[str]) -> ChatCompletion:
    return ChatCompletion(
        id=call.id,
        created=call.created,
        model=call.model,
        choices=[
            Choice(
                message=AssistantMessage(content=reply.answer),
                finish_reason=_finish_reason(call, reply),
            )
        ],
        usage=_usage(reply),
        memos=_details(call, reply, remembered),
    )


def _chained(first: str | None, rest: Iterator[str]) -> Iterator[str]:
    if first is not None:
        yield first
        yield from rest


def _events(
    mos: MemOS,
    call: Call,
    stream: ReplyStream,
    pieces: Iterator[str],
    private_paths: dict[str, str],
) -> Generator[str, None, None]:
    """The answer's server-sent events (see ``STREAM_DOC``)."""
    usage_wanted = call.body.stream_options is not None and call.body.stream_options.include_usage

    def chunk(
        choices: list[ChunkChoice], memos: MemosDetails | None = None, usage: Usage | None = None
    ) -> str:
        event = ChatCompletionChunk(
            id=call.id, created=call.created, model=call.model, choices=choices, usage=usage,
            memos=memos,
        )  # fmt: skip
        # with include_usage every chunk has the key, null but in the last, as OpenAI's do
        left_out = ({"memos"} if memos is None else set()) | (set() if usage_wanted else {"usage"})
        return _data(event.model_dump(mode="json", exclude=left_out))

    yield chunk([ChunkChoice(delta=Delta(role="assistant", content=""))])
    try:
        for piece in pieces:
            yield chunk([ChunkChoice(delta=Delta(content=piece))])
        reply = stream.reply
        remembered = _remember(mos, call, reply)
    except MemosError as error:  # the status line is sent: the error can only be an event
        shown = _errors.redacted(error, private_paths)
        body = ErrorBody(code=shown.code, message=shown.message, details=shown.details)
        yield _data(StreamError(error=body))
        return
    finish = ChunkChoice(delta=Delta(), finish_reason=_finish_reason(call, reply))
    yield chunk([finish], memos=_details(call, reply, remembered))
    if usage_wanted:
        yield chunk([], usage=_usage(reply))
    yield DONE


async def _pipelined(events: Generator[str, None, None]) -> AsyncIterator[str]:
    """``events``, made in a thread of their own and sent as they come: the next token is
    generated while the last is on its way, rather than once the event loop has sent it and
    asked for more (a hop to the thread pool and back per token). A client that goes away
    stops the generation at the next piece; a failure (a bug: typed errors are events) breaks
    the response off, its traceback in the server's log."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[str | bool] = asyncio.Queue()  # the events, then whether all went well
    gone = threading.Event()

    def produce() -> None:
        ended = False
        try:
            for event in events:
                loop.call_soon_threadsafe(queue.put_nowait, event)
                if gone.is_set():
                    break
            ended = True
        finally:
            events.close()
            loop.call_soon_threadsafe(queue.put_nowait, ended)

    threading.Thread(target=produce, name="memos-chat-completion", daemon=True).start()
    try:
        while isinstance(item := await queue.get(), str):
            yield item
        if not item:
            raise RuntimeError("the answer's generation failed")
    finally:
        gone.set()


def _data(payload: BaseModel | dict[str, Any]) -> str:
    """One server-sent event whose data is ``payload`` as compact JSON."""
    fields = payload.model_dump(mode="json") if isinstance(payload, BaseModel) else payload
    encoded = json.dumps(jsonable_encoder(fields), ensure_ascii=False, separators=(",", ":"))
    return f"data: {encoded}\n\n"
