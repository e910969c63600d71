"""The JSON manifest of a stored KV cache: which model made it, from what, and its layout."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import ConfigDict, Field

from memos.core._derived import checked_manifest
from memos.core._model import Model
from memos.core._types import DerivedEntry, SourceRef
from memos.llm import ModelFingerprint

KVDtype = Literal["fp32", "bf16", "int8"]
KV_DTYPES: tuple[str, ...] = ("fp32", "bf16", "int8")
_SHA256 = r"^[0-9a-f]{64}$"


class KVManifest(Model):
    """Everything needed to check a KV cache file before any tensor in it is used."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    format: Literal["memos-kv"] = "memos-kv"
    format_version: Literal[1] = 1
    model_name: str = Field(max_length=200)
    model: ModelFingerprint
    dtype: KVDtype
    layers: int = Field(ge=1, le=1024)
    kv_heads: int = Field(ge=1, le=1024)
    head_dim: int = Field(ge=1, le=4096)
    tokens: int = Field(ge=1, le=1_048_576)
    # the memory-block template and the model's chat template (sha256) it was rendered with
    template_version: str = Field(max_length=200)
    token_sha256: str = Field(pattern=_SHA256)
    sources: tuple[SourceRef, ...] = Field(min_length=1)

    @property
    def bytes_fp32(self) -> int:
        """What the cache takes in RAM once loaded (fp32 keys and values)."""
        return self.layers * 2 * self.kv_heads * self.tokens * self.head_dim * 4


class KVEntry(Model):
    """A stored KV cache of a memory block, as ``mos.kv.list`` reports it."""

    model_config = ConfigDict(frozen=True)

    id: str
    cube: str
    blob: str
    size: int
    created_at: datetime
    manifest: KVManifest

    @property
    def sources(self) -> tuple[SourceRef, ...]:
        return self.manifest.sources

    @property
    def tokens(self) -> int:
        return self.manifest.tokens

    @classmethod
    def from_derived(cls, entry: DerivedEntry) -> KVEntry:
        manifest = checked_manifest(entry, KVManifest, "KV entry")
        return cls(
            id=entry.id,
            cube=entry.cube,
            blob=entry.blob,
            size=entry.size,
            created_at=entry.created_at,
            manifest=manifest,
        )
