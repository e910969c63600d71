"""Anchors: a cube's head written down outside the data directory, so a cut-off log is caught.

The hash chain proves that each event follows the one before it: an edited, dropped or
reordered event in the middle of a log breaks it. It cannot prove that nothing came after the
last event. Delete the newest events, set the head back, and what is left is a valid chain.

An anchor is the head (seq and hash of the cube's last event) at a point in time, kept where
whoever can change the data directory cannot. ``verify`` with an anchor checks that the log
still holds that very event and that the head has not gone back past it, so a truncation (or a
rewritten tail) up to the anchor's time is reported with the first seq that is gone. Events
written after the anchor are covered by the next one; a log rewritten in full (every event
sealed again) verifies unless it was anchored.

An anchor file holds the heads of one or more cubes. Signed with a key kept outside the data
directory (HMAC-SHA256 over the file's canonical JSON), it cannot be edited to fit a cut log by
someone who can write where the file is kept.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from typing import Literal

from pydantic import AwareDatetime, ConfigDict, Field, ValidationError

from memos.core._chain import canonical_json
from memos.core._model import Model
from memos.core._store import Store
from memos.core._types import Event, VerifyReport
from memos.errors import CubeNotFound, IntegrityError, InvalidInput

# shorter keys are refused: an HMAC is only as strong as its key
MIN_KEY_BYTES = 16


class CubeAnchor(Model):
    """A witness of a cube's head: its last event's ``seq`` and ``hash`` at time ``at``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    cube: str
    seq: int = Field(ge=1)
    hash: str = Field(pattern=r"^[0-9a-f]{64}$")
    at: AwareDatetime


class AnchorFile(Model):
    """What an anchor file holds: one head per cube, and its HMAC when signed."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    format: Literal["memos-anchor/1"] = "memos-anchor/1"
    heads: tuple[CubeAnchor, ...]
    hmac_sha256: str | None = None


def anchor_problem(
    anchor: CubeAnchor, found: Event | None, last_seq: int, head_seq: int
) -> tuple[int, str] | None:
    """The first seq at which the log no longer holds what ``anchor`` witnessed, and why.
    ``found`` is the log's event at the anchored seq (if any), ``last_seq`` the seq its last
    event has and ``head_seq`` the cube's head. The stored hash is compared: the chain check
    is what recomputes it."""
    when = anchor.at.isoformat(timespec="seconds")
    if found is None and last_seq < anchor.seq:
        return last_seq + 1, (
            f"the log ends at seq {last_seq}, but the head anchored at {when} is seq "
            f"{anchor.seq}: events {last_seq + 1} to {anchor.seq} are gone"
        )
    if found is None:
        return anchor.seq, f"the event at seq {anchor.seq}, anchored at {when}, is gone"
    if found.hash != anchor.hash:
        return anchor.seq, (
            f"the event at seq {anchor.seq} is not the one anchored at {when}: the log was "
            f"rewritten at or before seq {anchor.seq}"
        )
    if head_seq < anchor.seq:
        return head_seq + 1, (
            f"the cube's head is seq {head_seq}, before the head anchored at {when} "
            f"(seq {anchor.seq})"
        )
    return None


def held_problem(store: Store, anchor: CubeAnchor) -> tuple[int, str] | None:
    """:func:`anchor_problem` read cheaply from ``store``: the one anchored event and the
    head, not the whole log (``verify`` reads the whole log)."""
    try:
        head_seq, _ = store.head(anchor.cube)
    except CubeNotFound:
        return 1, f"the cube is gone, but its head at seq {anchor.seq} was anchored"
    found = store.events(anchor.cube, after_seq=anchor.seq - 1, until_seq=anchor.seq)
    return anchor_problem(anchor, found[0] if found else None, head_seq, head_seq)


def gone_report(anchor: CubeAnchor) -> VerifyReport:
    """The report on an anchored cube the store no longer has."""
    when = anchor.at.isoformat(timespec="seconds")
    return VerifyReport(
        cube=anchor.cube,
        ok=False,
        events=0,
        head_seq=0,
        first_bad_seq=1,
        problem=f"the cube is gone, but its head at seq {anchor.seq} was anchored at {when}",
    )


def anchor_file(heads: Iterable[CubeAnchor], key: bytes | None = None) -> AnchorFile:
    """An anchor file of ``heads`` (one per cube), signed when ``key`` is given."""
    unsigned = AnchorFile(heads=_one_per_cube(heads))
    if key is None:
        return unsigned
    return unsigned.model_copy(update={"hmac_sha256": _mac(unsigned, _checked_key(key))})


def dump_anchor_file(anchor: AnchorFile) -> str:
    return anchor.model_dump_json(indent=2) + "\n"


def read_anchor_file(text: str, key: bytes | None = None) -> AnchorFile:
    """Parse an anchor file and, with ``key``, check its signature.

    ``InvalidInput`` when it is no anchor file, or is signed and no key was given;
    ``IntegrityError`` when the signature does not match, or a key was given and the file is
    not signed (a signature can be stripped: a key means a signature is required)."""
    try:
        anchor = AnchorFile.model_validate_json(text)
    except ValidationError as exc:
        raise InvalidInput(f"not a MemOS anchor file: {exc.errors()[0]['msg']}") from exc
    _one_per_cube(anchor.heads)
    if key is None:
        if anchor.hmac_sha256 is not None:
            raise InvalidInput("the anchor file is signed: give the key it was signed with")
        return anchor
    if anchor.hmac_sha256 is None:
        raise IntegrityError("the anchor file is not signed, but a key was given to check it")
    expected = _mac(anchor, _checked_key(key))
    if not hmac.compare_digest(expected, anchor.hmac_sha256):
        raise IntegrityError("the anchor file's signature does not match: it was changed")
    return anchor


def _one_per_cube(heads: Iterable[CubeAnchor]) -> tuple[CubeAnchor, ...]:
    listed = tuple(heads)
    cubes = [head.cube for head in listed]
    if len(set(cubes)) != len(cubes):
        raise InvalidInput("an anchor file holds one head per cube")
    return listed


def _checked_key(key: bytes) -> bytes:
    if len(key) < MIN_KEY_BYTES:
        raise InvalidInput(f"an anchor key has at least {MIN_KEY_BYTES} bytes")
    return key


def _mac(unsigned: AnchorFile, key: bytes) -> str:
    body = canonical_json(unsigned.model_dump(mode="json", exclude={"hmac_sha256"}))
    return hmac.new(key, body, hashlib.sha256).hexdigest()
