"""Keeps each cube's in-RAM vector index current with the store's event log.

An index knows the seq it covers. Before every search, and after every commit, the events past
that seq name the items that changed; those items are re-read from the store (by anyone: this
process, another process, a restarted one) and upserted or removed. The same catch-up replays
the tail after a snapshot is loaded, so "open", "another writer" and "our own write" share one
code path. An index is made for one codec configuration (codec, version, fitted state); when
the cube's configuration moves on, a new index is built from the store and swapped in whole.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from memos._codec_state import load_codec
from memos._store import Store
from memos._types import CubeInfo, ItemFilter, ItemStatus
from memos._vector_index import VectorIndex
from memos.codecs import VectorCodec

# Snapshot once the tail since the last one reaches this many events or this share of the index.
_SNAPSHOT_MIN_EVENTS = 1000
_SNAPSHOT_SHARE = 0.25


class CubeIndexes:
    def __init__(self, store: Store, snapshot_dir: Path | None) -> None:
        self._store = store
        self._snapshot_dir = snapshot_dir
        self._indexes: dict[str, VectorIndex] = {}
        self._lock = threading.RLock()

    def current(self, cube: CubeInfo) -> VectorIndex:
        """The cube's index, caught up with every event committed so far."""
        with self._lock:
            index = self._indexes.get(cube.name)
            # An index newer than ``cube`` (a caller's stale read) is kept, never downgraded.
            if index is None or index.codec_version < cube.codec_version:
                index = self._open(cube)
                self._indexes[cube.name] = index
            self._catch_up(index, cube.name)
            self._maybe_snapshot(index, cube.name)
            return index

    def build(self, cube: CubeInfo, codec: VectorCodec | None = None) -> VectorIndex:
        """A new index of the cube's active vectors under ``cube``'s configuration, not yet
        in use: readers keep searching the current one until :meth:`install`."""
        return self._rebuild(cube, codec)

    def install(self, cube: CubeInfo, index: VectorIndex) -> VectorIndex:
        """Swap ``index`` in for the cube, catch it up and snapshot it."""
        with self._lock:
            self._indexes[cube.name] = index
            self._catch_up(index, cube.name)
            self._save(index, cube.name)
            return index

    def forget(self, cube: str) -> None:
        with self._lock:
            self._indexes.pop(cube, None)

    def save_all(self) -> None:
        with self._lock:
            for name, index in self._indexes.items():
                if index.seq != index.saved_seq:
                    self._save(index, name)

    def _open(self, cube: CubeInfo) -> VectorIndex:
        codec = load_codec(self._store, cube)
        if self._snapshot_dir is not None:
            loaded = VectorIndex.load(
                self._snapshot_dir,
                cube.name,
                codec,
                cube.dim,
                codec_version=cube.codec_version,
                codec_state=cube.codec_state,
            )
            if loaded is not None and self._matches_history(loaded, cube.name):
                return loaded
        return self._rebuild(cube, codec)

    def _matches_history(self, index: VectorIndex, cube: str) -> bool:
        """A snapshot counts only if the log still has its seq with the same hash."""
        if index.seq == 0:
            return True
        events = self._store.events(cube, after_seq=index.seq - 1, until_seq=index.seq)
        return len(events) == 1 and events[0].hash == index.head_hash

    def _rebuild(self, cube: CubeInfo, codec: VectorCodec | None = None) -> VectorIndex:
        if codec is None:
            codec = load_codec(self._store, cube)
        index = VectorIndex(
            codec,
            cube.dim,
            codec_version=cube.codec_version,
            codec_state=cube.codec_state,
        )
        head_seq, head_hash = self._store.head(cube.name)
        ids = self._store.filter_item_ids(cube.name, ItemFilter())
        self._upsert_from_store(index, ids, cube.name)
        index.seq, index.head_hash = head_seq, head_hash
        return index

    def _catch_up(self, index: VectorIndex, cube: str) -> None:
        changed, last_seq = self._store.changed_since(cube, index.seq)
        if last_seq == index.seq:
            return
        items = self._store.get_items(sorted(changed), cube=cube)
        active = [i for i in sorted(changed) if i in items and items[i].status == ItemStatus.ACTIVE]
        index.remove(changed.difference(active))
        self._upsert_from_store(index, active, cube)
        index.seq = last_seq
        index.head_hash = self._hash_of(cube, last_seq) or index.head_hash

    def _hash_of(self, cube: str, seq: int) -> str | None:
        """The hash of the cube's event ``seq``: the head's (a small read), unless another
        write landed since; then the event itself."""
        head_seq, head_hash = self._store.head(cube)
        if head_seq == seq:
            return head_hash
        events = self._store.events(cube, after_seq=seq - 1, until_seq=seq)
        return events[0].hash if events else None

    def _upsert_from_store(self, index: VectorIndex, ids: list[str], cube: str) -> None:
        for start in range(0, len(ids), 4096):
            chunk = ids[start : start + 4096]
            vectors = self._store.get_vectors(chunk, cube=cube)
            present = [i for i in chunk if i in vectors]
            if present:
                index.upsert(present, np.stack([vectors[i] for i in present]))

    def _maybe_snapshot(self, index: VectorIndex, cube: str) -> None:
        tail = index.seq - index.saved_seq
        if tail >= max(_SNAPSHOT_MIN_EVENTS, int(_SNAPSHOT_SHARE * len(index))):
            self._save(index, cube)

    def _save(self, index: VectorIndex, cube: str) -> None:
        if self._snapshot_dir is not None:
            index.save(self._snapshot_dir, cube)
