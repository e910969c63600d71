"""A cube's in-RAM vector index: a codec's code table behind string item ids, re-ranked
exactly from full-precision vectors, with crash-safe snapshots.

The index records the event seq it covers. A snapshot is the code table file plus a JSON
sidecar (seq, the hash of event ``seq``, the codec with its version and fitted state, the id at
each position, checksums of both files) and, for a lossy codec, the file of full-precision
rows the re-rank reads (see memos.plaintext._rerank_rows; the sidecar names it by its token),
written with atomic renames; a snapshot that is torn, stale or from another history is ignored and
the index rebuilt from the store, so a snapshot can only ever save time, never change an
answer.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import secrets
import threading
from collections.abc import Callable, Collection, Mapping, Sequence
from itertools import repeat
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from memos.codecs import CodeTable, VectorCodec
from memos.plaintext._rerank_rows import RerankRows

# 4: a lossy codec's snapshot also names its full-precision rows file
SNAPSHOT_FORMAT = 4
# A lossy codec's top ``RERANK_FACTOR * k`` candidates (at least ``RERANK_MIN``) are re-scored
# with full-precision vectors: the index's own rows when it keeps them, else the store's.
RERANK_FACTOR = 4
RERANK_MIN = 100

_log = logging.getLogger(__name__)

ExactVectors = Callable[[Sequence[str]], Mapping[str, NDArray[np.float32]]]


class VectorIndex:
    def __init__(
        self,
        codec: VectorCodec,
        dim: int,
        table: CodeTable | None = None,
        *,
        codec_version: int = 0,
        codec_state: str | None = None,
        rows: RerankRows | None = None,
    ) -> None:
        """``rows``: where the index keeps the full-precision vectors of a lossy codec for
        the re-rank (see :meth:`keeping_rows`); without them the re-rank asks the store."""
        self.codec = codec
        self.dim = dim
        # which configuration of the cube the codes were made with (see CubeInfo)
        self.codec_version = codec_version
        self.codec_state = codec_state
        self.seq = 0
        self.head_hash = ""
        self.saved_seq = 0
        self._table = table if table is not None else codec.new_table(dim)
        self._id_at: list[str] = []
        self._position: dict[str, int] = {}
        self._rows = None if codec.exact else rows
        self._slots = np.zeros(0, dtype=np.int64)  # the row of each position in ``_rows``
        # One process may search while another thread catches the index up: codes and the
        # id list must change together, never under a reader.
        self._lock = threading.RLock()

    def __len__(self) -> int:
        return len(self._id_at)

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._position

    def ids(self) -> set[str]:
        return set(self._position)

    @classmethod
    def keeping_rows(
        cls,
        codec: VectorCodec,
        dim: int,
        scratch: Path | None,
        *,
        codec_version: int = 0,
        codec_state: str | None = None,
    ) -> VectorIndex:
        """An empty index that keeps its items' full-precision rows for the re-rank (a lossy
        codec's), adding new ones in a temporary file in ``scratch``."""
        rows = RerankRows(dim, scratch)
        return cls(codec, dim, codec_version=codec_version, codec_state=codec_state, rows=rows)

    @property
    def keeps_rows(self) -> bool:
        return self._rows is not None

    def rows_of(self, ids: Sequence[str]) -> NDArray[np.float32]:
        """The full-precision rows the re-rank reads for ``ids`` (held ids, index rows kept)."""
        with self._lock:
            assert self._rows is not None
            positions = np.fromiter(map(self._position.__getitem__, ids), dtype=np.int64)
            return self._rows.gather(self._slots[positions])

    @property
    def nbytes(self) -> int:
        """RAM held by the codes (ids and bookkeeping not counted)."""
        return self._table.nbytes

    def upsert(self, ids: Sequence[str], vectors: NDArray[np.float32]) -> None:
        if not ids:
            return
        with self._lock:
            self.remove([i for i in ids if i in self._position])
            matrix = np.ascontiguousarray(vectors, dtype=np.float32)
            self._table.add(matrix)
            if self._rows is not None:
                self._slots = np.concatenate([self._slots, self._rows.append(matrix)])
                self._slots = self._rows.compacted(self._slots)
            for item_id in ids:
                self._position[item_id] = len(self._id_at)
                self._id_at.append(item_id)

    def remove(self, ids: Collection[str]) -> None:
        with self._lock:
            gone = {i for i in ids if i in self._position}
            if not gone:
                return
            positions = np.fromiter((self._position[i] for i in gone), dtype=np.int64)
            self._table.remove(np.sort(positions))
            if self._rows is not None:
                self._rows.release(self._slots[positions])
                self._slots = np.delete(self._slots, positions)
            self._id_at = [i for i in self._id_at if i not in gone]
            self._position = {item_id: n for n, item_id in enumerate(self._id_at)}

    def search(
        self,
        query: NDArray[np.float32],
        k: int,
        allowed: Collection[str] | None = None,
        exact: ExactVectors | None = None,
    ) -> list[tuple[str, float]]:
        """The ``k`` nearest ids by inner product, restricted to ``allowed`` when given.

        With a lossy codec and ``exact`` (full-precision vectors by id), the top candidates
        are re-scored exactly, so the answer equals an exact search whenever the true top
        ``k`` are among the candidates.
        """
        rerank = exact is not None and not self.codec.exact
        matrix = np.ascontiguousarray(query, dtype=np.float32).reshape(self.dim)
        ranked, rescored = self._candidates(matrix, k, allowed, rerank)
        if rerank and not rescored and exact is not None and ranked:
            ranked = _rescored(ranked, matrix, exact)
        # equal scores in id order, so the answer never depends on positions in the table
        return sorted(ranked, key=lambda pair: (-pair[1], pair[0]))[:k]

    def _candidates(
        self, query: NDArray[np.float32], k: int, allowed: Collection[str] | None, rerank: bool
    ) -> tuple[list[tuple[str, float]], bool]:
        """The codec's best candidates, and whether their scores are already exact (re-scored
        from the index's own rows, read by position under the lock that keeps them aligned)."""
        with self._lock:
            positions = None
            if allowed is not None:
                # map() keeps the per-id lookup in C: a filter can allow 100k ids
                found = np.fromiter(
                    map(self._position.get, allowed, repeat(-1)), dtype=np.int64, count=len(allowed)
                )
                positions = found[found >= 0]
            limit = len(self) if positions is None else int(positions.size)
            wanted = min(max(RERANK_FACTOR * k, RERANK_MIN) if rerank else k, limit)
            if wanted <= 0:
                return [], False
            scores, found = self._table.search(query, wanted, positions)
            own = rerank and self._rows is not None
            if own and len(found) > k:
                assert self._rows is not None
                scores = self._rows.gather(self._slots[found]) @ query
                # only the exact top k (and any tied with the k-th) can be in the answer
                keep = scores >= np.partition(scores, len(scores) - k)[len(scores) - k]
                scores, found = scores[keep], found[keep]
            elif own and len(found):
                assert self._rows is not None
                scores = self._rows.gather(self._slots[found]) @ query
            return [
                (self._id_at[int(p)], float(s)) for s, p in zip(scores, found, strict=True)
            ], own

    # snapshots --------------------------------------------------------------------------

    def save(self, directory: Path, name: str, *, with_rows: bool = True) -> bool:
        """Write a snapshot; ``False`` when the disk refused it. A snapshot only saves time on
        the next open, so a failure here must never fail the write that asked for it: the
        event is committed, and the index is rebuilt from the store when no snapshot fits.
        ``with_rows=False`` leaves the full-precision rows out (a copy only compared, never
        loaded)."""
        # Temporary names are unique to this writer: processes (and threads of one process
        # with indexes of their own) snapshot the same cube into the same folder.
        token = f"{os.getpid()}.{threading.get_ident()}.{secrets.token_hex(4)}"
        paths = {suffix: directory / f"{name}.{suffix}" for suffix in ("rows", "codes", "json")}
        temps = {suffix: directory / f".{name}.{suffix}.{token}.tmp" for suffix in paths}
        with self._lock:
            try:
                directory.mkdir(parents=True, exist_ok=True)
                rows_token = self._save_rows(paths["rows"], temps["rows"]) if with_rows else None
                self._write_snapshot(temps["codes"], temps["json"], rows_token)
                # The sidecar names the checksum of the table and the token of the rows it
                # belongs to, so a crash (or another writer) between the renames leaves a set
                # that fails the check and is rebuilt, never a wrong index.
                for suffix in paths:
                    if temps[suffix].exists():
                        os.replace(temps[suffix], paths[suffix])
            except OSError as error:
                _log.warning("snapshot of %s not written: %s", name, error.strerror or error)
                for leftover in temps.values():
                    with contextlib.suppress(OSError):  # the folder itself may be what failed
                        leftover.unlink(missing_ok=True)
                return False
            self.saved_seq = self.seq
            return True

    def _save_rows(self, path: Path, tmp: Path) -> str | None:
        """The token of the rows file the snapshot names: the one already at ``path`` when it
        holds exactly the index's rows, else a new one written to ``tmp``."""
        if self._rows is None:
            return None
        if self._rows.is_saved_as(self._slots, path):
            return self._rows.token
        token = self._rows.write(tmp, self._slots)
        self._slots = np.arange(len(self._slots), dtype=np.int64)
        return token

    def _write_snapshot(self, tmp_table: Path, tmp_meta: Path, rows_token: str | None) -> None:
        self._table.save(tmp_table)
        _fsync(tmp_table)
        sidecar = {
            "format": SNAPSHOT_FORMAT,
            "codec": self.codec.name,
            "codec_version": self.codec_version,
            "codec_state": self.codec_state,
            "dim": self.dim,
            "seq": self.seq,
            "head_hash": self.head_hash,
            "ids": self._id_at,
            "table_sha256": _sha256(tmp_table),
            "rows_token": rows_token,
        }
        # The sidecar seals itself too: an edited id list would silently misname results.
        sidecar["sidecar_sha256"] = _sidecar_digest(sidecar)
        tmp_meta.write_text(json.dumps(sidecar), encoding="utf-8")
        _fsync(tmp_meta)

    @classmethod
    def load(
        cls,
        directory: Path,
        name: str,
        codec: VectorCodec,
        dim: int,
        *,
        codec_version: int = 0,
        codec_state: str | None = None,
    ) -> VectorIndex | None:
        """The saved snapshot, or ``None`` when there is none, it cannot be trusted or it was
        made with another codec configuration (name, version or fitted state)."""
        table_path, meta_path = directory / f"{name}.codes", directory / f"{name}.json"
        try:
            sidecar = json.loads(meta_path.read_text(encoding="utf-8"))
            if not _sidecar_fits(sidecar, codec, dim, table_path) or (
                sidecar.get("codec_version"),
                sidecar.get("codec_state"),
            ) != (codec_version, codec_state):
                return None
            ids = [str(i) for i in sidecar["ids"]]
            rows = None
            if not codec.exact:
                rows = _saved_rows(directory / f"{name}.rows", dim, len(ids), sidecar)
                if rows is None:
                    return None  # missing or another save's: rebuilt from the store
            index = cls(
                codec,
                dim,
                codec.load_table(table_path, dim),
                codec_version=codec_version,
                codec_state=codec_state,
                rows=rows,
            )
            index._slots = np.arange(len(ids), dtype=np.int64)
            index._id_at = ids
            index._position = {item_id: n for n, item_id in enumerate(index._id_at)}
            index.seq = index.saved_seq = int(sidecar["seq"])
            index.head_hash = str(sidecar["head_hash"])
        except (OSError, ValueError, RuntimeError, KeyError, TypeError, AttributeError):
            return None
        if len(index._position) != len(index._id_at) or len(index._table) != len(index._id_at):
            return None
        return index


def _saved_rows(path: Path, dim: int, count: int, sidecar: dict[str, Any]) -> RerankRows | None:
    token = sidecar.get("rows_token")
    if not isinstance(token, str):
        return None
    # The rows are not hashed on open (a million rows is 1.5 GB to read): they were on disk
    # before the sidecar that names them, so a crash cannot tear them, and verify compares
    # every row with the store's vector.
    return RerankRows.open_saved(path, dim, count, token, scratch=path.parent)


def _rescored(
    ranked: list[tuple[str, float]], query: NDArray[np.float32], exact: ExactVectors
) -> list[tuple[str, float]]:
    vectors = exact([item_id for item_id, _ in ranked])
    return [
        (item_id, float(vectors[item_id] @ query) if item_id in vectors else score)
        for item_id, score in ranked
    ]


def _sidecar_fits(sidecar: Any, codec: VectorCodec, dim: int, table_path: Path) -> bool:
    return (
        isinstance(sidecar, dict)
        and sidecar.pop("sidecar_sha256", None) == _sidecar_digest(sidecar)
        and sidecar.get("format") == SNAPSHOT_FORMAT
        and sidecar.get("codec") == codec.name
        and sidecar.get("dim") == dim
        and isinstance(sidecar.get("ids"), list)
        and sidecar.get("table_sha256") == _sha256(table_path)
    )


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
