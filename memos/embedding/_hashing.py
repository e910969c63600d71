"""A deterministic, dependency-free embedder for logic tests and tiny deployments.

Words and character trigrams are hashed into signed buckets (feature hashing), so texts that
share words land close together. It has none of a real model's semantics, but it is fast,
stable across processes and platforms, and needs no model files.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

_WORD = re.compile(r"\w+", re.UNICODE)


class HashEmbedder:
    def __init__(self, dim: int = 64) -> None:
        self._dim = dim

    @property
    def name(self) -> str:
        return f"hash-{self._dim}"

    @property
    def dim(self) -> int:
        return self._dim

    def embed(self, texts: Sequence[str]) -> NDArray[np.float32]:
        out = np.zeros((len(texts), self._dim), dtype=np.float32)
        for row, text in enumerate(texts):
            for feature, weight in _features(text):
                digest = hashlib.blake2b(feature.encode("utf-8"), digest_size=8).digest()
                bucket = int.from_bytes(digest[:4], "little") % self._dim
                sign = 1.0 if digest[4] & 1 else -1.0
                out[row, bucket] += sign * weight
            norm = float(np.linalg.norm(out[row]))
            out[row] = out[row] / norm if norm > 0 else _unit(self._dim)
        return out


def _features(text: str) -> list[tuple[str, float]]:
    words = [w.lower() for w in _WORD.findall(text)]
    features = [(f"w:{w}", 1.0) for w in words]
    for word in words:
        padded = f"^{word}$"
        features.extend((f"c:{padded[i : i + 3]}", 0.3) for i in range(len(padded) - 2))
    return features


def _unit(dim: int) -> NDArray[np.float32]:
    vector = np.zeros(dim, dtype=np.float32)
    vector[0] = 1.0
    return vector
