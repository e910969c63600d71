"""The interfaces chat and the activation tier need from a language model.

:class:`LLMBackend`: :class:`memos.llm.LocalModel` implements it over ``transformers``. KV
caches only make sense for a model whose weights run in this process, so the protocol includes
``prefill`` and prefix-aware ``stream``: a remote, text-only model cannot serve it.

:class:`TextChatModel`: what chat needs from a model it only exchanges text with (messages in,
text pieces and token counts out), such as :class:`memos.llm.OpenAICompatible` over any
OpenAI-compatible server. Chat through one puts the same prompt in its messages, without KV
caches or adapters.

Nothing here imports torch (the KV types are named for the type checker only).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from memos.llm._shapes import ModelShape, SplitPrompt
from memos.llm._weights import ModelFingerprint

if TYPE_CHECKING:
    from memos.llm._prefix import KV, ResidentPrefix


# one chat message: {"role": "system" | "user" | "assistant", "content": text}
ChatMessage = Mapping[str, str]


@runtime_checkable
class LLMBackend(Protocol):
    name: str
    fingerprint: ModelFingerprint
    shape: ModelShape

    def split_prompt(
        self,
        system: str,
        user: str,
        *,
        cached: int | None = None,
        history: Sequence[ChatMessage] = (),
    ) -> SplitPrompt:
        """The chat ``[system, *history, user]`` as ids whose prefix (the first ``cached``
        characters of the system message, all by default) is an exact token prefix."""
        ...

    def template_sha256(self) -> str:
        """A digest of the chat template, so caches rendered with another are not reused."""
        ...

    def prefill(self, ids: Sequence[int], *, prefix: ResidentPrefix | None = None) -> list[KV]:
        """The fp32 KV cache of ``ids`` from position 0, ``(keys, values)`` per layer; with
        ``prefix`` (a cache of the first tokens of ``ids``) only the rest is computed."""
        ...

    def stream(
        self,
        ids: Sequence[int],
        *,
        max_new_tokens: int = 64,
        prefix: ResidentPrefix | None = None,
        adapter: str | None = None,
    ) -> Iterator[int]:
        """Greedy tokens after ``ids``; with ``prefix`` only the rest is prefilled; with
        ``adapter`` through that loaded LoRA adapter."""
        ...

    def decode(self, ids: Sequence[int]) -> str: ...


@dataclass(frozen=True)
class TokenUsage:
    """What a text model counted for one answer, in its own tokens: the prompt, the answer, and
    how much of the prompt it served from its own cache (0 when it says nothing of one)."""

    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int = 0


class TextStream(Protocol):
    """An answer's text pieces as they arrive; ``usage`` once they are exhausted (``None`` when
    the model reported none)."""

    def __iter__(self) -> Iterator[str]: ...

    @property
    def usage(self) -> TokenUsage | None: ...


@runtime_checkable
class TextChatModel(Protocol):
    name: str

    def stream_chat(
        self, messages: Sequence[ChatMessage], *, max_new_tokens: int, stop: Sequence[str] = ()
    ) -> TextStream:
        """Greedy answer to ``messages``, at most ``max_new_tokens`` tokens, ending before any of
        the ``stop`` sequences (the caller cuts there too). A refusal (an
        unreachable model, a rejected request) is raised here, before any piece."""
        ...
