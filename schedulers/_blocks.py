"""The ``balanced`` policy's KV decisions: which hot groups of memories live as KV blocks
(see :mod:`memos.schedulers._policies`)."""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from memos.core._access import decayed_frequency
from memos.core._scheduling import BLOCK_OVERHEAD_TOKENS, LINE_TOKENS, Block, CubeView, Decision

if TYPE_CHECKING:
    from ._policies import BalancedParameters

# a stored cache also holds its token ids and a header (tensor layout, manifest): a little
# over its tokens' cost, which an estimate that fills the budget exactly must not miss
_FILE_MARGIN = 1.02


@dataclass(frozen=True)
class _Candidate:
    items: tuple[str, ...]
    value: float
    bytes: int
    standing: Block | None = None  # the block it is, when it stands
    base: _Candidate | None = None  # the standing block whose memories it begins with

    @property
    def density(self) -> float:
        return self.value / max(self.bytes, 1)

    @property
    def reused(self) -> int:
        """How many of its first memories are its base's first ones (their cache is reused);
        all of the base's when it grows the base."""
        if self.base is None:
            return 0
        pairs = zip(self.items, self.base.items, strict=False)
        return sum(1 for _ in itertools.takewhile(lambda pair: pair[0] == pair[1], pairs))


def kv_decisions(
    view: CubeView, heat: Mapping[str, float], p: BalancedParameters
) -> list[Decision]:
    """Drops of cold and over-budget blocks, and blocks for the hot groups: each group grows
    the standing block it shares most memories with, or replaces it when worth more."""
    decisions: list[Decision] = []
    free: list[_Candidate] = []
    for block in view.blocks:
        value = sum(heat.get(i, 0.0) for i in block.items)
        if value / max(len(block.items), 1) < p.cold_max:
            decisions.append(_drop(block, value, "cold: its memories are seldom used now"))
        else:
            free.append(_Candidate(block.items, value, block.size, block))
    free.sort(key=lambda c: (-c.value, c.items))
    standing, proposals, replaced = list(free), [], set()
    for group in _groups(view, heat, p):
        base = _sharing(free, group)
        if base is not None:
            free.remove(base)
        choice = _choice(base, group, view, heat, p)
        if base is not None and (choice is None or base not in (choice, choice.base)):
            replaced.add(base.items)
        if choice is not None:
            proposals.append(choice)
    kept = _fitting([*proposals, *free], view, heat, p)
    after: list[Decision] = []  # drops of the blocks builds extend: once those are built
    for candidate in standing:
        if candidate in kept:
            if not any(set(candidate.items) <= set(k.items) for k in kept if k is not candidate):
                continue
            reason = "superseded: a block the cube keeps holds all its memories"
        elif any(k.base is candidate for k in kept):
            grown = any(k.reused == len(candidate.items) for k in kept if k.base is candidate)
            reason = (
                "extended: a new block holds its memories and hotter ones after them" if grown
                else "replaced: a block of hotter memories (that starts with its first ones) is "
                "worth more than this one grown"
            )  # fmt: skip
            after.append(_drop(candidate.standing, candidate.value, reason))
            continue
        elif candidate.items in replaced:
            reason = "replaced: a block of hotter memories is worth more than this one grown"
        else:
            reason = "over budget: hotter blocks take the cube's KV budget"
        decisions.append(_drop(candidate.standing, candidate.value, reason))
    return decisions + [_build(c) for c in kept if c.standing is None] + after


def _choice(
    base: _Candidate | None,
    group: _Candidate,
    view: CubeView,
    heat: Mapping[str, float],
    p: BalancedParameters,
) -> _Candidate | None:
    """What ``group`` makes of the standing block ``base``: grown, kept as it is, or replaced
    by the group's hottest memories that fit the budget (when worth ``keep_bonus`` times
    more)."""
    room = view.budgets.kv_bytes
    fresh = _trimmed(group, view, heat, room)
    grown = None if base is None else _grown(base, group, view, heat, room, p)
    if grown is not None and (fresh is None or fresh.value <= p.keep_bonus * grown.value):
        return grown
    if fresh is None or base is None:
        return fresh
    # the memories the standing block starts with, kept first, keep the cache of them
    held = set(fresh.items)
    lead = list(itertools.takewhile(held.__contains__, base.items))
    if not lead:
        return fresh
    items = (*lead, *(i for i in fresh.items if i not in lead))
    return replace(fresh, items=items, base=base)


def _fitting(
    candidates: Sequence[_Candidate],
    view: CubeView,
    heat: Mapping[str, float],
    p: BalancedParameters,
) -> list[_Candidate]:
    """The blocks kept and built: by density, best first (a standing block, or one grown from
    it, ``keep_bonus`` times its own), within the budgets; one larger than the room left
    keeps its hottest memories that fit, or, grown, falls back to the block it grew from."""

    def weight(c: _Candidate) -> tuple[float, int, tuple[str, ...]]:
        standing = c.standing is not None or c.base is not None
        return (-c.density * (p.keep_bonus if standing else 1.0), 0 if standing else 1, c.items)

    room, count = view.budgets.kv_bytes, view.budgets.kv_blocks
    chosen: list[_Candidate] = []
    for candidate in sorted(candidates, key=weight):
        if count is not None and len(chosen) >= count:
            break
        taken: _Candidate | None = candidate
        if room is not None and candidate.bytes > room:
            if candidate.base is not None:
                taken = candidate.base if candidate.base.bytes <= room else None
            elif candidate.standing is None:
                taken = _trimmed(candidate, view, heat, room)
            else:
                taken = None
        if taken is not None:
            chosen.append(taken)
            room = None if room is None else room - taken.bytes
    return chosen


def _sharing(free: Sequence[_Candidate], group: _Candidate) -> _Candidate | None:
    """The standing block sharing most memories with ``group`` (the more valuable on a tie),
    if any shares one."""
    shared = [(len(set(c.items) & set(group.items)), c.value, c) for c in free]
    best = max(shared, key=lambda row: row[:2], default=None)
    return None if best is None or best[0] == 0 else best[2]


def _build(candidate: _Candidate) -> Decision:
    base = None if candidate.base is None else candidate.base.standing
    if base is not None and candidate.reused == len(base.items):
        added = len(candidate.items) - len(base.items)
        reason = (
            f"grown: {added} more hot memories after the {len(base.items)} of block "
            f"{base.id} (only they are computed)"
        )
    else:
        reason = f"hot group of {len(candidate.items)} memories retrieved together"
    if base is not None and candidate.reused < len(base.items):
        reason += f", replacing block {base.id} (the cache of its first {candidate.reused} reused)"
    return Decision(
        action="kv_build", items=candidate.items, score=round(candidate.value, 4),
        bytes=candidate.bytes, reason=reason,
        extends=None if base is None else base.id,
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
        group: list[str] = []
        pull = dict.fromkeys((c for c in hot if c not in grouped), 0.0)  # summed links to it
        best: str | None = seed
        while best is not None:
            group.append(best)
            grouped.add(best)
            del pull[best]
            for other, strength in links.get(best, {}).items():
                if other in pull:
                    pull[other] += strength
            best = min(pull, key=lambda c: (-pull[c], -heat[c], c), default=None)
            if len(group) >= p.block_items or (best is not None and pull[best] < p.co_min):
                best = None
        ordered = tuple(sorted(group, key=lambda i: (-heat[i], i)))
        groups.append(_Candidate(ordered, sum(heat[i] for i in group), _bytes(view, ordered)))
    return groups


def _bytes(view: CubeView, items: Sequence[str]) -> int:
    text = sum(view.chars[i] for i in items) / view.chars_per_token
    tokens = BLOCK_OVERHEAD_TOKENS + LINE_TOKENS * len(items) + text
    return int(tokens * (view.kv_bytes_per_token or 0.0) * _FILE_MARGIN)


def _trimmed(
    candidate: _Candidate, view: CubeView, heat: Mapping[str, float], room: int | None
) -> _Candidate | None:
    """The candidate's hottest memories (it holds them hottest first) that fit ``room``."""
    if room is None:
        return candidate
    items = candidate.items
    while items and _bytes(view, items) > room:
        items = items[:-1]
    if not items:
        return None
    return replace(
        candidate, items=items, value=sum(heat[i] for i in items), bytes=_bytes(view, items)
    )


def _grown(
    base: _Candidate,
    group: _Candidate,
    view: CubeView,
    heat: Mapping[str, float],
    room: int | None,
    p: BalancedParameters,
) -> _Candidate | None:
    """The standing block ``base`` followed by the group's other memories, hottest first, as
    many as fit ``room`` and ``block_items`` (``base`` itself when none does); none when
    ``base`` does not fit ``room``."""
    if room is not None and base.bytes > room:
        return None
    added = [i for i in group.items if i not in base.items][: p.block_items - len(base.items)]
    while added and room is not None and base.bytes + _added_bytes(view, added) > room:
        added = added[:-1]
    if not added:
        return base
    items = (*base.items, *added)
    return _Candidate(
        items, base.value + sum(heat[i] for i in added),
        base.bytes + _added_bytes(view, added), base=base,
    )  # fmt: skip


def _added_bytes(view: CubeView, items: Sequence[str]) -> int:
    """What more lines after a block's own take (no header)."""
    return _bytes(view, items) - _bytes(view, ())
