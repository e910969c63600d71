"""The interface chat and the activation tier need from a language model.

:class:`memos.llm.LocalModel` implements it over ``transformers``. KV caches only make sense
for a model whose weights run in this process, so the protocol includes ``prefill`` and
prefix-aware ``stream``: a remote, text-only model cannot serve it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Protocol, runtime_checkable

from memos.llm._prefix import KV, ResidentPrefix
from memos.llm._shapes import ModelShape, SplitPrompt
from memos.llm._weights import ModelFingerprint


@runtime_checkable
class LLMBackend(Protocol):
    name: str
    fingerprint: ModelFingerprint
    shape: ModelShape

    def split_prompt(self, system: str, user: str, *, cached: int | None = None) -> SplitPrompt:
        """The chat ``[system, user]`` as ids whose prefix (the first ``cached`` characters of
        the system message, all by default) is an exact token prefix."""
        ...

    def template_sha256(self) -> str:
        """A digest of the chat template, so caches rendered with another are not reused."""
        ...

    def prefill(self, ids: Sequence[int]) -> list[KV]:
        """The fp32 KV cache of ``ids`` from position 0, ``(keys, values)`` per layer."""
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
