"""Erasure (``forget``): a user's or a filter's memories removed from every tier and every place
their bytes live, with a receipt that ``verify`` checks against the log.

Per cube, one commit drops the KV blocks and adapter versions built from the memories (an
event each) and appends the ``erase`` event, with which the store removes the items, their
vectors, keyword entries, access statistics and the payloads of all their events (see
:mod:`memos.core._erasure`). After it: the blobs of those artifacts, and of earlier ones built
from the memories, are deleted; the cube's finished jobs forget their ids; the vector index is
rebuilt without them and its snapshot replaced. Adapters that saw a memory are reverted (their
versions that saw it are gone, the latest left never did); with ``adapters="retrain"`` also
trained again on what is left of their sources; with ``adapters="dampen"`` given a new version
whose weights that mattered to the erased memories are dampened, without training (Selective
Synaptic Dampening, :mod:`memos.parametric._dampen`: faster, and it thins the memories out of
the weights rather than removing them; BENCHMARKS.md measures both).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence, Set
from dataclasses import dataclass

from memos.core import _validation as check
from memos.core._derived import ADAPTER_KIND, BUILD_OPS, DROP_OPS, REPLACE_OPS
from memos.core._erasure import (
    CubeErasure,
    ErasureReceipt,
    ErasureRecord,
    erased_events,
    record_payload,
)
from memos.core._governance import NO_PARAMETRIC, allowed, refuse_held
from memos.core._jobs import JobState
from memos.core._policies import Match
from memos.core._store import Change
from memos.core._types import (
    CubeInfo,
    DerivedEntry,
    Event,
    EventOp,
    ItemStatus,
    MemoryItem,
    MetadataValue,
    utcnow,
)
from memos.engine._engine import Engine
from memos.engine._scope import Scope
from memos.errors import (
    AccessDenied,
    Conflict,
    InvalidInput,
    ItemNotFound,
    NotFound,
    VersionConflict,
)

ADAPTER_CHOICES = ("revert", "retrain", "dampen")
_RETRIES = 20


@dataclass(frozen=True)
class _Plan:
    """One cube's erasure as planned from what the store holds now."""

    record: ErasureRecord
    changes: list[Change]
    dropped_adapters: list[DerivedEntry]
    # the log as the plan read it: up to its seq, the events whose payloads go
    read_seq: int
    erased_before: tuple[int, ...]
    texts: Mapping[str, str]  # the erased memories' texts, for dampening


def forget(
    engine: Engine,
    scope: Scope,
    *,
    user: str | None = None,
    cube: str | None = None,
    where: Mapping[str, MetadataValue] | None = None,
    adapters: str = "revert",
    reason: str | None = None,
    rewrite: bool = False,
) -> ErasureReceipt:
    """Erase the memories of ``user`` (and/or those whose metadata matches ``where``) from
    ``cube``, or from every cube the caller owns (the operator: every cube); with ``rewrite``
    (the operator only: it rewrites the whole store's files), then the store's files."""
    subject = check.optional_principal(user, "user", scope.limits)
    matching = check.metadata(where, scope.limits)
    if subject is None and not matching:
        raise InvalidInput("forget needs the user whose memories go, or a where filter")
    if adapters not in ADAPTER_CHOICES:
        raise InvalidInput(
            f"adapters must be one of {', '.join(ADAPTER_CHOICES)}", field="adapters"
        )
    why = check.reason(reason, scope.limits)
    if not isinstance(rewrite, bool):
        raise InvalidInput("rewrite is true or false", field="rewrite")
    if rewrite and scope.principal is not None:
        raise AccessDenied("only the operator rewrites the store's files")
    if cube is not None:
        cubes = [scope.owned(cube)]
    else:
        cubes = [i for i in engine.store.list_cubes() if scope.principal in (None, i.owner)]
    subject_of = _Subject(Match(user=subject, where=matching))
    for info in cubes:  # a legal hold anywhere refuses the whole erasure, before any of it
        if info.policies is not None and info.policies.holds:
            refuse_held(info.policies, _matching(engine, info, subject_of), "erased")
    parts = []
    for info in cubes:
        part = _erase(engine, scope, info, subject_of, adapters, why)
        if part is not None:
            parts.append(part)
    files = tuple(engine.store.rewrite_files()) if rewrite and parts else ()
    return ErasureReceipt(
        at=utcnow(), user=subject, where=matching, cubes=tuple(parts), files=files
    )


def erase_items(
    engine: Engine, scope: Scope, info: CubeInfo, item_ids: Set[str], reason: str | None
) -> CubeErasure | None:
    """Erase the cube's memories ``item_ids`` (retention's ``erase`` rules), as ``forget``
    does, adapters reverted."""
    return _erase(engine, scope, info, _Subject(Match(), frozenset(item_ids)), "revert", reason)


@dataclass(frozen=True)
class _Subject:
    """Whose memories go: those ``match`` covers (a user's, those with every ``where`` pair),
    and only those of ``ids`` when given."""

    match: Match
    ids: frozenset[str] | None = None

    @property
    def user(self) -> str | None:
        return self.match.user

    @property
    def where(self) -> dict[str, MetadataValue]:
        return self.match.where

    def covers(self, item: MemoryItem) -> bool:
        return (self.ids is None or item.id in self.ids) and self.match.covers(item)


def _matching(engine: Engine, info: CubeInfo, subject: _Subject) -> list[MemoryItem]:
    if subject.ids is not None:
        found = engine.store.get_items(sorted(subject.ids), cube=info.name)
        return [item for item in found.values() if subject.covers(item)]
    return [item for item in engine.store.iter_items(info.name) if subject.covers(item)]


def _erase(
    engine: Engine,
    scope: Scope,
    info: CubeInfo,
    subject: _Subject,
    adapters: str,
    reason: str | None,
) -> CubeErasure | None:
    engine.uses.flush()  # the uses this process holds are written first, then erased
    actor = scope.actor(None)
    for _ in range(_RETRIES):
        info = engine.store.get_cube(info.name) or info
        plan = _plan(engine, info, subject, actor, reason)
        if plan is None:
            return None
        try:
            events = engine.store.commit(plan.changes)
        except (VersionConflict, ItemNotFound, NotFound):
            continue  # a concurrent writer changed what the plan read: plan again
        break
    else:
        raise Conflict(f"cube {info.name!r} kept changing; the erasure was not made")
    erase = events[-1]
    dampened: tuple[str, ...] = ()
    if adapters == "dampen":  # before the clean-up: it reads the dropped versions' blobs
        dampened = _dampen(engine, scope, info, plan, erase.seq)
    _clean_up(engine, info.name, plan.record)
    retrained: tuple[str, ...] = ()
    if adapters == "retrain":
        retrained = _retrain(engine, scope, info, plan.dropped_adapters, erase.seq)
    # the events written between the plan's read and the erasure are read again, not the log
    tail = engine.store.events(info.name, after_seq=plan.read_seq, until_seq=erase.seq)
    return CubeErasure(
        cube=info.name,
        seq=erase.seq,
        hash=erase.hash,
        record=plan.record,
        events=plan.erased_before + erased_events(tail, plan.record, erase.seq),
        retrained=retrained,
        dampened=dampened,
        digest=plan.record.digest,
    )


def _plan(
    engine: Engine, info: CubeInfo, subject: _Subject, actor: str, reason: str | None
) -> _Plan | None:
    store = engine.store
    matched = _matching(engine, info, subject)
    if not matched:
        return None
    refuse_held(info.policies, matched, "erased")
    ids = {item.id for item in matched}
    standing = store.derived_entries(info.name)
    doomed = [entry for entry in standing if ids.intersection(s.item_id for s in entry.sources)]
    kept_blobs = {entry.blob for entry in standing if entry not in doomed}
    kept_blobs.add(info.codec_state or "")
    log = store.events(info.name)
    past = _built_from(log, ids)
    blobs = sorted(({entry.blob for entry in doomed} | past) - kept_blobs)
    record = ErasureRecord(
        user=subject.user,
        where=subject.where,
        items=tuple(sorted(ids)),
        blocks=tuple(e.id for e in doomed if e.kind != ADAPTER_KIND),
        adapters=tuple(e.id for e in doomed if e.kind == ADAPTER_KIND),
        blobs=tuple(blobs),
    )
    now, why = utcnow(), reason or "erasure"
    changes = [
        Change(op=DROP_OPS[e.kind], cube=info.name, actor=actor, ts=now, reason=why, dropped=e.id)
        for e in doomed
    ]
    changes.extend(_detach(info, standing, doomed, actor, why))
    changes.append(
        Change(op=EventOp.ERASE, cube=info.name, actor=actor, ts=now, reason=reason,
               erased=record.items, extra=record_payload(record))
    )  # fmt: skip
    dropped_adapters = [e for e in doomed if e.kind == ADAPTER_KIND]
    read_seq = log[-1].seq if log else 0
    before = erased_events(log, record, read_seq + 1)
    texts = {item.id: item.text for item in matched}
    return _Plan(record, changes, dropped_adapters, read_seq, before, texts)


def _built_from(events: Iterable[Event], ids: set[str]) -> set[str]:
    """The blobs of every artifact the log ever built from one of ``ids``."""
    builds = set(BUILD_OPS.values()) | REPLACE_OPS
    found = set()
    for event in events:
        built = (event.payload or {}).get("derived") if event.op in builds else None
        if isinstance(built, dict):
            entry = DerivedEntry.model_validate(built)
            if ids.intersection(s.item_id for s in entry.sources):
                found.add(entry.blob)
    return found


def _detach(
    info: CubeInfo,
    standing: Sequence[DerivedEntry],
    doomed: Sequence[DerivedEntry],
    actor: str,
    reason: str,
) -> list[Change]:
    """The cube's default adapter is detached when the erasure leaves it no version."""
    name = info.default_adapter
    left = [
        e for e in standing
        if e.kind == ADAPTER_KIND and e not in doomed and e.manifest.get("name") == name
    ]  # fmt: skip
    if name is None or left:
        return []
    new = info.model_copy(update={"default_adapter": None})
    return [
        Change(op=EventOp.ADAPTER_ATTACH, cube=info.name, actor=actor, ts=utcnow(),
               reason=reason, cube_info=new)
    ]  # fmt: skip


def _clean_up(engine: Engine, cube: str, record: ErasureRecord) -> None:
    """What lies beside the log: blobs, jobs, the vector index and its snapshot, and the
    KV caches this process holds in RAM."""
    store = engine.store
    kv = engine.loaded_kv
    if kv is not None:
        kv.let_go(record.blobs)
    store.delete_blobs(record.blobs)
    ids = set(record.items)
    for job in store.list_jobs(cube):
        if job.state == JobState.QUEUED and any(i in str(job.params) for i in ids):
            try:
                store.cancel_job(job.id, utcnow())
            except Conflict:
                continue  # a worker took it meanwhile: it fails on the erased memories
    store.erase_from_jobs(cube, ids)
    engine.indexes.discard(cube)


def _retrain(
    engine: Engine,
    scope: Scope,
    info: CubeInfo,
    dropped: Sequence[DerivedEntry],
    erase_seq: int,
) -> tuple[str, ...]:
    """A new version of each adapter a dropped version belonged to, trained on the sources of
    the latest dropped one that are still active; attached again if it was the default."""
    lora = engine.lora().scoped(scope.cube, scope.actor)
    made = []
    for name, entry in _latest(dropped).items():
        left = engine.store.get_items([s.item_id for s in entry.sources], cube=info.name)
        active = [
            i for i in left.values() if i.status == ItemStatus.ACTIVE and allowed(i, NO_PARAMETRIC)
        ]
        if active:
            new = lora.consolidate(
                info.name, [i.id for i in active], name=name, recipe=entry.manifest.get("recipe"),
                reason=f"retrained without the memories erased at seq {erase_seq}",
            )  # fmt: skip
            made.append(new.id)
            detached = engine.store.get_cube(info.name)
            if info.default_adapter == name and detached and detached.default_adapter is None:
                lora.attach(info.name, name, reason=f"retrained after erasure {erase_seq}")
    return tuple(made)


def _latest(dropped: Sequence[DerivedEntry]) -> dict[str, DerivedEntry]:
    """The latest dropped version of each adapter, by name."""
    latest: dict[str, DerivedEntry] = {}
    for entry in dropped:
        name = str(entry.manifest.get("name"))
        if name not in latest or entry.manifest["version"] > latest[name].manifest["version"]:
            latest[name] = entry
    return latest


def _dampen(
    engine: Engine, scope: Scope, info: CubeInfo, plan: _Plan, erase_seq: int
) -> tuple[str, ...]:
    """A new version of each adapter a dropped version belonged to: the latest dropped one's
    weights dampened for the erased memories it saw; attached again if it was the default."""
    from memos.parametric import AdapterEntry

    lora = engine.lora().scoped(scope.cube, scope.actor)
    made = []
    for name, derived in _latest(plan.dropped_adapters).items():
        entry = AdapterEntry.from_derived(derived)
        forget = [plan.texts[s.item_id] for s in entry.sources if s.item_id in plan.texts]
        new = lora.dampen_version(
            info.name, entry, forget,
            reason=f"dampened for the memories erased at seq {erase_seq}",
        )  # fmt: skip
        if new is None:
            continue
        made.append(new.id)
        detached = engine.store.get_cube(info.name)
        if info.default_adapter == name and detached and detached.default_adapter is None:
            lora.attach(info.name, name, reason=f"dampened after erasure {erase_seq}")
    return tuple(made)
