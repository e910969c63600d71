"""A cube's governance policies: retention, legal holds, redaction on write and quotas, kept
in its configuration (:attr:`memos.CubeInfo.policies`) and set by ``policy`` events. The rules
that apply them live in :mod:`memos.core._governance`."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Literal

from pydantic import ConfigDict, Field, field_validator

from memos.core._model import Model
from memos.core._redaction import RedactionPolicy

if TYPE_CHECKING:
    from memos.core._types import MemoryItem

# a metadata value, as in memos.core._types (which imports this module)
_Value = str | int | float | bool | None


class _Strict(Model):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)


class Match(_Strict):
    """Which memories a rule covers: those of ``user``, with ``tag`` and whose metadata has
    every pair of ``where`` (each given part must hold; none given: every memory)."""

    user: str | None = None
    tag: str | None = None
    where: dict[str, _Value] = Field(default_factory=dict)

    def covers(self, item: MemoryItem) -> bool:
        return (
            (self.user is None or item.user == self.user)
            and (self.tag is None or self.tag in item.tags)
            and all(item.metadata.get(key) == value for key, value in self.where.items())
        )


class RetentionRule(Match):
    """Memories the rule covers expire ``ttl_days`` after they were stored: they are deleted
    (``action="delete"``: history kept, a rollback brings them back) or erased
    (``"erase"``: as by ``forget``). A legal hold wins over any rule."""

    ttl_days: float = Field(gt=0, le=365_000)
    action: Literal["delete", "erase"] = "delete"

    def expired(self, item: MemoryItem, now: datetime) -> bool:
        return self.covers(item) and now - item.created_at >= timedelta(days=self.ttl_days)


class LegalHold(Match):
    """Memories under hold ``name`` are neither deleted, erased nor expired while it stands."""

    name: str = Field(min_length=1, max_length=64)


class Quotas(_Strict):
    """At most this many active memories, and bytes of their text (UTF-8), in the cube and per
    user (``None``: no limit)."""

    items: int | None = Field(default=None, ge=0)
    bytes: int | None = Field(default=None, ge=0)
    items_per_user: int | None = Field(default=None, ge=0)
    bytes_per_user: int | None = Field(default=None, ge=0)


class CubePolicies(_Strict):
    """A cube's governance: retention, legal holds, redaction on write, quotas. Set with one
    ``policy`` event; the previous policies come back the same way."""

    # arrays in JSON: a list is taken for a tuple here, the values inside stay strict
    retention: tuple[RetentionRule, ...] = Field(default=(), max_length=64, strict=False)
    holds: tuple[LegalHold, ...] = Field(default=(), max_length=64, strict=False)
    redaction: RedactionPolicy | None = None
    quotas: Quotas = Field(default_factory=Quotas)

    @field_validator("holds")
    @classmethod
    def _named_once(cls, holds: tuple[LegalHold, ...]) -> tuple[LegalHold, ...]:
        names = [hold.name for hold in holds]
        if len(set(names)) != len(names):
            raise ValueError("each legal hold has its own name")
        return holds

    def hold_on(self, item: MemoryItem) -> LegalHold | None:
        """The first legal hold covering ``item``, if any."""
        return next((hold for hold in self.holds if hold.covers(item)), None)

    def expiry(self, item: MemoryItem, now: datetime) -> RetentionRule | None:
        """The first retention rule under which ``item`` has expired at ``now`` (none while a
        hold covers it)."""
        if self.hold_on(item) is not None:
            return None
        return next((rule for rule in self.retention if rule.expired(item, now)), None)
