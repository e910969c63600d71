"""``mos.keys``: the API keys of a MemOS server, kept in its store and managed by its operator
(``memos keys``); they have no route, so only an embedded handle has them."""

from __future__ import annotations

from typing import TYPE_CHECKING

from memos.core import _keys
from memos.core._types import ApiKey, utcnow
from memos.engine._operations import Namespace
from memos.errors import AccessDenied, InvalidInput

if TYPE_CHECKING:
    from memos.engine._mos import MemOS


class Keys(Namespace):
    """API keys: ``create``, ``list``, ``revoke`` (the operator's only)."""

    _handle: MemOS

    def create(self, principal: str) -> tuple[ApiKey, str]:
        """Make an API key for ``principal``: its record and the token, shown this once."""
        self._operator_only("create API keys")
        return _keys.create_key(self._handle.store, principal, self._handle.limits)

    def list(self) -> list[ApiKey]:
        """Every key, revoked ones included."""
        self._operator_only("list API keys")
        return self._handle.store.list_api_keys()

    def revoke(self, key_id: str) -> ApiKey:
        """Revoke a key: requests made with it are refused from now on."""
        self._operator_only("revoke API keys")
        if not isinstance(key_id, str):
            raise InvalidInput("a key id is a string", field="key_id")
        return self._handle.store.revoke_api_key(key_id, utcnow())

    def _operator_only(self, what: str) -> None:
        if self._handle.principal is not None:
            raise AccessDenied(f"only the operator may {what}")
