"""A cube's codec over its life: fitting it to the cube's vectors, refitting, re-encoding.

A codec that needs fitting (``int8``, ``pca{k}+fp8``) starts unfitted (exact fp32 tables). Its
fitted state is a safetensors blob in the store, named by its sha256, and the cube's
configuration records that digest with a version that goes up on every change. A change is one
cube-level event (``codec_fit`` or ``reencode``) committed with the new configuration in one
transaction. The new index is built from the store's full-precision vectors *before* the
commit and swapped in after it, so readers always search a complete index of one configuration
and no item can be lost: every active item with a vector is re-encoded from the store.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from memos.codecs import (
    FIT_SAMPLE_MAX,
    VectorCodec,
    fit_sample_size,
    make_codec,
    state_to_bytes,
)
from memos.core._commit_rules import CHANGEABLE
from memos.core._store import Change, Store
from memos.core._types import CubeInfo, Event, EventOp, ItemFilter, utcnow
from memos.errors import InvalidInput
from memos.plaintext._codec_state import load_codec
from memos.plaintext._indexes import CubeIndexes

if TYPE_CHECKING:
    from memos.core._store import Vector

# the events that set a cube's configuration: its creation and each cube-level change
CONFIG_OPS = frozenset({EventOp.CUBE_CREATE, *CHANGEABLE})
_SAMPLE_SEED = 0
_CHUNK = 4096


def sample_vectors(store: Store, ids: Sequence[str], limit: int = FIT_SAMPLE_MAX) -> Vector:
    """Up to ``limit`` of the items' vectors, a seeded sample (the same ids give the same
    sample, so a refit of an unchanged cube gives the same state)."""
    chosen = sorted(ids)
    if len(chosen) > limit:
        rng = np.random.default_rng(_SAMPLE_SEED)
        chosen = [chosen[i] for i in sorted(rng.choice(len(chosen), limit, replace=False))]
    rows: list[Vector] = []
    for start in range(0, len(chosen), _CHUNK):
        chunk = chosen[start : start + _CHUNK]
        vectors = store.get_vectors(chunk)
        rows.extend(vectors[i] for i in chunk if i in vectors)
    if not rows:
        return np.zeros((0, 0), dtype=np.float32)
    return np.ascontiguousarray(np.stack(rows), dtype=np.float32)


def reconfigure(
    store: Store,
    indexes: CubeIndexes,
    info: CubeInfo,
    *,
    codec: str,
    op: EventOp,
    actor: str,
    reason: str | None,
    force_fit: bool = False,
    extra: Mapping[str, Any] | None = None,
    reinstate: CubeInfo | None = None,
) -> CubeInfo:
    """Give the cube ``codec`` (fitted now when it needs fitting and the cube holds
    ``fit_min`` active vectors, or when ``force_fit``), as one ``op`` event (``extra``: more
    of its payload). With ``reinstate`` (an earlier configuration of the cube), its codec and
    fitted state come back as they were, without fitting.

    Raises ``VersionConflict`` (and changes nothing) when another writer changed the cube's
    configuration meanwhile.
    """
    ids = store.filter_item_ids(info.name, ItemFilter())
    if reinstate is not None:
        target = load_codec(store, reinstate)
        digest, fit_items, used = reinstate.codec_state, reinstate.codec_fit_items, 0
    else:
        target, digest, used = _fitted(store, info, make_codec(codec), ids, force_fit)
        fit_items = len(ids) if digest is not None else None
    new_info = info.model_copy(
        update={
            "codec": target.name,
            "codec_state": digest,
            "codec_version": info.codec_version + 1,
            "codec_fit_items": fit_items,
        }
    )
    index = indexes.build(new_info, target)
    change = Change(
        op=op,
        cube=info.name,
        actor=actor,
        ts=utcnow(),
        reason=reason,
        cube_info=new_info,
        extra={
            "codec": new_info.codec,
            "codec_version": new_info.codec_version,
            "codec_state": digest,
            "fit_vectors": used,
            "items": len(ids),
            "previous": {"codec": info.codec, "codec_version": info.codec_version},
            **(extra or {}),
        },
    )
    store.commit([change])
    indexes.install(new_info, index)
    return new_info


def _fitted(
    store: Store, info: CubeInfo, target: VectorCodec, ids: Sequence[str], force_fit: bool
) -> tuple[VectorCodec, str | None, int]:
    """``target`` fitted to the cube's vectors when it needs fitting and may be (see
    :func:`reconfigure`), with its state's digest and the vectors it was fitted on."""
    target.projected_dim(info.dim)
    if not target.fit_min or not (force_fit or len(ids) >= target.fit_min):
        return target, None, 0
    if len(ids) < target.fit_min:
        raise InvalidInput(
            f"codec {target.name} needs {target.fit_min} active memories to fit; "
            f"cube {info.name!r} holds {len(ids)}",
            cube=info.name,
        )
    sample = sample_vectors(store, ids, fit_sample_size(target))
    state = target.fit(sample)
    digest = store.put_blob(state_to_bytes(target.name, state))
    return make_codec(target.name, state), digest, len(sample)


def index_bytes(codec: str, dim: int, count: int, *, fitted: bool = True) -> int:
    """What an index of ``count`` vectors of ``dim`` takes in RAM under ``codec``: its codes
    (as exact fp32 ones when the codec needs fitting and is not ``fitted``)."""
    return int(make_codec(codec).bytes_per_vector(dim, once_fitted=fitted) * count)


def configured_cube(events: Sequence[Event]) -> CubeInfo | None:
    """The cube's configuration as the log last set it (creation, fit, re-encode, attached
    adapter, grants, scheduler, policies)."""
    for event in reversed(events):
        if event.op in CONFIG_OPS and event.payload is not None and "cube" in event.payload:
            return CubeInfo.model_validate(event.payload["cube"])
    return None


def fitted(info: CubeInfo) -> CubeInfo:
    """``info``, whose codec is one that is fitted (refit refuses any other)."""
    if not make_codec(info.codec).fit_min:
        raise InvalidInput(f"codec {info.codec} of cube {info.name!r} is not fitted")
    return info


def checked_codec(name: str, dim: int) -> str:
    """The canonical name of codec ``name``, which must be able to encode ``dim``-d vectors."""
    if not isinstance(name, str):
        raise InvalidInput("a codec is named by a string")
    codec = make_codec(name)
    codec.projected_dim(dim)
    return codec.name
