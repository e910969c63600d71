"""Access statistics: a use count and a frequency that decays with a half-life, per memory
and per pair of memories retrieved together (co-access).

They describe how memories are used (the scheduler's input), not what they hold, so they are
kept beside the items rather than in the hash-chained log. A :class:`Use` is the memories one
search or chat retrieved together; uses are recorded in batches (:func:`tally` folds a batch
into the stats it changes), never as an event per read.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar

from memos.core._types import AccessStats, CoAccess

# a week: a memory used daily keeps a frequency near 10, one used once fades within a month
DEFAULT_HALF_LIFE_S = 7 * 24 * 3600.0


def decayed_frequency(stats: AccessStats | CoAccess, at: datetime, half_life_s: float) -> float:
    """``stats.frequency`` decayed from its last access to ``at``."""
    if stats.last_access is None:
        return 0.0
    elapsed = max((at - stats.last_access).total_seconds(), 0.0)
    return float(stats.frequency * 0.5 ** (elapsed / half_life_s))


S = TypeVar("S", AccessStats, CoAccess)


def accessed(stats: S, at: datetime, half_life_s: float) -> S:
    """The stats (of a memory, or of a pair) after one more use at ``at``."""
    return stats.model_copy(
        update={
            "count": stats.count + 1,
            "last_access": at,
            "frequency": decayed_frequency(stats, at, half_life_s) + 1.0,
        }
    )


# pairs are counted among a use's best memories only: k = 10 would make 45 pairs per search
CO_ACCESS_TOP = 8


@dataclass(frozen=True)
class Use:
    """The memories of a cube that one search or chat retrieved together, best first."""

    item_ids: tuple[str, ...]
    at: datetime


def pairs_of(item_ids: Sequence[str]) -> list[tuple[str, str]]:
    """The unordered pairs (``a < b``) of a use's first ``CO_ACCESS_TOP`` distinct memories."""
    top = list(dict.fromkeys(item_ids))[:CO_ACCESS_TOP]
    return [(a, b) if a < b else (b, a) for a, b in itertools.combinations(top, 2)]


@dataclass(frozen=True)
class Tally:
    """What a batch of uses changes: the new stats of each memory and each pair it touched."""

    items: dict[str, AccessStats]
    pairs: dict[tuple[str, str], CoAccess]


def touched(uses: Iterable[Use]) -> tuple[list[str], list[tuple[str, str]]]:
    """The memories and the pairs a batch of uses touches (each once, in first-use order)."""
    uses = list(uses)
    items = dict.fromkeys(i for use in uses for i in use.item_ids)
    pairs = dict.fromkeys(p for use in uses for p in pairs_of(use.item_ids))
    return list(items), list(pairs)


def tally(
    uses: Iterable[Use],
    half_life_s: float,
    items: Mapping[str, AccessStats],
    pairs: Mapping[tuple[str, str], CoAccess],
) -> Tally:
    """Fold ``uses`` (in time order) into the stats recorded before them (``items`` and
    ``pairs``: those that exist of what the batch touches)."""
    new_items, new_pairs = dict(items), dict(pairs)
    for use in sorted(uses, key=lambda use: use.at):
        for item_id in dict.fromkeys(use.item_ids):
            before = new_items.get(item_id) or AccessStats(item_id=item_id)
            new_items[item_id] = accessed(before, use.at, half_life_s)
        for a, b in pairs_of(use.item_ids):
            pair = new_pairs.get((a, b)) or CoAccess(a=a, b=b)
            new_pairs[(a, b)] = accessed(pair, use.at, half_life_s)
    touched_items, touched_pairs = touched(uses)
    return Tally({i: new_items[i] for i in touched_items}, {p: new_pairs[p] for p in touched_pairs})
