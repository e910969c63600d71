"""The scheduler's migrations as the log holds them: listed with why each happened, and undone.

A migration is the event of its effect (``kv_build``, ``kv_drop``, ``adapter_build``,
``adapter_drop``, ``reencode``, ``codec_fit``) with a ``migration`` record in its payload (see
:mod:`memos.engine._scheduler`). Reverting one appends the events of the opposite effect, each
with a ``revert`` record naming the migration's seq: a block built is dropped and a block
dropped is built again from the same memories (at their current versions); an adapter version
made is dropped and one dropped comes back with the same weights; a re-encode or refit
reinstates the codec and fitted state the cube had before it. Nothing is erased: the migration
and its revert both stay in the log. The scheduler may make the same migration again at a later
tick; disable it on the cube (``mos.scheduler.configure(cube, enabled=False)``) or change its
budgets to keep a revert.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from memos.core._scheduling import Migration
from memos.core._types import Access, DerivedEntry, Event, EventOp
from memos.errors import Conflict, InvalidInput, NotFound

if TYPE_CHECKING:
    from memos.engine._engine import Engine
    from memos.engine._scope import Scope

_BUILDS = {"kv_drop": EventOp.KV_BUILD, "lora_drop": EventOp.ADAPTER_BUILD}


def migrations(events: Sequence[Event]) -> list[Migration]:
    """The migrations among ``events`` (a cube's log, oldest first), with their reverts."""
    reverted = {
        int(revert["seq"]): event.seq
        for event in events
        if isinstance(revert := (event.payload or {}).get("revert"), dict)
    }
    found = []
    for event in events:
        record = (event.payload or {}).get("migration")
        if isinstance(record, dict):
            found.append(_migration(event, record, reverted.get(event.seq)))
    return found


def _migration(event: Event, record: dict[str, Any], reverted_by: int | None) -> Migration:
    return Migration(
        seq=event.seq, ts=event.ts, actor=event.actor, op=event.op.value,
        action=record["action"], target=_target(event), items=tuple(record["items"]),
        policy=record["policy"], score=record["score"], reason=record["reason"],
        reverted_by=reverted_by,
    )  # fmt: skip


def revert(
    engine: Engine, scope: Scope, cube: str, seq: int, actor: str, reason: str | None
) -> list[Event]:
    """Undo migration ``seq`` of the cube (see the module docstring): its opposite's events."""
    info = scope.cube(cube, Access.WRITE)
    if isinstance(seq, bool) or not isinstance(seq, int) or seq < 1:
        raise InvalidInput("seq is the positive seq of a migration's event", field="seq")
    log = engine.store.events(info.name)
    event = next((e for e in log if e.seq == seq), None)
    if event is None:
        raise NotFound(f"cube {info.name!r} has no event {seq}", cube=info.name, seq=seq)
    found = {m.seq: m for m in migrations(log)}.get(seq)
    if found is None:
        raise InvalidInput(f"event {seq} of cube {info.name!r} is not a migration", seq=seq)
    if found.reverted_by is not None:
        raise Conflict(f"migration {seq} was reverted already, by event {found.reverted_by}")
    why = reason or f"revert of migration {seq} ({found.action})"
    extra: dict[str, Any] = {"revert": {"seq": seq, "action": found.action}}
    head = engine.store.head(info.name)[0]
    _undo(engine, scope, actor, info.name, found, log, why, extra)
    return [e for e in engine.store.events(info.name, after_seq=head) if _reverts(e, seq)]


def _undo(
    engine: Engine,
    scope: Scope,
    actor: str,
    cube: str,
    migration: Migration,
    log: Sequence[Event],
    reason: str,
    extra: dict[str, Any],
) -> None:
    from memos.plaintext._encoding import configured_cube, reconfigure

    action, target = migration.action, migration.target or ""
    kv = engine.kv().scoped(scope.cube, lambda _user: actor)
    if action == "kv_build":
        _standing(engine, cube, target)
        kv.drop(cube, target, reason=reason, extra=extra)
    elif action == "lora_consolidate":
        _standing(engine, cube, target)
        lora = engine.lora().scoped(scope.cube, lambda _user: actor)
        lora.drop_version(cube, target, reason=reason, extra=extra)
    elif action in _BUILDS:
        built = _built_entry(log, _BUILDS[action], target)
        if action == "kv_drop":
            items = [s.item_id for s in built.sources]
            dtype = built.manifest.get("dtype")
            kv.build(cube, items, dtype=dtype, reason=reason, extra=extra)
        else:
            lora = engine.lora().scoped(scope.cube, lambda _user: actor)
            lora.restore_version(cube, built, reason=reason, extra=extra)
    else:
        before = configured_cube([e for e in log if e.seq < migration.seq])
        if before is None:  # a cube's log starts with its configuration
            raise NotFound(f"cube {cube!r} has no configuration before event {migration.seq}")
        info = scope.cube(cube, Access.WRITE)
        reconfigure(
            engine.store, engine.indexes, info, codec=before.codec, op=EventOp.REENCODE,
            actor=actor, reason=reason, extra=extra, reinstate=before,
        )  # fmt: skip


def _standing(engine: Engine, cube: str, entry_id: str) -> None:
    if not any(e.id == entry_id for e in engine.store.derived_entries(cube)):
        raise Conflict(f"{entry_id} of cube {cube!r} is gone already: nothing to revert")


def _built_entry(log: Sequence[Event], op: EventOp, entry_id: str) -> DerivedEntry:
    for event in log:
        derived = (event.payload or {}).get("derived")
        if event.op == op and isinstance(derived, dict) and derived.get("id") == entry_id:
            return DerivedEntry.model_validate(derived)
    raise NotFound(f"the log does not hold how {entry_id} was built", entry=entry_id)


def _target(event: Event) -> str | None:
    payload = event.payload or {}
    derived = payload.get("derived")
    if isinstance(derived, dict):
        return str(derived.get("id"))
    if payload.get("dropped") is not None:
        return str(payload["dropped"])
    cube = payload.get("cube")
    return str(cube.get("codec")) if isinstance(cube, dict) else None


def _reverts(event: Event, seq: int) -> bool:
    revert = (event.payload or {}).get("revert")
    return isinstance(revert, dict) and revert.get("seq") == seq
