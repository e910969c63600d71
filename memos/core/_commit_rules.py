"""What a store checks inside its commit transaction, as pure functions every backend shares.

A backend reads the current state under its lock (or watch) and hands it here; each rule raises
a typed error and the backend writes nothing. Keeping the rules out of the backends keeps two
stores from disagreeing about what a valid change is.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from memos.core._derived import ADAPTER_KIND, REPLACE_OPS, slot_key
from memos.core._governance import NO_KV, NO_PARAMETRIC, refuse_labelled
from memos.core._store import Change
from memos.core._types import CubeInfo, DerivedEntry, EventOp, ItemStatus, MemoryItem
from memos.errors import Conflict, InvalidInput, ItemNotFound, VersionConflict

# the fields of a cube's configuration each cube-level event may change
_CODEC_FIELDS = frozenset({"codec", "codec_state", "codec_version", "codec_fit_items"})
CHANGEABLE: dict[EventOp, frozenset[str]] = {
    EventOp.CODEC_FIT: _CODEC_FIELDS,
    EventOp.REENCODE: _CODEC_FIELDS,
    EventOp.ADAPTER_ATTACH: frozenset({"default_adapter"}),
    EventOp.GRANT: frozenset({"grants"}),
    EventOp.REVOKE: frozenset({"grants"}),
    EventOp.CONFIGURE: frozenset({"scheduler"}),
    EventOp.POLICY: frozenset({"policies"}),
}


def check_version(change: Change, current: int | None) -> None:
    """An item change names the version it follows: ``current`` is the stored one (``None``
    when the item does not exist)."""
    if change.item_id is None or change.expected_version is None:
        return
    if (current or 0) == change.expected_version:
        return
    if current is None:
        raise ItemNotFound(f"no memory with id {change.item_id!r}", item_id=change.item_id)
    raise VersionConflict(
        f"memory {change.item_id} is at version {current}, "
        f"not the expected {change.expected_version}",
        item_id=change.item_id,
        current=current,
        expected=change.expected_version,
    )


def check_cube_successor(change: Change, current: CubeInfo) -> None:
    """A new configuration follows the stored one: a codec change (fit, re-encode) bumps
    ``codec_version`` by one and changes only the codec's fields; an ``adapter_attach``, a
    ``grant`` or a ``revoke`` changes only its own field. Anything else differing means the
    change was computed from a configuration that changed meanwhile, which it would overwrite."""
    new = change.cube_info
    if new is None:
        return
    changeable = CHANGEABLE.get(change.op)
    if new.name != change.cube or change.item_id is not None or changeable is None:
        raise InvalidInput("a cube's new configuration comes with a cube-level event")
    expected_version = current.codec_version + (1 if changeable is _CODEC_FIELDS else 0)
    if new.codec_version != expected_version:
        raise VersionConflict(
            f"cube {change.cube!r} is at codec version {current.codec_version}; "
            f"version {new.codec_version} does not follow it",
            cube=change.cube,
            current=current.codec_version,
            expected=new.codec_version - 1,
        )
    if new.model_dump(exclude=set(changeable)) != current.model_dump(exclude=set(changeable)):
        raise VersionConflict(
            f"cube {change.cube!r} changed meanwhile; its new configuration is stale",
            cube=change.cube,
        )


def check_new_derived(
    change: Change,
    *,
    id_taken: bool,
    sources: Mapping[str, MemoryItem | None],
    standing: Iterable[DerivedEntry] = (),
) -> None:
    """A new artifact (``change.derived``, not a replacement) comes with a cube-level event of
    its cube, a fresh id and (an adapter) a fresh name and version among the cube's
    ``standing`` artifacts of its kind, and its sources are items of that cube, none labelled
    to stay out of its tier (:mod:`memos.core._governance`); unless it is built stale, each at
    the active version it names. ``sources`` maps each source id to the
    stored item; a store reads ``standing`` only when :func:`memos.core._derived.slot_key` names a
    key for the new artifact."""
    entry = change.derived
    if entry is None or change.op in REPLACE_OPS:
        return
    if entry.cube != change.cube or change.item_id is not None:
        raise InvalidInput("a derived artifact comes with a cube-level event of its cube")
    if id_taken:
        raise Conflict(f"a derived artifact with id {entry.id} exists", derived=entry.id)
    key = slot_key(entry)
    if key is not None and any(slot_key(other) == key for other in standing):
        raise VersionConflict(f"{entry.kind} {key} exists in cube {entry.cube!r}", taken=key)
    for source in entry.sources:
        item = sources.get(source.item_id)
        if item is None or item.cube != change.cube:
            raise ItemNotFound(
                f"no memory with id {source.item_id!r} in cube {change.cube!r}",
                item_id=source.item_id,
            )
        label = NO_PARAMETRIC if entry.kind == ADAPTER_KIND else NO_KV
        refuse_labelled([item], label, f"a {entry.kind} artifact")
        current = item.version == source.version and item.status == ItemStatus.ACTIVE
        if not current and not entry.stale:
            raise VersionConflict(
                f"memory {source.item_id} is at version {item.version} ({item.status}), "
                f"not the active version {source.version} the artifact was built from",
                item_id=source.item_id,
                current=item.version,
                expected=source.version,
            )


def check_erasure(
    change: Change, cubes: Mapping[str, str | None], built_from: Iterable[str]
) -> None:
    """An erasure is a cube-level ``erase`` event of the cube whose items it names (``cubes``:
    each erased id -> the cube that holds it, ``None`` when no item has that id), and no
    artifact the store keeps is still built from one of them (``built_from``: the ids among
    them that a standing artifact names, read after the commit's earlier drops)."""
    if not change.erased:
        return
    if change.op != EventOp.ERASE or change.item_id is not None or change.after is not None:
        raise InvalidInput("items are erased by a cube-level erase event")
    for item_id in change.erased:
        if cubes.get(item_id) != change.cube:
            raise ItemNotFound(
                f"no memory with id {item_id!r} in cube {change.cube!r}", item_id=item_id
            )
    left = sorted(built_from)
    if left:
        raise VersionConflict(
            f"an artifact of cube {change.cube!r} is still built from memory {left[0]}",
            item_id=left[0],
        )
