"""Garbage collection of blobs: the blobs nothing can use any more are deleted.

A blob is kept while something may read it: a standing KV cache or adapter version, a cube's
codec state, and (so that a migration or an adapter version can be brought back) every adapter
version and codec state the log recorded, unless an erasure condemned it. The cache of a KV
block that was dropped is not kept: bringing the block back computes it again. A blob younger
than the grace period is kept too, whatever names it: blobs are written before the commit that
names them, so a young unnamed blob may be one a commit is about to name.
"""

from __future__ import annotations

from pydantic import ConfigDict, Field

from memos.core._derived import ADAPTER_KIND
from memos.core._erasure import record_of
from memos.core._model import Model
from memos.core._store import Store

DEFAULT_GRACE_S = 3600.0


class BlobCollection(Model):
    """What a collection did: the blobs deleted, and how many were kept (named, or young)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    deleted: tuple[str, ...]
    kept: int = Field(ge=0)
    young: int = Field(ge=0)


def referenced(store: Store) -> set[str]:
    """The blobs something may still read (see the module docstring)."""
    named: set[str] = set()
    condemned: set[str] = set()
    for info in store.list_cubes():
        named.update(entry.blob for entry in store.derived_entries(info.name))
        for event in store.events(info.name):
            payload = event.payload or {}
            derived, config = payload.get("derived"), payload.get("cube")
            if isinstance(derived, dict) and derived.get("kind") == ADAPTER_KIND:
                named.add(str(derived.get("blob")))
            if isinstance(config, dict) and isinstance(config.get("codec_state"), str):
                named.add(config["codec_state"])
            record = record_of(event)
            if record is not None:
                condemned.update(record.blobs)
        if info.codec_state is not None:
            named.add(info.codec_state)
    return named - condemned


def collect_blobs(store: Store, grace_s: float = DEFAULT_GRACE_S) -> BlobCollection:
    """Delete every blob nothing names that is older than ``grace_s`` seconds."""
    ages = store.blob_ages()
    keep = referenced(store)
    unnamed = {digest: age for digest, age in ages.items() if digest not in keep}
    doomed = sorted(digest for digest, age in unnamed.items() if age >= grace_s)
    store.delete_blobs(doomed)
    return BlobCollection(
        deleted=tuple(doomed), kept=len(ages) - len(doomed), young=len(unnamed) - len(doomed)
    )
