"""When a cube's index is partitioned, and when its partitions are retrained.

A flat index reads every code on every search: right for a small cube, the wrong tool at a
million vectors. Once a cube holds ``partition_items`` active memories (:class:`Limits`,
default :data:`PARTITION_ITEMS`), a codec that is not partitioned is re-encoded to
``ivf{nlist}+sq8`` (one ``reencode`` event); the inverted file is trained on the cube's own
vectors at once. ``nlist`` follows the cube: the power of two nearest ``4·√items``, within
:data:`NLIST_MIN`..``NLIST_MAX``, and never more lists than the cube can train (39 vectors per
list). As the cube grows its lists grow with it, and once the rule calls for twice the lists
(the cube has grown about 4× past the size its lists suit) the codec is refitted with them (one
``codec_fit`` event). Both run after a write, in the writer's call, never in a search; the
actor is ``scheduler``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from memos.codecs import IvfCodec, ivf_name, make_codec
from memos.codecs._ivf import FIT_PER_LIST, NLIST_MAX
from memos.core._types import CubeInfo, EventOp

SCHEDULER_ACTOR = "scheduler"
NLIST_MIN = 1024
LISTS_PER_ROOT = 4


@dataclass(frozen=True)
class Repartition:
    """A configuration change the cube is due: the codec to move to, as which event."""

    codec: str
    op: EventOp
    reason: str


def lists_for(items: int) -> int:
    """The number of lists an inverted file over ``items`` vectors gets."""
    nlist = 1 << round(math.log2(LISTS_PER_ROOT * math.sqrt(max(items, 1))))
    nlist = min(max(nlist, NLIST_MIN), NLIST_MAX)
    while nlist > 1 and FIT_PER_LIST * nlist > items:
        nlist //= 2
    return nlist


def due_repartition(info: CubeInfo, items: int, threshold: int | None) -> Repartition | None:
    """The change a cube of ``items`` active memories is due, if any (``threshold`` ``None``:
    never partitioned automatically)."""
    if threshold is None:
        return None
    codec = make_codec(info.codec)
    if not isinstance(codec, IvfCodec):
        if items < threshold:
            return None
        nlist = lists_for(items)
        return Repartition(ivf_name(nlist), EventOp.REENCODE, f"partition: {items} items")
    if info.codec_state is None:
        return None  # an inverted file awaiting its first fit (the first fit's job)
    nlist = lists_for(items)
    if nlist < 2 * codec.nlist:
        return None
    return Repartition(
        ivf_name(nlist, codec.encoding),
        EventOp.CODEC_FIT,
        f"repartition: {items} items, {codec.nlist} -> {nlist} lists",
    )
