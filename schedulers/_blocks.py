"""The ``balanced`` policy's KV decisions: which hot groups of memories live as KV blocks
(see :mod:`memos.schedulers._policies`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from memos.core._access import decayed_frequency
from memos.core._scheduling import Block, CubeView, Decision

if TYPE_CHECKING:
    from ._policies import BalancedParameters

# the block header and the chat template around it, in tokens (SmolLM2: 38), and each
# memory's line prefix ("12. (2023-05-08) ": SmolLM2, 10)
_OVERHEAD_TOKENS = 40
_LINE_TOKENS = 10


@dataclass(frozen=True)
class _Candidate:
    items: tuple[str, ...]
    value: float
    bytes: int
    standing: Block | None = None

    @property
    def density(self) -> float:
        return self.value / max(self.bytes, 1)


def kv_decisions(
    view: CubeView, heat: Mapping[str, float], p: BalancedParameters
) -> list[Decision]:
    """Drops of cold, superseded and over-budget blocks, and builds of hot groups."""
    decisions: list[Decision] = []
    standing: list[_Candidate] = []
    for block in view.blocks:
        value = sum(heat.get(i, 0.0) for i in block.items)
        if value / max(len(block.items), 1) < p.cold_max:
            decisions.append(_drop(block, value, "cold: its memories are seldom used now"))
        else:
            standing.append(_Candidate(block.items, value, block.size, block))
    new = [
        c for c in _groups(view, heat, p)
        if not any(set(c.items) <= set(s.items) for s in standing)
    ]  # fmt: skip
    chosen = _fitting(standing, new, view, heat, p)
    for candidate in standing:
        if candidate not in chosen:
            reason = "over budget: denser blocks take the cube's KV budget"
            decisions.append(_drop(candidate.standing, candidate.value, reason))
    built = [c for c in chosen if c.standing is None]
    for candidate in standing:
        if candidate in chosen and any(set(candidate.items) <= set(b.items) for b in built):
            reason = "superseded: a new block holds all its memories"
            decisions.append(_drop(candidate.standing, candidate.value, reason))
    return decisions + [_build(candidate) for candidate in built]


def _build(candidate: _Candidate) -> Decision:
    reason = f"hot group of {len(candidate.items)} memories retrieved together"
    return Decision(
        action="kv_build", items=candidate.items, score=round(candidate.value, 4),
        bytes=candidate.bytes, reason=reason,
    )  # fmt: skip


def _drop(block: Block | None, value: float, reason: str) -> Decision:
    assert block is not None  # only a standing block is dropped
    return Decision(
        action="kv_drop", entry=block.id, items=block.items, score=round(value, 4),
        bytes=block.size, reason=reason,
    )  # fmt: skip


def _groups(view: CubeView, heat: Mapping[str, float], p: BalancedParameters) -> list[_Candidate]:
    """The hot memories in groups retrieved together (see the policy's docstring)."""
    if view.kv_bytes_per_token is None:
        return []  # nothing tells what a block would cost yet
    hot = sorted(
        (i for i, h in heat.items() if h >= p.hot_min and i not in view.no_kv),
        key=lambda i: (-heat[i], i),
    )
    links: dict[str, dict[str, float]] = {}
    for (a, b), pair in view.co_access.items():
        strength = decayed_frequency(pair, view.now, view.half_life_s)
        links.setdefault(a, {})[b] = strength
        links.setdefault(b, {})[a] = strength
    grouped: set[str] = set()
    groups = []
    for seed in hot:
        if seed in grouped:
            continue
        group = [seed]
        grouped.add(seed)
        while len(group) < p.block_items:
            pull = {
                c: sum(links.get(c, {}).get(m, 0.0) for m in group) for c in hot if c not in grouped
            }
            best = min(pull, key=lambda c: (-pull[c], -heat[c], c), default=None)
            if best is None or pull[best] < p.co_min:
                break
            group.append(best)
            grouped.add(best)
        ordered = tuple(sorted(group, key=lambda i: (-heat[i], i)))
        groups.append(_Candidate(ordered, sum(heat[i] for i in group), _bytes(view, ordered)))
    return groups


def _bytes(view: CubeView, items: Sequence[str]) -> int:
    text = sum(view.chars[i] for i in items) / view.chars_per_token
    tokens = _OVERHEAD_TOKENS + _LINE_TOKENS * len(items) + text
    return int(tokens * (view.kv_bytes_per_token or 0.0))


def _fitting(
    standing: list[_Candidate],
    new: list[_Candidate],
    view: CubeView,
    heat: Mapping[str, float],
    p: BalancedParameters,
) -> list[_Candidate]:
    """The blocks kept and built: by density, best first, within the budgets; a new group
    larger than the room left keeps its hottest memories that fit."""

    def weight(c: _Candidate) -> tuple[float, int, tuple[str, ...]]:
        bonus = p.keep_bonus if c.standing is not None else 1.0
        return (-c.density * bonus, 0 if c.standing is not None else 1, c.items)

    budgets = view.budgets
    room = budgets.kv_bytes
    count = budgets.kv_blocks
    chosen: list[_Candidate] = []
    for candidate in sorted([*standing, *new], key=weight):
        if count is not None and len(chosen) >= count:
            break
        taken: _Candidate | None = candidate
        if room is not None and candidate.bytes > room:
            taken = None if candidate.standing else _trimmed(candidate, view, heat, room)
        if taken is None:
            continue
        chosen.append(taken)
        if room is not None:
            room -= taken.bytes
    return chosen


def _trimmed(
    candidate: _Candidate, view: CubeView, heat: Mapping[str, float], room: int
) -> _Candidate | None:
    """The candidate's hottest memories (it holds them hottest first) that fit ``room``."""
    items = candidate.items
    while items and _bytes(view, items) > room:
        items = items[:-1]
    if not items:
        return None
    return replace(
        candidate, items=items, value=sum(heat[i] for i in items), bytes=_bytes(view, items)
    )
