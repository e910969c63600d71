"""Chat over a cube's memories: retrieve, render, generate, count the use.

The prompt is ``[system: memory block, user: query]`` in the model's chat template. When a
stored KV block holds some of the retrieved memories, the prompt's memories are that block's
(all of them, in its order) followed by the retrieved ones it lacks, in rank order; the block's
cache then serves the prompt up to the end of the block's text, and only the memories after it
and the question are prefilled. The prompt is built that way whether or not the cache is then
used, so ``use_kv=False`` recomputes exactly the prompt a cached run reads, and the two answers
can be compared token for token.

The caller's own ``system`` instructions follow the memories in the system message (a stored
block stays its prefix); with no memory in the prompt they are the whole system message, so a
chat with ``retrieve=False`` and ``system`` is the plain model answering those messages. The
conversation's earlier turns (``history``) come between the system message and the question:
after the cached prefix, so they are prefilled, and the memories are still retrieved for the
question alone.

Through an upstream model (a :class:`memos.llm.TextChatModel`, e.g. another server behind
:class:`memos.llm.OpenAICompatible`) the prompt is the same two messages, the retrieved memories
in rank order, sent as text: no KV block is read (``use_kv`` then only means "use a cache when
there is one", and there is none), and an adapter, asked for or attached to the cube, is refused
with :class:`memos.errors.UnsupportedByModel`. The reply has no token ids (``tokens=()``), and
``prompt_tokens`` and ``cached_tokens`` are the upstream's own counts (0 when it sends none).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import NoReturn

from memos.activation import KVMemory, render_block
from memos.core import _validation as check
from memos.core._store import Store
from memos.core._types import Access, ChatReply, ItemStatus, MemoryItem, ReplyStream, utcnow
from memos.engine._engine import Engine
from memos.engine._scope import Scope
from memos.errors import UnsupportedByModel, VersionConflict
from memos.llm import LLMBackend, ResidentPrefix, SplitPrompt
from memos.llm._backend import ChatMessage, TextChatModel, TextStream


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
    system: str | None = None,
    history: Sequence[ChatMessage] = (),
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
    system_text = system_message(memories, system)
    prompt = model.split_prompt(system_text, query, cached=cached, history=history)
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
        stop: Sequence[str] = (),
    ) -> None:
        self._model = model
        self._plan = plan
        self._max_new_tokens = max_new_tokens
        self._on_done = on_done
        self._stop = tuple(stop)

    def __iter__(self) -> Iterator[str]:
        tokens: list[int] = []
        shown = ""
        plan, cut = self._plan, StopCut(self._stop)
        generated = self._model.stream(
            plan.prompt.ids,
            max_new_tokens=self._max_new_tokens,
            prefix=plan.prefix,
            adapter=plan.adapter,
        )
        try:
            for token in generated:
                tokens.append(token)
                text = self._model.decode(tokens)
                if text.endswith("\ufffd"):
                    continue  # hold back a piece that ends inside a multi-byte character
                ready = cut.ready(text)
                if ready.startswith(shown) and len(ready) > len(shown):
                    yield ready[len(shown) :]
                    shown = ready
                if cut.hit is not None:
                    break
        finally:
            close = getattr(generated, "close", None)
            if close is not None:
                close()  # a generation stopped early lets go of its cache
        answer = cut.final(self._model.decode(tokens))
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
            stop=cut.hit,
        )
        self._on_done(self._reply)


class UpstreamChatStream(ReplyStream):
    """The text pieces of an upstream model's answer as they arrive; ``reply`` once it is
    exhausted (see the module docstring for what it counts)."""

    def __init__(
        self,
        query: str,
        memories: tuple[MemoryItem, ...],
        answer: TextStream,
        on_done: Callable[[ChatReply], None],
        stop: Sequence[str] = (),
    ) -> None:
        self._query = query
        self._memories = memories
        self._answer = answer
        self._on_done = on_done
        self._stop = tuple(stop)

    def __iter__(self) -> Iterator[str]:
        text = shown = ""
        cut = StopCut(self._stop)
        for piece in self._answer:  # read to its end: the counts come last
            text += piece
            ready = shown if cut.hit is not None else cut.ready(text)
            if len(ready) > len(shown):
                yield ready[len(shown) :]
                shown = ready
        answer = cut.final(text)
        if len(answer) > len(shown):
            yield answer[len(shown) :]
        usage = self._answer.usage
        self._reply = ChatReply(
            query=self._query,
            answer=answer,
            tokens=(),
            memories=self._memories,
            retrieved=tuple(item.id for item in self._memories),
            kv_entry=None,
            prompt_tokens=0 if usage is None else usage.prompt_tokens,
            cached_tokens=0 if usage is None else usage.cached_tokens,
            completion_tokens=0 if usage is None else usage.completion_tokens,
            stop=cut.hit,
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
    system: str | None = None,
    history: Sequence[ChatMessage] | None = None,
    stop: str | Sequence[str] | None = None,
) -> ChatStream | UpstreamChatStream:
    """A chat for ``scope``, checked and planned, ready to generate (see ``Handle.chat``)."""
    query = check.text(query, scope.limits)
    system = check.instructions(system, scope.limits)
    turns = check.turns(history, scope.limits)
    stops = check.stops(stop)
    max_new_tokens = check.positive(max_new_tokens, "max_new_tokens", scope.limits.max_new_tokens)
    info = scope.cube(cube, Access.READ)
    model = engine.chat_model()
    wants_adapter = adapter is not None or info.default_adapter is not None
    if isinstance(model, TextChatModel) and wants_adapter:
        _refuse_adapter(model, adapter, info.name)
    through = None
    if wants_adapter:
        lora = engine.lora().scoped(scope.cube, scope.actor)
        entry = lora.for_chat(info.name, adapter)
        through = None if entry is None else (entry.id, lora.activate(entry))
    hits = []
    if retrieve:  # the retrieved memories are counted as the chat's use, below
        hits = engine.search(scope, query, cube=info.name, k=k, user=user, count_use=False)

    def count_use(reply: ChatReply) -> None:
        engine.uses.add(info.name, list(reply.retrieved), utcnow())

    if isinstance(model, TextChatModel):
        memories = tuple(hit.item for hit in hits)
        messages = [
            {"role": "system", "content": system_message(memories, system)},
            *turns,
            {"role": "user", "content": query},
        ]
        answer = model.stream_chat(messages, max_new_tokens=max_new_tokens, stop=stops)
        return UpstreamChatStream(query, memories, answer, count_use, stops)
    store = engine.store
    plan = plan_chat(
        model, engine.kv().scoped(scope.cube, scope.actor), cube=info.name,
        query=query, retrieved=[hit.item for hit in hits],
        block_items=lambda ids: _active_items(store, ids), use_kv=bool(use_kv), adapter=through,
        system=system, history=turns,
    )  # fmt: skip
    return ChatStream(model, plan, max_new_tokens, count_use, stops)


class StopCut:
    """An answer cut before the first of its stop sequences (``hit`` once one is found)."""

    def __init__(self, stop: Sequence[str]) -> None:
        self._stop = tuple(stop)
        self.hit: str | None = None

    def final(self, text: str) -> str:
        """``text`` (a whole answer) up to its first stop sequence."""
        found = [(at, s) for s in self._stop if (at := text.find(s)) >= 0]
        if not found:
            return text
        at, self.hit = min(found)
        return text[:at]

    def ready(self, text: str) -> str:
        """What of ``text`` (the answer so far) can be shown: up to its first stop sequence,
        less an end that may be the start of one (it is held back until it is known)."""
        cut = self.final(text)
        if self.hit is not None:
            return cut
        held = max(
            (n for s in self._stop for n in range(1, min(len(s), len(text) + 1))
             if text.endswith(s[:n])),
            default=0,
        )  # fmt: skip
        return text[: len(text) - held]


def system_message(memories: Sequence[MemoryItem], system: str | None = None) -> str:
    """The prompt's system message: the memory block, then the caller's ``system``
    instructions; with no memory, those instructions alone (the block's header, without
    them)."""
    if system is None:
        return render_block(memories)
    return f"{render_block(memories)}\n\n{system}" if memories else system


def _refuse_adapter(model: TextChatModel, adapter: str | None, cube: str) -> NoReturn:
    which = f"adapter {adapter!r}" if adapter is not None else f"the adapter attached to {cube!r}"
    raise UnsupportedByModel(
        f"LoRA adapters are the local model's: chat here goes through the upstream model "
        f"{model.name!r}, which cannot answer through {which}",
        model=model.name,
        cube=cube,
    )


def _active_items(store: Store, item_ids: Sequence[str]) -> list[MemoryItem]:
    found = store.get_items(item_ids)
    items = [found.get(i) for i in item_ids]
    if any(item is None or item.status != ItemStatus.ACTIVE for item in items):
        raise VersionConflict("a memory of the KV block changed while the chat started")
    return [item for item in items if item is not None]
