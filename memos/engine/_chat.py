"""Chat over a cube's memories: retrieve, render, generate, count the use.

The prompt is ``[system: memory block, user: query]`` in the model's chat template. When a
stored KV block covers the retrieved memories, the prompt is built from that block (its
memories, in its order) whether or not its cache is then used, so ``use_kv=False`` recomputes
exactly the prompt a cached run reads, and the two answers can be compared token for token.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from memos.activation import KVMemory, render_block
from memos.core._types import ChatReply, MemoryItem, ReplyStream
from memos.llm import LLMBackend, ResidentPrefix, SplitPrompt


@dataclass(frozen=True)
class ChatPlan:
    query: str
    memories: tuple[MemoryItem, ...]
    prompt: SplitPrompt
    kv_entry: str | None
    prefix: ResidentPrefix | None
    adapter: str | None = None  # the loaded adapter slot to generate through
    adapter_id: str | None = None  # and the adapter version it holds


def plan_chat(
    model: LLMBackend,
    kv: KVMemory,
    *,
    cube: str,
    query: str,
    retrieved: Sequence[MemoryItem],
    block_items: Callable[[Sequence[str]], list[MemoryItem]],
    use_kv: bool,
    adapter: tuple[str, str] | None = None,
) -> ChatPlan:
    """The prompt for ``query``: a covering stored block's memories, else the retrieved ones.
    A KV cache is the base model's, so a chat through an adapter (``(version id, loaded
    slot)``) prefills everything."""
    entry = kv.covering(cube, retrieved) if retrieved else None
    memories = list(retrieved)
    if entry is not None:
        memories = block_items([s.item_id for s in entry.sources])
    prompt = model.split_prompt(render_block(memories), query)
    prefix = None
    if entry is not None and use_kv and adapter is None:
        prefix = kv.load(entry)
        if prefix.token_ids != prompt.prefix:
            prefix = None  # rendered differently now: recompute rather than risk a mismatch
    return ChatPlan(
        query=query,
        memories=tuple(memories),
        prompt=prompt,
        kv_entry=None if entry is None else entry.id,
        prefix=prefix,
        adapter=None if adapter is None else adapter[1],
        adapter_id=None if adapter is None else adapter[0],
    )


class ChatStream(ReplyStream):
    """Text pieces of an answer as they are generated; ``reply`` once it is exhausted."""

    def __init__(
        self,
        model: LLMBackend,
        plan: ChatPlan,
        max_new_tokens: int,
        on_done: Callable[[ChatReply], None],
    ) -> None:
        self._model = model
        self._plan = plan
        self._max_new_tokens = max_new_tokens
        self._on_done = on_done

    def __iter__(self) -> Iterator[str]:
        tokens: list[int] = []
        shown = ""
        plan = self._plan
        for token in self._model.stream(
            plan.prompt.ids,
            max_new_tokens=self._max_new_tokens,
            prefix=plan.prefix,
            adapter=plan.adapter,
        ):
            tokens.append(token)
            text = self._model.decode(tokens)
            # hold back a piece that ends inside a multi-byte character
            if text.startswith(shown) and not text.endswith("\ufffd"):
                yield text[len(shown) :]
                shown = text
        answer = self._model.decode(tokens)
        if answer.startswith(shown) and len(answer) > len(shown):
            yield answer[len(shown) :]
        self._reply = ChatReply(
            query=plan.query,
            answer=answer,
            tokens=tuple(tokens),
            memories=plan.memories,
            kv_entry=plan.kv_entry,
            adapter=plan.adapter_id,
            prompt_tokens=len(plan.prompt.ids),
            cached_tokens=0 if plan.prefix is None else plan.prefix.length,
        )
        self._on_done(self._reply)
