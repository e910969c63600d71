"""The request bodies of the routes that are not made from an operation's declaration (see
:mod:`memos.engine._operations`): a batch of memories and the chat stream. Responses are the
SDK's own models, so the OpenAPI document describes exactly what the SDK returns."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

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
