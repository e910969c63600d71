"""The scheduler's policies (see :mod:`memos.core._scheduling`); ``balanced`` is the default.

**balanced** keeps a cube's hottest groups of memories as KV blocks within its budgets:

- *Heat* of a memory: its use frequency decayed to now (one use now is 1.0, halving every
  half-life; a search's hits and a chat's prompt are a use each), so frequency and recency are
  one number. A memory is *hot* at ``hot_min`` or more.
- *Groups*: from the hottest memory not yet grouped, the group takes in, one at a time, the hot
  memory most often retrieved together with its members (summed decayed co-access), while that
  sum is at least ``co_min`` and the group holds fewer than ``block_items``. A group's memories
  are in heat order, so a chat's prompt starts with the hottest.
- *Value* of a block: the summed heat of its memories; its *density*: value per byte of its
  cache (its size, or an estimate from the characters of its memories for a block not built
  yet). Standing blocks count ``keep_bonus`` times their density, so a block is not dropped for
  a candidate barely better (no churn).
- *Choice*: standing blocks whose memories' mean heat is below ``cold_max`` are dropped as cold;
  the rest and the groups no standing block holds are taken by density, best first, while they
  fit the cube's ``kv_bytes`` and ``kv_blocks`` budgets; a standing block not taken is dropped
  (over budget), a group taken is built, and a standing block whose memories a new block holds
  all of is dropped as superseded.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field

from memos.core._access import decayed_frequency
from memos.core._scheduling import Block, CubeView, Decision

# the block header and the chat template around it, in tokens (SmolLM2: 38), and each
# memory's line prefix ("12. (2023-05-08) ": SmolLM2, 10)
_OVERHEAD_TOKENS = 40
_LINE_TOKENS = 10


class BalancedParameters(BaseModel):
    """The parameters of the ``balanced`` policy, with their defaults (see the module)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    hot_min: float = Field(default=1.0, ge=0)
    co_min: float = Field(default=0.5, ge=0)
    block_items: int = Field(default=8, ge=1, le=512)
    cold_max: float = Field(default=0.25, ge=0)
    keep_bonus: float = Field(default=1.5, ge=1)


@dataclass(frozen=True)
class _Candidate:
    items: tuple[str, ...]
    value: float
    bytes: int
    standing: Block | None = None

    @property
    def density(self) -> float:
        return self.value / max(self.bytes, 1)


class Balanced:
    """The default policy; see the module docstring."""

    name = "balanced"
    parameters: type[BaseModel] = BalancedParameters

    def plan(self, view: CubeView, parameters: BaseModel) -> list[Decision]:
        p = BalancedParameters.model_validate(parameters.model_dump())
        heat = {i: decayed_frequency(s, view.now, view.half_life_s) for i, s in view.access.items()}
        heat = {i: h for i, h in heat.items() if i in view.chars}
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
        chosen = _fitting(standing, new, view, p)
        for candidate in standing:
            if candidate not in chosen:
                reason = "over budget: denser blocks take the cube's KV budget"
                decisions.append(_drop(candidate.standing, candidate.value, reason))
        built = [c for c in chosen if c.standing is None]
        for candidate in standing:
            if candidate in chosen and any(set(candidate.items) <= set(b.items) for b in built):
                reason = "superseded: a new block holds all its memories"
                decisions.append(_drop(candidate.standing, candidate.value, reason))
        decisions += [_build(candidate) for candidate in built]
        return decisions


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
    """The hot memories in groups retrieved together (see the module docstring)."""
    if view.kv_bytes_per_token is None:
        return []  # nothing tells what a block would cost yet
    hot = sorted((i for i, h in heat.items() if h >= p.hot_min), key=lambda i: (-heat[i], i))
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
            best = min(pull, key=lambda c: (-pull[c], c), default=None)
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
    standing: list[_Candidate], new: list[_Candidate], view: CubeView, p: BalancedParameters
) -> list[_Candidate]:
    """The blocks kept and built: by density, best first, within the budgets."""

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
        if room is not None and candidate.bytes > room:
            continue
        chosen.append(candidate)
        if room is not None:
            room -= candidate.bytes
    return chosen
