"""The codec a cube's configuration names, fitted with the state blob it records."""

from __future__ import annotations

from memos.codecs import VectorCodec, make_codec, state_from_bytes
from memos.core._store import Store
from memos.core._types import CubeInfo
from memos.errors import IntegrityError


def load_codec(store: Store, cube: CubeInfo) -> VectorCodec:
    """The cube's codec, fitted with the state its configuration names."""
    if cube.codec_state is None:
        return make_codec(cube.codec)
    data = store.get_blob(cube.codec_state)
    if data is None:
        raise IntegrityError(
            f"cube {cube.name!r}: the state blob {cube.codec_state} of its codec is missing",
            cube=cube.name,
            blob=cube.codec_state,
        )
    return codec_from_blob(cube, data)


def codec_from_blob(cube: CubeInfo, data: bytes) -> VectorCodec:
    try:
        codec = make_codec(cube.codec, state_from_bytes(cube.codec, data))
        codec.new_table(cube.dim)  # checks the state fits the cube's dimension
    except ValueError as exc:
        raise IntegrityError(
            f"cube {cube.name!r}: the fitted state of codec {cube.codec} is unusable: {exc}",
            cube=cube.name,
        ) from exc
    return codec
