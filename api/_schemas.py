"""Request bodies of the API. Responses are the SDK's own models (``MemoryItem``, ``Event``...),
so the OpenAPI document describes exactly what the SDK returns."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from memos._types import MetadataValue


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CubeCreate(_Body):
    name: str
    embedder: str | None = None
    codec: str | None = None
    kv_dtype: Literal["fp32", "bf16", "int8"] = "fp32"


class GrantBody(_Body):
    principal: str
    access: Literal["read", "write"] = "read"
    reason: str | None = None


class MemoryCreate(_Body):
    text: str
    user: str | None = None
    tags: list[str] | None = None
    metadata: dict[str, MetadataValue] | None = None
    session: str | None = None
    occurred_at: datetime | None = None


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


class MemoryUpdate(_Body):
    text: str | None = None
    tags: list[str] | None = None
    metadata: dict[str, MetadataValue] | None = None
    expected_version: int | None = None
    reason: str | None = None


class ItemRollback(_Body):
    to_version: int
    expected_version: int | None = None
    reason: str | None = None


class CubeRollback(_Body):
    to_seq: int
    reason: str | None = None


class Reencode(_Body):
    codec: str
    reason: str | None = None


class SearchBody(_Body):
    query: str
    k: int = 5
    user: str | None = None
    tags: list[str] | None = None
    session: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    where: dict[str, MetadataValue] | None = None
    mode: Literal["dense", "keyword", "hybrid"] = "hybrid"


class ChatBody(_Body):
    query: str
    user: str | None = None
    k: int = 5
    max_new_tokens: int = 128
    use_kv: bool = True
    adapter: str | None = None
    retrieve: bool = True


class AccessStatsBody(_Body):
    item_ids: list[str]


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
