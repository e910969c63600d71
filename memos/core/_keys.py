"""Server API keys: made once, shown once, stored as the sha256 of their secret.

A key reads ``memos_<id>_<secret>``: the id (12 hex digits) finds the stored record, the secret
(32 random bytes, URL-safe base64) is compared by its sha256 in constant time. The secret has
256 bits of entropy, so a fast hash is enough: nothing can be guessed from the stored digest, and
a stolen database lets nobody in. Revoking a key keeps its record (and who it was) for the audit.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets

from memos.core import _validation as check
from memos.core._store import KeyStore
from memos.core._types import ApiKey, utcnow
from memos.core._validation import Limits
from memos.errors import Unauthenticated

_TOKEN = re.compile(r"memos_([0-9a-f]{12})_([A-Za-z0-9_-]{43})")


def create_key(store: KeyStore, principal: str, limits: Limits) -> tuple[ApiKey, str]:
    """Make a key for ``principal``; returns its record and the token, which is never stored."""
    principal = check.namespace(check.principal(principal, "principal", limits))
    key_id, secret = secrets.token_hex(6), secrets.token_urlsafe(32)
    key = ApiKey(id=key_id, principal=principal, secret_sha256=_digest(secret), created_at=utcnow())
    store.put_api_key(key)
    return key, f"memos_{key_id}_{secret}"


def authenticate(store: KeyStore, token: str | None) -> ApiKey:
    """The live key ``token`` is, else :class:`Unauthenticated` (the same error whatever is
    wrong with it, so a caller learns nothing about which keys exist)."""
    match = _TOKEN.fullmatch(token or "")
    key = None if match is None else store.get_api_key(match.group(1))
    if (
        match is None
        or key is None
        or not hmac.compare_digest(key.secret_sha256, _digest(match.group(2)))
        or key.revoked_at is not None
    ):
        raise Unauthenticated("a valid API key is required (Authorization: Bearer memos_...)")
    return key


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()
