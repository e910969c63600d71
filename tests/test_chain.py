"""The hash chain on its own: canonical encoding, sealing, and what verify_chain catches."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from memos.core._chain import GENESIS_HASH, canonical_json, event_hash, seal, verify_chain
from memos.core._types import Event, EventOp

T0 = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)


def chain(n: int, cube: str = "c") -> list[Event]:
    events: list[Event] = []
    prev = GENESIS_HASH
    for seq in range(1, n + 1):
        event = seal(
            cube=cube,
            seq=seq,
            prev_hash=prev,
            ts=T0 + timedelta(seconds=seq),
            actor="a",
            op=EventOp.CREATE,
            item_id=f"i{seq}",
            reason=None,
            payload={"after": None, "n": seq},
        )
        events.append(event)
        prev = event.hash
    return events


def test_canonical_json_is_order_independent_and_compact() -> None:
    assert canonical_json({"b": 1, "a": [1, "é"]}) == canonical_json({"a": [1, "é"], "b": 1})
    assert canonical_json({"a": 1}) == b'{"a":1}'


def test_hash_does_not_depend_on_the_timezone_the_time_was_given_in() -> None:
    event = chain(1)[0]
    shifted = event.model_copy(update={"ts": event.ts.astimezone(timezone(timedelta(hours=5)))})
    assert event_hash(shifted) == event.hash


def test_a_sound_chain_verifies() -> None:
    events = chain(5)
    report = verify_chain("c", events, head=(5, events[-1].hash))
    assert report.ok
    assert report.events == 5
    assert report.head_seq == 5


def test_verify_names_the_first_bad_seq() -> None:
    events = chain(6)
    edited = events.copy()
    edited[2] = edited[2].model_copy(update={"actor": "mallory"})
    assert verify_chain("c", edited).first_bad_seq == 3

    dropped = events[:3] + events[4:]
    assert verify_chain("c", dropped).first_bad_seq == 4

    swapped = events.copy()
    swapped[1], swapped[2] = swapped[2], swapped[1]
    assert verify_chain("c", swapped).first_bad_seq == 2

    forged_payload = events.copy()
    forged_payload[4] = forged_payload[4].model_copy(update={"payload": {"after": None, "n": 0}})
    report = verify_chain("c", forged_payload)
    assert report.first_bad_seq == 5
    assert report.problem is not None
    assert "digest" in report.problem


def test_a_truncated_tail_is_caught_by_the_head() -> None:
    events = chain(4)
    report = verify_chain("c", events[:2], head=(4, events[-1].hash))
    assert not report.ok
    assert report.first_bad_seq == 3


def test_events_of_another_cube_are_rejected() -> None:
    report = verify_chain("c", chain(2, cube="other"))
    assert not report.ok
    assert report.first_bad_seq == 1
