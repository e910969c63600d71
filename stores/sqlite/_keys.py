"""The server's API keys, one row each; only the sha256 of each secret is kept."""

from __future__ import annotations

import sqlite3
from datetime import datetime

from memos.core._types import ApiKey
from memos.errors import Conflict, NotFound

from ._db import Connected


class KeyTable(Connected):
    """API keys: put, read, list and revoke."""

    def put_api_key(self, key: ApiKey) -> None:
        with self._write() as conn:
            try:
                conn.execute("INSERT INTO api_keys VALUES (?, ?)", (key.id, key.model_dump_json()))
            except sqlite3.IntegrityError:
                raise Conflict(f"an API key with id {key.id!r} exists", key_id=key.id) from None

    def get_api_key(self, key_id: str) -> ApiKey | None:
        rows = self._read("SELECT body FROM api_keys WHERE id = ?", (key_id,))
        return ApiKey.model_validate_json(rows[0][0]) if rows else None

    def list_api_keys(self) -> list[ApiKey]:
        keys = [ApiKey.model_validate_json(body) for (body,) in self._read(
            "SELECT body FROM api_keys"
        )]  # fmt: skip
        return sorted(keys, key=lambda k: (k.created_at, k.id))

    def revoke_api_key(self, key_id: str, at: datetime) -> ApiKey:
        with self._write() as conn:
            row = conn.execute("SELECT body FROM api_keys WHERE id = ?", (key_id,)).fetchone()
            if row is None:
                raise NotFound(f"no API key with id {key_id!r}", key_id=key_id)
            key = ApiKey.model_validate_json(row[0])
            if key.revoked_at is None:
                key = key.model_copy(update={"revoked_at": at})
                conn.execute(
                    "UPDATE api_keys SET body = ? WHERE id = ?", (key.model_dump_json(), key_id)
                )
        return key
