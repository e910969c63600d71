"""``mos.scheduler``: the scheduler's operations on a cube, declared once (see
:mod:`memos.engine._operations`). ``plan`` says what a tick would do and why, changing nothing;
``tick`` does it; ``configure`` sets the cube's policy, parameters and budgets (one
``configure`` event). Every migration a tick makes is the event of its effect (``kv_build``,
``kv_drop``, ``adapter_build``, ``adapter_drop``, ``reencode``, ``codec_fit``) with a
``migration`` record in its payload: the policy, the action, the score and the reason (see
:mod:`memos.core._scheduling` and the policies of :mod:`memos.schedulers`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from pydantic import ConfigDict, StrictBool, StrictFloat, StrictInt, StrictStr

from memos.core import _validation as check
from memos.core._access import DEFAULT_HALF_LIFE_S
from memos.core._derived import ADAPTER_KIND, KV_KIND
from memos.core._governance import NO_KV, NO_PARAMETRIC, allowed
from memos.core._model import Model
from memos.core._scheduling import (
    ACTION_ORDER,
    BLOCK_OVERHEAD_TOKENS,
    LINE_TOKENS,
    Adapter,
    Block,
    CubeView,
    Decision,
    Migration,
    SchedulePlan,
    Usage,
    VectorIndex,
    checked_parameters,
    config_of,
    honoured,
    policy,
)
from memos.core._store import Change
from memos.core._types import (
    Access,
    Budgets,
    CubeInfo,
    Event,
    EventOp,
    ItemFilter,
    ItemStatus,
    MemoryItem,
    SchedulerConfig,
    utcnow,
)
from memos.engine._migrations import migrations, revert
from memos.engine._operations import Namespace, operation
from memos.errors import InvalidInput, VersionConflict

if TYPE_CHECKING:
    from memos.activation import KVEntry
    from memos.engine._engine import Engine
    from memos.engine._handle import Handle
    from memos.engine._scope import Scope

_SCHEDULER = "scheduler"
_PATH = "/v1/cubes/{cube}/scheduler"
_RETRIES = 20
# bytes per element of a stored KV cache, by dtype (int8 keeps a scale per group: 3.65x)
_ELEMENT_BYTES = {"fp32": 4.0, "bf16": 2.0, "int8": 4.0 / 3.65}
_CHARS_PER_TOKEN = 4.0  # until the cube's own blocks tell
# SmolLM2-135M-Instruct, the bundled model: layers, KV heads, head dimension
_BUNDLED_SHAPE = (30, 3, 64)


class TickReport(Model):
    """What a tick did: the plan it carried out and the events its migrations made."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    plan: SchedulePlan
    events: tuple[Event, ...]


class Scheduler(Namespace):
    """The scheduler of a cube's tiers: ``plan``, ``tick``, ``configure``."""

    _handle: Handle

    @operation("GET", f"{_PATH}/plan", tag=_SCHEDULER)
    def plan(self, cube: str) -> SchedulePlan:
        """What the next tick would do on the cube, with each decision's score and reason,
        changing nothing (and loading no model: a block's size is estimated)."""
        handle = self._handle
        return plan_cube(handle._engine, handle._scope.cube(cube, Access.READ))

    @operation("POST", f"{_PATH}/tick", tag=_SCHEDULER)
    def tick(self, cube: str, *, user: str | None = None, reason: str | None = None) -> TickReport:
        """Carry out the cube's plan now: drops first, then builds, each one event that
        records the migration (policy, action, score, reason; ``reason``, when given, begins
        the events' reasons). Deterministic: the same cube and uses give the same decisions."""
        handle = self._handle
        scope = handle._scope
        info = scope.cube(cube, Access.WRITE)
        why = check.reason(reason, scope.limits)
        return tick_cube(handle._engine, scope, info, scope.actor(user), why)

    @operation("POST", f"{_PATH}/config", tag=_SCHEDULER)
    def configure(
        self,
        cube: str,
        *,
        policy: str | None = None,
        parameters: Mapping[str, StrictBool | StrictInt | StrictFloat | StrictStr] | None = None,
        budgets: Mapping[str, StrictInt | None] | None = None,
        enabled: bool | None = None,
        user: str | None = None,
        reason: str | None = None,
    ) -> CubeInfo:
        """Set the cube's scheduler policy, its parameters (merged into the ones set before),
        budgets (likewise; ``None`` for no limit) or whether background ticks run on it: one
        ``configure`` event. A lowered budget is met at the next tick."""
        handle = self._handle
        return configure_cube(
            handle._engine, handle._scope, cube, policy=policy, parameters=parameters,
            budgets=budgets, enabled=enabled, actor=handle._scope.actor(user),
            reason=check.reason(reason, handle._scope.limits),
        )  # fmt: skip

    @operation("GET", f"{_PATH}/migrations", tag=_SCHEDULER)
    def history(self, cube: str, *, limit: int | None = None) -> list[Migration]:
        """The cube's migrations, oldest first (the newest ``limit``): what moved, by which
        policy, with what score and why, and the event that reverted it, if any."""
        handle = self._handle
        info = handle._scope.cube(cube, Access.READ)
        limit = None if limit is None else check.count(limit, "limit")
        found = migrations(handle._engine.store.events(info.name))
        return found if limit is None else found[-limit:] if limit > 0 else []

    @operation("POST", f"{_PATH}/migrations/{{seq}}/revert", tag=_SCHEDULER)
    def revert(
        self, cube: str, seq: int, *, user: str | None = None, reason: str | None = None
    ) -> list[Event]:
        """Undo the migration of event ``seq``: a block or adapter version it made is dropped,
        one it dropped comes back, a re-encode or refit gives way to the codec and state
        before it. The events of the undoing name the migration they revert; a later tick may
        make the migration again unless the scheduler is disabled on the cube."""
        handle = self._handle
        scope = handle._scope
        why = check.reason(reason, scope.limits)
        return revert(handle._engine, scope, cube, seq, scope.actor(user), why)


# the engine functions ---------------------------------------------------------------------


def plan_cube(engine: Engine, info: CubeInfo) -> SchedulePlan:
    """The cube's plan now (see :class:`Scheduler.plan`)."""
    config = config_of(info.scheduler)
    chosen = policy(config.policy)
    parameters = checked_parameters(chosen, config.parameters)
    view = _view(engine, info, config.budgets)
    decisions = honoured(chosen.plan(view, parameters), view) if config.enabled else ()
    usage = _usage(view)
    return SchedulePlan(
        cube=info.name, policy=chosen.name, at=view.now, decisions=decisions,
        budgets=config.budgets, usage=usage, after=_after(usage, decisions),
    )  # fmt: skip


def tick_cube(
    engine: Engine, scope: Scope, info: CubeInfo, actor: str, why: str | None = None
) -> TickReport:
    """Carry out the cube's plan as ``actor`` (``why`` begins the events' reasons). A block's
    size is known only once it is built: when the built ones came out larger than their
    estimates, the drops of a second plan (on the true sizes) bring the cube back within its
    budgets before the tick returns."""
    plan = plan_cube(engine, info)
    if engine.loaded_kv is not None:  # this process's resident caches of the cube
        engine.loaded_kv.hold_within(info.name, plan.budgets.kv_resident_bytes)
    events = _carry_out(engine, scope, actor, info, plan, plan.decisions, why)
    if any(d.action in _GROWING for d in plan.decisions):
        settled = plan_cube(engine, scope.cube(info.name, Access.WRITE))
        drops = _settling(settled)
        events += _carry_out(engine, scope, actor, info, settled, drops, why)
    return TickReport(plan=plan, events=tuple(events))


def _settling(settled: SchedulePlan) -> list[Decision]:
    """The drops of a plan made right after a tick's builds that bring a tier back within its
    budgets, when it is over them (a drop of a block the plan would extend is not one: it waits
    for that build, at the next tick)."""
    usage, budgets = settled.usage, settled.budgets
    over = {
        "kv_drop": (budgets.kv_bytes is not None and usage.kv_bytes > budgets.kv_bytes)
        or (budgets.kv_blocks is not None and usage.kv_blocks > budgets.kv_blocks),
        "lora_drop": (
            budgets.adapter_bytes is not None and usage.adapter_bytes > budgets.adapter_bytes
        )
        or (budgets.adapters is not None and usage.adapters > budgets.adapters),
    }
    extended = _extended(settled.decisions)
    return [
        d for d in settled.decisions
        if over.get(d.action, False) and d.entry not in extended
    ]  # fmt: skip


def _extended(decisions: Sequence[Decision]) -> set[str | None]:
    """The blocks that builds among ``decisions`` continue the cache of."""
    return {d.extends for d in decisions if d.action == "kv_build"}


# the migrations whose true size is known only once made
_GROWING = ("kv_build", "lora_consolidate")
# the event a migration's effect appends, by action
_EFFECT = {
    "kv_build": EventOp.KV_BUILD, "kv_drop": EventOp.KV_DROP,
    "lora_consolidate": EventOp.ADAPTER_BUILD, "lora_drop": EventOp.ADAPTER_DROP,
    "reencode": EventOp.REENCODE, "refit": EventOp.CODEC_FIT,
}  # fmt: skip


def _carry_out(
    engine: Engine,
    scope: Scope,
    actor: str,
    info: CubeInfo,
    plan: SchedulePlan,
    decisions: Sequence[Decision],
    why: str | None,
) -> list[Event]:
    """The decisions' migrations, what frees room first, one event each (a re-encode or a
    refit raced by another change of the cube's configuration is left to the next tick)."""
    events: list[Event] = []
    for decision in _in_turn(decisions):
        extra = {"migration": _migration(plan.policy, decision)}
        reason = f"scheduler ({plan.policy}, score {decision.score:g}): {decision.reason}"
        reason = reason if why is None else f"{why} {reason}"
        head = engine.store.head(info.name)[0]
        try:
            _migrate(engine, scope, actor, info.name, decision, reason, extra)
        except VersionConflict:
            if decision.action not in ("reencode", "refit"):
                raise
        events += [
            e for e in engine.store.events(info.name, after_seq=head)
            if e.op == _EFFECT[decision.action] and "migration" in (e.payload or {})
        ]  # fmt: skip
    return events


def _in_turn(decisions: Sequence[Decision]) -> list[Decision]:
    """The decisions in the order they are carried out: what frees room first, except the drop
    of a block that a build extends, which waits until that build has read its cache."""
    extended = _extended(decisions)

    def turn(decision: Decision) -> int:
        if decision.action == "kv_drop" and decision.entry in extended:
            return len(ACTION_ORDER)
        return ACTION_ORDER.index(decision.action)

    return sorted(decisions, key=turn)


def _migrate(
    engine: Engine,
    scope: Scope,
    actor: str,
    cube: str,
    decision: Decision,
    reason: str,
    extra: dict[str, Any],
) -> None:
    """Carry out one decision as ``actor``."""
    from memos.plaintext._encoding import reconfigure

    action, entry = decision.action, decision.entry
    if action in ("kv_build", "kv_drop"):
        kv = engine.kv().scoped(scope.cube, lambda _user: actor)
        if action == "kv_build":
            kv.build(cube, list(decision.items), reason=reason, extra=extra)
        elif entry is not None:
            kv.drop(cube, entry, reason=reason, extra=extra)
    elif action in ("lora_consolidate", "lora_drop"):
        lora = engine.lora().scoped(scope.cube, lambda _user: actor)
        if action == "lora_consolidate" and decision.adapter is not None:
            lora.consolidate(
                cube, list(decision.items), name=decision.adapter, reason=reason, extra=extra
            )
        elif entry is not None:
            lora.drop_version(cube, entry, reason=reason, extra=extra)
    else:
        info = scope.cube(cube, Access.WRITE)
        refit = action == "refit"
        reconfigure(
            engine.store, engine.indexes, info, codec=info.codec if refit else str(decision.codec),
            op=EventOp.CODEC_FIT if refit else EventOp.REENCODE, actor=actor, reason=reason,
            force_fit=refit, extra=extra,
        )  # fmt: skip


def configure_cube(
    engine: Engine,
    scope: Scope,
    cube: str,
    *,
    policy: str | None,
    parameters: Mapping[str, Any] | None,
    budgets: Mapping[str, int | None] | None,
    enabled: bool | None,
    actor: str,
    reason: str | None,
) -> CubeInfo:
    """Set the cube's scheduler configuration (see :class:`Scheduler.configure`)."""
    for _ in range(_RETRIES):
        info = scope.cube(cube, Access.WRITE)
        new = _configured(config_of(info.scheduler), policy, parameters, budgets, enabled)
        updated = info.model_copy(update={"scheduler": new})
        change = Change(
            op=EventOp.CONFIGURE, cube=info.name, actor=actor, ts=utcnow(), reason=reason,
            cube_info=updated,
        )  # fmt: skip
        try:
            engine.store.commit([change])
        except VersionConflict:
            continue
        return updated
    raise VersionConflict(f"cube {cube} kept changing; gave up after {_RETRIES} tries")


def _configured(
    config: SchedulerConfig,
    name: str | None,
    parameters: Mapping[str, Any] | None,
    budgets: Mapping[str, int | None] | None,
    enabled: bool | None,
) -> SchedulerConfig:
    for given, what in ((parameters, "parameters"), (budgets, "budgets")):
        if given is not None and not isinstance(given, Mapping):
            raise InvalidInput(f"{what} is a mapping of names to values", field=what)
    if enabled is not None and not isinstance(enabled, bool):
        raise InvalidInput("enabled is true or false", field="enabled")
    chosen = policy(config.policy if name is None else name)
    merged = {**(config.parameters if name in (None, config.policy) else {}), **(parameters or {})}
    checked_parameters(chosen, merged)  # refused here, before anything is written
    try:
        new_budgets = Budgets.model_validate(config.budgets.model_dump() | dict(budgets or {}))
    except ValueError as exc:
        raise InvalidInput(f"bad budgets: {exc}", field="budgets") from None
    return SchedulerConfig(
        policy=chosen.name, parameters=merged, budgets=new_budgets,
        enabled=config.enabled if enabled is None else enabled,
    )  # fmt: skip


def _view(engine: Engine, info: CubeInfo, budgets: Budgets) -> CubeView:
    engine.uses.flush()  # this process's pending uses count too
    store = engine.store
    index = VectorIndex(
        codec=info.codec, dim=info.dim, active=len(store.filter_item_ids(info.name, ItemFilter())),
        fitted=info.codec_state is not None,
        fit_items=info.codec_fit_items if info.codec_state is not None else None,
    )  # fmt: skip
    access = store.cube_access(info.name)
    found = store.get_items(list(access))
    active = {i: item for i, item in found.items() if item.status == ItemStatus.ACTIVE}
    entries = engine.kv().list(info.name) if _has_blocks(engine, info) else []
    blocks = [
        Block(e.id, tuple(s.item_id for s in e.sources), e.tokens, e.size) for e in entries
    ]  # fmt: skip
    chars = {i: len(item.text) for i, item in active.items()}
    # through an upstream model no memory can go to the KV or the parametric tier
    no_kv = _labelled(active, NO_KV) if engine.local_tiers else frozenset(active)
    no_parametric = _labelled(active, NO_PARAMETRIC) if engine.local_tiers else frozenset(active)
    return CubeView(
        cube=info.name, now=utcnow(), half_life_s=DEFAULT_HALF_LIFE_S, chars=chars,
        access={i: s for i, s in access.items() if i in active},
        co_access=store.co_access(info.name), blocks=blocks,
        kv_bytes_per_token=_bytes_per_token(engine, info, entries, bool(active)),
        chars_per_token=_chars_per_token(entries, found), budgets=budgets,
        adapters=_adapters(engine, info), vectors=index, created_at=info.created_at,
        no_kv=no_kv, no_parametric=no_parametric,
    )  # fmt: skip


def _labelled(items: Mapping[str, MemoryItem], label: str) -> frozenset[str]:
    return frozenset(i for i, item in items.items() if not allowed(item, label))


def _has_blocks(engine: Engine, info: CubeInfo) -> bool:
    return bool(engine.store.derived_entries(info.name, KV_KIND))


def _adapters(engine: Engine, info: CubeInfo) -> list[Adapter]:
    # read from the store, not through ``engine.lora()``: the catalog's module imports torch,
    # and planning stays as light as a CLI call
    from memos.parametric._manifest import AdapterEntry

    kind = engine.store.derived_entries(info.name, ADAPTER_KIND)
    entries = [AdapterEntry.from_derived(e) for e in kind]
    latest = max(
        (e for e in entries if e.name == info.default_adapter),
        key=lambda e: e.version, default=None,
    )  # fmt: skip
    return [
        Adapter(
            id=e.id,
            name=e.name,
            version=e.version,
            size=e.size,
            created_at=e.created_at,
            items=tuple(s.item_id for s in e.sources),
            default=e is latest,
        )
        for e in entries
    ]


def _usage(view: CubeView) -> Usage:
    index = view.vectors
    return Usage(
        kv_bytes=sum(b.size for b in view.blocks), kv_blocks=len(view.blocks),
        adapters=len(view.adapters), adapter_bytes=sum(a.size for a in view.adapters),
        vector_bytes=0 if index is None else _index_bytes(index),
    )  # fmt: skip


def _index_bytes(index: VectorIndex) -> int:
    from memos.plaintext._encoding import index_bytes

    return index_bytes(index.codec, index.dim, index.active, fitted=index.fitted)


def _bytes_per_token(
    engine: Engine, info: CubeInfo, entries: list[KVEntry], used: bool
) -> float | None:
    """What a stored cache of the cube costs per token: measured on its blocks, else from the
    shape of the model when this process has loaded it, else the bundled model's (planning
    never loads a model; a tick that builds more than estimated settles to its budgets)."""
    if entries:
        return sum(e.size for e in entries) / max(sum(e.tokens for e in entries), 1)
    if not used:
        return None
    model = engine.loaded_model
    layers, kv_heads, head_dim = _BUNDLED_SHAPE
    if model is not None:
        layers, kv_heads, head_dim = model.shape.layers, model.shape.kv_heads, model.shape.head_dim
    return layers * 2 * kv_heads * head_dim * _ELEMENT_BYTES[info.kv_dtype]


def _chars_per_token(entries: list[KVEntry], items: Mapping[str, Any]) -> float:
    """Characters of memory text per token of it, measured on the cube's blocks (less what
    their header and line prefixes take, as the policy estimates them)."""
    measured = [
        (
            sum(len(items[s.item_id].text) for s in e.sources),
            max(e.tokens - BLOCK_OVERHEAD_TOKENS - LINE_TOKENS * len(e.sources), 1),
        )
        for e in entries
        if all(s.item_id in items for s in e.sources)
    ]
    chars, tokens = sum(c for c, _ in measured), sum(t for _, t in measured)
    return chars / tokens if chars and tokens else _CHARS_PER_TOKEN


def _after(usage: Usage, decisions: tuple[Decision, ...]) -> Usage:
    """``usage`` once ``decisions`` are carried out (as estimated)."""
    after = usage.model_dump()
    tier = {"kv": ("kv_bytes", "kv_blocks"), "lora": ("adapter_bytes", "adapters")}
    for decision in decisions:
        if decision.action in ("reencode", "refit"):
            after["vector_bytes"] = decision.bytes
            continue
        size, count = tier[decision.action.partition("_")[0]]
        sign = -1 if decision.action.endswith("_drop") else 1
        after[size] += sign * decision.bytes
        after[count] += sign
    return Usage(**after)


def _migration(policy_name: str, decision: Decision) -> dict[str, Any]:
    return {
        "policy": policy_name, "action": decision.action, "score": decision.score,
        "reason": decision.reason, "items": list(decision.items),
    }  # fmt: skip
