"""The key layout of the Redis store, and the index sets an item belongs to.

``P`` is the prefix and ``{C}`` the cube's name inside a Redis Cluster hash tag
(percent-encoded beyond ``A-Za-z0-9._-~``, so no brace or colon gets in), which puts every key
of a cube in one slot::

    P:format                      the layout version
    P:cubes                       set of cube names
    P:item-cube:<item id>         the cube that holds the item (item ids are global)
    P:derived-cube:<id>           the cube that holds the derived artifact (ids are global)
    P:access:<item id>            access statistics: count, last_access, frequency (hash)
    P:api-keys, P:api-key:<id>    the key ids (set); each key's JSON
    P:{jobs}:...                  the background job queue (see :mod:`._jobs`)
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
    P:{C}:accessed, P:{C}:co-access   the items a use named (set); pairs used together (hash)
    P:{C}:refusals                the changes a policy refused (list of JSON, oldest first)
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote

from memos.core._types import MemoryItem

from ._values import _time_text


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
    def accessed(self) -> str:
        """The set of the cube's item ids that a recorded use named."""
        return f"{self.base}:accessed"

    @property
    def co_access(self) -> str:
        """The hash of the cube's pairs of items retrieved together (field ``a b``)."""
        return f"{self.base}:co-access"

    @property
    def refusals(self) -> str:
        """The list of the cube's refused changes (JSON each, oldest first)."""
        return f"{self.base}:refusals"

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
