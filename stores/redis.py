"""A store on Redis, for servers: several API processes and workers share one store by URL.

``redis://host:port/db?prefix=NAME`` names a store (``prefix`` defaults to ``memos``); every key
starts with the prefix, so several stores can share one Redis database.

Key layout. ``P`` is the prefix and ``{C}`` the cube's name inside a Redis Cluster hash tag
(percent-encoded beyond ``A-Za-z0-9._-~``, so no brace or colon gets in), which puts every key
of a cube in one slot::

    P:format                      the layout version
    P:cubes                       set of cube names
    P:item-cube:<item id>         the cube that holds the item (item ids are global)
    P:derived-cube:<id>           the cube that holds the derived artifact (ids are global)
    P:access:<item id>            access statistics: count, last_access, frequency (hash)
    P:api-keys, P:api-key:<id>    the key ids (set); each key's JSON
    P:{jobs}:...                  the background job queue (see stores/_redis_jobs.py)
    P:blob:<sha256>               a blob's bytes

    P:{C}:info                    CubeInfo JSON
    P:{C}:head                    seq and hash of the cube's last event (hash)
    P:{C}:log                     the event log (stream; entry <seq>-0 holds the event header)
    P:{C}:payloads                seq -> payload JSON (hash), beside the log: an erasure can
                                  remove a payload while the chain, which holds its digest, stays
    P:{C}:item:<id>               the item: body (MemoryItem JSON) and version (hash)
    P:{C}:vector:<id>             its full-precision vector (float32 bytes)
    P:{C}:item-events:<id>        the seqs of its events (sorted set)
    P:{C}:items                   every item by the seq that last wrote it (sorted set)
    P:{C}:active                  active items as "<occurred_at> <id>" (sorted set, by lex)
    P:{C}:user:<u>, session:<s>, tag:<t>    active items with that value (sets)
    P:{C}:terms:<term>            keyword postings: active item -> term frequency (hash)
    P:{C}:lengths                 active item -> length in terms (hash; its size is the count)
    P:{C}:total-length            the sum of those lengths
    P:{C}:derived                 derived artifact id -> DerivedEntry JSON (hash)
    P:{C}:derived-order           their ids by the seq that built them (sorted set)
    P:{C}:derived-by:<item id>    the artifacts built from that item (set)

Atomicity. Every write is one MULTI/EXEC, planned optimistically: the commit WATCHes the head
of each cube it touches and each global key it reads, reads what the shared rules of
:mod:`memos.core._commit_rules` check, runs them in Python, seals the events onto the chain and
queues every write (log, payloads, items, indexes, postings, derived artifacts, the new heads)
in one transaction. Every commit to a cube rewrites its head, so watching the head watches the
whole cube: if another process commits to it after the read, EXEC writes nothing and the
attempt starts over (bounded, with jittered backoff). Two writers therefore never extend a
chain from the same head, and a check that fails raises before MULTI, writing nothing. The
queued commands only touch keys of the types this module writes, so EXEC applies all of them.
A batch over several cubes, and the global index keys, span several hash slots: one Redis runs
that transaction atomically, Redis Cluster would refuse it (single-cube keys are ready for it).
"""

from __future__ import annotations

import functools
import hashlib
import json
import random
import re
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Generic, ParamSpec, TypeVar
from urllib.parse import parse_qsl, quote, urlencode, urlparse, urlunparse

import numpy as np
from pydantic import BaseModel
from redis import Redis
from redis.client import Pipeline
from redis.commands.core import Script
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, WatchError
from redis.exceptions import TimeoutError as RedisTimeoutError

from memos.core import _commit_rules as rules
from memos.core._access import accessed
from memos.core._chain import GENESIS_HASH, seal
from memos.core._derived import REPLACE_OPS, invalidations, slot_key
from memos.core._jobs import Job, JobState
from memos.core._store import Change, CubeImport, Vector
from memos.core._types import (
    AccessStats,
    ApiKey,
    CubeInfo,
    DerivedEntry,
    Event,
    EventOp,
    ItemFilter,
    ItemStatus,
    MemoryItem,
)
from memos.core._validation import is_unicode
from memos.errors import (
    Conflict,
    CubeExists,
    CubeNotFound,
    DataDirError,
    IntegrityError,
    InvalidInput,
    NotFound,
    StorageError,
)

from . import _keywords  # relative: this package is installed as memos.stores
from ._redis_jobs import RedisJobQueue

FORMAT_VERSION = "1"
DEFAULT_PREFIX = "memos"
_PREFIX = re.compile(r"[A-Za-z0-9._-]{1,64}")
_DIGEST = re.compile(r"[0-9a-f]{64}")
# optimistic attempts before a commit gives up; the backoff between them grows to 0.1 s
_ATTEMPTS = 100
_MAX_BACKOFF_S = 0.1
# commands per pipeline round trip for batch reads
_CHUNK = 1000

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)
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


# keys -----------------------------------------------------------------------------------------


class _Keys:
    """The key names of one store: its global keys, and each cube's (:meth:`cube`)."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.format = f"{prefix}:format"
        self.cubes = f"{prefix}:cubes"
        self.api_keys = f"{prefix}:api-keys"

    def item_cube(self, item_id: str) -> str:
        return f"{self.prefix}:item-cube:{item_id}"

    def derived_cube(self, derived_id: str) -> str:
        return f"{self.prefix}:derived-cube:{derived_id}"

    def access(self, item_id: str) -> str:
        return f"{self.prefix}:access:{item_id}"

    def api_key(self, key_id: str) -> str:
        return f"{self.prefix}:api-key:{key_id}"

    def blob(self, digest: str) -> str:
        return f"{self.prefix}:blob:{digest}"

    def cube(self, name: str) -> _CubeKeys:
        return _CubeKeys(f"{self.prefix}:{{{quote(name, safe='')}}}")


@dataclass(frozen=True)
class _CubeKeys:
    """The keys of one cube, all under ``<prefix>:{<cube>}``."""

    base: str

    @property
    def info(self) -> str:
        return f"{self.base}:info"

    @property
    def head(self) -> str:
        return f"{self.base}:head"

    @property
    def log(self) -> str:
        return f"{self.base}:log"

    @property
    def payloads(self) -> str:
        return f"{self.base}:payloads"

    @property
    def items(self) -> str:
        return f"{self.base}:items"

    @property
    def active(self) -> str:
        return f"{self.base}:active"

    @property
    def lengths(self) -> str:
        return f"{self.base}:lengths"

    @property
    def total_length(self) -> str:
        return f"{self.base}:total-length"

    @property
    def derived(self) -> str:
        return f"{self.base}:derived"

    @property
    def derived_order(self) -> str:
        return f"{self.base}:derived-order"

    def item(self, item_id: str) -> str:
        return f"{self.base}:item:{item_id}"

    def vector(self, item_id: str) -> str:
        return f"{self.base}:vector:{item_id}"

    def item_events(self, item_id: str) -> str:
        return f"{self.base}:item-events:{item_id}"

    def user(self, user: str) -> str:
        return f"{self.base}:user:{user}"

    def session(self, session: str) -> str:
        return f"{self.base}:session:{session}"

    def tag(self, tag: str) -> str:
        return f"{self.base}:tag:{tag}"

    def terms(self, term: str) -> str:
        return f"{self.base}:terms:{term}"

    def derived_by(self, item_id: str) -> str:
        return f"{self.base}:derived-by:{item_id}"


# values ---------------------------------------------------------------------------------------


def _time_text(value: datetime) -> str:
    """Fixed-width UTC ISO 8601, so that string (and lex) order is time order."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat(timespec="microseconds")


def _text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, str):
        return value
    raise IntegrityError(f"unexpected value {value!r} read from Redis")


def _raw(value: object) -> bytes:
    if isinstance(value, bytes):
        return value
    raise IntegrityError(f"unexpected value {value!r} read from Redis")


def _checked_digest(digest: str) -> str:
    if not isinstance(digest, str) or not _DIGEST.fullmatch(digest):
        raise InvalidInput(f"not a blob digest: {digest!r}")
    return digest


def _parsed(model: type[M], body: object, what: str, **details: str) -> M:
    """A stored JSON record; one that no longer parses was edited outside MemOS."""
    try:
        return model.model_validate_json(_raw(body))
    except ValueError as exc:
        raise IntegrityError(f"{what} is malformed", **details) from exc


def _item_from(item_id: str, body: object) -> MemoryItem:
    return _parsed(MemoryItem, body, f"item {item_id}", item_id=item_id)


def _event_fields(event: Event) -> list[str]:
    fields = {
        "cube": event.cube,
        "seq": str(event.seq),
        "ts": _time_text(event.ts),
        "actor": event.actor,
        "op": event.op.value,
        "item_id": event.item_id,
        "reason": event.reason,
        "payload_digest": event.payload_digest,
        "prev_hash": event.prev_hash,
        "hash": event.hash,
    }
    # a missing field is None: "" is a reason like any other
    return [part for name, value in fields.items() if value is not None for part in (name, value)]


def _event_from(cube: str, entry_id: object, fields: dict[Any, Any], body: object) -> Event:
    seq_text = _text(entry_id).partition("-")[0]
    try:
        got = {_text(name): _text(value) for name, value in fields.items()}
        return Event(
            cube=got["cube"],
            seq=int(got["seq"]),
            ts=datetime.fromisoformat(got["ts"]),
            actor=got["actor"],
            op=EventOp(got["op"]),
            item_id=got.get("item_id"),
            reason=got.get("reason"),
            payload=None if body is None else json.loads(_raw(body)),
            payload_digest=got["payload_digest"],
            prev_hash=got["prev_hash"],
            hash=got["hash"],
        )
    except (KeyError, ValueError, TypeError, IntegrityError) as exc:
        # an entry that no longer parses was edited outside MemOS; verify names its seq
        seq = int(seq_text) if seq_text.isdigit() else 0
        raise IntegrityError(f"event {seq_text} of cube {cube!r} is malformed", seq=seq) from exc


def _stats_from(item_id: str, row: dict[Any, Any]) -> AccessStats | None:
    if not row:
        return None
    got = {_text(name): _text(value) for name, value in row.items()}
    return AccessStats(
        item_id=item_id,
        count=int(got["count"]),
        last_access=datetime.fromisoformat(got["last_access"]),
        frequency=float(got["frequency"]),
    )


def _active_member(item: MemoryItem) -> str:
    return f"{_time_text(item.occurred_at)} {item.id}"


def _filter_keys(keys: _CubeKeys, item: MemoryItem) -> list[str]:
    """The filter index sets an active item belongs to."""
    found = [keys.tag(tag) for tag in dict.fromkeys(item.tags)]
    if item.user is not None:
        found.append(keys.user(item.user))
    if item.session is not None:
        found.append(keys.session(item.session))
    return found


def _wanted_sets(keys: _CubeKeys, flt: ItemFilter) -> list[str]:
    """The index sets an item must be in to pass ``flt``."""
    found = [keys.tag(tag) for tag in flt.tags]
    if flt.user is not None:
        found.append(keys.user(flt.user))
    if flt.session is not None:
        found.append(keys.session(flt.session))
    return found


def _lex_range(flt: ItemFilter) -> tuple[str, str]:
    """The ZRANGEBYLEX bounds of ``since <= occurred_at < until``."""
    low = "-" if flt.since is None else f"[{_time_text(flt.since)}"
    high = "+" if flt.until is None else f"({_time_text(flt.until)}"
    return low, high


def _where_matches(item: MemoryItem, where: dict[str, Any]) -> bool:
    # SQLite's `json_extract(...) IS ?`: a missing key is null, true is 1, 1 is 1.0, and a
    # string equals only the same string; Python's == on the decoded values agrees.
    return all(item.metadata.get(key) == expected for key, expected in where.items())


def _loose(value: object) -> str:
    """Text read from a key or field that may have been written outside MemOS: bytes that are
    not UTF-8 still give a name (one that names nothing MemOS wrote)."""
    return _raw(value).decode("utf-8", errors="replace")


def _count(value: object) -> int | None:
    """A count the keyword index holds, or ``None`` when what is stored is not one."""
    text = _loose(value)
    return int(text) if text.isascii() and text.isdigit() else None


def _send(pipe: Pipeline, *command: str | bytes | int | float) -> object:
    """Run (watching) or queue (in MULTI) one command; redis-py leaves this unannotated."""
    return pipe.execute_command(*command)  # type: ignore[no-untyped-call]


def _backoff(attempt: int) -> None:
    # jitter, so that writers that collided do not collide again (not cryptography)
    time.sleep(random.uniform(0, min(_MAX_BACKOFF_S, 0.002 * 2**attempt)))  # noqa: S311


# one transaction ------------------------------------------------------------------------------


@dataclass
class _Plan(Generic[T]):
    """A transaction ready to run: its writes and what the caller gets once they are applied.

    ``proof`` (cube, seq, hash) names an event the writes append: when the connection breaks
    during EXEC, finding it in the log tells a write that was applied from one that was not."""

    result: T
    commands: list[Command] = field(default_factory=list)
    proof: tuple[str, int, str] | None = None


class _View:
    """What one attempt read under WATCH, kept current by the batch's own changes, so a later
    change of a batch sees the earlier ones as a later statement of one SQL transaction would.

    Each read follows a WATCH of a key that every write of the data read also writes (a cube's
    head, an item's or artifact's global index key), so all reads hold until EXEC or EXEC fails.
    """

    def __init__(self, redis: Redis, watcher: Pipeline, keys: _Keys) -> None:
        self._redis, self._watcher, self._keys = redis, watcher, keys
        self._watched: set[str] = set()
        self.heads: dict[str, tuple[int, str] | None] = {}
        self._infos: dict[str, CubeInfo] = {}
        self.items: dict[str, MemoryItem | None] = {}
        self._derived_by: dict[tuple[str, str], set[str]] = {}
        self._derived: dict[tuple[str, str], tuple[DerivedEntry, float] | None] = {}
        self.derived_cubes: dict[str, str | None] = {}

    def _watch(self, keys: Iterable[str]) -> None:
        new = [key for key in dict.fromkeys(keys) if key not in self._watched]
        if new:
            _send(self._watcher, "WATCH", *new)
            self._watched.update(new)

    def _read(self, queue: Callable[[Pipeline], object]) -> list[Any]:
        # another connection: WATCH is per connection, and the watching one runs each command
        # as its own round trip, while this one sends them all at once
        with self._redis.pipeline(transaction=False) as pipe:
            queue(pipe)
            return pipe.execute()

    # cubes

    def load_cubes(self, names: Iterable[str]) -> None:
        todo = [name for name in dict.fromkeys(names) if name not in self.heads]
        if not todo:
            return
        self._watch(self._keys.cube(name).head for name in todo)

        def queue(pipe: Pipeline) -> None:
            for name in todo:
                pipe.hmget(self._keys.cube(name).head, ["seq", "hash"])
                pipe.get(self._keys.cube(name).info)

        replies = self._read(queue)
        for name, (seq, digest), info in zip(todo, replies[::2], replies[1::2], strict=True):
            self.heads[name] = None if seq is None else (int(seq), _text(digest))
            if info is not None:
                self._infos[name] = _parsed(CubeInfo, info, f"cube {name!r}")

    def has_cube(self, name: str) -> bool:
        self.load_cubes([name])
        return self.heads[name] is not None

    def head(self, cube: str) -> tuple[int, str]:
        self.load_cubes([cube])
        head = self.heads[cube]
        if head is None:
            raise CubeNotFound(f"no cube named {cube!r}", cube=cube)
        return head

    def info(self, cube: str) -> CubeInfo:
        self.head(cube)
        return self._infos[cube]

    def set_info(self, info: CubeInfo) -> None:
        self._infos[info.name] = info

    # items

    def load_items(self, item_ids: Iterable[str]) -> None:
        todo = [i for i in dict.fromkeys(item_ids) if i not in self.items]
        if not todo:
            return
        self._watch(self._keys.item_cube(item_id) for item_id in todo)
        cubes = self._read(lambda pipe: [pipe.get(self._keys.item_cube(i)) for i in todo])
        located = [
            (item_id, _text(cube)) for item_id, cube in zip(todo, cubes, strict=True) if cube
        ]
        self.load_cubes(cube for _, cube in located)

        def queue(pipe: Pipeline) -> None:
            for item_id, cube in located:
                pipe.hget(self._keys.cube(cube).item(item_id), "body")
                pipe.smembers(self._keys.cube(cube).derived_by(item_id))

        replies = self._read(queue)
        self.items.update(dict.fromkeys(todo))
        for (item_id, cube), body, built in zip(located, replies[::2], replies[1::2], strict=True):
            self.items[item_id] = None if body is None else _item_from(item_id, body)
            self._derived_by[(cube, item_id)] = {_text(member) for member in built}

    def item(self, item_id: str) -> MemoryItem | None:
        self.load_items([item_id])
        return self.items[item_id]

    # derived artifacts

    def derived_by(self, cube: str, item_id: str) -> set[str]:
        """The ids of the cube's artifacts built from the item (the set itself, to update)."""
        if (cube, item_id) not in self._derived_by:
            self.load_cubes([cube])
            members = self._read(
                lambda pipe: pipe.smembers(self._keys.cube(cube).derived_by(item_id))
            )[0]
            self._derived_by[(cube, item_id)] = {_text(member) for member in members}
        return self._derived_by[(cube, item_id)]

    def derived(self, cube: str, derived_id: str) -> tuple[DerivedEntry, float] | None:
        """The cube's artifact with that id and its place in build order, if it stands."""
        if (cube, derived_id) not in self._derived:
            self.load_cubes([cube])
            keys = self._keys.cube(cube)
            body, row = self._read(
                lambda pipe: [
                    pipe.hget(keys.derived, derived_id),
                    pipe.zscore(keys.derived_order, derived_id),
                ]
            )
            if body is None:
                self._derived[(cube, derived_id)] = None
            else:
                entry = _parsed(DerivedEntry, body, f"derived artifact {derived_id}")
                self._derived[(cube, derived_id)] = (entry, float(row or 0))
        return self._derived[(cube, derived_id)]

    def standing(self, cube: str) -> list[DerivedEntry]:
        """Every artifact standing in the cube, the batch's own changes included."""
        self.load_cubes([cube])
        bodies = self._read(lambda pipe: pipe.hgetall(self._keys.cube(cube).derived))[0]
        found = {
            _text(derived_id): _parsed(DerivedEntry, body, f"derived artifact {derived_id!r}")
            for derived_id, body in bodies.items()
        }
        for (of_cube, derived_id), known in self._derived.items():
            if of_cube == cube and known is None:
                found.pop(derived_id, None)
            elif of_cube == cube and known is not None:
                found[derived_id] = known[0]
        return list(found.values())

    def set_derived(
        self, cube: str, derived_id: str, found: tuple[DerivedEntry, float] | None
    ) -> None:
        self._derived[(cube, derived_id)] = found
        self.derived_cubes[derived_id] = None if found is None else cube

    def derived_cube(self, derived_id: str) -> str | None:
        """The cube holding an artifact with that id (ids are unique across cubes)."""
        if derived_id not in self.derived_cubes:
            key = self._keys.derived_cube(derived_id)
            self._watch([key])
            cube = self._read(lambda pipe: pipe.get(key))[0]
            self.derived_cubes[derived_id] = None if cube is None else _text(cube)
        return self.derived_cubes[derived_id]


class _Batch:
    """The writes of one transaction, planned against a :class:`_View` they keep current."""

    def __init__(self, view: _View, keys: _Keys) -> None:
        self.view, self._keys = view, keys
        self._commands: list[Command] = []
        self._heads: dict[str, tuple[int, str]] = {}

    def _add(self, *command: str | bytes | int | float) -> None:
        self._commands.append(command)

    def finish(self) -> list[Command]:
        """Every queued write, then the new head of each cube the batch appended to."""
        for cube, (seq, digest) in self._heads.items():
            self._add("HSET", self._keys.cube(cube).head, "seq", seq, "hash", digest)
        return self._commands

    # commits

    def prefetch(self, changes: Sequence[Change]) -> None:
        """Read what the batch's checks need in a few round trips, not one per change."""
        self.view.load_cubes(change.cube for change in changes)
        sources = [s.item_id for c in changes if c.derived is not None for s in c.derived.sources]
        item_ids = [change.item_id for change in changes if change.item_id is not None]
        self.view.load_items([*item_ids, *sources])

    def commit(self, changes: Sequence[Change]) -> list[Event]:
        events: list[Event] = []
        pending = deque(changes)
        while pending:
            change = pending.popleft()
            events.append(self._apply(change))
            if change.after is not None:
                # the artifacts built from an older version go right after the change
                pending.extendleft(reversed(self._invalidated(change)))
        return events

    def _apply(self, change: Change) -> Event:
        seq, prev_hash = self.view.head(change.cube)
        if change.item_id is not None and change.expected_version is not None:
            current = self.view.item(change.item_id)
            rules.check_version(change, None if current is None else current.version)
        if change.cube_info is not None:
            rules.check_cube_successor(change, self.view.info(change.cube))
        self._check_new_derived(change)
        event = seal(
            cube=change.cube,
            seq=seq + 1,
            prev_hash=prev_hash,
            ts=change.ts,
            actor=change.actor,
            op=change.op,
            item_id=change.item_id,
            reason=change.reason,
            payload=change.payload(),
        )
        self.append_event(event)
        if change.after is not None:
            self.put_item(change.after, row=event.seq)
        if change.vector is not None and change.item_id is not None:
            cube = change.cube if change.after is None else change.after.cube
            self.put_vector(cube, change.item_id, change.vector)
        if change.cube_info is not None:
            self._add("SET", self._keys.cube(change.cube).info, change.cube_info.model_dump_json())
            self.view.set_info(change.cube_info)
        self._apply_derived(change, row=event.seq)
        return event

    def _check_new_derived(self, change: Change) -> None:
        entry = change.derived
        if entry is None or change.op in REPLACE_OPS:
            return
        self.view.load_items(source.item_id for source in entry.sources)
        rules.check_new_derived(
            change,
            id_taken=self.view.derived_cube(entry.id) is not None,
            sources={s.item_id: self.view.item(s.item_id) for s in entry.sources},
            standing=[] if slot_key(entry) is None else self.view.standing(entry.cube),
        )

    def _apply_derived(self, change: Change, *, row: int) -> None:
        if change.derived is not None and change.op in REPLACE_OPS:
            self.replace_derived(change.derived)
        elif change.derived is not None:
            self.insert_derived(change.derived, row=row)
        if change.dropped is not None:
            self.drop_derived(change.cube, change.dropped)

    def _invalidated(self, change: Change) -> list[Change]:
        item = change.after
        assert item is not None
        standing = [
            self.view.derived(item.cube, i) for i in self.view.derived_by(item.cube, item.id)
        ]
        ordered = sorted((found for found in standing if found is not None), key=lambda f: f[1])
        return invalidations(
            [entry for entry, _ in ordered], item, actor=change.actor, ts=change.ts
        )

    # cubes and events

    def put_cube(self, info: CubeInfo) -> None:
        self._add("SET", self._keys.cube(info.name).info, info.model_dump_json())
        self._add("SADD", self._keys.cubes, info.name)
        self.view.set_info(info)

    def append_event(self, event: Event) -> None:
        keys = self._keys.cube(event.cube)
        self._add("XADD", keys.log, f"{event.seq}-0", *_event_fields(event))
        if event.payload is not None:
            body = json.dumps(event.payload, ensure_ascii=False)
            self._add("HSET", keys.payloads, event.seq, body)
        if event.item_id is not None:
            self._add("ZADD", keys.item_events(event.item_id), event.seq, event.seq)
        self._heads[event.cube] = self.view.heads[event.cube] = (event.seq, event.hash)

    # items

    def put_item(self, item: MemoryItem, *, row: int) -> None:
        """Write the item's new state: the old one leaves the indexes and the new one enters
        them (only active items are indexed). ``row`` orders the cube's items by last write."""
        old = self.view.item(item.id)
        if old is not None:
            self._index(old, add=False)
            if old.cube != item.cube:
                self._move_out(old, item.cube)
        keys = self._keys.cube(item.cube)
        self._add(
            "HSET", keys.item(item.id), "body", item.model_dump_json(), "version", item.version
        )
        self._add("ZADD", keys.items, row, item.id)
        self._add("SET", self._keys.item_cube(item.id), item.cube)
        self._index(item, add=True)
        self.view.items[item.id] = item

    def _move_out(self, old: MemoryItem, cube: str) -> None:
        # an id written into another cube moves there with its vector, as a row would
        before, after = self._keys.cube(old.cube), self._keys.cube(cube)
        self._add("DEL", before.item(old.id))
        self._add("ZREM", before.items, old.id)
        self._add("COPY", before.vector(old.id), after.vector(old.id), "REPLACE")
        self._add("DEL", before.vector(old.id))

    def _index(self, item: MemoryItem, *, add: bool) -> None:
        if item.status != ItemStatus.ACTIVE:
            return
        keys = self._keys.cube(item.cube)
        if add:
            self._add("ZADD", keys.active, 0, _active_member(item))
        else:
            self._add("ZREM", keys.active, _active_member(item))
        for key in _filter_keys(keys, item):
            self._add("SADD" if add else "SREM", key, item.id)
        counts, length = _keywords.term_counts(item.text)
        for term, count in counts.items():
            if add:
                self._add("HSET", keys.terms(term), item.id, count)
            else:
                self._add("HDEL", keys.terms(term), item.id)
        if add:
            self._add("HSET", keys.lengths, item.id, length)
        else:
            self._add("HDEL", keys.lengths, item.id)
        self._add("INCRBY", keys.total_length, length if add else -length)

    def put_vector(self, cube: str, item_id: str, vector: Vector) -> None:
        data = np.ascontiguousarray(vector, dtype=np.float32).tobytes()
        self._add("SET", self._keys.cube(cube).vector(item_id), data)

    # derived artifacts

    def insert_derived(self, entry: DerivedEntry, *, row: int) -> None:
        keys = self._keys.cube(entry.cube)
        self._add("HSET", keys.derived, entry.id, entry.model_dump_json())
        self._add("ZADD", keys.derived_order, row, entry.id)
        for source in entry.sources:
            self._add("SADD", keys.derived_by(source.item_id), entry.id)
            self.view.derived_by(entry.cube, source.item_id).add(entry.id)
        self._add("SET", self._keys.derived_cube(entry.id), entry.cube)
        self.view.set_derived(entry.cube, entry.id, (entry, float(row)))

    def replace_derived(self, entry: DerivedEntry) -> None:
        found = self.view.derived(entry.cube, entry.id)
        if found is None or found[0].kind != entry.kind:
            raise NotFound(f"cube {entry.cube!r} has no derived artifact {entry.id!r}")
        self._add("HSET", self._keys.cube(entry.cube).derived, entry.id, entry.model_dump_json())
        self.view.set_derived(entry.cube, entry.id, (entry, found[1]))

    def drop_derived(self, cube: str, derived_id: str) -> None:
        found = self.view.derived(cube, derived_id)
        if found is None:
            raise NotFound(f"cube {cube!r} has no derived artifact {derived_id!r}")
        keys = self._keys.cube(cube)
        self._add("HDEL", keys.derived, derived_id)
        self._add("ZREM", keys.derived_order, derived_id)
        for source in found[0].sources:
            self._add("SREM", keys.derived_by(source.item_id), derived_id)
            self.view.derived_by(cube, source.item_id).discard(derived_id)
        self._add("DEL", self._keys.derived_cube(derived_id))
        self.view.set_derived(cube, derived_id, None)


def _check_import_ids(view: _View, data: CubeImport) -> None:
    """Ids are global: an import whose item or derived artifact id is taken would write into
    another cube, so it is refused (the message names no other cube). The lookups are watched,
    so a write that takes an id meanwhile makes the transaction start over."""
    view.load_items(item.id for item in data.items)
    for item in data.items:
        if view.items[item.id] is not None:
            raise Conflict(f"the id {item.id} of the import is taken", id=item.id)
    for entry in data.derived:
        if view.derived_cube(entry.id) is not None:
            raise Conflict(f"the id {entry.id} of the import is taken", id=entry.id)


# the store ------------------------------------------------------------------------------------


class RedisStore:
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

    # transactions -------------------------------------------------------------------------

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

    # cubes --------------------------------------------------------------------------------

    @_storage_errors
    def create_cube(self, cube: CubeInfo, actor: str) -> Event:
        event = seal(
            cube=cube.name,
            seq=1,
            prev_hash=GENESIS_HASH,
            ts=cube.created_at,
            actor=actor,
            op=EventOp.CUBE_CREATE,
            item_id=None,
            reason=None,
            payload={"cube": cube.model_dump(mode="json")},
        )

        def plan(watcher: Pipeline) -> _Plan[Event]:
            batch = _Batch(_View(self._redis, watcher, self._keys), self._keys)
            if batch.view.has_cube(cube.name):
                raise CubeExists(f"cube {cube.name!r} already exists", cube=cube.name)
            batch.put_cube(cube)
            batch.append_event(event)
            return _Plan(event, batch.finish(), proof=(cube.name, event.seq, event.hash))

        return self._transact(plan)

    @_storage_errors
    def get_cube(self, name: str) -> CubeInfo | None:
        info = self._redis.get(self._keys.cube(name).info)
        return None if info is None else _parsed(CubeInfo, info, f"cube {name!r}")

    @_storage_errors
    def list_cubes(self) -> list[CubeInfo]:
        names = sorted(_text(name) for name in self._redis.smembers(self._keys.cubes))
        infos = self._each(names, lambda pipe, name: pipe.get(self._keys.cube(name).info))
        return [
            _parsed(CubeInfo, info, f"cube {name!r}")
            for name, info in zip(names, infos, strict=True)
            if info is not None
        ]

    @_storage_errors
    def head(self, cube: str) -> tuple[int, str]:
        seq, digest = self._redis.hmget(self._keys.cube(cube).head, ["seq", "hash"])
        if seq is None or digest is None:
            raise CubeNotFound(f"no cube named {cube!r}", cube=cube)
        return int(seq), _text(digest)

    @_storage_errors
    def import_cube(self, data: CubeImport) -> None:
        data.check()
        name, last = data.cube.name, data.events[-1]

        def plan(watcher: Pipeline) -> _Plan[None]:
            batch = _Batch(_View(self._redis, watcher, self._keys), self._keys)
            if batch.view.has_cube(name):
                raise CubeExists(f"cube {name!r} already exists", cube=name)
            _check_import_ids(batch.view, data)
            batch.put_cube(data.cube)
            for event in data.events:
                batch.append_event(event)
            for row, item in enumerate(data.items, start=1):
                batch.put_item(item, row=row)
            for item_id, vector in data.vectors.items():
                batch.put_vector(name, item_id, vector)
            for row, entry in enumerate(data.derived, start=1):
                batch.insert_derived(entry, row=row)
            commands = batch.finish()
            # in the same MULTI: a refused import writes no blob (the key is the sha256 of
            # the bytes, checked by CubeImport.check, so an existing blob gets the same bytes)
            commands.extend(("SET", self._keys.blob(d), blob) for d, blob in data.blobs.items())
            return _Plan(None, commands, proof=(name, last.seq, last.hash))

        self._transact(plan)

    # writes -------------------------------------------------------------------------------

    @_storage_errors
    def commit(self, changes: Sequence[Change]) -> list[Event]:
        if not changes:
            return []

        def plan(watcher: Pipeline) -> _Plan[list[Event]]:
            batch = _Batch(_View(self._redis, watcher, self._keys), self._keys)
            batch.prefetch(changes)
            events = batch.commit(changes)
            last = events[-1]
            return _Plan(events, batch.finish(), proof=(last.cube, last.seq, last.hash))

        return self._transact(plan)

    # blobs --------------------------------------------------------------------------------

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

    # reads --------------------------------------------------------------------------------

    def _locate(self, item_ids: Sequence[str]) -> list[tuple[str, _CubeKeys]]:
        """The items that exist, with the keys of their cubes."""
        unique = list(dict.fromkeys(item_ids))
        cubes = self._each(unique, lambda pipe, item_id: pipe.get(self._keys.item_cube(item_id)))
        return [
            (item_id, self._keys.cube(_text(cube)))
            for item_id, cube in zip(unique, cubes, strict=True)
            if cube is not None
        ]

    def _bodies(self, located: Sequence[tuple[str, _CubeKeys]]) -> list[MemoryItem]:
        bodies = self._each(located, lambda pipe, found: pipe.hget(found[1].item(found[0]), "body"))
        return [
            _item_from(item_id, body)
            for (item_id, _), body in zip(located, bodies, strict=True)
            if body is not None
        ]

    @_storage_errors
    def get_item(self, item_id: str) -> MemoryItem | None:
        return self.get_items([item_id]).get(item_id)

    @_storage_errors
    def get_items(self, item_ids: Sequence[str], cube: str | None = None) -> dict[str, MemoryItem]:
        if cube is None:
            located = self._locate(item_ids)
        else:  # the keys are known: one round trip, no lookup of each item's cube
            located = [(item_id, self._keys.cube(cube)) for item_id in dict.fromkeys(item_ids)]
        return {item.id: item for item in self._bodies(located)}

    def iter_items(self, cube: str) -> Iterator[MemoryItem]:
        return iter(self._cube_items(cube))

    @_storage_errors
    def _cube_items(self, cube: str) -> list[MemoryItem]:
        keys = self._keys.cube(cube)
        ids = [_text(item_id) for item_id in self._redis.zrange(keys.items, 0, -1)]
        return self._bodies([(item_id, keys) for item_id in ids])

    @_storage_errors
    def filter_item_ids(self, cube: str, flt: ItemFilter) -> list[str]:
        if len(set(flt.tags)) != len(flt.tags):
            # as in SQLite, where an item must match the tags as many times as they are named
            return []
        keys = self._keys.cube(cube)
        sets = _wanted_sets(keys, flt)

        def queue(pipe: Pipeline) -> None:
            pipe.zrangebylex(keys.active, *_lex_range(flt))
            if sets:
                pipe.sinter(sets)

        members, *inside = self._pipelined(queue, atomic=True)
        ids = [_text(member).partition(" ")[2] for member in members]
        if sets:
            wanted = {_text(member) for member in inside[0]}
            ids = [item_id for item_id in ids if item_id in wanted]
        if flt.where:
            items = self._bodies([(item_id, keys) for item_id in ids])
            ids = [item.id for item in items if _where_matches(item, flt.where)]
        return ids

    @_storage_errors
    def keyword_search(
        self, cube: str, query: str, k: int, flt: ItemFilter
    ) -> list[tuple[str, float]]:
        terms = _keywords.query_terms(query)
        if not terms or k <= 0:
            return []
        keys = self._keys.cube(cube)
        allowed = None if flt.is_empty else self.filter_item_ids(cube, flt)
        unique, args = _keywords.bm25_script_args(terms, k, allowed)
        # one script reads the postings and lengths and ranks: one round trip, k replies
        names = [keys.lengths, keys.total_length, keys.items, *map(keys.terms, unique)]
        reply = self._bm25(keys=names, args=args)
        pairs = zip(reply[::2], reply[1::2], strict=True)
        return [(_text(doc), float(score)) for doc, score in pairs]

    @_storage_errors
    def index_mismatches(self, cube: str, active: Sequence[MemoryItem]) -> list[str]:
        keys = self._keys.cube(cube)
        # one pass over the keyspace finds the index keys of values no item has too
        names = sorted(set(map(_raw, self._redis.scan_iter(f"{keys.base}:*", count=1000))))
        indexed, lengths, total = self._keyword_index(keys, names)
        expected = {item.id: _keywords.term_counts(item.text) for item in active}
        differing = {
            item_id
            for item_id in indexed.keys() | lengths.keys() | expected.keys()
            if item_id not in expected
            or indexed.get(item_id, {}) != dict(expected[item_id][0])
            or lengths.get(item_id) != expected[item_id][1]
        }
        differing |= self._filter_mismatches(keys, names, active)
        if differing:
            return sorted(differing)
        if total != sum(length for _, length in expected.values()):
            raise IntegrityError(
                f"the keyword index of cube {cube!r} counts {total} terms in all, not the sum "
                "of its items' lengths",
                cube=cube,
            )
        return []

    def _filter_mismatches(
        self, keys: _CubeKeys, names: Sequence[bytes], active: Sequence[MemoryItem]
    ) -> set[str]:
        """The ids the filter indexes hold otherwise than ``active`` gives: the time-ordered
        set of active items, and the sets by user, session and tag among the cube's key
        ``names``."""
        members = {_loose(m) for m in self._redis.zrange(keys.active, 0, -1)}
        wanted = {_active_member(item) for item in active}
        differing = {member.partition(" ")[2] for member in members ^ wanted}
        expected: dict[str, set[str]] = {}
        for item in active:
            for name in _filter_keys(keys, item):
                expected.setdefault(name, set()).add(item.id)
        kinds = tuple(kind.encode() for kind in (keys.user(""), keys.session(""), keys.tag("")))
        sets = [_loose(name) for name in names if name.startswith(kinds)]
        held = self._each(sets, lambda pipe, name: pipe.smembers(name))
        found = {name: {_loose(m) for m in ids} for name, ids in zip(sets, held, strict=True)}
        for name in found.keys() | expected.keys():
            differing |= found.get(name, set()) ^ expected.get(name, set())
        return differing

    def _keyword_index(
        self, keys: _CubeKeys, names: Sequence[bytes]
    ) -> tuple[dict[str, dict[str, int | None]], dict[str, int | None], int | None]:
        """Each item's postings (term -> frequency), each item's length and the total length,
        as the index holds them (a value that is not a count reads as ``None``). The postings
        are those among the cube's key ``names``, so a term no item's text gives is seen too."""
        start = keys.terms("").encode()
        terms = [name for name in names if name.startswith(start)]
        postings = self._each(terms, lambda pipe, name: pipe.hgetall(name))
        indexed: dict[str, dict[str, int | None]] = {}
        for name, entries in zip(terms, postings, strict=True):
            term = _loose(name[len(start) :])
            for item_id, count in entries.items():
                indexed.setdefault(_loose(item_id), {})[term] = _count(count)
        lengths, total = self._pipelined(
            lambda pipe: [pipe.hgetall(keys.lengths), pipe.get(keys.total_length)], atomic=True
        )
        by_item = {_loose(item_id): _count(length) for item_id, length in lengths.items()}
        return indexed, by_item, 0 if total is None else _count(total)

    @functools.cached_property
    def _bm25(self) -> Script:
        # sent by digest; the text goes once to a Redis that does not know it yet
        return self._redis.register_script(_keywords.BM25_SCRIPT)

    @_storage_errors
    def get_vectors(self, item_ids: Sequence[str], cube: str | None = None) -> dict[str, Vector]:
        if cube is not None:  # one MGET of keys in one slot, instead of a lookup per item
            unique = list(dict.fromkeys(item_ids))
            keys = self._keys.cube(cube)
            raws = self._redis.mget([keys.vector(i) for i in unique]) if unique else []
            return {
                item_id: np.frombuffer(_raw(raw), dtype=np.float32)
                for item_id, raw in zip(unique, raws, strict=True)
                if raw is not None
            }
        located = self._locate(item_ids)
        data = self._each(located, lambda pipe, found: pipe.get(found[1].vector(found[0])))
        return {
            item_id: np.frombuffer(_raw(raw), dtype=np.float32)
            for (item_id, _), raw in zip(located, data, strict=True)
            if raw is not None
        }

    @_storage_errors
    def events(
        self,
        cube: str,
        *,
        after_seq: int = 0,
        until_seq: int | None = None,
        item_id: str | None = None,
    ) -> list[Event]:
        keys = self._keys.cube(cube)
        low = max(after_seq + 1, 1)
        if until_seq is not None and until_seq < low:
            return []
        if item_id is None:
            entries = self._redis.xrange(
                keys.log, str(low), "+" if until_seq is None else str(until_seq)
            )
        else:
            entries = self._item_entries(keys, item_id, low, until_seq)
        entries = entries or []
        seqs = [_text(entry_id).partition("-")[0] for entry_id, _ in entries]
        bodies = self._redis.hmget(keys.payloads, seqs) if seqs else []
        return [
            _event_from(cube, entry_id, fields or {}, body)
            for (entry_id, fields), body in zip(entries, bodies, strict=True)
        ]

    def _item_entries(
        self, keys: _CubeKeys, item_id: str, low: int, until_seq: int | None
    ) -> list[Any]:
        high: int | str = "+inf" if until_seq is None else until_seq
        found = self._redis.zrangebyscore(keys.item_events(item_id), low, high)
        seqs = [int(_text(seq)) for seq in found]
        replies = self._pipelined(
            lambda pipe: [pipe.xrange(keys.log, f"{seq}-0", f"{seq}-0") for seq in seqs]
        )
        return [entry for reply in replies for entry in reply]

    @_storage_errors
    def changed_since(self, cube: str, after_seq: int) -> tuple[set[str], int]:
        entries = self._redis.xrange(self._keys.cube(cube).log, str(max(after_seq + 1, 0)), "+")
        changed: set[str] = set()
        last = after_seq
        for entry_id, fields in entries or []:
            item_id = (fields or {}).get(b"item_id")
            if item_id is not None:
                changed.add(_text(item_id))
            last = max(last, int(_text(entry_id).partition("-")[0]))
        return changed, last

    @_storage_errors
    def derived_entries(self, cube: str, kind: str | None = None) -> list[DerivedEntry]:
        keys = self._keys.cube(cube)
        ids, bodies = self._pipelined(
            lambda pipe: [pipe.zrange(keys.derived_order, 0, -1), pipe.hgetall(keys.derived)],
            atomic=True,
        )
        what = f"cube {cube!r}: a derived artifact"
        entries = [_parsed(DerivedEntry, bodies[i], what) for i in ids if i in bodies]
        return [entry for entry in entries if kind is None or entry.kind == kind]

    # access statistics --------------------------------------------------------------------

    @_storage_errors
    def record_access(self, item_ids: Sequence[str], at: datetime, half_life_s: float) -> None:
        unique = list(dict.fromkeys(item_ids))
        if not unique:
            return

        def plan(watcher: Pipeline) -> _Plan[None]:
            _send(watcher, "WATCH", *(self._keys.access(item_id) for item_id in unique))
            rows = self._each(
                unique, lambda pipe, item_id: pipe.hgetall(self._keys.access(item_id))
            )
            commands: list[Command] = []
            for item_id, row in zip(unique, rows, strict=True):
                before = _stats_from(item_id, row) or AccessStats(item_id=item_id)
                stats = accessed(before, at, half_life_s)
                commands.append(
                    ("HSET", self._keys.access(item_id), "count", stats.count,
                     "last_access", _time_text(at), "frequency", repr(stats.frequency))
                )  # fmt: skip
            return _Plan(None, commands)

        self._transact(plan)

    @_storage_errors
    def access_stats(self, item_ids: Sequence[str]) -> dict[str, AccessStats]:
        unique = list(dict.fromkeys(item_ids))
        rows = self._each(unique, lambda pipe, item_id: pipe.hgetall(self._keys.access(item_id)))
        found = (_stats_from(item_id, row) for item_id, row in zip(unique, rows, strict=True))
        return {stats.item_id: stats for stats in found if stats is not None}

    # API keys -----------------------------------------------------------------------------

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

    # background jobs: see stores/_redis_jobs.py ---------------------------------------------

    @_storage_errors
    def enqueue_job(self, job: Job) -> None:
        self._jobs.enqueue(job)

    @_storage_errors
    def claim_job(self, worker: str, now: datetime, lease_s: float) -> Job | None:
        return self._jobs.claim(worker, now, lease_s)

    @_storage_errors
    def renew_job(self, job_id: str, worker: str, now: datetime, lease_s: float) -> Job:
        return self._jobs.renew(job_id, worker, now, lease_s)

    @_storage_errors
    def finish_job(self, job: Job) -> Job:
        return self._jobs.finish(job)

    @_storage_errors
    def cancel_job(self, job_id: str, now: datetime) -> Job:
        return self._jobs.cancel(job_id, now)

    @_storage_errors
    def get_job(self, job_id: str) -> Job | None:
        return self._jobs.get(job_id)

    @_storage_errors
    def list_jobs(self, cube: str) -> list[Job]:
        return self._jobs.in_cube(cube)

    @_storage_errors
    def job_counts(self) -> dict[JobState, int]:
        return self._jobs.counts()
