"""The server's API keys: a set of their ids and each key's JSON (the secret's sha256 only)."""

from __future__ import annotations

from datetime import datetime

from redis.client import Pipeline

from memos.core._types import ApiKey
from memos.errors import Conflict, NotFound

from ._connection import _Connection, _Plan, _send, _storage_errors
from ._values import _parsed, _text


class _ApiKeys(_Connection):
    """API keys by id."""

    @_storage_errors
    def put_api_key(self, key: ApiKey) -> None:
        created, _ = self._pipelined(
            lambda pipe: [
                pipe.set(self._keys.api_key(key.id), key.model_dump_json(), nx=True),
                pipe.sadd(self._keys.api_keys, key.id),  # a no-op when the id is taken
            ],
            atomic=True,
        )
        if not created:
            raise Conflict(f"an API key with id {key.id!r} exists", key_id=key.id)

    @_storage_errors
    def get_api_key(self, key_id: str) -> ApiKey | None:
        body = self._redis.get(self._keys.api_key(key_id))
        return None if body is None else _parsed(ApiKey, body, f"API key {key_id!r}")

    @_storage_errors
    def list_api_keys(self) -> list[ApiKey]:
        ids = sorted(_text(key_id) for key_id in self._redis.smembers(self._keys.api_keys))
        bodies = self._each(ids, lambda pipe, key_id: pipe.get(self._keys.api_key(key_id)))
        keys = [
            _parsed(ApiKey, body, f"API key {key_id!r}")
            for key_id, body in zip(ids, bodies, strict=True)
            if body is not None
        ]
        return sorted(keys, key=lambda k: (k.created_at, k.id))

    @_storage_errors
    def revoke_api_key(self, key_id: str, at: datetime) -> ApiKey:
        name = self._keys.api_key(key_id)

        def plan(watcher: Pipeline) -> _Plan[ApiKey]:
            _send(watcher, "WATCH", name)
            body = watcher.get(name)
            if body is None:
                raise NotFound(f"no API key with id {key_id!r}", key_id=key_id)
            key = _parsed(ApiKey, body, f"API key {key_id!r}")
            if key.revoked_at is not None:
                return _Plan(key)  # the first revocation time stands
            revoked = key.model_copy(update={"revoked_at": at})
            return _Plan(revoked, [("SET", name, revoked.model_dump_json())])

        return self._transact(plan)
