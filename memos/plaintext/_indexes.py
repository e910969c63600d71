"""Keeps each cube's in-RAM vector index current with the store's event log.

An index knows the seq it covers. Before every search, and after every commit, the events past
that seq name the items that changed; those items are re-read from the store (by anyone: this
process, another process, a restarted one) and upserted or removed. The same catch-up replays
the tail after a snapshot is loaded, so "open", "another writer" and "our own write" share one
code path. An index is made for one codec configuration (codec, version, fitted state); when
the cube's configuration moves on, a new index is built from the store and swapped in whole.

A lossy codec's index also keeps the items' full-precision vectors for the exact re-rank, in
memory-mapped files next to its snapshot (or, with no snapshot folder, as with a Redis store
shared by several processes, in a temporary file of this process), caught up with the same
events as the codes; ``verify`` compares them with the store's vectors.
"""

from __future__ import annotations

import json
import tempfile
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import faiss
import numpy as np
from numpy.typing import NDArray
from safetensors import SafetensorError, safe_open

from memos.codecs import VectorCodec
from memos.codecs._fp8 import decode_fp8
from memos.core._store import Store
from memos.core._types import CubeInfo, ItemFilter, ItemStatus
from memos.errors import StorageError
from memos.plaintext._codec_state import load_codec
from memos.plaintext._vector_index import VectorIndex

if TYPE_CHECKING:
    from memos.core._store import Vector

# Snapshot once the tail since the last one reaches this many events or this share of the index.
_SNAPSHOT_MIN_EVENTS = 1000
_SNAPSHOT_SHARE = 0.25
_SNAPSHOT_SUFFIXES = (".json", ".codes", ".rows")


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

    def discard(self, cube: str) -> None:
        """Drop the cube's index and delete its snapshot: the next search builds it again from
        the store (after an erasure, no code or row of an erased memory is left behind)."""
        with self._lock:
            self._indexes.pop(cube, None)
            if self._snapshot_dir is not None:
                for suffix in _SNAPSHOT_SUFFIXES:
                    (self._snapshot_dir / f"{cube}{suffix}").unlink(missing_ok=True)

    def save_all(self) -> None:
        with self._lock:
            for name, index in self._indexes.items():
                if index.seq != index.saved_seq:
                    self._save(index, name)

    def check(
        self, cube: CubeInfo, vectors: Mapping[str, Vector], seq: int
    ) -> tuple[int, str] | None:
        """Check the cube's snapshot, as opening would load it, against the store as verified
        at ``seq``: with its tail replayed it must hold exactly the items of ``vectors`` (the
        active items' verified vectors), each with the codes those vectors encode to.

        The snapshot's own checksums only catch accidents: whoever can write the snapshot
        folder can also write checksums that fit. A snapshot that differs is deleted, and the
        index in use afterwards is the snapshot just checked or, failing that, one rebuilt on
        the next search. Returns the seq the snapshot covered and what differed."""
        if self._snapshot_dir is None:
            return self._check_in_use(cube, vectors, seq)
        codec = load_codec(self._store, cube)
        loaded = self._snapshot(cube, codec)
        covered = 0 if loaded is None else loaded.seq
        if loaded is not None and covered <= seq:
            self._catch_up(loaded, cube.name)
        if loaded is None or loaded.seq != seq:
            # none, or the log moved on while it was verified: what is in use is not judged,
            # it is dropped and the next search opens the cube again
            self.forget(cube.name)
            return None
        problem = self._difference(loaded, cube, codec, vectors)
        with self._lock:
            in_use = self._indexes.get(cube.name)
            if problem is not None:
                self._indexes.pop(cube.name, None)
                for suffix in _SNAPSHOT_SUFFIXES:
                    (self._snapshot_dir / f"{cube.name}{suffix}").unlink(missing_ok=True)
            elif in_use is None or in_use.codec_version <= loaded.codec_version:
                self._indexes[cube.name] = loaded
        if problem is None:
            return None
        return covered, f"the index snapshot of cube {cube.name!r} {problem}; it was discarded"

    def _check_in_use(
        self, cube: CubeInfo, vectors: Mapping[str, Vector], seq: int
    ) -> tuple[int, str] | None:
        """With no snapshot the index in use was built from the store, but the rows it
        re-ranks with lie in a file of this process: they are compared with the store's, and
        an index that differs is dropped (the next search builds it again)."""
        with self._lock:
            index = self._indexes.get(cube.name)
        if index is None or not index.keeps_rows:
            return None
        problem = None if index.seq != seq else _rows_difference(index, vectors)
        if index.seq != seq or problem is not None:
            self.forget(cube.name)
        if problem is None:
            return None
        return seq, f"the vector index of cube {cube.name!r} {problem}; it was discarded"

    def _difference(
        self,
        loaded: VectorIndex,
        cube: CubeInfo,
        codec: VectorCodec,
        vectors: Mapping[str, Vector],
    ) -> str | None:
        held, indexed = loaded.ids(), set(vectors)
        if held - indexed:
            return f"holds item {min(held - indexed)}, which is not an active item"
        if indexed - held:
            return f"lacks active item {min(indexed - held)}"
        rows = _rows_difference(loaded, vectors)
        if rows is not None:
            return rows
        assert self._snapshot_dir is not None
        with tempfile.TemporaryDirectory(dir=self._snapshot_dir, prefix=".check-") as scratch:
            saved_seq = loaded.saved_seq
            snapshot = _saved(loaded, Path(scratch) / "snapshot")
            loaded.saved_seq = saved_seq  # saved to scratch only: the real one is still due
            rebuilt = VectorIndex(
                codec, cube.dim, codec_version=cube.codec_version, codec_state=cube.codec_state
            )
            order = [str(item_id) for item_id in snapshot["ids"]]
            for start in range(0, len(order), 4096):
                chunk = order[start : start + 4096]
                rebuilt.upsert(chunk, np.stack([vectors[item_id] for item_id in chunk]))
            rebuilt.seq, rebuilt.head_hash = loaded.seq, loaded.head_hash
            again = _saved(rebuilt, Path(scratch) / "rebuilt")
            codes, codes_again = snapshot.pop("codes"), again.pop("codes")
            if again != snapshot or not _same_codes(codes, codes_again):
                return "holds codes that differ from those of the store's vectors"
        return None

    def _open(self, cube: CubeInfo) -> VectorIndex:
        codec = load_codec(self._store, cube)
        loaded = self._snapshot(cube, codec)
        return loaded if loaded is not None else self._rebuild(cube, codec)

    def _snapshot(self, cube: CubeInfo, codec: VectorCodec) -> VectorIndex | None:
        """The cube's saved snapshot when it passes its checksums, was made with the cube's
        codec configuration and covers a seq whose event the log still holds."""
        if self._snapshot_dir is None:
            return None
        loaded = VectorIndex.load(
            self._snapshot_dir,
            cube.name,
            codec,
            cube.dim,
            codec_version=cube.codec_version,
            codec_state=cube.codec_state,
        )
        if loaded is None or not self._matches_history(loaded, cube.name):
            return None
        return loaded

    def _matches_history(self, index: VectorIndex, cube: str) -> bool:
        """A snapshot counts only if the log still has its seq with the same hash."""
        if index.seq == 0:
            return True
        events = self._store.events(cube, after_seq=index.seq - 1, until_seq=index.seq)
        return len(events) == 1 and events[0].hash == index.head_hash

    def _rebuild(self, cube: CubeInfo, codec: VectorCodec | None = None) -> VectorIndex:
        if codec is None:
            codec = load_codec(self._store, cube)
        index = VectorIndex.keeping_rows(
            codec,
            cube.dim,
            self._snapshot_dir,
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


def _saved(index: VectorIndex, directory: Path) -> dict[str, Any]:
    """``index`` saved into ``directory``, as what compares two indexes position by position:
    its codec, its ids in order and the vectors its codes decode to."""
    try:
        index.save(directory, "index", with_rows=False)
        sidecar = json.loads((directory / "index.json").read_text(encoding="utf-8"))
        codes = _decoded(directory / "index.codes")
    except (OSError, ValueError) as exc:
        raise StorageError(f"cannot check the index snapshot in {directory}: {exc}") from exc
    if not isinstance(sidecar, dict):
        raise StorageError(f"cannot check the index snapshot in {directory}")
    return {"codes": codes, **{key: sidecar.get(key) for key in ("ids", "codec", "dim")}}


def _rows_difference(index: VectorIndex, vectors: Mapping[str, Vector]) -> str | None:
    """What differs between the full-precision rows ``index`` re-ranks with and ``vectors``
    (the store's, verified): each must be the same float32 vector, bit for bit."""
    if not index.keeps_rows:
        return None
    held, indexed = index.ids(), set(vectors)
    if held != indexed:
        return f"holds items other than the active ones ({min(held ^ indexed)})"
    order = sorted(indexed)
    for start in range(0, len(order), 4096):
        chunk = order[start : start + 4096]
        rows = index.rows_of(chunk)
        differs = np.any(rows != np.stack([vectors[item_id] for item_id in chunk]), axis=1)
        if differs.any():
            item_id = chunk[int(np.argmax(differs))]
            return f"holds a re-rank vector of item {item_id} that differs from the store's"
    return None


def _decoded(path: Path) -> NDArray[np.float32]:
    """The vectors a saved code table holds, by position: an fp8 table's codes times their
    scales (a PCA table's are projected), a FAISS table's reconstructions."""
    try:
        with safe_open(str(path), framework="numpy") as table:
            return decode_fp8(table.get_tensor("codes"), table.get_tensor("scales"))
    except SafetensorError:
        pass  # a FAISS index
    try:
        index = faiss.read_index(str(path))
        if isinstance(index, faiss.IndexIVF):
            index.make_direct_map()  # the ids are the positions 0..n-1
        return np.asarray(index.reconstruct_n(0, index.ntotal), dtype=np.float32)
    except RuntimeError as exc:
        raise ValueError(f"unreadable code table {path}: {exc}") from exc


# Two encodings of the same vectors may differ by one quantisation step: a projection or a
# nearest-list search computed in batches of another size rounds its last bit differently, and
# an element next to a rounding boundary then takes the neighbouring code. One step of fp8 e4m3
# is at most an eighth of the value; one of an 8-bit scalar quantiser is below 0.01 for unit
# vectors and their residuals. A snapshot forged to change what a search finds moves codes
# much further than that.
_CODE_STEP_RELATIVE = 0.125
_CODE_STEP_ABSOLUTE = 0.01


def _same_codes(held: NDArray[np.float32], rebuilt: NDArray[np.float32]) -> bool:
    if held.shape != rebuilt.shape:
        return False
    bound = _CODE_STEP_RELATIVE * np.maximum(np.abs(held), np.abs(rebuilt)) + _CODE_STEP_ABSOLUTE
    return bool(np.all(np.abs(held - rebuilt) <= bound))
