"""The Redis store, composed from one part per concern, and how one is opened.

``redis://host:port/db?prefix=NAME`` names a store (``prefix`` defaults to ``memos``); every key
starts with the prefix, so several stores can share one Redis database (the keys:
:mod:`._layout`).
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlencode, urlparse, urlunparse

from redis import Redis
from redis.exceptions import RedisError

from memos.core._validation import is_unicode
from memos.errors import DataDirError, InvalidInput

from ._access import _Access
from ._api_keys import _ApiKeys
from ._blobs import _Blobs
from ._derived import _Derived
from ._items import _Items
from ._jobs import RedisJobQueue, _Jobs
from ._layout import _Keys
from ._log import _Cubes
from ._search import _Search
from ._values import _text

FORMAT_VERSION = "1"
DEFAULT_PREFIX = "memos"
_PREFIX = re.compile(r"[A-Za-z0-9._-]{1,64}")


class RedisStore(_Cubes, _Search, _Items, _Derived, _Access, _ApiKeys, _Jobs, _Blobs):
    """A :class:`memos.Store` over one Redis database, its keys under one prefix."""

    url: str

    def __init__(self, client: Redis, *, prefix: str, url: str, create: bool = True) -> None:
        if not _PREFIX.fullmatch(prefix):
            raise DataDirError(
                f"bad Redis key prefix {prefix!r}: use 1-64 letters, digits, '.', '_' or '-'"
            )
        self.url = url
        self._redis = client
        self._keys = _Keys(prefix)
        self._jobs = RedisJobQueue(client, prefix)
        self._check_format(create)

    @classmethod
    def from_url(cls, url: str, *, create: bool = True) -> RedisStore:
        """Open ``redis://host:port/db?prefix=NAME`` (or ``rediss://``); other query
        parameters go to the Redis client."""
        parsed = urlparse(url)
        if parsed.scheme not in ("redis", "rediss"):
            raise DataDirError(f"not a redis store URL: {url!r}")
        if not is_unicode(url):
            raise InvalidInput(f"the store URL {url!r} is not valid Unicode", field="store")
        query = parse_qsl(parsed.query, keep_blank_values=True)
        prefix = dict(query).get("prefix", DEFAULT_PREFIX)
        options = [(name, value) for name, value in query if name != "prefix"]
        client_url = urlunparse(parsed._replace(query=urlencode(options)))
        store_url = urlunparse(parsed._replace(query=urlencode([*options, ("prefix", prefix)])))
        try:
            client = Redis.from_url(client_url)
        except (ValueError, RedisError) as exc:
            raise DataDirError(f"cannot open {url!r}: {exc}") from exc
        return cls(client, prefix=prefix, url=store_url, create=create)

    def _check_format(self, create: bool) -> None:
        try:
            if create:
                self._redis.set(self._keys.format, FORMAT_VERSION, nx=True)
            found = self._redis.get(self._keys.format)
        except RedisError as exc:
            raise DataDirError(f"cannot reach the store at {self.url}: {exc}") from exc
        if found is None:
            raise DataDirError(f"no MemOS store at {self.url}")
        if _text(found) != FORMAT_VERSION:
            raise DataDirError(f"store format {_text(found)} is not supported ({FORMAT_VERSION})")

    def close(self) -> None:
        self._redis.close()
