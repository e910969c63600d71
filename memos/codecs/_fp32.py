"""Uncompressed float32 vectors in a flat FAISS inner-product index: the exact baseline."""

from __future__ import annotations

from typing import Any

import faiss


class Fp32Codec:
    @property
    def name(self) -> str:
        return "fp32"

    def bytes_per_vector(self, dim: int) -> float:
        return 4.0 * dim

    def make_index(self, dim: int) -> Any:
        return faiss.IndexFlatIP(dim)
