"""The one exception tree of MemOS.

Every error the library raises on purpose is a :class:`MemosError`. Each class carries the
HTTP status the server answers with and a stable ``code`` used in the JSON error envelope, so
the SDK, the CLI and the server report the same failure the same way::

    MemosError (500, internal)
    ├── InvalidInput (422, invalid_input)           bad text, metadata, names, arguments
    │   ├── TextTooLong (413, text_too_long)
    │   └── RequestTooLarge (413, request_too_large)  a request body over the server's limit
    ├── Unauthenticated (401, unauthenticated)     no, unknown or revoked API key
    ├── AccessDenied (403, access_denied)           principal may not touch the cube
    ├── NotFound (404, not_found)
    │   ├── CubeNotFound (404, cube_not_found)
    │   ├── ItemNotFound (404, item_not_found)
    │   ├── VersionNotFound (404, version_not_found)
    │   ├── KVEntryNotFound (404, kv_entry_not_found)
    │   └── JobNotFound (404, job_not_found)
    ├── Conflict (409, conflict)
    │   ├── CubeExists (409, cube_exists)
    │   ├── VersionConflict (409, version_conflict)  stale expected_version
    │   ├── ModelMismatch (409, model_mismatch)      a KV cache or adapter made by another model
    │   ├── UnsupportedByModel (409, unsupported_by_model)  KV blocks or adapters asked of an
    │   │                                            upstream (text-only) model
    │   └── PolicyRefused (409, policy_refused)      a cube policy forbids it (a tier label, a hold)
    │       └── QuotaExceeded (409, quota_exceeded)  a user's or the cube's quota is reached
    ├── IntegrityError (500, integrity_error)        the stored history does not verify
    │   ├── TamperedExport (422, tampered_export)    an export's checksums or chain fail
    │   └── CorruptArtifact (422, corrupt_artifact)  a KV cache file or manifest is malformed
    ├── StorageError (503, storage_error)            data dir missing, corrupt or locked
    │   └── DataDirError (503, data_dir_error)
    └── ModelUnavailable (503, model_unavailable)    the local model is missing or unloadable,
        │                                            or the upstream model is unreachable or failed
        └── UpstreamError (502, upstream_error)      the upstream refused the request (4xx) or
                                                     answered outside OpenAI's wire format

A failing call changes nothing: every error is raised before, or rolls back, the transaction.
"""

from __future__ import annotations

from typing import Any, ClassVar

__all__ = [
    "AccessDenied",
    "Conflict",
    "CorruptArtifact",
    "CubeExists",
    "CubeNotFound",
    "DataDirError",
    "IntegrityError",
    "InvalidInput",
    "ItemNotFound",
    "JobNotFound",
    "KVEntryNotFound",
    "MemosError",
    "ModelMismatch",
    "ModelUnavailable",
    "NotFound",
    "PolicyRefused",
    "QuotaExceeded",
    "RequestTooLarge",
    "StorageError",
    "TamperedExport",
    "TextTooLong",
    "Unauthenticated",
    "UnsupportedByModel",
    "UpstreamError",
    "VersionConflict",
    "VersionNotFound",
]


class MemosError(Exception):
    """Root of every error MemOS raises on purpose."""

    status: ClassVar[int] = 500
    code: ClassVar[str] = "internal"

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def to_dict(self) -> dict[str, Any]:
        """The JSON error envelope body shared by the CLI and the server."""
        return {"error": {"code": self.code, "message": self.message, "details": self.details}}


class InvalidInput(MemosError):
    """An argument is malformed: empty text, a bad name, a metadata value of the wrong type."""

    status = 422
    code = "invalid_input"


class TextTooLong(InvalidInput):
    """A memory text exceeds the configured size limit."""

    status = 413
    code = "text_too_long"


class RequestTooLarge(InvalidInput):
    """A request body exceeds the server's size limit."""

    status = 413
    code = "request_too_large"


class Unauthenticated(MemosError):
    """The request carries no API key, or one the server does not know or has revoked."""

    status = 401
    code = "unauthenticated"


class AccessDenied(MemosError):
    """The principal is neither the cube's owner nor holds a grant on it."""

    status = 403
    code = "access_denied"


class NotFound(MemosError):
    """A named thing does not exist (or is invisible to the principal)."""

    status = 404
    code = "not_found"


class CubeNotFound(NotFound):
    code = "cube_not_found"


class ItemNotFound(NotFound):
    code = "item_not_found"


class VersionNotFound(NotFound):
    code = "version_not_found"


class KVEntryNotFound(NotFound):
    code = "kv_entry_not_found"


class JobNotFound(NotFound):
    code = "job_not_found"


class Conflict(MemosError):
    """The request conflicts with the current state."""

    status = 409
    code = "conflict"


class CubeExists(Conflict):
    code = "cube_exists"


class VersionConflict(Conflict):
    """``expected_version`` no longer matches: someone else changed the item first."""

    code = "version_conflict"


class ModelMismatch(Conflict):
    """A derived artifact (a KV cache, an adapter) was made by a model with another
    fingerprint (weights or tokenizer) than the one it would be loaded into."""

    code = "model_mismatch"


class UnsupportedByModel(Conflict):
    """The request needs what only a local model whose weights run in this process has (KV
    blocks, LoRA adapters), but chat goes through an upstream, text-only model
    (:class:`memos.llm.OpenAICompatible`)."""

    code = "unsupported_by_model"


class PolicyRefused(Conflict):
    """A cube policy forbids the change: a tier label keeps a memory out of a tier, a legal
    hold keeps it from being deleted, erased or expired."""

    code = "policy_refused"


class QuotaExceeded(PolicyRefused):
    """The change would take a user or the cube past a quota of memories or bytes."""

    code = "quota_exceeded"


class IntegrityError(MemosError):
    """The stored history fails verification."""

    status = 500
    code = "integrity_error"


class TamperedExport(IntegrityError):
    """An exported cube's checksums, manifest or hash chain do not verify."""

    status = 422
    code = "tampered_export"


class CorruptArtifact(IntegrityError):
    """A stored or imported KV cache file or its manifest is malformed: wrong tensors,
    shapes, dtypes or fields. Loading it was refused before anything used it."""

    status = 422
    code = "corrupt_artifact"


class StorageError(MemosError):
    """The storage backend cannot serve the request."""

    status = 503
    code = "storage_error"


class DataDirError(StorageError):
    """The data directory is missing, unreadable or not a MemOS data directory."""

    code = "data_dir_error"


class ModelUnavailable(MemosError):
    """The local language model cannot be found or loaded, or the upstream model server
    cannot be reached, timed out or failed (a 5xx answer)."""

    status = 503
    code = "model_unavailable"


class UpstreamError(ModelUnavailable):
    """The upstream model server refused the request (a 4xx answer: a wrong key, an unknown
    model) or answered something that is not OpenAI's wire format. The upstream's status and
    message are in ``details``; its key never is."""

    status = 502
    code = "upstream_error"
