"""The ``balanced`` policy's adapter decisions: consolidating a stable hot set of memories into
a new version of the scheduler's adapter, and dropping adapter versions to keep the cube's
adapter budgets (see :mod:`memos.schedulers._policies`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from memos.core._scheduling import Adapter, CubeView, Decision

if TYPE_CHECKING:
    from ._policies import BalancedParameters

# what a version is taken to cost before the cube has any (SmolLM2's, ComPEFT at 0.5: 0.5 MB;
# fp32: 10 MB); a tick whose version came out larger settles to the budgets
_ADAPTER_BYTES = 2 * 2**20


def adapter_decisions(
    view: CubeView, heat: Mapping[str, float], p: BalancedParameters
) -> list[Decision]:
    """Drops of the oldest versions over the adapter budgets, then a consolidation of the
    stable hot set when it changed enough and fits (see the policy's docstring)."""
    versions = sorted(view.adapters, key=lambda a: (a.created_at, a.id))
    drops = _over_budget(view, versions, 0, 0) or []
    kept = [a for a in versions if a not in drops]
    build = _consolidation(view, heat, p, versions)
    if build is not None:
        own = [a for a in kept if a.name == p.adapter and not a.default]
        room = _over_budget(view, own, 1, build.bytes, base=kept)
        if room is None:
            build = None
        else:
            drops += room
    reason = "over budget: the cube keeps at most its adapter budgets, oldest versions go first"
    decisions = [_drop(a, reason) for a in drops]
    return decisions + ([build] if build is not None else [])


def _drop(adapter: Adapter, reason: str) -> Decision:
    return Decision(
        action="lora_drop", entry=adapter.id, adapter=adapter.name, items=adapter.items,
        score=0.0, bytes=adapter.size, reason=f"{reason} (v{adapter.version} of {adapter.name})",
    )  # fmt: skip


def _over_budget(
    view: CubeView,
    candidates: Sequence[Adapter],
    more: int,
    more_bytes: int,
    base: Sequence[Adapter] | None = None,
) -> list[Adapter] | None:
    """The fewest of ``candidates`` (oldest first, never the version chat uses by default)
    whose drop brings ``base`` (the candidates by default) plus ``more`` versions of
    ``more_bytes`` within the budgets; ``None`` when dropping them all would not."""
    budgets = view.budgets
    held = list(candidates if base is None else base)
    count, total = len(held) + more, sum(a.size for a in held) + more_bytes

    def within() -> bool:
        return (budgets.adapters is None or count <= budgets.adapters) and (
            budgets.adapter_bytes is None or total <= budgets.adapter_bytes
        )

    dropped: list[Adapter] = []
    for adapter in candidates:
        if within():
            break
        if adapter.default:
            continue
        dropped.append(adapter)
        count, total = count - 1, total - adapter.size
    if within():
        return dropped
    return None if more else dropped


def _consolidation(
    view: CubeView, heat: Mapping[str, float], p: BalancedParameters, versions: Sequence[Adapter]
) -> Decision | None:
    if not p.stable_uses:
        return None
    stable = sorted(
        (
            i for i, stats in view.access.items()
            if i in view.chars and i not in view.no_parametric
            and stats.count >= p.stable_uses and heat.get(i, 0.0) >= p.hot_min
        ),
        key=lambda i: (-heat[i], i),
    )[: p.adapter_items]  # fmt: skip
    if len(stable) < p.adapter_min_items:
        return None
    own = [a for a in versions if a.name == p.adapter]
    latest = max(own, key=lambda a: a.version, default=None)
    new = [i for i in stable if latest is None or i not in latest.items]
    if latest is not None and len(new) / len(stable) < p.adapter_change:
        return None
    sizes = [a.size for a in own] or [a.size for a in versions] or [_ADAPTER_BYTES]
    since = "" if latest is None else f", {len(new)} not in v{latest.version}"
    reason = (
        f"stable hot set: {len(stable)} memories used {p.stable_uses}+ times and still hot{since}"
    )
    return Decision(
        action="lora_consolidate", items=tuple(sorted(stable)), adapter=p.adapter,
        score=round(sum(heat[i] for i in stable), 4), bytes=int(sum(sizes) / len(sizes)),
        reason=reason,
    )  # fmt: skip
