"""The audit report of a cube: who changed what, and what governance did, read from its log.

Everything in it is derived from the hash-chained events (a verified log gives a true report),
except the refusals: a refused change writes no event, so policy refusals are counted in the
store's refusal log (:meth:`memos.core._store.AccessLog.record_refusal`) beside it; a
handle records each refusal as it raises it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from datetime import datetime

from memos.core._erasure import record_of
from memos.core._scheduling import Migration
from memos.core._store import Store
from memos.core._types import CubeInfo, Event, EventOp, Refusal, _Frozen, utcnow
from memos.engine._migrations import migrations


class ActorActivity(_Frozen):
    """What one actor did: how many events of each kind."""

    actor: str
    ops: dict[str, int]
    events: int


class ErasureEntry(_Frozen):
    """One ``erase`` event: what it took away and the digest its receipt carries."""

    seq: int
    ts: datetime
    actor: str
    reason: str | None
    items: int
    blocks: int
    adapters: int
    blobs: int
    digest: str


class RedactionEntry(_Frozen):
    """One write whose text was redacted: how many of each kind (never the values)."""

    seq: int
    ts: datetime
    actor: str
    item_id: str | None
    counts: dict[str, int]


class PolicyChange(_Frozen):
    seq: int
    ts: datetime
    actor: str
    reason: str | None


class AuditReport(_Frozen):
    """A cube's governance over a period (``since`` to ``until``; ``since=None``: all)."""

    cube: str
    since: datetime | None
    until: datetime
    events: int
    actors: tuple[ActorActivity, ...]
    migrations: tuple[Migration, ...]
    erasures: tuple[ErasureEntry, ...]
    redactions: tuple[RedactionEntry, ...]
    redacted: dict[str, int]
    expired: int
    policy_changes: tuple[PolicyChange, ...]
    refusals: tuple[Refusal, ...]


def audit_report(store: Store, info: CubeInfo, since: datetime | None) -> AuditReport:
    log = store.events(info.name)
    window = [e for e in log if since is None or e.ts >= since]
    redactions = tuple(_redactions(window))
    totals: Counter[str] = Counter()
    for entry in redactions:
        totals.update(entry.counts)
    seqs = {e.seq for e in window}
    return AuditReport(
        cube=info.name,
        since=since,
        until=utcnow(),
        events=len(window),
        actors=tuple(_actors(window)),
        migrations=tuple(m for m in migrations(log) if m.seq in seqs),
        erasures=tuple(_erasures(window)),
        redactions=redactions,
        redacted=dict(sorted(totals.items())),
        expired=sum(1 for e in window if "retention" in (e.payload or {})),
        policy_changes=tuple(
            PolicyChange(seq=e.seq, ts=e.ts, actor=e.actor, reason=e.reason)
            for e in window
            if e.op == EventOp.POLICY
        ),
        refusals=tuple(store.refusals(info.name, since)),
    )


def _actors(events: Sequence[Event]) -> list[ActorActivity]:
    by_actor: dict[str, Counter[str]] = {}
    for event in events:
        by_actor.setdefault(event.actor, Counter())[event.op.value] += 1
    return [
        ActorActivity(actor=actor, ops=dict(sorted(ops.items())), events=sum(ops.values()))
        for actor, ops in sorted(by_actor.items())
    ]


def _erasures(events: Sequence[Event]) -> list[ErasureEntry]:
    found = []
    for event in events:
        record = record_of(event)
        if record is not None:
            found.append(
                ErasureEntry(
                    seq=event.seq,
                    ts=event.ts,
                    actor=event.actor,
                    reason=event.reason,
                    items=len(record.items),
                    blocks=len(record.blocks),
                    adapters=len(record.adapters),
                    blobs=len(record.blobs),
                    digest=record.digest,
                )
            )
    return found


def _redactions(events: Sequence[Event]) -> list[RedactionEntry]:
    found = []
    for event in events:
        counts = (event.payload or {}).get("redacted")
        if isinstance(counts, dict) and counts:
            found.append(
                RedactionEntry(
                    seq=event.seq,
                    ts=event.ts,
                    actor=event.actor,
                    item_id=event.item_id,
                    counts={str(k): int(v) for k, v in counts.items()},
                )
            )
    return found
