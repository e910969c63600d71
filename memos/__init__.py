"""MemOS: a memory operating system for LLM applications.

Open an embedded data directory with :meth:`MemOS.open`, or a server with
:meth:`MemOS.connect` (a client with the same methods; httpx is imported then, not here);
everything else hangs off it. Both are a :class:`Handle`, the type to write code against when
it should run either way.
Errors live in :mod:`memos.errors`, embedders in :mod:`memos.embedding`, vector codecs in
:mod:`memos.codecs`, storage backends in :mod:`memos.stores`, the local language model in
:mod:`memos.llm` and activation memory (KV caches) in :mod:`memos.activation`; the last two
import torch, so ``import memos`` does not load them.
"""

from memos.core._anchor import CubeAnchor
from memos.core._erasure import CubeErasure, ErasureReceipt, ErasureRecord
from memos.core._history import FieldChange, ItemDiff
from memos.core._jobs import Job, JobFailure, JobKind, JobState
from memos.core._policies import CubePolicies, LegalHold, Quotas, RetentionRule
from memos.core._redaction import CustomPattern, RedactionPolicy
from memos.core._store import Change, CubeImport, Store, open_store, register_backend
from memos.core._types import (
    Access,
    AccessStats,
    ApiKey,
    Budgets,
    ChatReply,
    CubeInfo,
    DerivedEntry,
    Event,
    EventOp,
    HistoryEntry,
    ItemFilter,
    ItemStatus,
    MemoryItem,
    SchedulerConfig,
    SearchHit,
    SourceRef,
    Tier,
    VerifyReport,
)
from memos.core._validation import Limits
from memos.embedding import Embedder, HashEmbedder, MiniLMEmbedder
from memos.engine._audit import AuditReport
from memos.engine._collect import BlobCollection
from memos.engine._cube_stats import CubeStats
from memos.engine._handle import Handle
from memos.engine._mos import MemOS

__version__ = "0.1.0"

__all__ = [
    "Access",
    "AccessStats",
    "ApiKey",
    "AuditReport",
    "BlobCollection",
    "Budgets",
    "Change",
    "ChatReply",
    "CubeAnchor",
    "CubeErasure",
    "CubeImport",
    "CubeInfo",
    "CubePolicies",
    "CubeStats",
    "CustomPattern",
    "DerivedEntry",
    "Embedder",
    "ErasureReceipt",
    "ErasureRecord",
    "Event",
    "EventOp",
    "FieldChange",
    "Handle",
    "HashEmbedder",
    "HistoryEntry",
    "ItemDiff",
    "ItemFilter",
    "ItemStatus",
    "Job",
    "JobFailure",
    "JobKind",
    "JobState",
    "LegalHold",
    "Limits",
    "MemOS",
    "MemoryItem",
    "MiniLMEmbedder",
    "Quotas",
    "RedactionPolicy",
    "RetentionRule",
    "SchedulerConfig",
    "SearchHit",
    "SourceRef",
    "Store",
    "Tier",
    "VerifyReport",
    "__version__",
    "open_store",
    "register_backend",
]
