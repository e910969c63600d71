"""The operations every handle has, declared once (see :mod:`memos.engine._operations`).

:class:`Handle` is what an embedded :class:`memos.MemOS` and an HTTP :class:`memos.RemoteMemOS`
share: each method here is an operation whose body is the embedded call (one call into the
engine, for the handle's scope); the HTTP client sends the same arguments to the route the
declaration names instead, and the server answers it by running the same body on the caller's
handle. Code written against a ``Handle`` runs on either.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self, overload

from memos.core import _validation as check
from memos.core._anchor import CubeAnchor
from memos.core._archive import CUBE_EXPORT
from memos.core._history import ItemDiff
from memos.core._types import (
    Access,
    AccessStats,
    ChatReply,
    CubeInfo,
    Event,
    EventOp,
    HistoryEntry,
    MemoryItem,
    MetadataValue,
    ReplyStream,
    SearchHit,
    VerifyReport,
    utcnow,
)
from memos.engine import _cubes, _export, _grants, _ingest, _memories
from memos.engine._cube_stats import CubeStats, cube_stats
from memos.engine._engine import Engine
from memos.engine._jobs import Jobs
from memos.engine._kv import KV
from memos.engine._lora import Lora
from memos.engine._operations import Performs, namespace, operation
from memos.engine._scope import Scope
from memos.engine._verify import verify_cube
from memos.errors import IntegrityError, InvalidInput
from memos.plaintext._encoding import checked_codec, fitted, reconfigure
from memos.plaintext._search import DEFAULT_MODE as DEFAULT_SEARCH_MODE

CUBES, MEMORIES = "cubes", "memories"


class Handle(Performs):
    """The operations shared by the embedded and the HTTP handle; see the module docstring."""

    # set on an embedded handle, whose operations run here; an HTTP handle sends them instead
    _engine: Engine
    _scope: Scope

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

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    if TYPE_CHECKING:  # each handle's own: over HTTP an anchor travels as three query fields

        def close(self) -> None: ...

    # cubes ------------------------------------------------------------------------------

    @operation("POST", "/v1/cubes", status=201, tag=CUBES)
    def create_cube(
        self,
        name: str,
        *,
        owner: str | None = None,
        embedder: str | None = None,
        codec: str | None = None,
        kv_dtype: str = "fp32",
    ) -> CubeInfo:
        """Create a cube. ``codec`` (how its vectors are held in RAM) defaults to
        :func:`memos.codecs.default_codec` for the embedder's dimension; ``kv_dtype`` is how
        its KV caches are stored (``fp32``, ``bf16`` or ``int8``). ``owner`` defaults to the
        handle's principal (``local`` for the operator). A principal's cube is named
        ``principal:name`` (see :mod:`memos.engine._scope`); the reply carries the full name."""
        return _cubes.create_cube(
            self._engine, self._scope, name, owner=owner, embedder=embedder, codec=codec,
            kv_dtype=kv_dtype,
        )  # fmt: skip

    @operation("GET", "/v1/cubes/{cube}", tag=CUBES, wire={"name": "cube"})
    def get_cube(self, name: str) -> CubeInfo:
        """The cube ``name`` (its full name, or one of the caller's own)."""
        return self._scope.cube(name, Access.READ)

    @operation("GET", "/v1/cubes", tag=CUBES)
    def list_cubes(self) -> list[CubeInfo]:
        """The cubes this handle may read, by name."""
        return self._scope.visible(self._engine.store.list_cubes())

    @operation("POST", "/v1/cubes/{cube}/grants", tag=CUBES)
    def grant(
        self, cube: str, principal: str, access: str = "read", *, reason: str | None = None
    ) -> CubeInfo:
        """Let ``principal`` read (``access="read"``) or read and change (``"write"``) the
        cube; one ``grant`` event. Only the owner (or the operator) grants."""
        return _grants.grant(self._engine, self._scope, cube, principal, access, reason)

    @operation("DELETE", "/v1/cubes/{cube}/grants/{principal:path}", tag=CUBES)
    def revoke(self, cube: str, principal: str, *, reason: str | None = None) -> CubeInfo:
        """Take ``principal``'s grant on the cube away; one ``revoke`` event."""
        return _grants.revoke(self._engine, self._scope, cube, principal, reason)

    @operation("GET", "/v1/cubes/{cube}/stats", tag=CUBES)
    def cube_stats(self, cube: str) -> CubeStats:
        """Items, codec (version, fitted or not), dimensions, and the bytes per vector the
        index holds in RAM against the full-precision copy on disk."""
        info = self._scope.cube(cube)
        return cube_stats(self._engine.store, info, self._engine.indexes.current(info))

    @operation("GET", "/v1/cubes/{cube}/log", tag=CUBES)
    def log(self, cube: str, *, after_seq: int = 0, limit: int | None = None) -> list[Event]:
        """The cube's events in order, oldest first (``limit`` keeps the newest ones)."""
        info = self._scope.cube(cube)
        after_seq = check.count(after_seq, "after_seq")
        limit = None if limit is None else check.count(limit, "limit")
        events = self._engine.store.events(info.name, after_seq=after_seq)
        return events if limit is None else events[-limit:] if limit > 0 else []

    @operation("GET", "/v1/cubes/{cube}/anchor", tag=CUBES)
    def anchor(self, cube: str) -> CubeAnchor:
        """The cube's head now (seq and hash of its last event), to keep outside the data
        directory and pass to :meth:`verify` later."""
        info = self._scope.cube(cube)
        seq, digest = self._engine.store.head(info.name)
        return CubeAnchor(cube=info.name, seq=seq, hash=digest, at=utcnow())

    @operation("GET", "/v1/cubes/{cube}/verify", tag=CUBES)
    def verify(self, cube: str, *, anchor: CubeAnchor | None = None) -> VerifyReport:
        """Recompute the cube's hash chain and check against it everything that decides an
        answer: items, vectors, configuration, derived artifacts, the keyword index, the codec's
        fitted state and the vector index snapshot; names the first bad seq. With ``anchor``
        (from :meth:`anchor`, kept outside the data directory) it also catches a log whose
        newest events were cut off or rewritten since."""
        info = self._scope.cube(cube, Access.READ)
        if anchor is not None and anchor.cube != info.name:
            raise InvalidInput(f"the anchor is of cube {anchor.cube!r}, not {info.name!r}")
        engine = self._engine
        return verify_cube(engine.store, info, anchor=anchor, indexes=engine.indexes)

    @operation("GET", "/v1/cubes/{cube}/export", tag=CUBES, archive=CUBE_EXPORT)
    def export_cube(self, cube: str, directory: str | Path) -> Path:
        """Write a portable, checksummed copy of the cube (items, events, vectors, derived
        artifacts) into ``directory`` (new, or empty); refused while the cube does not verify.
        Over HTTP the export travels as a tar of that directory."""
        info = self._scope.cube(cube, Access.READ)
        report = self.verify(info.name)
        if not report.ok:
            raise IntegrityError(
                f"cube {info.name!r} does not verify (seq {report.first_bad_seq}: "
                f"{report.problem}); refusing to export it",
                seq=report.first_bad_seq,
            )
        return _export.export_cube(self._engine.store, info, Path(directory))

    @operation("POST", "/v1/cubes/import", status=201, tag=CUBES, archive=CUBE_EXPORT)
    def import_cube(self, directory: str | Path) -> CubeInfo:
        """Import an export after checking its checksums, chain and items; the imported log is
        identical to the exported one, hashes included. A principal imports only an export of
        its own namespace. Over HTTP the export travels as a tar of the directory."""
        data = _export.read_export(Path(directory))
        self._scope.importable(data.cube)
        # the blobs go in with the cube, in its transaction: a refused import leaves none
        self._engine.store.import_cube(data)
        self._engine.indexes.forget(data.cube.name)
        self._engine.indexes.current(data.cube)
        return data.cube

    def verify_all(self) -> list[VerifyReport]:
        """:meth:`verify` of every cube this handle may read."""
        return [self.verify(info.name) for info in self.list_cubes()]

    @operation("POST", "/v1/cubes/{cube}/refit", tag=CUBES)
    def refit(self, cube: str, *, user: str | None = None, reason: str | None = None) -> CubeInfo:
        """Fit the cube's codec again to its current vectors and re-encode the index (one
        ``codec_fit`` event). Only for codecs that are fitted (``int8``, ``pca{k}+fp8``,
        ``ivf{nlist}+sq8``), and only once the cube holds the codec's ``fit_min`` active
        memories."""
        info = fitted(self._scope.cube(cube, Access.WRITE))
        return reconfigure(
            self._engine.store, self._engine.indexes, info, codec=info.codec,
            op=EventOp.CODEC_FIT, actor=self._scope.actor(user),
            reason=check.reason(reason, self._scope.limits), force_fit=True,
        )  # fmt: skip

    @operation("POST", "/v1/cubes/{cube}/reencode", tag=CUBES)
    def reencode(
        self, cube: str, *, codec: str, user: str | None = None, reason: str | None = None
    ) -> CubeInfo:
        """Switch the cube to another codec (one ``reencode`` event): the index is rebuilt
        from the full-precision vectors in the store and swapped in when complete. A codec
        that needs fitting is fitted at once when the cube holds enough memories."""
        info = self._scope.cube(cube, Access.WRITE)
        return reconfigure(
            self._engine.store, self._engine.indexes, info, codec=checked_codec(codec, info.dim),
            op=EventOp.REENCODE, actor=self._scope.actor(user),
            reason=check.reason(reason, self._scope.limits),
        )  # fmt: skip

    @operation("POST", "/v1/cubes/{cube}/rollback", tag=CUBES)
    def rollback_cube(
        self, cube: str, *, to_seq: int, user: str | None = None, reason: str | None = None
    ) -> list[MemoryItem]:
        """Bring every item of a cube back to its state right after event ``to_seq``.

        One ``rollback`` event per item that differs, all in one transaction; items created
        after ``to_seq`` are deleted. Nothing is erased: the undone events stay in the log.
        A concurrent writer's change is not overwritten: the rollback is recomputed on it.
        """
        return _memories.rollback_cube(
            self._engine, self._scope, cube, to_seq=to_seq, user=user, reason=reason
        )

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
        return _memories.rollback(
            self._engine, self._scope, item_id, to_version=to_version, user=user, reason=reason,
            expected_version=expected_version,
        )  # fmt: skip

    @operation("GET", "/v1/memories/{item_id}/history")
    def history(self, item_id: str) -> list[HistoryEntry]:
        """Every version of the memory, oldest first, with the event that made it."""
        return _memories.history(self._engine, self._scope, item_id)

    @operation("GET", "/v1/memories/{item_id}/diff")
    def diff(self, item_id: str, from_version: int, to_version: int) -> ItemDiff:
        """What changed between two versions of the memory."""
        return _memories.diff(self._engine, self._scope, item_id, from_version, to_version)

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
    ) -> ChatReply:
        """Answer ``query`` with the cube's memories in the prompt (greedy decoding).

        The ``k`` best memories (of ``user``, when given) are retrieved; when a stored KV
        block holds all of them, the prompt is built from that block and, with ``use_kv``,
        its cache replaces prefilling it. ``use_kv=False`` recomputes the same prompt in full.
        ``adapter`` (or else the cube's attached one) answers through that LoRA adapter;
        ``retrieve=False`` puts no memory in the prompt (recall from parameters alone).
        The memories used get an access counted (:meth:`access_stats`)."""
        stream = self.chat_stream(
            query, cube=cube, user=user, k=k, max_new_tokens=max_new_tokens, use_kv=use_kv,
            adapter=adapter, retrieve=retrieve,
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
    ) -> ReplyStream:
        """:meth:`chat`, streamed: iterate for text pieces as they are generated, then read
        ``.reply``. A refusal (an unknown cube, a bad argument, a stale adapter) is raised
        here, before any piece."""
        from memos.engine._chat import start_chat  # loads the model code (torch)

        return start_chat(
            self._engine, self._scope, query, cube=cube, user=user, k=k,
            max_new_tokens=max_new_tokens, use_kv=use_kv, adapter=adapter, retrieve=retrieve,
        )  # fmt: skip

    @operation("POST", "/v1/access-stats")
    def access_stats(self, item_ids: Sequence[str]) -> dict[str, AccessStats]:
        """Use counts and decayed frequencies of the given items (absent: never used, or not
        visible to this handle)."""
        if isinstance(item_ids, str):
            raise InvalidInput("access_stats takes a list of memory ids")
        store = self._engine.store
        items = store.get_items(list(item_ids))
        readable = {c.name for c in self._scope.visible(store.list_cubes())}
        return store.access_stats([i for i, item in items.items() if item.cube in readable])
