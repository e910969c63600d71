"""``mos.governance``: a cube's policies (retention, legal holds, redaction on write, quotas),
their expiry runs and the audit report, declared once (see :mod:`memos.engine._operations`);
and the engine functions the write paths call to apply the policies.

Redaction runs before anything is embedded or stored: the stored text and its vector are the
redacted text's, and the event records how many of each kind were replaced, never the values.
Quotas are checked before any embedding. A legal hold refuses a delete, an erasure or a cube
rollback that would delete a held memory, and keeps retention from expiring it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

from memos.core import _mutations
from memos.core import _validation as check
from memos.core._governance import refuse_held
from memos.core._policies import CubePolicies, Quotas
from memos.core._records import Record
from memos.core._redaction import redact
from memos.core._store import Change, Store
from memos.core._types import Access, CubeInfo, Event, EventOp, ItemStatus, MemoryItem, utcnow
from memos.engine._audit import AuditReport, audit_report
from memos.engine._operations import Namespace, operation
from memos.errors import InvalidInput, QuotaExceeded, VersionConflict

if TYPE_CHECKING:
    from memos.engine._engine import Engine
    from memos.engine._handle import Handle
    from memos.engine._scope import Scope

_GOVERNANCE = "governance"
_RETRIES = 20


class Governance(Namespace):
    """A cube's policies: ``policies``, ``set_policies``, ``expire``, ``report``."""

    _handle: Handle

    @operation("GET", "/v1/cubes/{cube}/policies", tag=_GOVERNANCE)
    def policies(self, cube: str) -> CubePolicies:
        """The cube's policies (the defaults, none of them set, when it has none)."""
        info = self._handle._scope.cube(cube, Access.READ)
        return info.policies or CubePolicies()

    @operation("PUT", "/v1/cubes/{cube}/policies", tag=_GOVERNANCE)
    def set_policies(
        self, cube: str, policies: CubePolicies, *, reason: str | None = None
    ) -> CubeInfo:
        """Replace the cube's policies (one ``policy`` event; setting the earlier ones again
        undoes it). Only the cube's owner sets them."""
        scope = self._handle._scope
        return set_policies(self._handle._engine, scope, cube, policies, reason)

    @operation("POST", "/v1/cubes/{cube}/expire", tag=_GOVERNANCE)
    def expire(self, cube: str, *, reason: str | None = None) -> list[Event]:
        """Apply the cube's retention rules now: each memory past its time-to-live and under
        no legal hold is deleted (one ``delete`` event each) or erased (one ``erase`` event),
        as its rule says. A worker runs this as ``expire`` jobs the ticker queues."""
        handle = self._handle
        return expire(handle._engine, handle._scope, cube, reason)

    @operation("GET", "/v1/cubes/{cube}/report", tag=_GOVERNANCE)
    def report(self, cube: str, *, since: datetime | str | None = None) -> AuditReport:
        """Who changed what in the cube (since ``since``): events by actor and kind,
        migrations, erasures, redactions, policy changes and refusals."""
        handle = self._handle
        info = handle._scope.cube(cube, Access.READ)
        start = None if since is None else check.timestamp(since, "since")
        return audit_report(handle._engine.store, info, start)


# the engine functions ---------------------------------------------------------------------


def set_policies(
    engine: Engine, scope: Scope, cube: str, policies: object, reason: str | None
) -> CubeInfo:
    info = scope.owned(cube)
    if not isinstance(policies, CubePolicies):
        raise InvalidInput("policies must be a CubePolicies", field="policies")
    new = info.model_copy(update={"policies": policies})
    change = Change(
        op=EventOp.POLICY, cube=info.name, actor=scope.actor(None), ts=utcnow(),
        reason=check.reason(reason, scope.limits), cube_info=new,
    )  # fmt: skip
    engine.store.commit([change])
    return new


def redacted(
    info: CubeInfo, records: Sequence[Record]
) -> tuple[list[Record], list[dict[str, int]]]:
    """``records`` with their texts redacted under the cube's policy, and each one's counts."""
    policy = None if info.policies is None else info.policies.redaction
    if policy is None:
        return list(records), [{} for _ in records]
    done = [redact(record.text, policy) for record in records]
    return [replace(r, text=d.text) for r, d in zip(records, done, strict=True)], [
        d.counts for d in done
    ]


def redacted_text(info: CubeInfo, text: str) -> tuple[str, dict[str, int]]:
    policy = None if info.policies is None else info.policies.redaction
    if policy is None:
        return text, {}
    done = redact(text, policy)
    return done.text, done.counts


def check_quotas(
    engine: Engine,
    info: CubeInfo,
    adding: Iterable[tuple[str | None, str]],
    replacing: MemoryItem | None = None,
) -> None:
    """:class:`QuotaExceeded` when memories ``adding`` (user, text), in place of
    ``replacing``, would take the cube or a user past a quota."""
    quotas = Quotas() if info.policies is None else info.policies.quotas
    if quotas == Quotas():
        return
    new = [(user, len(text.encode("utf-8"))) for user, text in adding]
    active = [
        i for i in engine.store.iter_items(info.name)
        if i.status == ItemStatus.ACTIVE and (replacing is None or i.id != replacing.id)
    ]  # fmt: skip
    held = [(i.user, len(i.text.encode("utf-8"))) for i in active]
    _within(info.name, quotas.items, quotas.bytes, [*held, *new], f"cube {info.name!r}")
    for user in {user for user, _ in new}:
        mine = [entry for entry in [*held, *new] if entry[0] == user]
        _within(info.name, quotas.items_per_user, quotas.bytes_per_user, mine, f"user {user!r}")


def _within(
    cube: str, items: int | None, size: int | None, held: list[tuple[Any, int]], whose: str
) -> None:
    if items is not None and len(held) > items:
        raise QuotaExceeded(f"{whose} would hold {len(held)} memories; the quota is {items}",
                            cube=cube, quota="items", limit=items)  # fmt: skip
    total = sum(n for _, n in held)
    if size is not None and total > size:
        raise QuotaExceeded(f"{whose} would hold {total} bytes of text; the quota is {size}",
                            cube=cube, quota="bytes", limit=size)  # fmt: skip


def refuse_deleting(info: CubeInfo, items: Iterable[MemoryItem], what: str = "deleted") -> None:
    refuse_held(info.policies, items, what)


def expiring(store: Store, info: CubeInfo) -> bool:
    """Whether a memory of the cube is past a retention rule now (and under no hold)."""
    policies, now = info.policies, utcnow()
    if policies is None or not policies.retention:
        return False
    return any(
        item.status == ItemStatus.ACTIVE and policies.expiry(item, now) is not None
        for item in store.iter_items(info.name)
    )


def expire(engine: Engine, scope: Scope, cube: str, reason: str | None) -> list[Event]:
    from memos.engine._forget import erase_items  # _forget reads this module's rules

    info = scope.cube(cube, Access.WRITE)
    why = check.reason(reason, scope.limits)
    policies = info.policies
    if policies is None or not policies.retention:
        return []
    for _ in range(_RETRIES):
        now = utcnow()
        expired = [
            (item, rule) for item in engine.store.iter_items(info.name)
            if item.status == ItemStatus.ACTIVE and (rule := policies.expiry(item, now))
        ]  # fmt: skip
        changes = [
            Change(
                op=EventOp.DELETE,
                cube=info.name,
                actor=scope.actor(None),
                ts=now,
                item_id=item.id,
                expected_version=item.version,
                after=_mutations.revised(item, now=now, status=ItemStatus.DELETED),
                reason=" ".join(filter(None, [why, f"retention: {rule.ttl_days:g} days"])),
                extra={"retention": rule.model_dump(mode="json")},
            )
            for item, rule in expired
            if rule.action == "delete"
        ]
        try:
            events = engine.store.commit(changes) if changes else []
        except VersionConflict:
            continue
        break
    else:
        raise VersionConflict(f"cube {info.name!r} kept changing; nothing expired")
    erased = [item.id for item, rule in expired if rule.action == "erase"]
    if erased:
        because = " ".join(filter(None, [why, "retention: erased"]))
        part = erase_items(engine, scope, info, set(erased), because)
        if part is not None:
            events.extend(engine.store.events(info.name, after_seq=part.seq - 1))
    if events:
        engine.after_write(info, scope.actor(None), scope.limits, grew=False)
    return events
