"""The ``balanced`` policy's decisions on a cube's vector index: re-encode it to a smaller codec
when it is over its vector budget or has gone cold, refit its codec when the cube has grown
well past what the codec was fitted on (see :mod:`memos.schedulers._policies`)."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

from memos.codecs import make_codec
from memos.core._scheduling import CubeView, Decision, VectorIndex
from memos.errors import InvalidInput
from memos.plaintext._encoding import index_bytes

if TYPE_CHECKING:
    from ._policies import BalancedParameters


def _bytes(codec: str, index: VectorIndex) -> int:
    """What the index takes in RAM under ``codec`` (fitted, unless it is the index's own
    codec, not fitted yet): its active memories' codes."""
    fitted = index.fitted or codec != index.codec
    return index_bytes(codec, index.dim, index.active, fitted=fitted)


def usable(codec: str, index: VectorIndex) -> bool:
    """Whether the cube could be re-encoded to ``codec`` now (its dimension allows it, and it
    holds enough memories to fit the codec when the codec is fitted)."""
    try:
        target = make_codec(codec)
        target.projected_dim(index.dim)
    except InvalidInput:
        return False
    return index.active >= target.fit_min


def codec_decisions(view: CubeView, p: BalancedParameters) -> list[Decision]:
    """At most one: a re-encode (over budget, else cold) or a refit (grown)."""
    index = view.vectors
    if index is None or not index.active:
        return []
    now = _bytes(index.codec, index)
    budget = view.budgets.vector_bytes
    if budget is not None and now > budget:
        return _over_budget(index, now, budget, p)
    if _cold(view, p) and index.active >= p.cold_cube_items:
        target = p.cold_codec
        if usable(target, index) and _bytes(target, index) < now:
            idle = f"no memory used for {p.cold_days:g} days"
            return [_reencode(index, target, now, f"cold cube: {idle}, {index.active} memories")]
    if index.fit_items and index.active >= p.refit_growth * index.fit_items:
        reason = (
            f"drift: the cube grew from {index.fit_items} to {index.active} memories since its "
            f"codec was fitted"
        )
        return [Decision(action="refit", codec=index.codec, score=index.active / index.fit_items,
                         bytes=now, reason=reason)]  # fmt: skip
    return []


def _over_budget(
    index: VectorIndex, now: int, budget: int, p: BalancedParameters
) -> list[Decision]:
    """A re-encode to the largest codec of ``p.codecs`` that fits the budget (else the
    smallest), when it is smaller than the current one."""
    ladder = [c for c in p.codecs.split(",") if c and usable(c, index)]
    ladder.sort(key=lambda c: -_bytes(c, index))
    fitting = [c for c in ladder if _bytes(c, index) <= budget]
    target = fitting[0] if fitting else (ladder[-1] if ladder else None)
    if target is None or _bytes(target, index) >= now or target == index.codec:
        return []
    reason = f"over budget: the index takes {now} bytes of its {budget}"
    return [_reencode(index, target, now, reason)]


def _reencode(index: VectorIndex, target: str, now: int, reason: str) -> Decision:
    after = _bytes(target, index)
    return Decision(
        action="reencode", codec=target, score=round(now / max(after, 1), 4), bytes=after,
        reason=f"{reason}; {index.codec} to {target}",
    )  # fmt: skip


def _cold(view: CubeView, p: BalancedParameters) -> bool:
    """No memory of the cube used for ``cold_days``, and the cube at least that old."""
    idle = timedelta(days=p.cold_days)
    if view.created_at is None or view.now - view.created_at < idle:
        return False
    last = max((s.last_access for s in view.access.values() if s.last_access), default=None)
    return last is None or view.now - last >= idle
