"""Local language models: loading (with the bundled SmolLM2 converted once from GGUF),
fingerprints that derived artifacts are checked against, and greedy generation."""

from memos.errors import ModelUnavailable
from memos.llm._local import LocalModel
from memos.llm._weights import (
    ModelFingerprint,
    bundled_gguf,
    fingerprint,
    materialized_gguf,
)

__all__ = [
    "LocalModel",
    "ModelFingerprint",
    "ModelUnavailable",
    "bundled_gguf",
    "fingerprint",
    "materialized_gguf",
]
