"""A cube's in-RAM vector index: FAISS behind string item ids, with crash-safe snapshots.

The index records the event seq it covers. A snapshot is the FAISS file plus a JSON sidecar
(seq, the hash of event ``seq``, id→label map, checksum of the FAISS file) written with atomic
renames; a snapshot that is torn, stale or from another history is ignored and the index is
rebuilt from the store, so a snapshot can only ever save time, never change an answer.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

import faiss
import numpy as np
from numpy.typing import NDArray

from memos.codecs import VectorCodec

SNAPSHOT_FORMAT = 1


class VectorIndex:
    def __init__(self, codec: VectorCodec, dim: int) -> None:
        self.codec = codec
        self.dim = dim
        self.seq = 0
        self.head_hash = ""
        self.saved_seq = 0
        self._index: Any = faiss.IndexIDMap2(codec.make_index(dim))
        self._labels: dict[str, int] = {}
        self._ids: dict[int, str] = {}
        self._next_label = 0
        self._label_cache: NDArray[np.int64] | None = None

    def __len__(self) -> int:
        return int(self._index.ntotal)

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._labels

    def ids(self) -> set[str]:
        return set(self._labels)

    def upsert(self, ids: Sequence[str], vectors: NDArray[np.float32]) -> None:
        if not ids:
            return
        self._label_cache = None
        self.remove([i for i in ids if i in self._labels])
        labels = np.arange(self._next_label, self._next_label + len(ids), dtype=np.int64)
        self._next_label += len(ids)
        for item_id, label in zip(ids, labels.tolist(), strict=True):
            self._labels[item_id] = label
            self._ids[label] = item_id
        self._index.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), labels)

    def remove(self, ids: Collection[str]) -> None:
        labels = [self._labels.pop(i) for i in ids if i in self._labels]
        if not labels:
            return
        self._label_cache = None
        for label in labels:
            del self._ids[label]
        self._index.remove_ids(np.asarray(labels, dtype=np.int64))

    def search(
        self, query: NDArray[np.float32], k: int, allowed: Collection[str] | None = None
    ) -> list[tuple[str, float]]:
        """The ``k`` nearest ids by inner product, restricted to ``allowed`` when given.

        The search goes to the inner index by position, not through ``IndexIDMap2.search``:
        translating labels there opens an OpenMP section per query, which on a small shared
        machine (torch ships its own OpenMP runtime) costs milliseconds of waiting.
        """
        params = None
        if allowed is not None:
            positions = self._positions_of(allowed)
            if positions.size == 0:
                return []
            selector = faiss.IDSelectorBatch(positions)
            params = faiss.SearchParameters(sel=selector)  # type: ignore[call-arg]
            k = min(k, int(positions.size))
        k = min(k, len(self))
        if k <= 0:
            return []
        matrix = np.ascontiguousarray(query, dtype=np.float32).reshape(1, self.dim)
        scores, found = self._index.index.search(matrix, k, params=params)
        label_at = self._label_at()
        return [
            (self._ids[int(label_at[position])], float(score))
            for score, position in zip(scores[0], found[0], strict=True)
            if position >= 0
        ]

    def _label_at(self) -> NDArray[np.int64]:
        """Position in the inner index -> label; cached until the index changes."""
        if self._label_cache is None:
            self._label_cache = faiss.vector_to_array(self._index.id_map).astype(np.int64)
        return self._label_cache

    def _positions_of(self, ids: Collection[str]) -> NDArray[np.int64]:
        labels = np.fromiter((self._labels[i] for i in ids if i in self._labels), dtype=np.int64)
        return np.flatnonzero(np.isin(self._label_at(), labels)).astype(np.int64)

    # snapshots --------------------------------------------------------------------------

    def save(self, directory: Path, name: str) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        index_path = directory / f"{name}.faiss"
        tmp_index = index_path.with_suffix(".faiss.tmp")
        faiss.write_index(self._index, str(tmp_index))
        _fsync(tmp_index)
        sidecar = {
            "format": SNAPSHOT_FORMAT,
            "codec": self.codec.name,
            "dim": self.dim,
            "seq": self.seq,
            "head_hash": self.head_hash,
            "next_label": self._next_label,
            "labels": self._labels,
            "faiss_sha256": _sha256(tmp_index),
        }
        # The sidecar seals itself too: an edited label map would silently misname results.
        sidecar["sidecar_sha256"] = _sidecar_digest(sidecar)
        meta_path = directory / f"{name}.json"
        tmp_meta = meta_path.with_suffix(".json.tmp")
        tmp_meta.write_text(json.dumps(sidecar), encoding="utf-8")
        _fsync(tmp_meta)
        # The sidecar names the checksum of the index it belongs to, so a crash between the
        # two renames leaves a pair that fails the check and is rebuilt, never a wrong index.
        os.replace(tmp_index, index_path)
        os.replace(tmp_meta, meta_path)
        self.saved_seq = self.seq

    @classmethod
    def load(cls, directory: Path, name: str, codec: VectorCodec, dim: int) -> VectorIndex | None:
        """The saved snapshot, or ``None`` when there is none or it cannot be trusted."""
        index_path, meta_path = directory / f"{name}.faiss", directory / f"{name}.json"
        try:
            sidecar = json.loads(meta_path.read_text(encoding="utf-8"))
            if (
                not isinstance(sidecar, dict)
                or sidecar.pop("sidecar_sha256", None) != _sidecar_digest(sidecar)
                or sidecar.get("format") != SNAPSHOT_FORMAT
                or sidecar.get("codec") != codec.name
                or sidecar.get("dim") != dim
                or sidecar.get("faiss_sha256") != _sha256(index_path)
            ):
                return None
            raw = faiss.read_index(str(index_path))
            index = cls(codec, dim)
            index._index = raw
            index._labels = {str(k): int(v) for k, v in sidecar["labels"].items()}
            index._ids = {v: k for k, v in index._labels.items()}
            index._next_label = int(sidecar["next_label"])
            index.seq = index.saved_seq = int(sidecar["seq"])
            index.head_hash = str(sidecar["head_hash"])
        except (OSError, ValueError, RuntimeError, KeyError, TypeError, AttributeError):
            return None
        if len(index._labels) != len(index):
            return None
        return index


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _sidecar_digest(sidecar: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(sidecar, sort_keys=True).encode("utf-8")).hexdigest()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
