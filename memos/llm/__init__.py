"""Local language models: loading (with the bundled SmolLM2 converted once from GGUF),
fingerprints that derived artifacts are checked against, greedy streaming generation, and KV
prefixes that generations start from without copying them."""

from memos.errors import ModelUnavailable
from memos.llm._backend import LLMBackend
from memos.llm._local import LocalModel
from memos.llm._prefix import KV, ResidentPrefix
from memos.llm._shapes import ModelShape, SplitPrompt
from memos.llm._weights import (
    ModelFingerprint,
    bundled_gguf,
    fingerprint,
    materialized_gguf,
)

__all__ = [
    "KV",
    "LLMBackend",
    "LocalModel",
    "ModelFingerprint",
    "ModelShape",
    "ModelUnavailable",
    "ResidentPrefix",
    "SplitPrompt",
    "bundled_gguf",
    "fingerprint",
    "materialized_gguf",
]
