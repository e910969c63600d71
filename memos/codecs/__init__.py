"""Vector codecs behind the :class:`VectorCodec` protocol, registered by name."""

from __future__ import annotations

from collections.abc import Callable

from memos.codecs._faiss import FaissTable, Fp16Codec, Fp32Codec
from memos.codecs._protocol import CodeTable, Positions, VectorCodec, Vectors
from memos.errors import InvalidInput

__all__ = [
    "CodeTable",
    "FaissTable",
    "Fp16Codec",
    "Fp32Codec",
    "Positions",
    "VectorCodec",
    "Vectors",
    "make_codec",
]

_CODECS: dict[str, Callable[[], VectorCodec]] = {
    "fp32": Fp32Codec,
    "fp16": Fp16Codec,
}


def make_codec(name: str) -> VectorCodec:
    """The codec a cube's configuration names."""
    factory = _CODECS.get(name)
    if factory is None:
        raise InvalidInput(f"unknown codec {name!r} (known: {', '.join(sorted(_CODECS))})")
    return factory()
