"""OpenAI's chat-completions wire format, as much of it as ``/v1/chat/completions`` and
``/v1/models`` read and write (see :mod:`memos.api._openai`).

Requests accept every field an OpenAI client may send: the ones that cannot change a greedy
answer (``temperature``, ``top_p``, ``seed``, penalties, ``metadata``, ``store`` and any field
this version does not know) are read and ignored; the ones whose meaning the endpoint cannot
honour (``n > 1``, tools and functions, ``logprobs``, a non-text ``response_format`` or
content part) are refused by :func:`memos.api._openai.check_supported`. The memos options
are top-level keys beside them, what ``extra_body=`` of the ``openai`` client sends.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from memos.core._wire import ErrorBody

Role = Literal["system", "developer", "user", "assistant", "tool", "function"]
FinishReason = Literal["stop", "length"]
DEFAULT_K = 5
DEFAULT_MAX_NEW_TOKENS = 128  # mos.chat's default, capped by the server's limit


class _Open(BaseModel):
    """A part of a request: fields OpenAI may add later pass through unread."""

    model_config = ConfigDict(extra="allow")


class ContentPart(_Open):
    type: str
    text: str | None = None


class ChatMessage(_Open):
    role: Role
    content: str | list[ContentPart] | None = None
    name: str | None = None


class StreamOptions(_Open):
    include_usage: bool = False


class ChatCompletionRequest(_Open):
    """OpenAI's request body, with the memos options as extra top-level keys."""

    model: str = Field(description="`memos:<cube>` (see `GET /v1/models`), or `memos` with `cube`")
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    # accepted and ignored: decoding is greedy
    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    # refused when they ask for what the endpoint cannot do
    n: int | None = None
    stop: str | list[str] | None = None
    logprobs: bool | None = None
    tools: list[Any] | None = None
    tool_choice: Any = None
    functions: list[Any] | None = None
    function_call: Any = None
    response_format: dict[str, Any] | None = None
    # the memos options (`extra_body`)
    user: str | None = Field(
        default=None, description="whose memories answer, and whose a remembered exchange is"
    )
    cube: str | None = Field(default=None, description="the cube, when the model names none")
    k: int = Field(default=DEFAULT_K, ge=1, description="how many memories to retrieve")
    use_kv: bool = Field(default=True, description="serve the prompt from a stored KV block")
    adapter: str | None = Field(default=None, description="answer through this LoRA adapter")
    retrieve: bool = Field(default=True, description="false: no memory in the prompt")
    remember: bool = Field(
        default=False, description="add the question and the answer to the cube as memories"
    )


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str
    refusal: None = None


class Choice(BaseModel):
    index: int = 0
    message: AssistantMessage
    logprobs: None = None
    finish_reason: FinishReason


class PromptTokensDetails(BaseModel):
    cached_tokens: int


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: PromptTokensDetails


class MemosDetails(BaseModel):
    """What memos adds to an answer: the cube, the memories in the prompt (and which of them
    the search found), the KV entry and adapter version that served it, the memories a
    ``remember`` added."""

    cube: str
    memories: list[str]
    retrieved: list[str]
    kv_entry: str | None
    adapter: str | None
    remembered: list[str] = Field(default_factory=list)


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: Usage
    system_fingerprint: str | None = None
    memos: MemosDetails


class Delta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChunkChoice(BaseModel):
    index: int = 0
    delta: Delta
    logprobs: None = None
    finish_reason: FinishReason | None = None


class ChatCompletionChunk(BaseModel):
    """One event of a streamed answer; with ``include_usage`` every chunk has a ``usage`` key
    (null but in the last one, whose ``choices`` is empty), as OpenAI sends them."""

    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    system_fingerprint: str | None = None
    usage: Usage | None = None
    memos: MemosDetails | None = None


class StreamError(BaseModel):
    """An error after a stream began: its last event (the ``openai`` client raises it)."""

    error: ErrorBody


class Model(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Model]
