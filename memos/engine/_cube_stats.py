"""``MemOS.cube_stats``: what a cube holds and what its vectors cost, in RAM and on disk."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import ConfigDict

from memos.core._model import Model
from memos.core._types import CubeInfo, ItemFilter

if TYPE_CHECKING:  # the reply's model loads without the codecs (the HTTP client needs it)
    from memos.core._store import Store
    from memos.plaintext._vector_index import VectorIndex

_FP32_BYTES = 4


class CubeStats(Model):
    """A cube's size and encoding. RAM figures are measured from the live index."""

    model_config = ConfigDict(frozen=True)

    cube: str
    items_active: int
    items_total: int
    codec: str
    codec_version: int
    codec_state: str | None
    needs_fit: bool
    fitted: bool
    fit_min: int
    encoding: str  # what the index holds now: the codec, or fp32 while it awaits its fit
    dim: int
    projected_dim: int
    index_vectors: int
    index_ram_bytes: int
    ram_bytes_per_vector: float | None
    disk_bytes_per_vector: int  # the full-precision vector in the store
    codec_state_bytes: int  # the fitted state held beside the codes (e.g. a projection)
    index_seq: int
    snapshot_seq: int | None


def cube_stats(store: Store, info: CubeInfo, index: VectorIndex) -> CubeStats:
    from memos.codecs import state_from_bytes

    codec = index.codec
    active = len(store.filter_item_ids(info.name, ItemFilter()))
    # every item ever written has an event naming it, deleted ones included
    total = len(store.changed_since(info.name, 0)[0])
    state_bytes = 0
    if index.codec_state is not None:
        blob = store.get_blob(index.codec_state)
        if blob is not None:
            state = state_from_bytes(codec.name, blob)
            state_bytes = sum(array.nbytes for array in state.values())
    return CubeStats(
        cube=info.name,
        items_active=active,
        items_total=total,
        codec=codec.name,
        codec_version=index.codec_version,
        codec_state=index.codec_state,
        needs_fit=codec.fit_min > 0,
        fitted=codec.fitted,
        fit_min=codec.fit_min,
        encoding=codec.name if codec.fitted else "fp32",
        dim=info.dim,
        projected_dim=codec.projected_dim(info.dim),
        index_vectors=len(index),
        index_ram_bytes=index.nbytes,
        ram_bytes_per_vector=index.nbytes / len(index) if len(index) else None,
        disk_bytes_per_vector=_FP32_BYTES * info.dim,
        codec_state_bytes=state_bytes,
        index_seq=index.seq,
        snapshot_seq=index.saved_seq or None,
    )
