"""Parametric memory: LoRA adapters of a local model, trained on a cube's memories,
versioned in its log, marked stale when a source changes, and stored compressed.

Entries and manifests load without torch; the catalog and the compression load it on first
use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from memos.core._lazy import lazy_attributes
from memos.parametric._manifest import AdapterEntry, AdapterManifest, LoraSettings

if TYPE_CHECKING:
    from memos.parametric._catalog import LoraMemory
    from memos.parametric._compress import compress, decompress

__all__ = [
    "AdapterEntry",
    "AdapterManifest",
    "LoraMemory",
    "LoraSettings",
    "compress",
    "decompress",
]

# what imports torch, by the module that defines it
_WITH_TORCH = {
    "LoraMemory": "memos.parametric._catalog",
    "compress": "memos.parametric._compress",
    "decompress": "memos.parametric._compress",
}

__getattr__ = lazy_attributes(__name__, _WITH_TORCH)
