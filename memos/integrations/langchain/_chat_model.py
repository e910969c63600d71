"""The local model as a LangChain chat model that answers with a cube's memories.

Each call is one ``mos.chat_stream`` on the handle: the best memories for the conversation
are retrieved into the system message, a stored KV block serves the prefix it holds and a
LoRA adapter (named, or the cube's attached one) answers when there is one, exactly as
``mos.chat`` does, embedded or on a server. A conversation that ends with a human message is
asked as chat asks one: that message is the question (and what the memories are retrieved
for), the system messages are chat's ``system`` instructions (after the memories, so a KV
block stays an exact prefix of the prompt) and the human and AI messages before it its
``history``. Any other conversation (one that ends with an AI message, or holds tool results)
is folded into the question as ``role: text`` lines. Decoding is greedy.

The answer's metadata names what it was built from: ``memories`` (the ids of the memories in
the prompt), ``retrieved``, ``kv_entry`` and ``adapter``; its usage metadata counts the prompt
tokens, the generated ones, and those a KV cache served (``cache_read``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

from langchain_core.callbacks import (
    AsyncCallbackManagerForLLMRun,
    CallbackManagerForLLMRun,
)
from langchain_core.language_models import BaseChatModel, LangSmithParams
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, ChatMessage
from langchain_core.messages.ai import UsageMetadata
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables.config import run_in_executor
from pydantic import ConfigDict, Field, field_validator

from memos.core._types import ChatReply, ReplyStream
from memos.engine._handle import Handle
from memos.errors import InvalidInput

# what one call may change (``model.invoke(messages, k=3)``); ``stream`` is LangChain's
_PER_CALL = frozenset({"k", "max_tokens", "use_kv", "adapter", "retrieve", "user", "stream"})
_SPEAKERS = {"human": "user", "ai": "assistant", "system": "system", "tool": "tool"}
# the speakers whose messages are a chat's earlier turns (see conversation)
_TURN_ROLES = {"user": "user", "assistant": "assistant"}


class ChatMemOS(BaseChatModel):
    """Chat with the model of ``handle`` (``MemOS.open(...)`` or ``MemOS.connect(...)``) over
    the memories of ``cube``; see the module docstring. ``k``, ``use_kv``, ``adapter``,
    ``retrieve`` and ``user`` are ``mos.chat``'s; ``max_tokens`` is its ``max_new_tokens``;
    ``stop`` cuts the answer before the first stop sequence."""

    model_config = ConfigDict(arbitrary_types_allowed=True, populate_by_name=True)

    handle: Handle = Field(exclude=True)
    cube: str
    user: str | None = None
    k: int = 5
    max_tokens: int = 128
    use_kv: bool = True
    adapter: str | None = None
    retrieve: bool = True
    stop: list[str] | None = None
    temperature: float | None = None
    """Only greedy decoding is offered: ``None`` or ``0``."""
    streaming: bool = False
    model_name: str = Field(default="memos", alias="model")
    """The name answers report as their ``model_name``."""

    @field_validator("temperature")
    @classmethod
    def _greedy_only(cls, value: float | None) -> float | None:
        if value not in (None, 0):
            raise ValueError("MemOS decodes greedily: temperature must be 0 or None")
        return value

    @property
    def _llm_type(self) -> str:
        return "memos"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model_name": self.model_name, "cube": self.cube, "k": self.k,
                "max_tokens": self.max_tokens, "adapter": self.adapter}  # fmt: skip

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        params = LangSmithParams(
            ls_provider="memos",
            ls_model_name=kwargs.get("model", self.model_name),
            ls_model_type="chat",
            ls_temperature=self.temperature,
            ls_max_tokens=kwargs.get("max_tokens", self.max_tokens),
        )
        if stop or self.stop:
            params["ls_stop"] = stop or self.stop
        return params

    # generation ------------------------------------------------------------------------

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        stream = self._start(messages, stop, kwargs)
        text = "".join(stream)
        message = AIMessage(content=text, **self._reply_fields(stream.reply))
        return ChatResult(generations=[ChatGeneration(message=message)])

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        stream = self._start(messages, stop, kwargs)
        for piece in stream:
            chunk = ChatGenerationChunk(message=AIMessageChunk(content=piece))
            if run_manager is not None:
                run_manager.on_llm_new_token(piece, chunk=chunk)
            yield chunk
        fields = self._reply_fields(stream.reply)
        yield ChatGenerationChunk(
            message=AIMessageChunk(content="", chunk_position="last", **fields)
        )

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        # the handle streams synchronously: each piece is awaited from a worker thread
        chunks = self._stream(messages, stop, None, **kwargs)
        done = ChatGenerationChunk(message=AIMessageChunk(content=""))
        while (chunk := await run_in_executor(None, next, chunks, done)) is not done:
            if run_manager is not None and chunk.text:
                await run_manager.on_llm_new_token(chunk.text, chunk=chunk)
            yield chunk

    def _start(
        self, messages: Sequence[BaseMessage], stop: list[str] | None, overrides: dict[str, Any]
    ) -> ReplyStream:
        unknown = set(overrides) - _PER_CALL
        if unknown:
            raise InvalidInput(f"unknown chat arguments: {', '.join(sorted(unknown))}")
        options = {name: getattr(self, name) for name in ("k", "use_kv", "adapter", "retrieve")}
        options.update({n: v for n, v in overrides.items() if n in options})
        question, system, history = conversation(messages)
        return self.handle.chat_stream(
            question, cube=self.cube, user=overrides.get("user", self.user),
            max_new_tokens=overrides.get("max_tokens", self.max_tokens), system=system,
            history=history, stop=stop or self.stop, **options,
        )  # fmt: skip

    def _reply_fields(self, reply: ChatReply) -> dict[str, Any]:
        usage = UsageMetadata(
            input_tokens=reply.prompt_tokens,
            output_tokens=len(reply.tokens),
            total_tokens=reply.prompt_tokens + len(reply.tokens),
            input_token_details={"cache_read": reply.cached_tokens},
        )
        metadata = {
            "model_name": self.model_name,
            "cube": self.cube,
            "memories": [item.id for item in reply.memories],
            "retrieved": list(reply.retrieved),
            "kv_entry": reply.kv_entry,
            "adapter": reply.adapter,
        }
        return {"usage_metadata": usage, "response_metadata": metadata}


def conversation(
    messages: Sequence[BaseMessage],
) -> tuple[str, str | None, list[dict[str, str]]]:
    """The chat's question, ``system`` instructions and ``history`` for a conversation (see
    the module docstring)."""
    system = "\n\n".join(m.text for m in messages if m.type == "system" and m.text) or None
    rest = [m for m in messages if m.type != "system"]
    turns = [(_TURN_ROLES.get(_speaker(m)), m.text) for m in rest[:-1]]
    if not rest or rest[-1].type != "human" or any(role is None for role, _ in turns):
        return conversation_query(messages), None, []
    return rest[-1].text, system, [{"role": str(role), "content": text} for role, text in turns]


def conversation_query(messages: Sequence[BaseMessage]) -> str:
    """The chat query for a conversation: a lone human message's text, else one
    ``role: text`` line per message that has text."""
    if len(messages) == 1 and messages[0].type == "human":
        return messages[0].text
    lines = [f"{_speaker(m)}: {m.text}" for m in messages if m.text]
    if not lines:
        raise InvalidInput("the conversation has no text to answer")
    return "\n".join(lines)


def _speaker(message: BaseMessage) -> str:
    if isinstance(message, ChatMessage):
        return message.role
    return _SPEAKERS.get(message.type, message.type)
