"""The activation tier: KV caches of memory blocks for a local model, stored as safetensors
with a JSON manifest, checked against the model's fingerprint, reused as read-only prefixes."""

from memos.activation._block import BLOCK_TEMPLATE, render_block
from memos.activation._catalog import KVEntry, KVMemory
from memos.activation._manifest import KV_DTYPES, KVManifest
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
