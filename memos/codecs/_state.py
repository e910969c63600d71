"""A fitted codec's state as bytes: a safetensors file of named float32 arrays, never pickle.

The bytes are stored content-addressed (their sha256 names the blob), and the cube's
configuration records that digest, so a state is identified by what it holds. The header
metadata is one key holding canonical JSON: safetensors writes several metadata keys in no fixed
order, which would give one state several digests.
"""

from __future__ import annotations

import json

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load, save

from memos.codecs._protocol import CodecState

STATE_FORMAT = "memos-codec-state"
_META_KEY = "memos"


def state_to_bytes(codec: str, state: CodecState) -> bytes:
    arrays = {key: np.ascontiguousarray(value, dtype=np.float32) for key, value in state.items()}
    about = json.dumps({"codec": codec, "format": STATE_FORMAT}, sort_keys=True)
    return save(arrays, metadata={_META_KEY: about})


def state_from_bytes(codec: str, data: bytes) -> CodecState:
    """The arrays in ``data``; ``ValueError`` unless it is a state of ``codec``."""
    try:
        arrays = load(data)
        about = json.loads(_metadata(data).get(_META_KEY, "{}"))
    except (SafetensorError, ValueError, OSError) as exc:
        raise ValueError(f"unreadable codec state: {exc}") from exc
    if about != {"codec": codec, "format": STATE_FORMAT}:
        raise ValueError(f"not a state of codec {codec!r}")
    if not arrays or any(value.dtype != np.float32 for value in arrays.values()):
        raise ValueError("a codec state holds float32 arrays only")
    return dict(arrays)


def _metadata(data: bytes) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors header (the numpy loader does not return it)."""
    if len(data) < 8:
        raise ValueError("truncated safetensors header")
    size = int.from_bytes(data[:8], "little")
    if size > len(data) - 8:
        raise ValueError("truncated safetensors header")
    header = json.loads(data[8 : 8 + size])
    metadata = header.get("__metadata__", {}) if isinstance(header, dict) else {}
    return {str(k): str(v) for k, v in metadata.items()} if isinstance(metadata, dict) else {}
