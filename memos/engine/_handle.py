"""The operations every handle has, declared once (see :mod:`memos.engine._operations`).

:class:`Handle` is what an embedded :class:`memos.MemOS` and an HTTP :class:`memos.RemoteMemOS`
share: each method here (and in :mod:`memos.engine._cube_operations`, and the namespaces
``kv``, ``lora``, ``jobs``) is an operation whose body is the embedded call (one call into the
engine, for the handle's scope); the HTTP client sends the same arguments to the route the
declaration names instead, and the server answers it by running the same body on the caller's
handle. Code written against a ``Handle`` runs on either.

The declarations import only what their signatures name (the request and reply models); a
body imports the engine code it calls when it first runs, so the HTTP client, which never runs
one, starts without numpy, FAISS or the codecs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self, overload

from memos.core import _validation as check
from memos.core._erasure import ErasureReceipt
from memos.core._history import ItemDiff
from memos.core._types import (
    Access,
    AccessStats,
    ChatReply,
    HistoryEntry,
    MemoryItem,
    MetadataValue,
    ReplyStream,
    SearchHit,
)
from memos.engine._cube_operations import CubeOperations
from memos.engine._governance import Governance
from memos.engine._jobs import Jobs
from memos.engine._kv import KV
from memos.engine._lora import Lora
from memos.engine._operations import namespace, operation
from memos.engine._scheduler import Scheduler
from memos.errors import InvalidInput
from memos.plaintext._search import DEFAULT_MODE as DEFAULT_SEARCH_MODE


class Handle(CubeOperations):
    """The operations shared by the embedded and the HTTP handle; see the module docstring."""

    kv = namespace(KV)
    """The activation tier: ``build``, ``list``, ``get``, ``drop`` KV caches of memory blocks
    (see :class:`memos.engine._kv.KV`)."""
    lora = namespace(Lora)
    """The parametric tier: ``consolidate``, ``list``, ``show``, ``attach``, ``rollback``,
    ``retrain``, ``export``, ``import_adapter``, ``delete`` LoRA adapters (see
    :class:`memos.engine._lora.Lora`)."""
    jobs = namespace(Jobs)
    """Background jobs: ``submit``, ``list``, ``get``, ``cancel``, ``wait`` (see
    :class:`memos.engine._jobs.Jobs`)."""
    governance = namespace(Governance)
    """A cube's policies: ``policies``, ``set_policies``, ``expire``, ``report`` (see
    :class:`memos.engine._governance.Governance`)."""
    scheduler = namespace(Scheduler)
    """The scheduler of the tiers: ``plan``, ``tick``, ``configure`` (see
    :class:`memos.engine._scheduler.Scheduler`)."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    if TYPE_CHECKING:  # each handle's own

        def close(self) -> None: ...

    # memories ---------------------------------------------------------------------------

    @overload
    def add(
        self,
        content: str,
        *,
        cube: str,
        user: str | None = None,
        tags: Iterable[str] | None = None,
        metadata: Mapping[str, MetadataValue] | None = None,
        session: str | None = None,
        occurred_at: datetime | str | None = None,
    ) -> MemoryItem: ...

    @overload
    def add(
        self,
        content: Sequence[Mapping[str, Any]],
        *,
        cube: str,
        user: str | None = None,
        tags: Iterable[str] | None = None,
        metadata: Mapping[str, MetadataValue] | None = None,
        session: str | None = None,
        occurred_at: None = None,
    ) -> list[MemoryItem]: ...

    @operation("POST", "/v1/cubes/{cube}/memories", status=201, wire={"content": "text"})
    def add(
        self,
        content: str | Sequence[Mapping[str, Any]],
        *,
        cube: str,
        user: str | None = None,
        tags: Iterable[str] | None = None,
        metadata: Mapping[str, MetadataValue] | None = None,
        session: str | None = None,
        occurred_at: datetime | str | None = None,
    ) -> MemoryItem | list[MemoryItem]:
        """Add one memory from a text, or one memory per chat message from a message list
        (``{"role", "content"}`` with an optional ISO ``timestamp``)."""
        records: Sequence[str | Mapping[str, Any]]
        limits = self._scope.limits
        if isinstance(content, str):
            # checked here too, so one text's error is not reported as "record 0: ..."
            records = [{"text": check.text(content, limits), "occurred_at": occurred_at}]
        elif isinstance(content, Sequence) and content:
            records = content
        else:
            raise InvalidInput("add takes a text or a non-empty list of chat messages")
        added = self.add_many(
            records, cube=cube, user=user, tags=tags, metadata=metadata, session=session
        )
        return added[0] if isinstance(content, str) else added

    @operation(
        "POST", "/v1/cubes/{cube}/memories/batch", status=201, local=["batch_size", "progress"]
    )
    def add_many(
        self,
        records: Iterable[str | Mapping[str, Any]],
        *,
        cube: str,
        user: str | None = None,
        tags: Iterable[str] | None = None,
        metadata: Mapping[str, MetadataValue] | None = None,
        session: str | None = None,
        batch_size: int = 256,
        progress: Callable[[int], None] | None = None,
    ) -> list[MemoryItem]:
        """Add many memories (texts, or records with ``text`` and optionally ``user``,
        ``tags``, ``metadata``, ``session``, ``occurred_at``): all are validated first, then
        embedded and committed in batches of ``batch_size`` (one transaction and one event per
        memory); ``progress(n)`` is called after each batch. Over HTTP each request carries one
        batch, at most the server's ``--max-batch`` records."""
        from memos.engine import _ingest

        return _ingest.add_many(
            self._engine, self._scope, records, cube=cube, user=user, tags=tags,
            metadata=metadata, session=session, batch_size=batch_size, progress=progress,
        )  # fmt: skip

    @operation("GET", "/v1/memories/{item_id}")
    def get(self, item_id: str) -> MemoryItem:
        """The memory ``item_id`` as it stands."""
        return self._scope.item(item_id, Access.READ)

    @operation("PATCH", "/v1/memories/{item_id}")
    def update(
        self,
        item_id: str,
        text: str | None = None,
        *,
        user: str | None = None,
        tags: Iterable[str] | None = None,
        metadata: Mapping[str, MetadataValue] | None = None,
        expected_version: int | None = None,
        reason: str | None = None,
    ) -> MemoryItem:
        """Change an item's text, tags or metadata; a new version with one ``update`` event."""
        from memos.engine import _memories

        return _memories.update(
            self._engine, self._scope, item_id, text, user=user, tags=tags, metadata=metadata,
            expected_version=expected_version, reason=reason,
        )  # fmt: skip

    @operation("DELETE", "/v1/memories/{item_id}")
    def delete(
        self,
        item_id: str,
        *,
        user: str | None = None,
        reason: str | None = None,
        expected_version: int | None = None,
    ) -> MemoryItem:
        """Mark an item deleted (a new version); its history stays and can be rolled back."""
        from memos.engine import _memories

        return _memories.delete(
            self._engine, self._scope, item_id, user=user, reason=reason,
            expected_version=expected_version,
        )  # fmt: skip

    @operation("POST", "/v1/memories/{item_id}/rollback")
    def rollback(
        self,
        item_id: str,
        *,
        to_version: int,
        user: str | None = None,
        reason: str | None = None,
        expected_version: int | None = None,
    ) -> MemoryItem:
        """Bring back an item's content as of ``to_version``, as a new version."""
        from memos.engine import _memories

        return _memories.rollback(
            self._engine, self._scope, item_id, to_version=to_version, user=user, reason=reason,
            expected_version=expected_version,
        )  # fmt: skip

    @operation("GET", "/v1/memories/{item_id}/history")
    def history(self, item_id: str) -> list[HistoryEntry]:
        """Every version of the memory, oldest first, with the event that made it."""
        from memos.engine import _memories

        return _memories.history(self._engine, self._scope, item_id)

    @operation("GET", "/v1/memories/{item_id}/diff")
    def diff(self, item_id: str, from_version: int, to_version: int) -> ItemDiff:
        """What changed between two versions of the memory."""
        from memos.engine import _memories

        return _memories.diff(self._engine, self._scope, item_id, from_version, to_version)

    @operation("POST", "/v1/cubes/{cube}/memories/list")
    def list_memories(
        self,
        *,
        cube: str,
        user: str | None = None,
        tags: Iterable[str] | None = None,
        session: str | None = None,
        since: datetime | str | None = None,
        until: datetime | str | None = None,
        where: Mapping[str, MetadataValue] | None = None,
        limit: int | None = None,
        after: str | None = None,
    ) -> list[MemoryItem]:
        """The cube's active memories that pass the filters (those of ``search``), oldest
        first: at most ``limit`` of them (by default as many as one call returns, ``max_k``:
        1000 embedded, a server's ``--max-k``), from the first one added after the memory
        ``after`` (pass the last id of a page to read the next). Nothing is embedded and no
        use is counted: this is a read of the catalogue, not a retrieval."""
        from memos.engine import _memories

        return _memories.listed(
            self._engine, self._scope, cube=cube, user=user, tags=tags, session=session,
            since=since, until=until, where=where, limit=limit, after=after,
        )  # fmt: skip

    @operation("POST", "/v1/cubes/{cube}/search")
    def search(
        self,
        query: str,
        *,
        cube: str,
        k: int = 5,
        user: str | None = None,
        tags: Iterable[str] | None = None,
        session: str | None = None,
        since: datetime | str | None = None,
        until: datetime | str | None = None,
        where: Mapping[str, MetadataValue] | None = None,
        mode: str = DEFAULT_SEARCH_MODE,
    ) -> list[SearchHit]:
        """The ``k`` best active memories for ``query``, filters applied before top-k.

        ``mode`` is ``"dense"`` (by meaning; score: cosine similarity), ``"keyword"`` (by
        shared words; score: bm25, higher is better) or ``"hybrid"`` (both, fused by
        reciprocal rank; score: the fused score). See :mod:`memos.plaintext._search`.
        """
        return self._engine.search(
            self._scope, query, cube=cube, k=k, user=user, tags=tags, session=session,
            since=since, until=until, where=where, mode=mode,
        )  # fmt: skip

    # erasure ----------------------------------------------------------------------------

    @operation("POST", "/v1/forget", tag="governance")
    def forget(
        self,
        *,
        user: str | None = None,
        cube: str | None = None,
        where: Mapping[str, MetadataValue] | None = None,
        adapters: str = "revert",
        reason: str | None = None,
        rewrite: bool = False,
    ) -> ErasureReceipt:
        """Erase the memories of ``user`` (and/or those whose metadata matches ``where``) from
        ``cube``, or from every cube the caller owns: every version, the payloads of their
        events, vectors and index snapshots, keyword entries, access statistics, the KV blocks
        and adapter versions built from them (with their blobs) and what finished jobs said of
        them. Adapters are ``"revert"``-ed (the versions that saw a memory go), also
        ``"retrain"``-ed without them, or given a ``"dampen"``-ed version (SSD: no training;
        it thins the memories out of the weights rather than removing them). One ``erase``
        event per cube; the receipt's digests are checked by ``verify(cube, receipt=...)``.
        Only a cube's owner erases from it. With ``rewrite`` (the operator only) the store then
        rewrites its files (SQLite: ``VACUUM``; Redis: ``BGREWRITEAOF``/``BGSAVE`` when the
        server persists)."""
        from memos.engine import _forget

        return _forget.forget(
            self._engine, self._scope, user=user, cube=cube, where=where, adapters=adapters,
            reason=reason, rewrite=rewrite,
        )  # fmt: skip

    # chat -------------------------------------------------------------------------------

    @operation("POST", "/v1/cubes/{cube}/chat")
    def chat(
        self,
        query: str,
        *,
        cube: str,
        user: str | None = None,
        k: int = 5,
        max_new_tokens: int = 128,
        use_kv: bool = True,
        adapter: str | None = None,
        retrieve: bool = True,
        system: str | None = None,
        history: Sequence[Mapping[str, str]] | None = None,
        stop: str | Sequence[str] | None = None,
    ) -> ChatReply:
        """Answer ``query`` with the cube's memories in the prompt (greedy decoding).

        The ``k`` best memories (of ``user``, when given) are retrieved; when stored KV blocks
        hold some of them, the prompt starts with the one holding most (the others follow) and,
        with ``use_kv``, its cache replaces prefilling it. ``use_kv=False`` recomputes the same
        prompt in full. ``adapter`` (or else the cube's attached one) answers through that LoRA
        adapter; ``retrieve=False`` puts no memory in the prompt (recall from parameters
        alone).
        ``system`` (instructions of the caller's own) follows the memories in the system
        message, so a stored block stays its prefix; with no memory in the prompt it is the
        whole system message. ``history`` (``{"role": "user" | "assistant", "content"}``
        messages, oldest first) holds the conversation's earlier turns: they come between the
        system message and the question, and the memories are retrieved for the question alone.
        ``stop`` (a string or up to 4) ends the answer before the first of them it would hold
        (generation stops there; ``reply.stop`` says which one).
        The memories used get an access counted (:meth:`access_stats`). Through an upstream
        model (:class:`memos.llm.OpenAICompatible`) the same prompt is sent as text: no KV
        cache serves it, an adapter is refused (:class:`memos.errors.UnsupportedByModel`), and
        the token counts are the upstream's (``tokens`` is empty)."""
        stream = self.chat_stream(
            query, cube=cube, user=user, k=k, max_new_tokens=max_new_tokens, use_kv=use_kv,
            adapter=adapter, retrieve=retrieve, system=system, history=history, stop=stop,
        )  # fmt: skip
        return stream.run()

    @operation("POST", "/v1/cubes/{cube}/chat/stream", stream=True)
    def chat_stream(
        self,
        query: str,
        *,
        cube: str,
        user: str | None = None,
        k: int = 5,
        max_new_tokens: int = 128,
        use_kv: bool = True,
        adapter: str | None = None,
        retrieve: bool = True,
        system: str | None = None,
        history: Sequence[Mapping[str, str]] | None = None,
        stop: str | Sequence[str] | None = None,
    ) -> ReplyStream:
        """:meth:`chat`, streamed: iterate for text pieces as they are generated, then read
        ``.reply``. A refusal (an unknown cube, a bad argument, a stale adapter) is raised
        here, before any piece."""
        from memos.engine._chat import start_chat  # loads the model code (torch)

        return start_chat(
            self._engine, self._scope, query, cube=cube, user=user, k=k,
            max_new_tokens=max_new_tokens, use_kv=use_kv, adapter=adapter, retrieve=retrieve,
            system=system, history=history, stop=stop,
        )  # fmt: skip

    @operation("POST", "/v1/access-stats")
    def access_stats(self, item_ids: Sequence[str]) -> dict[str, AccessStats]:
        """Use counts and decayed frequencies of the given items (absent: never used, or not
        visible to this handle). A search's hits are one use of their memories, a chat's
        retrieved memories another (not the ones a KV block adds to its prompt); uses reach
        the store in batches (see :mod:`memos.engine._uses`), and this reads them after this
        process's pending ones."""
        if isinstance(item_ids, str):
            raise InvalidInput("access_stats takes a list of memory ids")
        self._engine.uses.flush()  # this process's pending uses count too
        store = self._engine.store
        items = store.get_items(list(item_ids))
        readable = {c.name for c in self._scope.visible(store.list_cubes())}
        return store.access_stats([i for i, item in items.items() if item.cube in readable])
