"""Language models: local ones (loading, with the bundled SmolLM2 converted once from GGUF;
fingerprints that derived artifacts are checked against; greedy streaming generation; KV
prefixes that generations start from without copying them), and :class:`OpenAICompatible`,
chat through any OpenAI-compatible server (an upstream model: text only, no KV or adapters).

Fingerprints, shapes and the bundled model's location load without torch; the models and
their KV prefixes load torch on first use, so a server or a client that never runs a model
never imports it. The upstream client speaks HTTP through the standard library, and never
loads torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from memos.core._lazy import lazy_attributes
from memos.errors import ModelUnavailable
from memos.llm._shapes import ModelShape, SplitPrompt
from memos.llm._weights import (
    ModelFingerprint,
    bundled_gguf,
    fingerprint,
    materialized_gguf,
)

if TYPE_CHECKING:
    from memos.llm._backend import LLMBackend, TextChatModel, TokenUsage
    from memos.llm._local import LocalModel
    from memos.llm._openai_compatible import OpenAICompatible
    from memos.llm._prefix import KV, ResidentPrefix

__all__ = [
    "KV",
    "LLMBackend",
    "LocalModel",
    "ModelFingerprint",
    "ModelShape",
    "ModelUnavailable",
    "OpenAICompatible",
    "ResidentPrefix",
    "SplitPrompt",
    "TextChatModel",
    "TokenUsage",
    "bundled_gguf",
    "fingerprint",
    "materialized_gguf",
]

# what imports torch, by the module that defines it
_WITH_TORCH = {
    "KV": "memos.llm._prefix",
    "ResidentPrefix": "memos.llm._prefix",
    "LocalModel": "memos.llm._local",
}
# what loads on first use without torch: the model interfaces and the upstream's HTTP client
_WITHOUT_TORCH = {
    "LLMBackend": "memos.llm._backend",
    "TextChatModel": "memos.llm._backend",
    "TokenUsage": "memos.llm._backend",
    "OpenAICompatible": "memos.llm._openai_compatible",
}

__getattr__ = lazy_attributes(__name__, {**_WITH_TORCH, **_WITHOUT_TORCH})
