"""What every part of the Redis store shares: the client, the key names, pipelined reads
and the optimistic transaction each write runs in.

Atomicity. Every write is one MULTI/EXEC, planned optimistically: the plan WATCHes what it
reads (for a commit, see :mod:`._view`), checks it in Python and queues every write; if a
watched key changed after the read, EXEC writes nothing and the attempt starts over (bounded,
with jittered backoff). A check that fails raises before MULTI, writing nothing. The queued
commands only touch keys of the types this package writes, so EXEC applies all of them. A
batch over several cubes, and the global index keys, span several hash slots: one Redis runs
that transaction atomically, Redis Cluster would refuse it (single-cube keys are ready for it).
"""

from __future__ import annotations

import functools
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, ParamSpec, TypeVar

from redis import Redis
from redis.client import Pipeline
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, WatchError
from redis.exceptions import TimeoutError as RedisTimeoutError

from memos.errors import InvalidInput, StorageError

from ._layout import _Keys

# optimistic attempts before a commit gives up; the backoff between them grows to 0.1 s
_ATTEMPTS = 100
_MAX_BACKOFF_S = 0.1
# commands per pipeline round trip for batch reads
_CHUNK = 1000

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")
Command = tuple[str | bytes | int | float, ...]


def _storage_errors(method: Callable[P, R]) -> Callable[P, R]:
    """Redis failures (connection lost, server errors) become the typed ``StorageError``."""

    @functools.wraps(method)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return method(*args, **kwargs)
        except RedisError as exc:
            raise StorageError(f"redis: {exc}") from exc
        except UnicodeEncodeError:
            # commands are encoded before anything is sent: nothing was written
            raise InvalidInput("a value is not valid Unicode (a lone surrogate)") from None

    return wrapper


def _send(pipe: Pipeline, *command: str | bytes | int | float) -> object:
    """Run (watching) or queue (in MULTI) one command; redis-py leaves this unannotated."""
    return pipe.execute_command(*command)  # type: ignore[no-untyped-call]


def _backoff(attempt: int) -> None:
    # jitter, so that writers that collided do not collide again (not cryptography)
    time.sleep(random.uniform(0, min(_MAX_BACKOFF_S, 0.002 * 2**attempt)))  # noqa: S311


@dataclass
class _Plan(Generic[T]):
    """A transaction ready to run: its writes and what the caller gets once they are applied.

    ``proof`` (cube, seq, hash) names an event the writes append: when the connection breaks
    during EXEC, finding it in the log tells a write that was applied from one that was not."""

    result: T
    commands: list[Command] = field(default_factory=list)
    proof: tuple[str, int, str] | None = None


class _Connection:
    """The client and key names of one store, and the ways every part of it talks to
    Redis."""

    url: str
    _redis: Redis
    _keys: _Keys

    def _transact(self, plan: Callable[[Pipeline], _Plan[T]]) -> T:
        """Plan under WATCH and run the plan in MULTI/EXEC, planning again while a watched key
        changed meanwhile (a typed error from the plan ends it: nothing was written)."""
        for attempt in range(_ATTEMPTS):
            with self._redis.pipeline() as watcher:
                try:
                    planned = plan(watcher)
                    if self._execute(watcher, planned):
                        return planned.result
                except WatchError:
                    pass  # the watching connection broke while planning: nothing was written
            _backoff(attempt)
        raise StorageError(f"gave up after {_ATTEMPTS} attempts: other writers kept winning")

    def _execute(self, watcher: Pipeline, plan: _Plan[T]) -> bool:
        watcher.multi()
        for command in plan.commands:
            _send(watcher, *command)
        try:
            watcher.execute()
        except WatchError as exc:
            if not isinstance(exc.__context__, RedisConnectionError | RedisTimeoutError):
                return False  # a watched key changed: EXEC wrote nothing
            if plan.proof is None:
                raise StorageError("the connection broke during a write; it may be lost") from exc
            return self._landed(*plan.proof)
        return True

    def _landed(self, cube: str, seq: int, digest: str) -> bool:
        entries = self._redis.xrange(self._keys.cube(cube).log, f"{seq}-0", f"{seq}-0")
        return any((fields or {}).get(b"hash") == digest.encode() for _, fields in entries or [])

    def _pipelined(self, queue: Callable[[Pipeline], object], *, atomic: bool = False) -> list[Any]:
        with self._redis.pipeline(transaction=atomic) as pipe:
            queue(pipe)
            return pipe.execute()

    def _each(self, values: Sequence[T], queue: Callable[[Pipeline, T], object]) -> list[Any]:
        """One reply per value, read in pipelines of ``_CHUNK`` commands."""
        replies: list[Any] = []
        for start in range(0, len(values), _CHUNK):
            with self._redis.pipeline(transaction=False) as pipe:
                for value in values[start : start + _CHUNK]:
                    queue(pipe, value)
                replies.extend(pipe.execute())
        return replies
