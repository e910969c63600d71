"""The activation tier: KV caches of memory blocks for a local model, stored as safetensors
with a JSON manifest, checked against the model's fingerprint, reused as read-only prefixes.

Entries, manifests and block rendering load without torch; the catalog and the tensor codecs
load it on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from memos.activation._block import BLOCK_TEMPLATE, render_block
from memos.activation._manifest import KV_DTYPES, KVEntry, KVManifest
from memos.core._lazy import lazy_attributes

if TYPE_CHECKING:
    from memos.activation._catalog import KVMemory
    from memos.activation._tensors import cache_from_bytes, cache_to_bytes

__all__ = [
    "BLOCK_TEMPLATE",
    "KV_DTYPES",
    "KVEntry",
    "KVManifest",
    "KVMemory",
    "cache_from_bytes",
    "cache_to_bytes",
    "render_block",
]

# what imports torch, by the module that defines it
_WITH_TORCH = {
    "KVMemory": "memos.activation._catalog",
    "cache_from_bytes": "memos.activation._tensors",
    "cache_to_bytes": "memos.activation._tensors",
}

__getattr__ = lazy_attributes(__name__, _WITH_TORCH)
