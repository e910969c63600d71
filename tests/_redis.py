"""The real Redis the tests use (``MEMOS_TEST_REDIS``, default 127.0.0.1:6379 db 0): every
store gets a fresh key prefix, and :func:`drop_redis_store` deletes it afterwards."""

from __future__ import annotations

import functools
import os
import uuid
from urllib.parse import parse_qsl, urlparse

import pytest
import redis

REDIS_URL = os.environ.get("MEMOS_TEST_REDIS", "redis://127.0.0.1:6379/0")


@functools.cache
def _redis_reachable() -> bool:
    try:
        with redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2) as client:
            return bool(client.ping())
    except redis.RedisError:
        return False


def fresh_redis_url() -> str:
    """A store URL on the test Redis with a prefix no other store uses. The Redis store is part
    of the product, so a missing Redis fails the test rather than skipping it."""
    if not _redis_reachable():
        pytest.fail(f"no Redis at {REDIS_URL}: start one or set MEMOS_TEST_REDIS")
    return f"{REDIS_URL}?prefix=memos-test-{uuid.uuid4().hex}"


def prefix_of(url: str) -> str:
    return dict(parse_qsl(urlparse(url).query))["prefix"]


def drop_redis_store(url: str) -> None:
    """Delete every key under the store's prefix."""
    with redis.Redis.from_url(REDIS_URL) as client:
        keys = list(client.scan_iter(match=f"{prefix_of(url)}:*", count=1000))
        if keys:
            client.delete(*keys)
