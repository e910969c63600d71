"""Immutable blobs, each under the key of its sha256 and checked against it when read."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Collection

from memos.errors import IntegrityError, InvalidInput

from ._connection import _Connection, _storage_errors
from ._values import _raw, _text

_DIGEST = re.compile(r"[0-9a-f]{64}")


def _checked_digest(digest: str) -> str:
    if not isinstance(digest, str) or not _DIGEST.fullmatch(digest):
        raise InvalidInput(f"not a blob digest: {digest!r}")
    return digest


class _Blobs(_Connection):
    """Content-addressed blobs."""

    @_storage_errors
    def put_blob(self, data: bytes) -> str:
        digest = hashlib.sha256(data).hexdigest()
        # written whole every time: idempotent, and it mends a copy that no longer matches
        self._redis.set(self._keys.blob(digest), data)
        return digest

    @_storage_errors
    def get_blob(self, digest: str) -> bytes | None:
        data = self._redis.get(self._keys.blob(_checked_digest(digest)))
        if data is None:
            return None
        if hashlib.sha256(_raw(data)).hexdigest() != digest:
            raise IntegrityError(f"blob {digest} does not match its digest", blob=digest)
        return _raw(data)

    @_storage_errors
    def blob_ages(self) -> dict[str, float]:
        prefix = self._keys.blob("")
        keys = sorted(_text(key) for key in self._redis.scan_iter(f"{prefix}*", 1000))
        keys = [key for key in keys if _DIGEST.fullmatch(key[len(prefix) :])]
        with self._redis.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.object("idletime", key)
            idle = pipe.execute(raise_on_error=False)
        # idle time: since the blob was last written or read, so never more than its age;
        # a key deleted meanwhile answers nothing and is left out
        return {
            key[len(prefix) :]: float(seconds)
            for key, seconds in zip(keys, idle, strict=True)
            if isinstance(seconds, int)
        }

    @_storage_errors
    def delete_blobs(self, digests: Collection[str]) -> int:
        keys = [self._keys.blob(_checked_digest(digest)) for digest in digests]
        return int(self._redis.delete(*keys)) if keys else 0
