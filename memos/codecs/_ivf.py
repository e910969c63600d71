"""``ivf{nlist}+sq8`` and ``ivf{nlist}+fp16``: a partitioned index for large cubes.

A flat scan reads every code on every search, which at a million vectors is the wrong tool. An
inverted file (FAISS ``IndexIVFScalarQuantizer``, inner product) splits the vectors into
``nlist`` lists around k-means centroids trained on the cube's own vectors; a search scans only
the ``nprobe`` lists nearest the query. Each vector is held as its residual from its list's
centroid in 8-bit scalar-quantised (``sq8``: ``d`` bytes) or half-precision (``fp16``) codes,
plus an 8-byte id.

The fitted state is what FAISS trains, as float32 arrays: the ``centroids`` (``nlist × d``)
and, for ``sq8``, the quantiser's ``ranges`` over the residuals. ``make_codec(name, state)``
rebuilds the same trained, empty index from them. Until fitted (a cube needs ``fit_min`` =
39 vectors per list, FAISS's rule for k-means), tables are exact fp32.

Inverted lists are not positional, but a :class:`CodeTable` is: the id FAISS stores with each
vector *is* its position, and a removal renumbers the ids behind it, in place, so positions stay
``0..n-1`` in insertion order without a position map in RAM (8 bytes a vector saved).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import faiss
import numpy as np
from numpy.typing import NDArray

from memos.codecs._common import fit_sample
from memos.codecs._faiss import FaissTable, exact_table, load_faiss_table
from memos.codecs._protocol import CodecState, CodeTable, Positions, Vectors
from memos.errors import InvalidInput

# Lists a search scans (all of them when the codec has fewer). At a million vectors in 4096
# lists, 96 gave recall@10 0.981 after re-rank at 2.0 ms/query (64: 0.975 at 1.5 ms); see
# BENCHMARKS.md. benchmarks/ivf_scale.py sweeps it through ``IvfTable.nprobe``.
NPROBE = 96
# FAISS's k-means wants at least 39 training vectors per centroid.
FIT_PER_LIST = 39
# Fitted on a seeded sample of up to this many of the cube's vectors (more when ``nlist``
# needs more: never fewer than ``fit_min``).
FIT_SAMPLE = 200_000
NLIST_MAX = 65_536
# The inverted lists grow like ``std::vector`` (capacity doubles), so up to half of what they
# hold can be slack; the table copies itself compact when the slack passes this share.
SLACK_SHARE = 0.125
ENCODINGS = ("sq8", "fp16")
_ID_BYTES = 8
# A filter allowing at least 1 in this many positions is passed to FAISS as a bitmap.
_BITMAP_FROM = 64
_QUANTISERS = {"sq8": faiss.ScalarQuantizer.QT_8bit, "fp16": faiss.ScalarQuantizer.QT_fp16}
_CENTROIDS, _RANGES = "centroids", "ranges"


def ivf_name(nlist: int, encoding: str = "sq8") -> str:
    return f"ivf{nlist}+{encoding}"


class IvfTable:
    """An inverted file whose ids are the positions of the vectors (see the module doc)."""

    def __init__(self, index: Any, nprobe: int = NPROBE) -> None:
        self._index = index
        self.nlist = int(index.nlist)
        self.nprobe = nprobe
        self._sizes = self._list_sizes()
        # what the lists' buffers can hold without growing (mirrors std::vector's doubling)
        self._capacity = self._sizes.copy()

    def __len__(self) -> int:
        return int(self._index.ntotal)

    @property
    def index(self) -> Any:
        """The FAISS index holding the codes."""
        return self._index

    @property
    def nbytes(self) -> int:
        """The inverted lists' codes and ids (the centroids are the codec's state)."""
        return len(self) * (int(self._index.code_size) + _ID_BYTES)

    @property
    def slack_bytes(self) -> int:
        """Bytes the lists have allocated beyond what they hold."""
        spare = int((self._capacity - self._sizes).sum())
        return spare * (int(self._index.code_size) + _ID_BYTES)

    def add(self, vectors: Vectors) -> None:
        matrix = np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1, self._index.d)
        if not len(matrix):
            return
        lists = np.ascontiguousarray(self._index.quantizer.assign(matrix, 1).reshape(-1))
        ids = np.arange(len(self), len(self) + len(matrix), dtype=np.int64)
        self._index.add_core(
            len(matrix), faiss.swig_ptr(matrix), faiss.swig_ptr(ids), faiss.swig_ptr(lists)
        )
        grown = self._sizes + np.bincount(lists, minlength=self.nlist)
        # FAISS appends one entry at a time: a full list doubles its buffer (an empty one
        # takes one entry).
        base = np.maximum(self._capacity, 1)
        full = grown > self._capacity
        doublings = np.ceil(np.log2(grown[full] / base[full])).astype(np.int64)
        self._capacity[full] = base[full] << doublings
        self._sizes = grown
        self._compact_when_slack(SLACK_SHARE)

    def remove(self, positions: Positions) -> None:
        gone = np.unique(np.asarray(positions, dtype=np.int64))
        if not gone.size:
            return
        self._index.remove_ids(faiss.IDSelectorBatch(gone))
        invlists = self._index.invlists
        for list_no in range(self.nlist):
            size = invlists.list_size(list_no)
            self._sizes[list_no] = size
            if size:
                # a view of the list's ids: each drops by the removed positions before it
                ids = faiss.rev_swig_ptr(invlists.get_ids(list_no), size)
                ids -= np.searchsorted(gone, ids)
        self._compact_when_slack(SLACK_SHARE)

    def search(
        self, query: Vectors, k: int, allowed: Positions | None = None
    ) -> tuple[NDArray[np.float32], Positions]:
        matrix = np.ascontiguousarray(query, dtype=np.float32).reshape(1, -1)
        selector = None
        nprobe = min(self.nprobe, self.nlist)
        wanted = min(k, len(self))
        if allowed is not None:
            selector, _bits = self._selector(np.asarray(allowed, dtype=np.int64))
            wanted = min(k, int(allowed.size))
            # A filter keeps a share of every list: probe more lists in proportion, so about
            # as many allowed vectors are scanned as an unfiltered search scans.
            share = max(int(allowed.size), 1) / max(len(self), 1)
            nprobe = min(self.nlist, math.ceil(nprobe / share))
        scores, positions = self._search(matrix, k, nprobe, selector)
        if len(positions) < wanted and nprobe < self.nlist:
            # the probed lists held too few (allowed) vectors: scan them all
            scores, positions = self._search(matrix, k, self.nlist, selector)
        return scores, positions

    def _selector(self, allowed: Positions) -> tuple[Any, NDArray[np.uint8] | None]:
        """A FAISS selector of ``allowed`` positions (and the bitmap it reads, to keep alive):
        a hash set for a few, a bitmap (``n / 8`` bytes, quicker to build) for many."""
        if allowed.size * _BITMAP_FROM < len(self):
            return faiss.IDSelectorBatch(allowed), None
        mask = np.zeros(len(self), dtype=bool)
        mask[allowed] = True
        bits = np.packbits(mask, bitorder="little")
        return faiss.IDSelectorBitmap(len(self), faiss.swig_ptr(bits)), bits

    def _search(
        self, matrix: NDArray[np.float32], k: int, nprobe: int, selector: Any
    ) -> tuple[NDArray[np.float32], Positions]:
        params = faiss.SearchParametersIVF(sel=selector, nprobe=nprobe)  # type: ignore[call-arg]
        scores, positions = self._index.search(matrix, k, params=params)
        keep = positions[0] >= 0
        return scores[0][keep], positions[0][keep].astype(np.int64)

    def save(self, path: Path) -> None:
        self._compact_when_slack(0.0)
        faiss.write_index(self._index, str(path))

    def compact(self) -> None:
        """Copy the lists into buffers of exactly their size (they grow by doubling)."""
        self._index = faiss.clone_index(self._index)
        self._capacity = self._sizes.copy()

    def _compact_when_slack(self, share: float) -> None:
        spare = int((self._capacity - self._sizes).sum())
        if spare > share * len(self):
            self.compact()

    def _list_sizes(self) -> NDArray[np.int64]:
        invlists = self._index.invlists
        return np.fromiter(
            (invlists.list_size(i) for i in range(self.nlist)), dtype=np.int64, count=self.nlist
        )


class IvfCodec:
    """An inverted file of ``nlist`` lists with ``encoding`` codes (``sq8`` or ``fp16``)."""

    def __init__(self, nlist: int, encoding: str = "sq8", state: CodecState | None = None):
        if not 1 <= nlist <= NLIST_MAX:
            raise InvalidInput(f"an IVF codec has 1 to {NLIST_MAX} lists, not {nlist}")
        if encoding not in ENCODINGS:
            raise InvalidInput(f"an IVF codec encodes {' or '.join(ENCODINGS)}, not {encoding!r}")
        self.nlist = nlist
        self.encoding = encoding
        self.name = ivf_name(nlist, encoding)
        self.fit_min = FIT_PER_LIST * nlist
        self.fit_sample = max(self.fit_min, FIT_SAMPLE)
        self._centroids: NDArray[np.float32] | None = None
        self._ranges: NDArray[np.float32] | None = None
        if state is not None:
            self._centroids, self._ranges = self._checked_state(state)

    def _checked_state(
        self, state: CodecState
    ) -> tuple[NDArray[np.float32], NDArray[np.float32] | None]:
        keys = {_CENTROIDS, _RANGES} if self.encoding == "sq8" else {_CENTROIDS}
        if set(state) != keys:
            raise ValueError(f"codec {self.name} state holds {sorted(state)}, not {sorted(keys)}")
        arrays = {key: state[key] for key in keys}
        for key, array in arrays.items():
            if (
                not isinstance(array, np.ndarray)
                or array.dtype != np.float32
                or array.size == 0
                or not np.isfinite(array).all()
            ):
                raise ValueError(f"codec {self.name} state {key!r} is not finite float32")
        centroids = np.ascontiguousarray(arrays[_CENTROIDS])
        if centroids.ndim != 2 or centroids.shape[0] != self.nlist:
            raise ValueError(f"codec {self.name} state holds {centroids.shape} centroids")
        ranges = arrays.get(_RANGES)
        if ranges is not None and ranges.shape != (2 * centroids.shape[1],):
            raise ValueError(f"codec {self.name} ranges do not fit {centroids.shape[1]}-d lists")
        return centroids, None if ranges is None else np.ascontiguousarray(ranges)

    @property
    def fitted(self) -> bool:
        return self._centroids is not None

    @property
    def exact(self) -> bool:
        return not self.fitted

    def fit(self, sample: Vectors) -> CodecState:
        matrix = fit_sample(self.name, sample, self.fit_min)
        index = self._empty(matrix.shape[1])
        index.train(matrix)
        centroids = index.quantizer.reconstruct_n(0, self.nlist)
        state = {_CENTROIDS: np.ascontiguousarray(centroids, dtype=np.float32)}
        if self.encoding == "sq8":
            state[_RANGES] = faiss.vector_to_array(index.sq.trained).astype(np.float32)
        return state

    def projected_dim(self, dim: int) -> int:
        return dim

    def bytes_per_vector(self, dim: int, *, once_fitted: bool = False) -> float:
        if not (self.fitted or once_fitted):
            return 4.0 * dim
        return float(dim if self.encoding == "sq8" else 2 * dim) + _ID_BYTES

    def new_table(self, dim: int) -> CodeTable:
        if self._centroids is None:
            return exact_table(dim)
        return IvfTable(self._trained(dim))

    def load_table(self, path: Path, dim: int) -> CodeTable:
        if self._centroids is None:
            table: FaissTable = load_faiss_table(path, dim)
            if not isinstance(table.index, faiss.IndexFlatIP):
                raise ValueError(f"{path} holds codes, not the exact vectors of unfitted IVF")
            return table
        try:
            index = faiss.read_index(str(path))
        except RuntimeError as exc:
            raise ValueError(f"unreadable IVF index {path}: {exc}") from exc
        self._check_loaded(index, self._trained(dim), path)
        return IvfTable(index)

    def _empty(self, dim: int) -> Any:
        quantizer = faiss.IndexFlatIP(dim)
        return faiss.IndexIVFScalarQuantizer(
            quantizer, dim, self.nlist, _QUANTISERS[self.encoding], faiss.METRIC_INNER_PRODUCT
        )

    def _trained(self, dim: int) -> Any:
        """A trained, empty index made from the state: the same one :meth:`fit` trained."""
        assert self._centroids is not None
        if self._centroids.shape[1] != dim:
            raise ValueError(f"codec {self.name} was fitted to {self._centroids.shape[1]}-d lists")
        index = self._empty(dim)
        index.quantizer.add(self._centroids)
        if self._ranges is not None:
            faiss.copy_array_to_vector(self._ranges, index.sq.trained)
        index.is_trained = True
        return index

    def _check_loaded(self, index: Any, expected: Any, path: Path) -> None:
        """``index`` (read from ``path``) must be ``expected`` plus lists of positions."""
        invlists: Any = getattr(index, "invlists", None)
        if (
            not isinstance(index, faiss.IndexIVFScalarQuantizer)
            or invlists is None
            or not isinstance(faiss.downcast_index(index.quantizer), faiss.IndexFlatIP)
            or not isinstance(faiss.downcast_InvertedLists(invlists), faiss.ArrayInvertedLists)
            or (index.d, index.nlist, index.metric_type, index.code_size, index.by_residual)
            != (
                expected.d,
                expected.nlist,
                expected.metric_type,
                expected.code_size,
                expected.by_residual,
            )
            or index.sq.qtype != expected.sq.qtype
            or index.quantizer.ntotal != self.nlist
            or not np.array_equal(
                index.quantizer.reconstruct_n(0, self.nlist),
                expected.quantizer.reconstruct_n(0, self.nlist),
            )
            or not np.array_equal(
                faiss.vector_to_array(index.sq.trained), faiss.vector_to_array(expected.sq.trained)
            )
        ):
            raise ValueError(f"{path} was not encoded with this {self.name} fit")
        ids = [
            faiss.rev_swig_ptr(invlists.get_ids(i), invlists.list_size(i)).copy()
            for i in range(self.nlist)
            if invlists.list_size(i)
        ]
        held = np.sort(np.concatenate(ids)) if ids else np.zeros(0, dtype=np.int64)
        if len(held) != index.ntotal or not np.array_equal(held, np.arange(len(held))):
            raise ValueError(f"{path}: the ids in its lists are not the positions 0..n-1")
