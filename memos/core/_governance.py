"""Governance as pure rules: the tier labels that keep a memory out of a tier, and a cube's
policies (retention, legal holds, redaction on write, quotas).

A memory's tags may hold the labels ``no-kv`` (never in a KV cache) and ``no-parametric``
(never trained into an adapter). Labels are tags so that setting one is an update like any
other: a new version, one event, and the artifacts built from the older version retired at
once. Every path honours them: building a KV block or consolidating refuses a labelled memory
given by id and leaves one found by a query out, retraining leaves it out, the scheduler's
decisions never name one, and the store refuses an artifact built from one whatever asked.
"""

from __future__ import annotations

from collections.abc import Iterable

from memos.core._policies import CubePolicies
from memos.core._types import MemoryItem
from memos.errors import PolicyRefused

NO_KV = "no-kv"
NO_PARAMETRIC = "no-parametric"
TIER_LABELS = (NO_KV, NO_PARAMETRIC)


def allowed(item: MemoryItem, label: str) -> bool:
    """Whether ``item`` may enter the tier ``label`` keeps it out of."""
    return label not in item.tags


def refuse_labelled(items: Iterable[MemoryItem], label: str, what: str) -> None:
    """:class:`PolicyRefused` naming the first of ``items`` labelled ``label``."""
    for item in items:
        if not allowed(item, label):
            raise PolicyRefused(
                f"memory {item.id} is labelled {label!r}: it never goes into {what}",
                cube=item.cube,
                item_id=item.id,
                label=label,
            )


def refuse_held(policies: CubePolicies | None, items: Iterable[MemoryItem], what: str) -> None:
    """:class:`PolicyRefused` naming the first of ``items`` under a legal hold."""
    if policies is None:
        return
    for item in items:
        hold = policies.hold_on(item)
        if hold is not None:
            raise PolicyRefused(
                f"memory {item.id} is under legal hold {hold.name!r}: it cannot be {what}",
                cube=item.cube,
                item_id=item.id,
                hold=hold.name,
            )
