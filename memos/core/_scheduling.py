"""The scheduler's vocabulary: what a policy sees of a cube, what it decides, and the registry of
policies by name.

A tick of the scheduler reads a :class:`CubeView` (the cube's memories that were used, how hot
each is, which were retrieved together, its standing KV blocks and adapter versions and their
sizes, its vector index, its budgets), asks the cube's policy for a plan, and carries out the
plan's decisions, each an event that names the policy, the score and the reason. Policies are
pure: the same view gives the same plan, so a plan can be shown before it is carried out
(``mos.scheduler.plan``). A policy is registered by name (``"module:attribute"``, imported on
first use), like a store backend; the default, ``balanced``, is :mod:`memos.schedulers`'s.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, ValidationError

from memos.core._model import Model
from memos.core._types import AccessStats, Budgets, CoAccess, SchedulerConfig
from memos.errors import InvalidInput

Action = Literal["kv_build", "kv_drop", "lora_consolidate", "lora_drop", "reencode", "refit"]
# a rendered block's tokens beyond its memories' text (estimates until a cube's blocks tell):
# the header and chat template around it (SmolLM2: 34), and each memory's line prefix
# ("12. (2023-05-08) ": SmolLM2, 16, a token per digit)
BLOCK_OVERHEAD_TOKENS = 40
LINE_TOKENS = 16

# the order a tick carries out a plan's decisions in: what frees room first
ACTION_ORDER: tuple[Action, ...] = (
    "kv_drop", "lora_drop", "reencode", "refit", "kv_build", "lora_consolidate",
)  # fmt: skip


@dataclass(frozen=True)
class Block:
    """A standing KV block: its entry id, its memories (in its order) and its size."""

    id: str
    items: tuple[str, ...]
    tokens: int
    size: int


@dataclass(frozen=True)
class Adapter:
    """A stored adapter version: its entry id, name, version, size, when it was made, its
    memories, and whether chat uses it by default (the latest version of the cube's default
    adapter)."""

    id: str
    name: str
    version: int
    size: int
    created_at: datetime
    items: tuple[str, ...]
    default: bool = False


@dataclass(frozen=True)
class VectorIndex:
    """The cube's vector index: its codec, the embedding dimension, its active memories, whether
    its codec is fitted (a codec that needs fitting holds exact vectors until it is), and how
    many memories the cube held when it was last fitted (``None``: not known)."""

    codec: str
    dim: int
    active: int
    fitted: bool = False
    fit_items: int | None = None


@dataclass(frozen=True)
class CubeView:
    """What a policy sees of a cube at ``now``: the memories that were ever used (active ones
    only, with the characters of their text), their use and co-use, the standing KV blocks and
    adapter versions, the vector index, what a KV cache costs per token (``None`` until
    known: no block yet and no model loaded), and which memories tier labels keep out of the
    KV and the parametric tier."""

    cube: str
    now: datetime
    half_life_s: float
    chars: Mapping[str, int]
    access: Mapping[str, AccessStats]
    co_access: Mapping[tuple[str, str], CoAccess]
    blocks: Sequence[Block]
    kv_bytes_per_token: float | None
    chars_per_token: float
    budgets: Budgets = field(default_factory=Budgets)
    adapters: Sequence[Adapter] = ()
    vectors: VectorIndex | None = None
    created_at: datetime | None = None  # the cube's
    # the used memories labelled to stay out of the KV tier / the parametric tier
    no_kv: frozenset[str] = frozenset()
    no_parametric: frozenset[str] = frozenset()


class Decision(Model):
    """One migration: build a KV block of ``items`` (in that order) or drop block ``entry``;
    consolidate ``items`` into a new version of adapter ``adapter`` or drop version ``entry``;
    re-encode the cube's vectors to ``codec``, or refit its codec. ``score`` is the policy's
    value of what moves, ``bytes`` the (estimated) size it takes (a build, a consolidation) or
    frees (a drop); for a re-encode or refit, the index's size after it. A build that
    ``extends`` a standing block begins with its memories (its cache is continued, not
    recomputed); a drop of that block waits until the build is made."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    action: Action
    items: tuple[str, ...] = ()
    entry: str | None = None
    extends: str | None = None
    adapter: str | None = None
    codec: str | None = None
    score: float
    bytes: int
    reason: str


def honoured(decisions: Iterable[Decision], view: CubeView) -> tuple[Decision, ...]:
    """``decisions`` less those a tier label forbids: a KV build naming a ``no-kv`` memory, a
    consolidation naming a ``no-parametric`` one (whatever the policy decided)."""
    barred = {"kv_build": view.no_kv, "lora_consolidate": view.no_parametric}
    return tuple(
        d for d in decisions if not barred.get(d.action, frozenset()).intersection(d.items)
    )


class Usage(Model):
    """What the cube's tiers hold, against its budgets."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kv_bytes: int
    kv_blocks: int
    adapters: int = 0
    adapter_bytes: int = 0
    vector_bytes: int = 0


class SchedulePlan(Model):
    """What a tick would do on a cube now, and why (``mos.scheduler.plan``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    cube: str
    policy: str
    at: datetime
    decisions: tuple[Decision, ...]
    budgets: Budgets
    usage: Usage  # as the tiers stand now
    after: Usage  # once the decisions are carried out (estimated)


class Migration(Model):
    """A migration the log holds: its event (``seq``, ``op``), who made it and when, what it
    did (``action``; ``target``: the block or adapter version it built or dropped, or the
    codec it re-encoded to or refitted), on which memories, by which policy with what score
    and reason; ``reverted_by``: the seq of the event that undid it, if one did."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    seq: int
    ts: datetime
    actor: str
    op: str
    action: Action
    target: str | None
    items: tuple[str, ...]
    policy: str
    score: float
    reason: str
    reverted_by: int | None = None


class Policy(Protocol):
    """Decides a cube's migrations from a view of it; see the module docstring."""

    name: str
    parameters: type[BaseModel]  # its parameters, with their defaults

    def plan(self, view: CubeView, parameters: BaseModel) -> list[Decision]: ...


_POLICIES: dict[str, str] = {"balanced": "memos.schedulers._policies:Balanced"}


def register_policy(name: str, target: str) -> None:
    """Register ``"module:attribute"`` (a :class:`Policy`) under ``name``."""
    _POLICIES[name] = target


def policy(name: str) -> Policy:
    """The registered policy ``name`` (:class:`InvalidInput` for an unknown one)."""
    target = _POLICIES.get(name) if isinstance(name, str) else None
    if target is None:
        known = ", ".join(sorted(_POLICIES))
        raise InvalidInput(f"unknown scheduler policy {name!r} (known: {known})", field="policy")
    module, _, attribute = target.partition(":")
    found: Policy = getattr(importlib.import_module(module), attribute)()
    return found


def checked_parameters(chosen: Policy, given: Mapping[str, Any]) -> BaseModel:
    """``given`` as the policy's parameters (defaults filled in), or :class:`InvalidInput`."""
    try:
        return chosen.parameters.model_validate(dict(given))
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise InvalidInput(
            f"bad parameters for policy {chosen.name!r}: {problems}", field="parameters"
        ) from None


def config_of(config: SchedulerConfig | None) -> SchedulerConfig:
    return config or SchedulerConfig()
