"""Chat over a cube's memories: retrieve, render, generate, count the use.

The prompt is ``[system: memory block, user: query]`` in the model's chat template. When a
stored KV block holds some of the retrieved memories, the prompt's memories are that block's
(all of them, in its order) followed by the retrieved ones it lacks, in rank order; the block's
cache then serves the prompt up to the end of the block's text, and only the memories after it
and the question are prefilled. The prompt is built that way whether or not the cache is then
used, so ``use_kv=False`` recomputes exactly the prompt a cached run reads, and the two answers
can be compared token for token.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from memos.activation import KVMemory, render_block
from memos.core import _validation as check
from memos.core._store import Store
from memos.core._types import Access, ChatReply, ItemStatus, MemoryItem, ReplyStream, utcnow
from memos.engine._engine import Engine
from memos.engine._scope import Scope
from memos.errors import VersionConflict
from memos.llm import LLMBackend, ResidentPrefix, SplitPrompt


@dataclass(frozen=True)
class ChatPlan:
    query: str
    memories: tuple[MemoryItem, ...]
    retrieved: tuple[str, ...]
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
    """The prompt for ``query``: the best stored block's memories and the retrieved ones it
    lacks, else the retrieved ones (see the module docstring). A KV cache is the base model's,
    so a chat through an adapter (``(version id, loaded slot)``) prefills everything."""
    entry = kv.best_block(cube, retrieved) if retrieved else None
    memories, cached = list(retrieved), None
    if entry is not None:
        block = block_items([s.item_id for s in entry.sources])
        held = {item.id for item in block}
        memories = block + [item for item in retrieved if item.id not in held]
        cached = len(render_block(block))
    prompt = model.split_prompt(render_block(memories), query, cached=cached)
    prefix = None
    if entry is not None and use_kv and adapter is None:
        prefix = kv.load(entry)
        if prefix.token_ids != prompt.prefix:
            prefix = None  # rendered differently now: recompute rather than risk a mismatch
    return ChatPlan(
        query=query,
        memories=tuple(memories),
        retrieved=tuple(item.id for item in retrieved),
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
            retrieved=plan.retrieved,
            kv_entry=plan.kv_entry,
            adapter=plan.adapter_id,
            prompt_tokens=len(plan.prompt.ids),
            cached_tokens=0 if plan.prefix is None else plan.prefix.length,
        )
        self._on_done(self._reply)


def start_chat(
    engine: Engine,
    scope: Scope,
    query: str,
    *,
    cube: str,
    user: str | None,
    k: int,
    max_new_tokens: int,
    use_kv: bool,
    adapter: str | None,
    retrieve: bool,
) -> ChatStream:
    """A chat for ``scope``, checked and planned, ready to generate (see ``Handle.chat``)."""
    query = check.text(query, scope.limits)
    max_new_tokens = check.positive(max_new_tokens, "max_new_tokens", scope.limits.max_new_tokens)
    info = scope.cube(cube, Access.READ)
    through = None
    if adapter is not None or info.default_adapter is not None:
        lora = engine.lora().scoped(scope.cube, scope.actor)
        entry = lora.for_chat(info.name, adapter)
        through = None if entry is None else (entry.id, lora.activate(entry))
    hits = []
    if retrieve:  # the retrieved memories are counted as the chat's use, below
        hits = engine.search(scope, query, cube=info.name, k=k, user=user, count_use=False)
    store = engine.store
    plan = plan_chat(
        engine.model(), engine.kv().scoped(scope.cube, scope.actor), cube=info.name,
        query=query, retrieved=[hit.item for hit in hits],
        block_items=lambda ids: _active_items(store, ids), use_kv=bool(use_kv), adapter=through,
    )  # fmt: skip

    def count_use(reply: ChatReply) -> None:
        engine.uses.add(info.name, list(reply.retrieved), utcnow())

    return ChatStream(engine.model(), plan, max_new_tokens, count_use)


def _active_items(store: Store, item_ids: Sequence[str]) -> list[MemoryItem]:
    found = store.get_items(item_ids)
    items = [found.get(i) for i in item_ids]
    if any(item is None or item.status != ItemStatus.ACTIVE for item in items):
        raise VersionConflict("a memory of the KV block changed while the chat started")
    return [item for item in items if item is not None]
