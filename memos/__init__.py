"""MemOS: a memory operating system for LLM applications.

Open an embedded data directory with :meth:`MemOS.open`, or a server with
:meth:`MemOS.connect` (a client with the same methods, on the standard library's HTTP);
everything else hangs off it. Both are a :class:`Handle`, the type to write code against when
it should run either way.
Errors live in :mod:`memos.errors`, embedders in :mod:`memos.embedding`, vector codecs in
:mod:`memos.codecs`, storage backends in :mod:`memos.stores`, the local language model in
:mod:`memos.llm` and activation memory (KV caches) in :mod:`memos.activation`; the last two
import torch, so ``import memos`` does not load them.
"""

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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

# Each public name is imported on first use (PEP 562), so a program that needs a few of them
# (the ``memos`` command, the HTTP client) does not pay for numpy, FAISS and every model.
_HOME: dict[str, str] = {
    "Access": "memos.core._types",
    "AccessStats": "memos.core._types",
    "ApiKey": "memos.core._types",
    "AuditReport": "memos.engine._audit",
    "BlobCollection": "memos.engine._collect",
    "Budgets": "memos.core._types",
    "Change": "memos.core._store",
    "ChatReply": "memos.core._types",
    "CubeAnchor": "memos.core._anchor",
    "CubeErasure": "memos.core._erasure",
    "CubeImport": "memos.core._store",
    "CubeInfo": "memos.core._types",
    "CubePolicies": "memos.core._policies",
    "CubeStats": "memos.engine._cube_stats",
    "CustomPattern": "memos.core._redaction",
    "DerivedEntry": "memos.core._types",
    "Embedder": "memos.embedding",
    "ErasureReceipt": "memos.core._erasure",
    "ErasureRecord": "memos.core._erasure",
    "Event": "memos.core._types",
    "EventOp": "memos.core._types",
    "FieldChange": "memos.core._history",
    "Handle": "memos.engine._handle",
    "HashEmbedder": "memos.embedding",
    "HistoryEntry": "memos.core._types",
    "ItemDiff": "memos.core._history",
    "ItemFilter": "memos.core._types",
    "ItemStatus": "memos.core._types",
    "Job": "memos.core._jobs",
    "JobFailure": "memos.core._jobs",
    "JobKind": "memos.core._jobs",
    "JobState": "memos.core._jobs",
    "LegalHold": "memos.core._policies",
    "Limits": "memos.core._validation",
    "MemOS": "memos.engine._mos",
    "MemoryItem": "memos.core._types",
    "MiniLMEmbedder": "memos.embedding",
    "Quotas": "memos.core._policies",
    "RedactionPolicy": "memos.core._redaction",
    "RetentionRule": "memos.core._policies",
    "SchedulerConfig": "memos.core._types",
    "SearchHit": "memos.core._types",
    "SourceRef": "memos.core._types",
    "Store": "memos.core._store",
    "Tier": "memos.core._types",
    "VerifyReport": "memos.core._types",
    "open_store": "memos.core._store",
    "register_backend": "memos.core._store",
}


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module 'memos' has no attribute {name!r}")
    from importlib import import_module

    value = getattr(import_module(_HOME[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_HOME})


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
