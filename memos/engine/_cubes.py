"""Making a cube: its name in the caller's namespace, its embedder, codec and KV storage."""

from __future__ import annotations

from memos.codecs import default_codec
from memos.core._types import CubeInfo, utcnow
from memos.engine._engine import Engine
from memos.engine._scope import Scope
from memos.errors import CubeExists, InvalidInput
from memos.plaintext._encoding import checked_codec

KV_DTYPES = ("fp32", "bf16", "int8")


def create_cube(
    engine: Engine,
    scope: Scope,
    name: str,
    *,
    owner: str | None,
    embedder: str | None,
    codec: str | None,
    kv_dtype: str,
    exist_ok: bool = False,
) -> CubeInfo:
    """:meth:`memos.MemOS.create_cube` for ``scope``."""
    name, owner = scope.new_cube(name, owner)
    model = engine.embedder_named(embedder or engine.default_embedder_name())
    if exist_ok and (existing := engine.store.get_cube(name)) is not None:
        return _as_asked(existing, owner=owner, embedder=model.name)
    info = CubeInfo(
        name=name,
        owner=owner,
        embedder=model.name,
        dim=model.dim,
        codec=checked_codec(codec or default_codec(model.dim), model.dim),
        kv_dtype=_checked_kv_dtype(kv_dtype),
        created_at=utcnow(),
    )
    try:
        engine.store.create_cube(info, actor=owner)
    except CubeExists:
        existing = engine.store.get_cube(name)
        if not exist_ok or existing is None:
            raise
        return _as_asked(existing, owner=owner, embedder=model.name)
    return info


def _as_asked(existing: CubeInfo, *, owner: str, embedder: str) -> CubeInfo:
    """``existing``, when it is the cube ``create_cube(..., exist_ok=True)`` asked for."""
    if (existing.owner, existing.embedder) != (owner, embedder):
        raise CubeExists(
            f"cube {existing.name!r} already exists, owned by {existing.owner!r} with embedder "
            f"{existing.embedder!r}",
            cube=existing.name,
        )
    return existing


def _checked_kv_dtype(dtype: str) -> str:
    if dtype not in KV_DTYPES:
        raise InvalidInput(f"kv_dtype must be fp32, bf16 or int8, not {dtype!r}")
    return dtype
