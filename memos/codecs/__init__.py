"""Vector codecs behind the :class:`VectorCodec` protocol, registered by name.

``fp32`` (exact), ``fp16``, ``int8`` (FAISS SQ8, fitted), ``fp8`` (e4m3 with a per-vector
scale), ``pca{k}+fp8`` for any ``k`` (an uncentred PCA to ``k`` dimensions, fitted, then
fp8) and ``ivf{nlist}+sq8`` / ``ivf{nlist}+fp16`` (a partitioned index of ``nlist`` lists for
large cubes, fitted; see :mod:`memos.codecs._ivf`). A fitted codec is made from its name and
the state :meth:`VectorCodec.fit` returned.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from memos.codecs._common import FIT_MIN, FIT_SAMPLE_MAX
from memos.codecs._faiss import FaissTable, Fp16Codec, Fp32Codec
from memos.codecs._float8 import Fp8Codec, Fp8Table
from memos.codecs._int8 import Int8Codec
from memos.codecs._ivf import IvfCodec, IvfTable, ivf_name
from memos.codecs._pca import PcaFp8Codec, PcaTable
from memos.codecs._protocol import CodecState, CodeTable, Positions, VectorCodec, Vectors
from memos.codecs._state import state_from_bytes, state_to_bytes
from memos.errors import InvalidInput

__all__ = [
    "FIT_MIN",
    "FIT_SAMPLE_MAX",
    "CodeTable",
    "CodecState",
    "FaissTable",
    "Fp8Codec",
    "Fp8Table",
    "Fp16Codec",
    "Fp32Codec",
    "Int8Codec",
    "IvfCodec",
    "IvfTable",
    "PcaFp8Codec",
    "PcaTable",
    "Positions",
    "VectorCodec",
    "Vectors",
    "default_codec",
    "fit_sample_size",
    "ivf_name",
    "make_codec",
    "state_from_bytes",
    "state_to_bytes",
]

Factory = Callable[[CodecState | None], VectorCodec]

_CODECS: dict[str, Factory] = {
    "fp32": Fp32Codec,
    "fp16": Fp16Codec,
    "fp8": Fp8Codec,
    "int8": Int8Codec,
}
# Families with a parameter in the name: pattern -> factory(match, state).
_FAMILIES: tuple[
    tuple[re.Pattern[str], Callable[[re.Match[str], CodecState | None], VectorCodec]], ...
] = (
    (re.compile(r"pca0*([1-9][0-9]{0,5})\+fp8"), lambda m, state: PcaFp8Codec(int(m[1]), state)),
    (
        re.compile(r"ivf0*([1-9][0-9]{0,5})\+(sq8|fp16)"),
        lambda m, state: IvfCodec(int(m[1]), m[2], state),
    ),
)
_FAMILY_NAMES = ("pca{k}+fp8", "ivf{nlist}+sq8", "ivf{nlist}+fp16")


def make_codec(name: str, state: CodecState | None = None) -> VectorCodec:
    """The codec a cube's configuration names, fitted with ``state`` when given.

    An unknown name is ``InvalidInput``; a state that does not fit the codec is ``ValueError``.
    """
    factory = _CODECS.get(name)
    if factory is not None:
        return factory(state)
    for pattern, family in _FAMILIES:
        match = pattern.fullmatch(name)
        if match is not None:
            return family(match, state)
    known = ", ".join([*sorted(_CODECS), *_FAMILY_NAMES])
    raise InvalidInput(f"unknown codec {name!r} (known: {known})")


def fit_sample_size(codec: VectorCodec) -> int:
    """How many of a cube's vectors ``codec`` is fitted on (a seeded sample of them)."""
    return codec.fit_sample if isinstance(codec, IvfCodec) else FIT_SAMPLE_MAX


# Below this many dimensions a projection saves too little to be worth fitting.
_PCA_DEFAULT_MIN_DIM = 128


def default_codec(dim: int) -> str:
    """The codec a new cube gets when none is named: PCA + fp8 at 8× smaller than fp32.

    ``pca{k}+fp8`` stores ``k`` one-byte codes plus a 4-byte scale, so ``k = dim/2 - 4``
    gives ``dim/2`` bytes against fp32's ``4·dim``. Measured on 24k real MiniLM vectors and
    100k/1M semi-synthetic ones (BENCHMARKS.md), ``pca188+fp8`` kept recall@10 ≥ 0.997 after
    re-ranking 100 candidates and searched in 0.17–0.29 of the flat fp32 scan's time. Small
    embeddings stay ``fp32``. Until the cube holds enough vectors to fit, it searches exactly.
    """
    if dim < _PCA_DEFAULT_MIN_DIM:
        return "fp32"
    return f"pca{dim // 2 - 4}+fp8"
