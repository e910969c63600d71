"""The scheduler's policies (see :mod:`memos.core._scheduling`); ``balanced`` is the default.

**balanced** keeps each of a cube's tiers inside its budgets, from how the cube's memories are
used:

- *Heat* of a memory: its use frequency decayed to now (one use now is 1.0, halving every
  half-life; a search's hits and a chat's retrieved memories are a use each), so frequency and
  recency are one number. A memory is *hot* at ``hot_min`` or more (0.5: used once within a
  half-life).

*KV blocks* (:mod:`memos.schedulers._blocks`). A chat uses one block as the prefix of its
prompt, so one block holding the hottest memories serves more of what chats retrieve than
several smaller ones of the same bytes; the defaults make one such block per cube, and a
smaller ``block_items`` several.

- *Groups*: from the hottest memory not yet grouped, the group takes in, one at a time, the hot
  memory most often retrieved together with its members (summed decayed co-access; the hotter
  one on a tie), while that sum is at least ``co_min`` and the group holds fewer than
  ``block_items``. A group's memories are in heat order. Its *value* is the summed heat of its
  memories.
- *Blocks*: standing blocks whose memories' mean heat is below ``cold_max`` are dropped as cold.
  Then each group, hottest first, while the cube's ``kv_bytes`` and ``kv_blocks`` budgets have
  room, meets the standing block that shares most memories with it:
  - *grown*: that block followed by the group's other memories, hottest first, as many as fit
    the room and ``block_items``; it is built by continuing the block's cache (only the added
    memories are computed), and the block it extends is dropped once it is built;
  - *replaced*: when the group (its hottest memories that fit the room) is worth more than
    ``keep_bonus`` times the grown block, it is built and the standing block dropped; the
    memories the standing block starts with that the group keeps come first, so the cache of
    them is reused and only the rest is computed. The bonus keeps a block from being rebuilt
    for a group barely better (a replacement computes more than growing, which computes only
    what it adds);
  - a group no standing block shares a memory with is built (its hottest memories that fit).
- Standing blocks no group met are kept, densest (value per byte) first, while they fit the
  room left; the rest are dropped (over budget), and one whose memories a kept block all holds
  is dropped (superseded).

*Adapters* (:mod:`memos.schedulers._adapters`):

- The *stable hot set*: the hot memories used ``stable_uses`` times or more, hottest first, at
  most ``adapter_items``. When it holds ``adapter_min_items`` or more, and at least
  ``adapter_change`` of it is not in the latest version of the scheduler's adapter
  (``adapter``), it is consolidated into a new version of that adapter (trained on those
  memories). ``stable_uses`` = 0 turns consolidation off. The scheduler never attaches an
  adapter: chat uses it once an operator makes it the cube's default (``mos.lora.attach``).
- Versions over the ``adapters`` or ``adapter_bytes`` budgets are dropped, oldest first, never
  the version chat uses by default; a consolidation that would not fit once older versions of
  the scheduler's adapter go is not made.

*The vector index* (:mod:`memos.schedulers._codecs`), at most one decision a tick:

- Over its ``vector_bytes`` budget, the index is re-encoded to the largest of ``codecs`` that
  fits (else the smallest of them).
- A *cold* cube (no memory used for ``cold_days``, and at least that old) of ``cold_cube_items``
  memories or more is re-encoded to ``cold_codec`` when that is smaller.
- A fitted codec is refitted once the cube holds ``refit_growth`` times the memories it was
  fitted on.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

from memos.codecs import make_codec
from memos.core import _validation as check
from memos.core._access import decayed_frequency
from memos.core._scheduling import CubeView, Decision
from memos.errors import InvalidInput

from ._adapters import adapter_decisions
from ._blocks import kv_decisions
from ._codecs import codec_decisions


class BalancedParameters(BaseModel):
    """The parameters of the ``balanced`` policy, with their defaults (see the module); a
    value of another type is refused, not coerced (a whole number stands for a float)."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    hot_min: float = Field(default=0.5, ge=0)
    co_min: float = Field(default=0.0, ge=0)
    block_items: int = Field(default=64, ge=1, le=512)
    cold_max: float = Field(default=0.25, ge=0)
    keep_bonus: float = Field(default=1.25, ge=1)
    stable_uses: int = Field(default=16, ge=0)
    adapter: str = Field(default="scheduler", pattern=check.ADAPTER_NAME)
    adapter_items: int = Field(default=32, ge=1, le=512)
    adapter_min_items: int = Field(default=4, ge=1)
    adapter_change: float = Field(default=0.25, ge=0, le=1)
    codecs: str = "fp16,int8,pca188+fp8,pca96+fp8,pca48+fp8"
    cold_codec: str = "pca48+fp8"
    cold_days: float = Field(default=30.0, gt=0)
    cold_cube_items: int = Field(default=10_000, ge=0)
    refit_growth: float = Field(default=2.0, gt=1)

    @field_validator("codecs", "cold_codec")
    @classmethod
    def _known_codecs(cls, value: str) -> str:
        for name in value.split(","):
            try:
                make_codec(name)
            except InvalidInput as exc:
                raise ValueError(str(exc)) from None
        return value


class Balanced:
    """The default policy; see the module docstring."""

    name = "balanced"
    parameters: type[BaseModel] = BalancedParameters

    def plan(self, view: CubeView, parameters: BaseModel) -> list[Decision]:
        p = BalancedParameters.model_validate(parameters.model_dump())
        heat = {i: decayed_frequency(s, view.now, view.half_life_s) for i, s in view.access.items()}
        heat = {i: h for i, h in heat.items() if i in view.chars}
        return [
            *kv_decisions(view, heat, p),
            *adapter_decisions(view, heat, p),
            *codec_decisions(view, p),
        ]
