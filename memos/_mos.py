"""The ``MemOS`` facade: the SDK's one entry point over a store, embedders and indexes."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, overload

import numpy as np

from memos import _history, _keys, _mutations
from memos import _validation as check
from memos._access import DEFAULT_HALF_LIFE_S
from memos._anchor import CubeAnchor
from memos._cube_stats import CubeStats, cube_stats
from memos._encoding import reconfigure
from memos._engine import Engine
from memos._export import export_cube, read_export
from memos._history import ItemDiff
from memos._jobs import (
    Job,
    JobKind,
    JobState,
    ReencodeParams,
    checked_job_id,
    checked_kind,
    checked_params,
    checked_state,
    new_job_id,
    waited,
)
from memos._records import Record, parse_records
from memos._scope import Scope
from memos._search import DEFAULT_MODE as DEFAULT_SEARCH_MODE
from memos._store import Change, Store, Vector, open_store
from memos._types import (
    Access,
    AccessStats,
    ApiKey,
    ChatReply,
    CubeInfo,
    Event,
    EventOp,
    HistoryEntry,
    ItemStatus,
    MemoryItem,
    MetadataValue,
    SearchHit,
    VerifyReport,
    utcnow,
)
from memos._validation import Limits
from memos._verify import verify_cube
from memos.codecs import default_codec, make_codec
from memos.embedding import Embedder
from memos.errors import (
    AccessDenied,
    Conflict,
    IntegrityError,
    InvalidInput,
    JobNotFound,
    NotFound,
    VersionConflict,
)

if TYPE_CHECKING:
    from memos._chat import ChatStream
    from memos._remote import RemoteMemOS
    from memos.activation import KVMemory
    from memos.llm import LLMBackend
    from memos.parametric import LoraMemory


_RETRIES = 20
_EMBED_CHUNK = 4096
Progress = Callable[[int], None]


class MemOS:
    """Memory for LLM applications: cubes of memories with an audited, reversible history.

    Open an embedded data directory with :meth:`open`. Every mutation appends one event to the
    cube's hash-chained log in the same transaction that changes the item.
    """

    def __init__(
        self,
        store: Store,
        *,
        snapshot_dir: Path | None = None,
        embedder: Embedder | None = None,
        limits: Limits | None = None,
        model: LLMBackend | str | Path | None = None,
        model_cache: Path | None = None,
    ) -> None:
        engine = Engine(
            store, limits=limits or Limits(), snapshot_dir=snapshot_dir, embedder=embedder,
            model=model, model_cache=model_cache,
        )  # fmt: skip
        self._engine, self._scope = engine, engine.operator

    @classmethod
    def _over(cls, engine: Engine, scope: Scope) -> MemOS:
        """A handle over ``engine`` that acts under ``scope``."""
        handle = cls.__new__(cls)
        handle._engine, handle._scope = engine, scope
        return handle

    @classmethod
    def open(
        cls,
        path: str | Path = ".memos",
        *,
        create: bool = True,
        embedder: Embedder | None = None,
        limits: Limits | None = None,
        model: LLMBackend | str | Path | None = None,
        model_cache: Path | None = None,
    ) -> MemOS:
        """Open (or create) an embedded data directory: SQLite, index snapshots, blobs.

        ``model`` (for chat and KV caches) is a loaded backend, a local Hugging Face model
        directory or ``.gguf`` file, or ``None`` for the bundled SmolLM2-135M-Instruct; a GGUF
        is converted once into ``model_cache`` (default ``~/.cache/memos/models``)."""
        data_dir = Path(path).expanduser().resolve()
        store = open_store(f"sqlite:///{data_dir}", create=create)
        return cls(
            store,
            snapshot_dir=data_dir / "index",
            embedder=embedder,
            limits=limits,
            model=model,
            model_cache=model_cache,
        )

    @classmethod
    def connect(cls, url: str, *, api_key: str, timeout: float = 600.0) -> RemoteMemOS:
        """A client of a MemOS server with the same methods as an embedded MemOS.

        It acts as the principal of ``api_key`` (made by ``memos keys create``); ``timeout``
        is how long to wait for an answer, in seconds (chat and consolidation are slow)."""
        from memos._remote import RemoteMemOS

        return RemoteMemOS(url, api_key=api_key, timeout=timeout)

    def as_principal(self, principal: str, *, limits: Limits | None = None) -> MemOS:
        """A handle over the same store, indexes and model that acts as ``principal``: it sees
        only the cubes the principal owns or was granted, and the log names the principal for
        everything it does (see :mod:`memos._scope`). ``limits`` (a server's) replace the
        handle's input limits. Closing it closes nothing."""
        scope = Scope(self.store, principal, limits or self.limits)
        return MemOS._over(self._engine, scope)

    @property
    def principal(self) -> str | None:
        """Whom this handle acts as; ``None`` for the operator of an embedded data directory."""
        return self._scope.principal

    @property
    def store(self) -> Store:
        return self._engine.store

    @property
    def limits(self) -> Limits:
        return self._scope.limits

    def close(self) -> None:
        """Close the store (the operator's handle; a principal's closes nothing)."""
        if self._scope.principal is None:
            self._engine.close()

    def __enter__(self) -> MemOS:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # cubes ------------------------------------------------------------------------------

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
        ``principal:name`` (see :mod:`memos._scope`); the reply carries the full name."""
        name, owner = self._scope.new_cube(name, owner)
        embedder_name = embedder or self._engine.default_embedder_name()
        model = self._engine.embedder_named(embedder_name)
        info = CubeInfo(
            name=name,
            owner=owner,
            embedder=model.name,
            dim=model.dim,
            codec=_checked_codec(codec or default_codec(model.dim), model.dim),
            kv_dtype=_checked_kv_dtype(kv_dtype),
            created_at=utcnow(),
        )
        self.store.create_cube(info, actor=owner)
        return info

    def get_cube(self, name: str) -> CubeInfo:
        return self._scope.cube(name, Access.READ)

    def list_cubes(self) -> list[CubeInfo]:
        """The cubes this handle may read, by name."""
        return self._scope.visible(self.store.list_cubes())

    def grant(
        self, cube: str, principal: str, access: str = "read", *, reason: str | None = None
    ) -> CubeInfo:
        """Let ``principal`` read (``access="read"``) or read and change (``"write"``) the
        cube; one ``grant`` event. Only the owner (or the operator) grants."""
        grantee = check.principal(principal, "principal", self.limits)
        level = _checked_access(access)
        return self._change_grants(cube, grantee, level, EventOp.GRANT, reason)

    def revoke(self, cube: str, principal: str, *, reason: str | None = None) -> CubeInfo:
        """Take ``principal``'s grant on the cube away; one ``revoke`` event."""
        grantee = check.principal(principal, "principal", self.limits)
        return self._change_grants(cube, grantee, None, EventOp.REVOKE, reason)

    def _change_grants(
        self, cube: str, grantee: str, level: Access | None, op: EventOp, reason: str | None
    ) -> CubeInfo:
        reason = check.reason(reason, self.limits)
        for _ in range(_RETRIES):
            info = self._scope.owned(cube)
            if grantee == info.owner:
                raise InvalidInput(f"{grantee!r} owns cube {info.name!r}", principal=grantee)
            grants = {p: a for p, a in info.grants.items() if p != grantee}
            if level is None and grantee not in info.grants:
                raise NotFound(f"{grantee!r} holds no grant on cube {info.name!r}")
            if level is not None:
                grants[grantee] = level
            new = info.model_copy(update={"grants": dict(sorted(grants.items()))})
            change = Change(
                op=op, cube=info.name, actor=self._actor(None), ts=utcnow(), reason=reason,
                cube_info=new, extra={"principal": grantee, "access": level},
            )  # fmt: skip
            try:
                self.store.commit([change])
            except VersionConflict:
                continue
            return new
        raise VersionConflict(f"cube {cube} kept changing; gave up after {_RETRIES} tries")

    # API keys of the server ------------------------------------------------------------

    def create_api_key(self, principal: str) -> tuple[ApiKey, str]:
        """Make an API key for ``principal``: its record and the token, shown this once."""
        self._operator_only("create API keys")
        return _keys.create_key(self.store, principal, self.limits)

    def list_api_keys(self) -> list[ApiKey]:
        self._operator_only("list API keys")
        return self.store.list_api_keys()

    def revoke_api_key(self, key_id: str) -> ApiKey:
        self._operator_only("revoke API keys")
        if not isinstance(key_id, str):
            raise InvalidInput("a key id is a string", field="key_id")
        return self.store.revoke_api_key(key_id, utcnow())

    def _operator_only(self, what: str) -> None:
        if self.principal is not None:
            raise AccessDenied(f"only the operator may {what}")

    # writes -----------------------------------------------------------------------------

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
        if isinstance(content, str):
            # checked here too, so one text's error is not reported as "record 0: ..."
            records = [{"text": check.text(content, self.limits), "occurred_at": occurred_at}]
        elif isinstance(content, Sequence) and content:
            records = content
        else:
            raise InvalidInput("add takes a text or a non-empty list of chat messages")
        added = self.add_many(
            records, cube=cube, user=user, tags=tags, metadata=metadata, session=session
        )
        return added[0] if isinstance(content, str) else added

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
        progress: Progress | None = None,
    ) -> list[MemoryItem]:
        """Ingest many memories: all are validated first, then embedded and committed in
        batches (one transaction and one event per memory)."""
        info = self._scope.cube(cube, Access.WRITE)
        batch_size = check.positive(batch_size, "batch_size", 100_000)
        parsed = parse_records(
            records, user=user, tags=tags, metadata=metadata, session=session, limits=self.limits
        )
        embedder = self._engine.embedder_for(info)
        added: list[MemoryItem] = []
        # Embedding a large chunk at once lets the embedder sort it by length (less padding);
        # commits stay at ``batch_size`` so each transaction is short.
        chunk_size = max(batch_size, _EMBED_CHUNK)
        for chunk_start in range(0, len(parsed), chunk_size):
            chunk = parsed[chunk_start : chunk_start + chunk_size]
            vectors = embedder.embed([r.text for r in chunk])
            for start in range(0, len(chunk), batch_size):
                end = start + batch_size
                added.extend(self._commit_new(info, chunk[start:end], vectors[start:end]))
                if progress is not None:
                    progress(len(chunk[start:end]))
        self._after_write(info, self._actor(user))
        return added

    def _commit_new(
        self, info: CubeInfo, batch: Sequence[Record], vectors: Vector
    ) -> list[MemoryItem]:
        now = utcnow()
        changes = []
        for record, vector in zip(batch, vectors, strict=True):
            item = _mutations.new_item(
                cube=info.name,
                text=record.text,
                user=record.user,
                tags=record.tags,
                metadata=record.metadata,
                occurred_at=record.occurred_at,
                now=now,
            )
            changes.append(
                Change(
                    op=EventOp.CREATE,
                    cube=info.name,
                    actor=self._actor(record.user),
                    ts=now,
                    item_id=item.id,
                    after=item,
                    vector=vector,
                    expected_version=0,
                )
            )
        self.store.commit(changes)
        return [c.after for c in changes if c.after is not None]

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
        new_text = None if text is None else check.text(text, self.limits)
        new_tags = None if tags is None else check.tags(tags, self.limits)
        new_meta = None if metadata is None else check.metadata(metadata, self.limits)
        if new_text is None and new_tags is None and new_meta is None:
            raise InvalidInput("update needs a new text, tags or metadata")
        current = self._scope.item(item_id, Access.WRITE)
        vector = None
        if new_text is not None and new_text != current.text:
            vector = self._engine.embedder_for(self.get_cube(current.cube)).embed([new_text])[0]

        def build(item: MemoryItem, now: datetime) -> MemoryItem:
            if item.status == ItemStatus.DELETED:
                raise Conflict(f"memory {item.id} is deleted; roll it back to restore it")
            return _mutations.revised(
                item, now=now, text=new_text, tags=new_tags, metadata=new_meta
            )

        return self._revise(
            item_id,
            build,
            op=EventOp.UPDATE,
            user=user,
            reason=reason,
            expected_version=expected_version,
            vector=vector,
        )

    def delete(
        self,
        item_id: str,
        *,
        user: str | None = None,
        reason: str | None = None,
        expected_version: int | None = None,
    ) -> MemoryItem:
        """Mark an item deleted (a new version); its history stays and can be rolled back."""

        def build(item: MemoryItem, now: datetime) -> MemoryItem:
            if item.status == ItemStatus.DELETED:
                raise Conflict(f"memory {item.id} is already deleted")
            return _mutations.revised(item, now=now, status=ItemStatus.DELETED)

        return self._revise(
            item_id,
            build,
            op=EventOp.DELETE,
            user=user,
            reason=reason,
            expected_version=expected_version,
        )

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
        self._scope.item(item_id, Access.WRITE)
        entries = self.history(item_id)
        target = _history.version(entries, item_id, to_version)
        vector = self._vector_for(target, entries[-1].item)

        def build(item: MemoryItem, now: datetime) -> MemoryItem:
            return _mutations.restored(item, target, now=now)

        return self._revise(
            item_id,
            build,
            op=EventOp.ROLLBACK,
            user=user,
            reason=reason,
            expected_version=expected_version,
            vector=vector,
            extra={"to_version": to_version},
        )

    def rollback_cube(
        self, cube: str, *, to_seq: int, user: str | None = None, reason: str | None = None
    ) -> list[MemoryItem]:
        """Bring every item of a cube back to its state right after event ``to_seq``.

        One ``rollback`` event per item that differs, all in one transaction; items created
        after ``to_seq`` are deleted. Nothing is erased: the undone events stay in the log.
        A concurrent writer's change is not overwritten: the rollback is recomputed on it.
        """
        info = self._scope.cube(cube, Access.WRITE)
        head_seq, _ = self.store.head(info.name)
        to_seq = check.positive(to_seq, "to_seq", max(head_seq, 1))
        actor, reason = self._actor(user), check.reason(reason, self.limits)
        past = _history.state_at(self.store.events(info.name, until_seq=to_seq))
        for _ in range(_RETRIES):
            changes = self._rollback_changes(info, past, actor, reason, to_seq)
            try:
                if changes:
                    self.store.commit(changes)
            except VersionConflict:
                continue
            self._after_write(info, actor)
            return [c.after for c in changes if c.after is not None]
        raise VersionConflict(f"cube {info.name} kept changing; gave up after {_RETRIES} tries")

    def _rollback_changes(
        self,
        info: CubeInfo,
        past: Mapping[str, MemoryItem],
        actor: str,
        reason: str | None,
        to_seq: int,
    ) -> list[Change]:
        now = utcnow()
        pending: list[tuple[MemoryItem, MemoryItem, MemoryItem | None]] = []
        for item in self.store.iter_items(info.name):
            target = past.get(item.id)
            after = (
                _mutations.revised(item, now=now, status=ItemStatus.DELETED)
                if target is None
                else _mutations.restored(item, target, now=now)
            )
            if not _mutations.same_content(after, item):
                pending.append((item, after, target))
        # one embedding call for every text that differs from what is stored
        texts = [t.text for item, _, t in pending if t is not None and t.text != item.text]
        fresh = iter(self._engine.embedder_for(info).embed(texts)) if texts else iter(())
        return [
            Change(
                op=EventOp.ROLLBACK,
                cube=info.name,
                actor=actor,
                ts=now,
                item_id=item.id,
                after=after,
                vector=next(fresh) if target is not None and target.text != item.text else None,
                expected_version=item.version,
                reason=reason,
                extra={"to_seq": to_seq},
            )
            for item, after, target in pending
        ]

    def _revise(
        self,
        item_id: str,
        build: Callable[[MemoryItem, datetime], MemoryItem],
        *,
        op: EventOp,
        user: str | None,
        reason: str | None,
        expected_version: int | None,
        vector: Vector | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> MemoryItem:
        """Optimistic read-modify-write: the store checks the version inside its transaction;
        without a caller's ``expected_version`` a lost race is retried on fresh state."""
        actor = self._actor(user)
        reason = check.reason(reason, self.limits)
        for _ in range(_RETRIES):
            current = self._scope.item(item_id, Access.WRITE)
            if expected_version is not None and expected_version != current.version:
                raise VersionConflict(
                    f"memory {item_id} is at version {current.version}, "
                    f"not the expected {expected_version}",
                    item_id=item_id,
                    current=current.version,
                    expected=expected_version,
                )
            now = utcnow()
            after = build(current, now)
            change = Change(
                op=op,
                cube=current.cube,
                actor=actor,
                ts=now,
                item_id=item_id,
                after=after,
                vector=vector,
                expected_version=current.version,
                reason=reason,
                extra=extra or {},
            )
            try:
                self.store.commit([change])
            except VersionConflict:
                if expected_version is not None:
                    raise
                continue
            # a rollback is the one single-item change that can add an active item
            self._after_write(self.get_cube(current.cube), actor, grew=op == EventOp.ROLLBACK)
            return after
        raise VersionConflict(f"memory {item_id} kept changing; gave up after {_RETRIES} tries")

    def _vector_for(self, target: MemoryItem, current: MemoryItem) -> Vector | None:
        """A vector for ``target``'s text, or ``None`` when the stored one still fits."""
        if target.text == current.text:
            return None
        vectors = self._engine.embedder_for(self.get_cube(current.cube)).embed([target.text])
        return np.asarray(vectors[0], dtype=np.float32)

    # reads ------------------------------------------------------------------------------

    def get(self, item_id: str) -> MemoryItem:
        return self._scope.item(item_id, Access.READ)

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
        reciprocal rank; score: the fused score). See :mod:`memos._search`.
        """
        return self._engine.search(
            self._scope, query, cube=cube, k=k, user=user, tags=tags, session=session,
            since=since, until=until, where=where, mode=mode,
        )  # fmt: skip

    def history(self, item_id: str) -> list[HistoryEntry]:
        item = self.get(item_id)
        return _history.history(self.store.events(item.cube, item_id=item_id))

    def diff(self, item_id: str, from_version: int, to_version: int) -> ItemDiff:
        entries = self.history(item_id)
        old = _history.version(entries, item_id, from_version)
        new = _history.version(entries, item_id, to_version)
        return _history.diff(old, new)

    def log(self, cube: str, *, after_seq: int = 0, limit: int | None = None) -> list[Event]:
        """The cube's events in order, oldest first (``limit`` keeps the newest ones)."""
        info = self.get_cube(cube)
        after_seq = check.count(after_seq, "after_seq")
        limit = None if limit is None else check.count(limit, "limit")
        events = self.store.events(info.name, after_seq=after_seq)
        return events if limit is None else events[-limit:] if limit > 0 else []

    def verify(self, cube: str, *, anchor: CubeAnchor | None = None) -> VerifyReport:
        """Recompute the cube's hash chain and check against it everything that decides an
        answer: items, vectors, configuration, derived artifacts, the keyword index, the codec's
        fitted state and the vector index snapshot; names the first bad seq. With ``anchor``
        (from :meth:`anchor`, kept outside the data directory) it also catches a log whose
        newest events were cut off or rewritten since."""
        info = self.get_cube(cube)
        if anchor is not None and anchor.cube != info.name:
            raise InvalidInput(f"the anchor is of cube {anchor.cube!r}, not {info.name!r}")
        return verify_cube(self.store, info, anchor=anchor, indexes=self._engine.indexes)

    def anchor(self, cube: str) -> CubeAnchor:
        """The cube's head now (seq and hash of its last event), to keep outside the data
        directory and pass to :meth:`verify` later."""
        info = self.get_cube(cube)
        seq, digest = self.store.head(info.name)
        return CubeAnchor(cube=info.name, seq=seq, hash=digest, at=utcnow())

    def verify_all(self) -> list[VerifyReport]:
        return [self.verify(info.name) for info in self.list_cubes()]

    # portability ------------------------------------------------------------------------

    def export_cube(self, cube: str, directory: str | Path) -> Path:
        """Write a portable, checksummed copy of the cube (items, events, vectors)."""
        info = self.get_cube(cube)
        report = self.verify(info.name)
        if not report.ok:
            raise IntegrityError(
                f"cube {info.name!r} does not verify (seq {report.first_bad_seq}: "
                f"{report.problem}); refusing to export it",
                seq=report.first_bad_seq,
            )
        return export_cube(self.store, info, Path(directory))

    def import_cube(self, directory: str | Path) -> CubeInfo:
        """Import an export after checking its checksums, chain and items; the imported log is
        identical to the exported one, hashes included."""
        data = read_export(Path(directory))
        self._scope.importable(data.cube)
        # the blobs go in with the cube, in its transaction: a refused import leaves none
        self.store.import_cube(data)
        self._engine.indexes.forget(data.cube.name)
        self._engine.indexes.current(data.cube)
        return data.cube

    # codecs -----------------------------------------------------------------------------

    def refit(self, cube: str, *, user: str | None = None, reason: str | None = None) -> CubeInfo:
        """Fit the cube's codec again to its current vectors and re-encode the index (one
        ``codec_fit`` event). Only for codecs that are fitted (``int8``, ``pca{k}+fp8``,
        ``ivf{nlist}+sq8``), and only once the cube holds the codec's ``fit_min`` active
        memories."""
        info = _fitted(self._scope.cube(cube, Access.WRITE))
        return reconfigure(
            self.store,
            self._engine.indexes,
            info,
            codec=info.codec,
            op=EventOp.CODEC_FIT,
            actor=self._actor(user),
            reason=check.reason(reason, self.limits),
            force_fit=True,
        )

    def reencode(
        self, cube: str, *, codec: str, user: str | None = None, reason: str | None = None
    ) -> CubeInfo:
        """Switch the cube to another codec (one ``reencode`` event): the index is rebuilt
        from the full-precision vectors in the store and swapped in when complete. A codec
        that needs fitting is fitted at once when the cube holds enough memories."""
        info = self._scope.cube(cube, Access.WRITE)
        name = _checked_codec(codec, info.dim)
        return reconfigure(
            self.store,
            self._engine.indexes,
            info,
            codec=name,
            op=EventOp.REENCODE,
            actor=self._actor(user),
            reason=check.reason(reason, self.limits),
        )

    def cube_stats(self, cube: str) -> CubeStats:
        """Items, codec (version, fitted or not), dimensions, and the bytes per vector the
        index holds in RAM against the full-precision copy on disk."""
        info = self.get_cube(cube)
        return cube_stats(self.store, info, self._engine.indexes.current(info))

    # background jobs --------------------------------------------------------------------

    def submit_job(
        self,
        cube: str,
        kind: JobKind | str,
        params: Mapping[str, Any] | None = None,
        *,
        user: str | None = None,
        reason: str | None = None,
    ) -> Job:
        """Queue a background job on ``cube`` and return it, queued: ``consolidate`` (params as
        ``lora.consolidate``: ``name`` and ``item_ids`` or ``query``), ``retrain``
        (``name``), ``refit``, ``reencode`` (``codec``). A worker (``memos worker``) runs it
        with this handle's rights; the events it makes name the acting user and begin their
        reason with the job's id. The job is stored before this returns: no worker crash
        loses it (see :mod:`memos._jobs`)."""
        info = self._scope.cube(cube, Access.WRITE)
        job_kind = checked_kind(kind)
        checked = checked_params(job_kind, dict(params) if isinstance(params, Mapping) else params)
        # what the worker's call would refuse at once is refused now, before anything queues
        if isinstance(checked, ReencodeParams):
            _checked_codec(checked.codec, info.dim)
        elif job_kind == JobKind.REFIT:
            _fitted(info)
        job = Job(
            id=new_job_id(), cube=info.name, kind=job_kind, principal=self.principal,
            params=checked.model_dump(mode="json"), actor=self._actor(user),
            reason=check.reason(reason, self.limits), after_seq=self.store.head(info.name)[0],
            submitted_at=utcnow(),
        )  # fmt: skip
        check.reason(job.event_reason, self.limits)  # the events' reasons must fit too
        self.store.enqueue_job(job)
        return job

    def get_job(self, job_id: str) -> Job:
        """The job as it stands; :class:`JobNotFound` also for a job of a cube this handle may
        not read."""
        job = self.store.get_job(checked_job_id(job_id))
        if job is None or not self._scope.can_read(job.cube):
            raise JobNotFound(f"no job with id {job_id!r}", job_id=job_id)
        return job

    def cancel_job(self, job_id: str) -> Job:
        """Cancel a job no worker has taken yet (:class:`Conflict` once one has: a running job
        is never interrupted); needs write access to its cube."""
        job = self.get_job(job_id)
        self._scope.cube(job.cube, Access.WRITE)
        return self.store.cancel_job(job.id, utcnow())

    def list_jobs(
        self, cube: str | None = None, *, state: JobState | str | None = None
    ) -> list[Job]:
        """The jobs of ``cube`` (default: of every cube this handle may read), oldest first;
        only those in ``state`` when given."""
        wanted = checked_state(state)
        cubes = self.list_cubes() if cube is None else [self._scope.cube(cube)]
        jobs = [job for info in cubes for job in self.store.list_jobs(info.name)]
        if cube is None:
            jobs.sort(key=lambda job: (job.submitted_at, job.id))
        return [job for job in jobs if wanted is None or job.state == wanted]

    def wait_for_job(self, job_id: str, *, timeout: float = 600.0, poll_s: float = 0.2) -> Job:
        """The job once a worker finished it (``done`` or ``failed``), or as it stands when
        ``timeout`` seconds ran out."""
        return waited(lambda: self.get_job(job_id), timeout, poll_s)

    def _after_write(self, info: CubeInfo, actor: str, *, grew: bool = True) -> None:
        self._engine.after_write(info, actor, self.limits, grew=grew)

    # chat and activation memory ---------------------------------------------------------

    def model(self) -> LLMBackend:
        """The language model chat and KV caches use, loaded on first call."""
        return self._engine.model()

    @property
    def kv(self) -> KVMemory:
        """The activation tier: ``build``, ``list``, ``get``, ``drop`` KV caches of memory
        blocks (see :class:`memos.activation.KVMemory`)."""
        return self._engine.kv().scoped(self._scope.cube, self._actor)

    @property
    def lora(self) -> LoraMemory:
        """The parametric tier: ``consolidate``, ``list``, ``show``, ``attach``, ``rollback``,
        ``retrain``, ``export``, ``import_adapter``, ``delete`` LoRA adapters (see
        :class:`memos.parametric.LoraMemory`)."""
        return self._engine.lora().scoped(self._scope.cube, self._actor)

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
        return self.chat_stream(
            query,
            cube=cube,
            user=user,
            k=k,
            max_new_tokens=max_new_tokens,
            use_kv=use_kv,
            adapter=adapter,
            retrieve=retrieve,
        ).run()

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
    ) -> ChatStream:
        """:meth:`chat`, streamed: iterate for text pieces, then read ``.reply``."""
        from memos._chat import ChatStream, plan_chat

        query = check.text(query, self.limits)
        max_new_tokens = check.positive(max_new_tokens, "max_new_tokens", 4096)
        info = self.get_cube(cube)
        through = None
        if adapter is not None or info.default_adapter is not None:
            entry = self.lora.for_chat(info.name, adapter)
            through = None if entry is None else (entry.id, self.lora.activate(entry))
        retrieved = self._retrieve(query, info.name, k, user) if retrieve else []
        plan = plan_chat(
            self.model(),
            self.kv,
            cube=info.name,
            query=query,
            retrieved=retrieved,
            block_items=self._active_items,
            use_kv=bool(use_kv),
            adapter=through,
        )

        def count_use(reply: ChatReply) -> None:
            ids = [m.id for m in reply.memories]
            if ids:
                self.store.record_access(ids, utcnow(), DEFAULT_HALF_LIFE_S)

        return ChatStream(self.model(), plan, max_new_tokens, count_use)

    def access_stats(self, item_ids: Sequence[str]) -> dict[str, AccessStats]:
        """Use counts and decayed frequencies of the given items (absent: never used, or not
        visible to this handle)."""
        if isinstance(item_ids, str):
            raise InvalidInput("access_stats takes a list of memory ids")
        items = self.store.get_items(list(item_ids))
        readable = {c.name for c in self._scope.visible(self.store.list_cubes())}
        return self.store.access_stats([i for i, item in items.items() if item.cube in readable])

    def _retrieve(self, query: str, cube: str, k: int, user: str | None) -> list[MemoryItem]:
        return [hit.item for hit in self.search(query, cube=cube, k=k, user=user)]

    def _active_items(self, item_ids: Sequence[str]) -> list[MemoryItem]:
        found = self.store.get_items(item_ids)
        items = [found.get(i) for i in item_ids]
        if any(item is None or item.status != ItemStatus.ACTIVE for item in items):
            raise VersionConflict("a memory of the KV block changed while the chat started")
        return [item for item in items if item is not None]

    def _actor(self, user: str | None) -> str:
        return self._scope.actor(user)


def _checked_access(access: object) -> Access:
    if access not in ("read", "write"):
        raise InvalidInput(f"access is 'read' or 'write', not {access!r}", field="access")
    return Access(access)


def _fitted(info: CubeInfo) -> CubeInfo:
    """``info``, whose codec is one that is fitted (refit refuses any other)."""
    if not make_codec(info.codec).fit_min:
        raise InvalidInput(f"codec {info.codec} of cube {info.name!r} is not fitted")
    return info


def _checked_kv_dtype(dtype: str) -> str:
    if dtype not in ("fp32", "bf16", "int8"):
        raise InvalidInput(f"kv_dtype must be fp32, bf16 or int8, not {dtype!r}")
    return dtype


def _checked_codec(name: str, dim: int) -> str:
    """The canonical name of codec ``name``, which must be able to encode ``dim``-d vectors."""
    if not isinstance(name, str):
        raise InvalidInput("a codec is named by a string")
    codec = make_codec(name)
    codec.projected_dim(dim)
    return codec.name
