"""The full-precision vectors a lossy codec's candidates are re-ranked with, in files the OS
pages rather than in RAM.

Reading a search's 100 candidates back from the store costs more than the whole code scan of a
10k-item cube, so a cube's index keeps its vectors itself, by slot:

- *saved* rows (slot ``r >= 0``): a file written with the index snapshot, every row in the
  snapshot's position order, flushed to disk and renamed into place before the sidecar that
  names it (by the random token in its header). It is never written again, so processes that
  share a data directory can all map it, and a crash can only leave a file no sidecar names.
- *tail* rows (slot ``-1 - r``): this process's own rows added since, in an unlinked
  temporary file that grows by doubling; a crash leaves nothing of it behind.

The store's vectors stay the committed truth: the rows are derived from them, caught up with
the same events as the codes, and ``verify`` compares them (see memos.plaintext._indexes).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import struct
import tempfile
import weakref
from pathlib import Path
from typing import IO

import numpy as np
from numpy.typing import NDArray

Slots = NDArray[np.int64]
Rows = NDArray[np.float32]

_MAGIC = b"MEMOSRR1"
# magic, dim, rows, token: the token pairs a file with the sidecar that names it
_HEADER = struct.Struct("<8sIQ16s")
_OFFSET = 64  # rows start here, aligned for the mapping
_CHUNK = 4096
_TAIL_START = 1024


class RerankRows:
    def __init__(self, dim: int, scratch: Path | None) -> None:
        self.dim = dim
        self._scratch = scratch
        self._saved: Rows | None = None
        self.token: str | None = None  # of the saved file this process mapped
        self._tail_file: IO[bytes] | None = None
        self._tail: Rows | None = None
        self._tail_len = 0
        self._tail_live = 0  # tail rows some slot still names

    @classmethod
    def open_saved(
        cls, path: Path, dim: int, rows: int, token: str, scratch: Path | None
    ) -> RerankRows | None:
        """The rows of a saved file whose header names ``token``, ``dim`` and ``rows``;
        ``None`` when it is missing or is another save's."""
        opened = cls(dim, scratch)
        try:
            with path.open("rb") as handle:
                fits = _header_fits(handle, dim, rows, token)
                if fits and os.fstat(handle.fileno()).st_size == _OFFSET + rows * dim * 4:
                    opened._map_saved(handle, rows)
                    opened.token = token
                    return opened
        except (OSError, ValueError):
            pass
        return None

    def append(self, vectors: Rows) -> Slots:
        """Slots holding ``vectors`` (new rows at the tail's end)."""
        count = len(vectors)
        self._reserve(self._tail_len + count)
        assert self._tail is not None
        self._tail[self._tail_len : self._tail_len + count] = vectors
        first = self._tail_len
        self._tail_len += count
        self._tail_live += count
        return -1 - np.arange(first, first + count, dtype=np.int64)

    def release(self, slots: Slots) -> None:
        """``slots`` are no longer used (their items were removed or replaced)."""
        self._tail_live -= int(np.count_nonzero(slots < 0))

    def compacted(self, slots: Slots) -> Slots:
        """``slots``, moved to a fresh tail when most of the tail is rows no slot names: with
        no snapshot to save them into (a Redis store), updates would grow the file forever."""
        if self._tail is None or self._tail_len - self._tail_live <= max(
            _TAIL_START, self._tail_live
        ):
            return slots
        old_tail, old_file = self._tail, self._tail_file
        self._tail, self._tail_file, self._tail_len, self._tail_live = None, None, 0, 0
        moved = slots.copy()
        in_tail = np.flatnonzero(slots < 0)
        for start in range(0, len(in_tail), _CHUNK):
            part = in_tail[start : start + _CHUNK]
            moved[part] = self.append(np.asarray(old_tail[-1 - slots[part]]))
        if old_file is not None:
            old_file.close()
        return moved

    def gather(self, slots: Slots) -> Rows:
        """The rows in ``slots``, in that order (a copy)."""
        out = np.empty((len(slots), self.dim), dtype=np.float32)
        saved = slots >= 0
        if saved.any():
            assert self._saved is not None
            out[saved] = self._saved[slots[saved]]
        if not saved.all():
            assert self._tail is not None
            out[~saved] = self._tail[-1 - slots[~saved]]
        return out

    def is_saved_as(self, slots: Slots, path: Path) -> bool:
        """Whether ``path`` still holds exactly these rows: the file this process mapped, in
        slot order, nothing added or dropped since (a save then need not copy them again)."""
        saved = self._saved
        if saved is None or self.token is None or len(slots) != len(saved):
            return False
        if not np.array_equal(slots, np.arange(len(saved))):
            return False
        try:
            with path.open("rb") as handle:
                return _header_fits(handle, self.dim, len(saved), self.token)
        except OSError:
            return False

    def write(self, path: Path, slots: Slots) -> str:
        """Write the rows in ``slots`` to ``path`` (flushed to disk) and map it as the saved
        rows from now on: slot ``i`` is then row ``i``. Returns the file's token."""
        token = secrets.token_hex(16)
        with path.open("w+b") as handle:
            handle.write(_HEADER.pack(_MAGIC, self.dim, len(slots), bytes.fromhex(token)))
            handle.seek(_OFFSET)
            for start in range(0, len(slots), _CHUNK):
                handle.write(self.gather(slots[start : start + _CHUNK]).tobytes())
            handle.flush()
            os.fsync(handle.fileno())
            # mapped through this handle: whatever later lands at ``path``, these are our rows
            self._map_saved(handle, len(slots))
        self.token = token
        self._drop_tail()
        return token

    def _map_saved(self, handle: IO[bytes], rows: int) -> None:
        # a plain view of the mapping: np.memmap's own indexing costs more than the gather
        self._saved = (
            np.memmap(
                handle, dtype=np.float32, mode="r", offset=_OFFSET, shape=(rows, self.dim)
            ).view(np.ndarray)
            if rows
            else np.zeros((0, self.dim), dtype=np.float32)
        )

    def _reserve(self, rows: int) -> None:
        capacity = 0 if self._tail is None else len(self._tail)
        if rows <= capacity:
            return
        capacity = max(_TAIL_START, capacity)
        while capacity < rows:
            capacity *= 2
        if self._tail_file is None:
            if self._scratch is not None:
                self._scratch.mkdir(parents=True, exist_ok=True)
            # kept open for the index's life: the rows live in it, and it is gone with it
            self._tail_file = tempfile.TemporaryFile(  # noqa: SIM115
                prefix=".memos-rows-", dir=self._scratch
            )
            weakref.finalize(self, self._tail_file.close)
        os.ftruncate(self._tail_file.fileno(), capacity * self.dim * 4)
        # the old mapping goes when nothing references it; rows written to it stay in the file
        self._tail = np.memmap(
            self._tail_file, dtype=np.float32, mode="r+", shape=(capacity, self.dim)
        ).view(np.ndarray)

    def _drop_tail(self) -> None:
        self._tail, self._tail_len, self._tail_live = None, 0, 0
        if self._tail_file is not None:
            with contextlib.suppress(OSError):
                self._tail_file.close()
            self._tail_file = None


def _header_fits(handle: IO[bytes], dim: int, rows: int, token: str) -> bool:
    raw = handle.read(_HEADER.size)
    if len(raw) != _HEADER.size:
        return False
    magic, held_dim, held_rows, held_token = _HEADER.unpack(raw)
    return (magic, held_dim, held_rows, held_token.hex()) == (_MAGIC, dim, rows, token)
