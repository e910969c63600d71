"""Parametric memory: LoRA adapters of a local model, trained on a cube's memories,
versioned in its log, marked stale when a source changes, and stored compressed."""

from memos.parametric._catalog import AdapterEntry, LoraMemory
from memos.parametric._compress import compress, decompress
from memos.parametric._manifest import AdapterManifest, LoraSettings

__all__ = [
    "AdapterEntry",
    "AdapterManifest",
    "LoraMemory",
    "LoraSettings",
    "compress",
    "decompress",
]
