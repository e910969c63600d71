"""Access statistics: a use count and a frequency that decays with a half-life.

They describe how memories are used (the scheduler's input), not what they hold, so they are
kept beside the items rather than in the hash-chained log.
"""

from __future__ import annotations

from datetime import datetime

from memos.core._types import AccessStats

# a week: a memory used daily keeps a frequency near 10, one used once fades within a month
DEFAULT_HALF_LIFE_S = 7 * 24 * 3600.0


def decayed_frequency(stats: AccessStats, at: datetime, half_life_s: float) -> float:
    """``stats.frequency`` decayed from its last access to ``at``."""
    if stats.last_access is None:
        return 0.0
    elapsed = max((at - stats.last_access).total_seconds(), 0.0)
    return float(stats.frequency * 0.5 ** (elapsed / half_life_s))


def accessed(stats: AccessStats, at: datetime, half_life_s: float) -> AccessStats:
    """The stats after one more use at ``at``."""
    return stats.model_copy(
        update={
            "count": stats.count + 1,
            "last_access": at,
            "frequency": decayed_frequency(stats, at, half_life_s) + 1.0,
        }
    )
