"""What needs the language model: chat, activation memory (KV caches) and parametric memory
(LoRA adapters). The model is loaded on the first such request."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import APIRouter

from memos import ChatReply, CubeInfo, Event
from memos.errors import InvalidInput

from ._deps import Caller, ReasonQuery, Settings
from ._errors import COMMON_ERRORS
from ._schemas import AdapterRollback, ChatBody, Consolidate, KVBuild, Reason

if TYPE_CHECKING:
    from memos.activation import KVEntry
    from memos.parametric import AdapterEntry

router = APIRouter(prefix="/v1/cubes/{cube}", tags=["models"], responses=COMMON_ERRORS)


@router.post("/chat")
def chat(cube: str, body: ChatBody, mos: Caller, settings: Settings) -> ChatReply:
    if body.max_new_tokens > settings.max_new_tokens:
        raise InvalidInput(
            f"max_new_tokens is at most {settings.max_new_tokens}", field="max_new_tokens"
        )
    return mos.chat(
        body.query, cube=cube, user=body.user, k=body.k, max_new_tokens=body.max_new_tokens,
        use_kv=body.use_kv, adapter=body.adapter, retrieve=body.retrieve,
    )  # fmt: skip


@router.post("/kv", status_code=201)
def kv_build(cube: str, body: KVBuild, mos: Caller) -> dict[str, Any]:
    entry = mos.kv.build(
        cube, body.item_ids, query=body.query, k=body.k, dtype=body.dtype, reason=body.reason
    )
    return _kv(entry)


@router.get("/kv")
def kv_list(cube: str, mos: Caller) -> list[dict[str, Any]]:
    return [_kv(entry) for entry in mos.kv.list(cube)]


@router.delete("/kv/{entry_id}")
def kv_drop(cube: str, entry_id: str, mos: Caller, reason: ReasonQuery = None) -> Event:
    return mos.kv.drop(cube, entry_id, reason=reason)


@router.get("/adapters")
def adapters(cube: str, mos: Caller, name: str | None = None) -> list[dict[str, Any]]:
    return [_adapter(entry) for entry in mos.lora.list(cube, name)]


@router.get("/adapters/{name}")
def adapter(cube: str, name: str, mos: Caller, version: int | None = None) -> dict[str, Any]:
    return _adapter(mos.lora.show(cube, name, version))


@router.post("/adapters", status_code=201)
def consolidate(cube: str, body: Consolidate, mos: Caller) -> dict[str, Any]:
    entry = mos.lora.consolidate(
        cube, body.item_ids, name=body.name, query=body.query, k=body.k, recipe=body.recipe,
        density=body.density, reason=body.reason,
    )  # fmt: skip
    return _adapter(entry)


@router.post("/adapters/{name}/retrain", status_code=201)
def retrain(cube: str, name: str, body: Reason, mos: Caller) -> dict[str, Any]:
    return _adapter(mos.lora.retrain(cube, name, reason=body.reason))


@router.post("/adapters/{name}/rollback", status_code=201)
def adapter_rollback(cube: str, name: str, body: AdapterRollback, mos: Caller) -> dict[str, Any]:
    entry = mos.lora.rollback(cube, name, to_version=body.to_version, reason=body.reason)
    return _adapter(entry)


@router.post("/adapters/{name}/attach")
def attach(cube: str, name: str, body: Reason, mos: Caller) -> CubeInfo:
    return mos.lora.attach(cube, name, reason=body.reason)


@router.post("/adapters/detach")
def detach(cube: str, body: Reason, mos: Caller) -> CubeInfo:
    return mos.lora.attach(cube, None, reason=body.reason)


@router.delete("/adapters/{name}")
def delete_adapter(cube: str, name: str, mos: Caller, reason: ReasonQuery = None) -> list[Event]:
    return mos.lora.delete(cube, name, reason=reason)


def _kv(entry: KVEntry) -> dict[str, Any]:
    return entry.model_dump(mode="json")


def _adapter(entry: AdapterEntry) -> dict[str, Any]:
    return entry.model_dump(mode="json")
