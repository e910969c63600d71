"""Vector codecs behind the :class:`VectorCodec` protocol, registered by name."""

from __future__ import annotations

from collections.abc import Callable

from memos.codecs._fp32 import Fp32Codec
from memos.codecs._protocol import VectorCodec
from memos.errors import InvalidInput

__all__ = ["Fp32Codec", "VectorCodec", "make_codec"]

_CODECS: dict[str, Callable[[], VectorCodec]] = {
    "fp32": Fp32Codec,
}


def make_codec(name: str) -> VectorCodec:
    """The codec a cube's configuration names."""
    factory = _CODECS.get(name)
    if factory is None:
        raise InvalidInput(f"unknown codec {name!r} (known: {', '.join(sorted(_CODECS))})")
    return factory()
