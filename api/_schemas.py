"""Request bodies of the API, and the answers of the model tiers.

Most responses are the SDK's own models (``MemoryItem``, ``Event``...), so the OpenAPI document
describes exactly what the SDK returns. The entries of the model tiers (``mos.kv.list``,
``mos.lora.list``) live in modules that load torch, which the server imports only once a request
needs the model; their published shapes are declared here under the same names, and the client
reads them back into the SDK's classes. A field is published only when it is named here.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from memos import SourceRef
from memos.core._types import MetadataValue


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Record(_Body):
    text: str | None = None
    content: str | None = None
    role: str | None = None
    name: str | None = None
    timestamp: str | None = None
    occurred_at: datetime | None = None
    user: str | None = None
    tags: list[str] | None = None
    metadata: dict[str, MetadataValue] | None = None
    session: str | None = None


class MemoryBatch(_Body):
    records: list[Record] = Field(min_length=1)
    user: str | None = None
    tags: list[str] | None = None
    metadata: dict[str, MetadataValue] | None = None
    session: str | None = None


class ChatBody(_Body):
    query: str
    user: str | None = None
    k: int = 5
    max_new_tokens: int = 128
    use_kv: bool = True
    adapter: str | None = None
    retrieve: bool = True


class KVBuild(_Body):
    item_ids: list[str] | None = None
    query: str | None = None
    k: int = 8
    dtype: Literal["fp32", "bf16", "int8"] | None = None
    reason: str | None = None


class Consolidate(_Body):
    name: str
    item_ids: list[str] | None = None
    query: str | None = None
    k: int = 20
    recipe: dict[str, Any] | None = None
    density: float | None = 0.5
    reason: str | None = None


class AdapterRollback(_Body):
    to_version: int
    reason: str | None = None


class Reason(_Body):
    reason: str | None = None


# answers ------------------------------------------------------------------------------------


class _Answer(BaseModel):
    # read from the SDK's objects by attribute: whatever else they hold stays unpublished
    model_config = ConfigDict(frozen=True, from_attributes=True)


class ModelFingerprint(_Answer):
    """The base model a KV cache or an adapter was made with."""

    weights_sha256: str
    tokenizer_sha256: str


class KVManifest(_Answer):
    format: Literal["memos-kv"]
    format_version: Literal[1]
    model_name: str
    model: ModelFingerprint
    dtype: Literal["fp32", "bf16", "int8"]
    layers: int
    kv_heads: int
    head_dim: int
    tokens: int
    template_version: str
    token_sha256: str
    sources: list[SourceRef]


class KVEntry(_Answer):
    """A stored KV cache of a memory block (``mos.kv.list``)."""

    id: str
    cube: str
    blob: str = Field(description="sha256 of the cache's safetensors blob")
    size: int
    created_at: datetime
    manifest: KVManifest


class LoraSettings(_Answer):
    r: int
    lora_alpha: int
    target_modules: list[str]
    lora_dropout: float


class AdapterManifest(_Answer):
    format: Literal["memos-lora"]
    format_version: Literal[1]
    name: str
    version: int
    origin: Literal["consolidate", "import", "retrain", "rollback"]
    base_model_name: str
    base_model: ModelFingerprint
    lora: LoraSettings
    parameters: int
    storage: Literal["fp32", "compeft"]
    density: float | None
    sources: list[SourceRef]
    recipe: dict[str, Any] | None
    metrics: dict[str, float | int | bool | str]
    from_version: int | None


class AdapterEntry(_Answer):
    """One stored version of a named adapter (``mos.lora.list``)."""

    id: str
    cube: str
    blob: str = Field(description="sha256 of the weights' blob")
    size: int
    created_at: datetime
    stale: bool
    manifest: AdapterManifest
