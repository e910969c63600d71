"""What a commit reads under WATCH, kept current by its own changes.

The commit WATCHes the head of each cube it touches and each global key it reads. Every commit
to a cube rewrites its head, so watching the head watches the whole cube: if another process
commits to it after the read, EXEC writes nothing and the attempt starts over. Two writers
therefore never extend a chain from the same head.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from redis import Redis
from redis.client import Pipeline

from memos.core._types import CubeInfo, DerivedEntry, MemoryItem
from memos.errors import CubeNotFound

from ._connection import _send
from ._layout import _Keys
from ._values import _item_from, _parsed, _text


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

    def event_seqs(self, cube: str, item_ids: Iterable[str]) -> dict[str, list[int]]:
        """The seqs of the cube's events of each item (read under the cube's watched head)."""
        ids = list(item_ids)
        keys = self._keys.cube(cube)
        replies = self._read(lambda pipe: [pipe.zrange(keys.item_events(i), 0, -1) for i in ids])
        return {
            i: [int(_text(seq)) for seq in found] for i, found in zip(ids, replies, strict=True)
        }

    def pairs_with(self, cube: str, item_ids: set[str]) -> list[str]:
        """The fields of the cube's co-access hash naming a pair with one of ``item_ids``."""
        fields = self._read(lambda pipe: pipe.hkeys(self._keys.cube(cube).co_access))[0]
        named = (_text(field) for field in fields)
        return [field for field in named if item_ids.intersection(field.split(" "))]

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
