"""The request bodies of the routes that are not made from an operation's declaration (see
:mod:`memos.engine._operations`): the chat stream. Responses are the
SDK's own models, so the OpenAPI document describes exactly what the SDK returns."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ChatBody(_Body):
    query: str
    user: str | None = None
    k: int = 5
    max_new_tokens: int = 128
    use_kv: bool = True
    adapter: str | None = None
    retrieve: bool = True
