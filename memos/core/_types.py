"""The data model: memory items, cubes, events and what searches and history return."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from pydantic import ConfigDict, Field, model_validator

from memos.core._model import Model
from memos.core._policies import CubePolicies

MetadataValue = str | int | float | bool | None


def utcnow() -> datetime:
    """The current time, timezone-aware UTC, at microsecond precision."""
    return datetime.now(UTC)


class Tier(StrEnum):
    PLAINTEXT = "plaintext"
    ACTIVATION = "activation"
    PARAMETRIC = "parametric"


class ItemStatus(StrEnum):
    ACTIVE = "active"
    ARCHIVED = "archived"
    DELETED = "deleted"


class EventOp(StrEnum):
    CUBE_CREATE = "cube_create"
    CREATE = "create"
    UPDATE = "update"
    DELETE = "delete"
    ROLLBACK = "rollback"
    # cube-level: the cube's codec was fitted (or refitted) / changed; payload["cube"] holds
    # the new configuration
    CODEC_FIT = "codec_fit"
    REENCODE = "reencode"
    # derived artifacts: payload["derived"] holds the entry built / payload["dropped"] its id
    KV_BUILD = "kv_build"
    KV_DROP = "kv_drop"
    # a new version of a named adapter (consolidated, imported, retrained or rolled back) /
    # one marked stale because a source changed / one removed / the cube's default adapter set
    ADAPTER_BUILD = "adapter_build"
    ADAPTER_STALE = "adapter_stale"
    ADAPTER_DROP = "adapter_drop"
    ADAPTER_ATTACH = "adapter_attach"
    # cube-level: a principal was given / lost access to the cube (payload["cube"] holds the
    # new configuration, whose ``grants`` alone changed)
    GRANT = "grant"
    REVOKE = "revoke"
    # cube-level: the scheduler's policy, parameters or budgets for the cube were set
    # (payload["cube"] holds the new configuration, whose ``scheduler`` alone changed)
    CONFIGURE = "configure"
    # cube-level: the cube's policies (retention, legal holds, redaction, quotas) were set
    # (payload["cube"] holds the new configuration, whose ``policies`` alone changed)
    POLICY = "policy"
    # items erased from every tier (a user's right to be forgotten): payload["erasure"] names
    # them, the artifacts dropped with them and the blobs deleted; the payloads of their
    # earlier events are gone, which the chain accepts (see memos.core._erasure)
    ERASE = "erase"


class Access(StrEnum):
    """What a grant lets a principal do with a cube; an owner may do everything."""

    READ = "read"
    WRITE = "write"


class _Frozen(Model):
    model_config = ConfigDict(frozen=True, extra="forbid")


class MemoryItem(_Frozen):
    """One plaintext memory at one version. The projection of the cube's event log."""

    id: str
    cube: str
    tier: Tier = Tier.PLAINTEXT
    text: str
    user: str | None = None
    tags: tuple[str, ...] = ()
    metadata: dict[str, MetadataValue] = Field(default_factory=dict)
    occurred_at: datetime
    created_at: datetime
    updated_at: datetime
    version: int = 1
    status: ItemStatus = ItemStatus.ACTIVE

    @property
    def session(self) -> str | None:
        value = self.metadata.get("session")
        return None if value is None else str(value)

    def snapshot(self) -> dict[str, Any]:
        """The JSON form recorded in events; replaying snapshots rebuilds the projection."""
        return self.model_dump(mode="json")

    @classmethod
    def from_snapshot(cls, data: dict[str, Any]) -> MemoryItem:
        return cls.model_validate(data)


class Budgets(_Frozen):
    """What the scheduler may spend on a cube's tiers (``None``: no limit). ``kv_bytes``: its
    stored KV blocks together; ``kv_blocks``: how many; ``adapters`` and ``adapter_bytes``: its
    adapter versions kept; ``vector_bytes``: its vector index in RAM (the codes of its active
    memories); ``kv_resident_bytes``: its KV caches a process holds in RAM (least recently used
    out first, at once rather than at a tick). A budget lowered is met at the next tick."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    kv_bytes: int | None = Field(default=256 * 2**20, ge=0)
    kv_blocks: int | None = Field(default=16, ge=0)
    adapters: int | None = Field(default=4, ge=0)
    adapter_bytes: int | None = Field(default=64 * 2**20, ge=0)
    vector_bytes: int | None = Field(default=None, ge=0)
    kv_resident_bytes: int | None = Field(default=None, ge=0)


class SchedulerConfig(_Frozen):
    """How the scheduler treats a cube: the policy (by its name in the registry of
    :mod:`memos.core._scheduling`), the policy's parameters (checked by the policy; the ones
    not given keep its defaults) and the budgets."""

    policy: str = "balanced"
    parameters: dict[str, float | int | bool | str] = Field(default_factory=dict)
    budgets: Budgets = Field(default_factory=Budgets)
    enabled: bool = True


class CubeInfo(_Frozen):
    """A cube's identity and configuration. Fixed at creation except for the codec's fitted
    state and version (``codec_fit``, ``reencode`` events), the default adapter
    (``adapter_attach``), the grants (``grant``, ``revoke``), the scheduler's configuration
    (``configure``) and the governance policies (``policy``)."""

    name: str
    owner: str
    embedder: str
    dim: int
    codec: str = "fp32"
    created_at: datetime
    # The sha256 of the fitted codec state blob (None until a codec that needs fitting is
    # fitted), and a number that goes up with every fit or re-encode.
    codec_state: str | None = None
    codec_version: int = 0
    # how many active memories the cube held when its codec was last fitted (None: not fitted)
    codec_fit_items: int | None = None
    # how the cube's KV caches (activation memory) are stored: fp32, bf16 or int8
    kv_dtype: str = "fp32"
    # the adapter chat uses when none is named (``adapter_attach`` events set it)
    default_adapter: str | None = None
    # principals other than the owner who may read (or read and write) the cube; ``grant`` and
    # ``revoke`` events change it
    grants: dict[str, Access] = Field(default_factory=dict)
    # the scheduler's policy and budgets for the cube (None: the defaults of SchedulerConfig)
    scheduler: SchedulerConfig | None = None
    # retention, legal holds, redaction on write and quotas (None: none); ``policy`` events
    policies: CubePolicies | None = None


class ApiKey(_Frozen):
    """A server API key as the store holds it: the principal it stands for and the sha256 of
    its secret (the secret itself is shown once, when the key is made, and never stored)."""

    id: str
    principal: str
    secret_sha256: str
    created_at: datetime
    revoked_at: datetime | None = None


class SourceRef(_Frozen):
    """One item version a derived artifact was built from."""

    item_id: str
    version: int = Field(ge=1)


class DerivedEntry(_Frozen):
    """A derived artifact of a cube as the store holds it: a blob (safetensors) built from
    exact item versions, with its manifest. ``kind`` is ``"kv"`` for activation memory."""

    id: str
    cube: str
    kind: str
    blob: str
    size: int = Field(ge=0)
    sources: tuple[SourceRef, ...]
    manifest: dict[str, Any]
    created_at: datetime
    # built from item versions that are no longer current (adapters are kept, marked stale)
    stale: bool = False


class AccessStats(_Frozen):
    """How often and how lately an item was used (read by chat): not part of the log.

    ``frequency`` decays by half every ``half_life_s`` seconds and grows by one per access,
    so it estimates recent uses; it is the value as of ``last_access``."""

    item_id: str
    count: int = 0
    last_access: datetime | None = None
    frequency: float = 0.0


class CoAccess(_Frozen):
    """How often and how lately two memories (``a < b``) were retrieved together: the same
    decayed frequency as :class:`AccessStats`, per pair. Not part of the log."""

    a: str
    b: str
    count: int = 0
    last_access: datetime | None = None
    frequency: float = 0.0


class Refusal(_Frozen):
    """A change a cube policy refused (a tier label, a legal hold, a quota): no event was
    written, so the store keeps it apart, for the audit report."""

    ts: datetime
    actor: str
    code: str
    message: str


class Event(_Frozen):
    """One entry of a cube's append-only, hash-chained log.

    ``hash = sha256(prev_hash ‖ canonical JSON of the header)``; the header commits to the
    payload through ``payload_digest``, so a payload can be erased without breaking the chain.
    """

    cube: str
    seq: int
    ts: datetime
    actor: str
    op: EventOp
    item_id: str | None = None
    reason: str | None = None
    payload: dict[str, Any] | None = None
    payload_digest: str
    prev_hash: str
    hash: str

    @property
    def after(self) -> MemoryItem | None:
        """The item's state this event produced, when it changed an item."""
        if self.payload is None or self.payload.get("after") is None:
            return None
        return MemoryItem.from_snapshot(self.payload["after"])


class SearchHit(_Frozen):
    item: MemoryItem
    score: float


class HistoryEntry(_Frozen):
    """One version of an item together with the event that made it."""

    version: int
    item: MemoryItem
    event: Event


class VerifyReport(_Frozen):
    """The outcome of recomputing a cube's hash chain and checking its projection."""

    cube: str
    ok: bool
    events: int
    head_seq: int
    first_bad_seq: int | None = None
    problem: str | None = None


class ItemFilter(_Frozen):
    """Which items a search may return; applied inside the search, before top-k."""

    user: str | None = None
    tags: tuple[str, ...] = ()
    session: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    where: dict[str, MetadataValue] = Field(default_factory=dict)

    @property
    def is_empty(self) -> bool:
        return (
            self.user is None
            and not self.tags
            and self.session is None
            and self.since is None
            and self.until is None
            and not self.where
        )


class ChatReply(_Frozen):
    """What ``mos.chat`` returns: the answer, the memories in its prompt (and which of them the
    search found), and how much of the prompt came from a stored KV cache (``kv_entry``,
    ``cached_tokens``)."""

    query: str
    answer: str
    tokens: tuple[int, ...]
    memories: tuple[MemoryItem, ...]
    kv_entry: str | None
    prompt_tokens: int
    cached_tokens: int
    # the adapter version (its id in ``mos.lora.list``) the answer was generated through
    adapter: str | None = None
    # the ids of the memories the search for the query found, best first: the prompt's
    # ``memories`` are these, or a KV block's memories followed by the ones it lacks
    retrieved: tuple[str, ...] = ()
    # the answer's length in the model's tokens: ``len(tokens)`` (filled in when not given) for
    # the local model; through an upstream model, whose ``tokens`` are empty, its own count
    completion_tokens: int = 0
    # the stop sequence the answer ended at (the answer stops before it), if one did
    stop: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _count_completion(cls, data: Any) -> Any:
        if isinstance(data, dict) and "completion_tokens" not in data:
            return {**data, "completion_tokens": len(data.get("tokens") or ())}
        return data


class ReplyStream(ABC):
    """An answer's text pieces as they are generated; ``reply`` once the stream is exhausted.
    Embedded (:class:`memos.engine._chat.ChatStream`) and over HTTP alike."""

    _reply: ChatReply | None = None

    @abstractmethod
    def __iter__(self) -> Iterator[str]: ...

    @property
    def reply(self) -> ChatReply:
        if self._reply is None:
            raise RuntimeError("the reply is complete only once the stream is exhausted")
        return self._reply

    def run(self) -> ChatReply:
        """Read the stream to its end and return the reply."""
        for _ in self:
            pass
        return self.reply
