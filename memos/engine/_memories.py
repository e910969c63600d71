"""Memories: change one (update, delete, rollback), bring a whole cube back (rollback_cube),
read one's history. Engine functions: each acts for ``scope`` on ``engine``'s store, and is what
a handle's declared method runs (see :mod:`memos.engine._handle`)."""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from memos.core import _history, _mutations
from memos.core import _validation as check
from memos.core._history import ItemDiff
from memos.core._store import Change
from memos.core._types import (
    Access,
    CubeInfo,
    EventOp,
    HistoryEntry,
    ItemStatus,
    MemoryItem,
    MetadataValue,
    utcnow,
)
from memos.engine._engine import Engine
from memos.engine._governance import check_quotas, redacted_text, refuse_deleting
from memos.engine._scope import Scope
from memos.errors import Conflict, InvalidInput, VersionConflict
from memos.plaintext import _search

if TYPE_CHECKING:
    from memos.core._store import Vector

_RETRIES = 20


def update(
    engine: Engine,
    scope: Scope,
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
    new_text = None if text is None else check.text(text, scope.limits)
    new_tags = None if tags is None else check.tags(tags, scope.limits)
    new_meta = None if metadata is None else check.metadata(metadata, scope.limits)
    if new_text is None and new_tags is None and new_meta is None:
        raise InvalidInput("update needs a new text, tags or metadata")
    current = scope.item(item_id, Access.WRITE)
    # what can refuse the update is checked before the text is embedded (seconds, the first
    # time a process loads the model); _revise checks both again inside the commit loop
    _check_expected(current, expected_version)
    _refuse_deleted(current)
    info = scope.cube(current.cube)
    counts: dict[str, int] = {}
    if new_text is not None:
        new_text, counts = redacted_text(info, new_text)  # before it is embedded or stored
        check_quotas(engine, info, [(current.user, new_text)], replacing=current)
    vector = None
    if new_text is not None and new_text != current.text:
        vector = engine.embedder_for(info).embed([new_text])[0]

    def build(item: MemoryItem, now: datetime) -> MemoryItem:
        _refuse_deleted(item)
        return _mutations.revised(item, now=now, text=new_text, tags=new_tags, metadata=new_meta)

    return _revise(
        engine,
        scope,
        item_id,
        build,
        op=EventOp.UPDATE,
        user=user,
        reason=reason,
        expected_version=expected_version,
        vector=vector,
        extra={"redacted": counts} if counts else None,
    )


def delete(
    engine: Engine,
    scope: Scope,
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
        refuse_deleting(scope.cube(item.cube), [item])
        return _mutations.revised(item, now=now, status=ItemStatus.DELETED)

    return _revise(
        engine,
        scope,
        item_id,
        build,
        op=EventOp.DELETE,
        user=user,
        reason=reason,
        expected_version=expected_version,
    )


def rollback(
    engine: Engine,
    scope: Scope,
    item_id: str,
    *,
    to_version: int,
    user: str | None = None,
    reason: str | None = None,
    expected_version: int | None = None,
) -> MemoryItem:
    """Bring back an item's content as of ``to_version``, as a new version."""
    scope.item(item_id, Access.WRITE)
    entries = history(engine, scope, item_id)
    target = _history.version(entries, item_id, to_version)
    vector = _vector_for(engine, scope, target, entries[-1].item)

    def build(item: MemoryItem, now: datetime) -> MemoryItem:
        after = _mutations.restored(item, target, now=now)
        if after.status == ItemStatus.DELETED and item.status != ItemStatus.DELETED:
            refuse_deleting(scope.cube(item.cube), [item], "deleted by a rollback")
        return after

    return _revise(
        engine,
        scope,
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
    engine: Engine,
    scope: Scope,
    cube: str,
    *,
    to_seq: int,
    user: str | None = None,
    reason: str | None = None,
) -> list[MemoryItem]:
    """Bring every item of a cube back to its state right after event ``to_seq``.

    One ``rollback`` event per item that differs, all in one transaction; items created
    after ``to_seq`` are deleted. Nothing is erased: the undone events stay in the log.
    A concurrent writer's change is not overwritten: the rollback is recomputed on it.
    """
    info = scope.cube(cube, Access.WRITE)
    head_seq, _ = engine.store.head(info.name)
    to_seq = check.positive(to_seq, "to_seq", max(head_seq, 1))
    actor, reason = scope.actor(user), check.reason(reason, scope.limits)
    past = _history.state_at(engine.store.events(info.name, until_seq=to_seq))
    for _ in range(_RETRIES):
        changes = _rollback_changes(engine, info, past, actor, reason, to_seq)
        try:
            if changes:
                engine.store.commit(changes)
        except VersionConflict:
            continue
        engine.after_write(info, actor, scope.limits, grew=True)
        return [c.after for c in changes if c.after is not None]
    raise VersionConflict(f"cube {info.name} kept changing; gave up after {_RETRIES} tries")


def _rollback_changes(
    engine: Engine,
    info: CubeInfo,
    past: Mapping[str, MemoryItem],
    actor: str,
    reason: str | None,
    to_seq: int,
) -> list[Change]:
    now = utcnow()
    pending: list[tuple[MemoryItem, MemoryItem, MemoryItem | None]] = []
    for item in engine.store.iter_items(info.name):
        target = past.get(item.id)
        after = (
            _mutations.revised(item, now=now, status=ItemStatus.DELETED)
            if target is None
            else _mutations.restored(item, target, now=now)
        )
        if not _mutations.same_content(after, item):
            pending.append((item, after, target))
    refuse_deleting(
        info,
        [i for i, a, _ in pending if i.status != a.status == ItemStatus.DELETED],
        "deleted by a rollback",
    )
    # one embedding call for every text that differs from what is stored
    texts = [t.text for item, _, t in pending if t is not None and t.text != item.text]
    fresh = iter(engine.embedder_for(info).embed(texts)) if texts else iter(())
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
    engine: Engine,
    scope: Scope,
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
    actor = scope.actor(user)
    reason = check.reason(reason, scope.limits)
    for _ in range(_RETRIES):
        current = scope.item(item_id, Access.WRITE)
        _check_expected(current, expected_version)
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
            engine.store.commit([change])
        except VersionConflict:
            if expected_version is not None:
                raise
            continue
        # a rollback is the one single-item change that can add an active item
        engine.after_write(
            scope.cube(current.cube), actor, scope.limits, grew=op == EventOp.ROLLBACK
        )
        return after
    raise VersionConflict(f"memory {item_id} kept changing; gave up after {_RETRIES} tries")


def _check_expected(current: MemoryItem, expected_version: int | None) -> None:
    if expected_version is not None and expected_version != current.version:
        raise VersionConflict(
            f"memory {current.id} is at version {current.version}, "
            f"not the expected {expected_version}",
            item_id=current.id,
            current=current.version,
            expected=expected_version,
        )


def _refuse_deleted(item: MemoryItem) -> None:
    if item.status == ItemStatus.DELETED:
        raise Conflict(f"memory {item.id} is deleted; roll it back to restore it")


def _vector_for(
    engine: Engine, scope: Scope, target: MemoryItem, current: MemoryItem
) -> Vector | None:
    """A vector for ``target``'s text, or ``None`` when the stored one still fits."""
    if target.text == current.text:
        return None
    import numpy as np  # with the embedder: history, diff and a same-text rollback never load it

    vectors = engine.embedder_for(scope.cube(current.cube)).embed([target.text])
    return np.asarray(vectors[0], dtype=np.float32)


def history(engine: Engine, scope: Scope, item_id: str) -> list[HistoryEntry]:
    item = scope.item(item_id)
    return _history.history(engine.store.events(item.cube, item_id=item_id))


def diff(
    engine: Engine, scope: Scope, item_id: str, from_version: int, to_version: int
) -> ItemDiff:
    entries = history(engine, scope, item_id)
    old = _history.version(entries, item_id, from_version)
    new = _history.version(entries, item_id, to_version)
    return _history.diff(old, new)


def listed(
    engine: Engine,
    scope: Scope,
    *,
    cube: str,
    limit: int | None,
    after: str | None,
    **filters: Any,
) -> list[MemoryItem]:
    """:meth:`memos.MemOS.list_memories`: ids sort by age, so a page is the ids after
    ``after``, in order."""
    flt = _search.item_filter(scope.limits, **filters)
    most = scope.limits.max_k
    limit = most if limit is None else check.positive(limit, "limit", most)
    if after is not None and not isinstance(after, str):
        raise InvalidInput(f"after is a memory id, not {after!r}", field="after")
    info = scope.cube(cube)
    matching = engine.store.filter_item_ids(info.name, flt)
    # the first ``limit`` in order, without sorting the whole cube for every page
    page = heapq.nsmallest(limit, (i for i in matching if after is None or i > after))
    found = engine.store.get_items(page, cube=info.name)
    return [found[item_id] for item_id in page if item_id in found]
