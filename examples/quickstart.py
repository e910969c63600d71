"""Quickstart: a cube of memories from a conversation, searched, revised, rolled back and
verified.

    python examples/quickstart.py

Uses the bundled all-MiniLM-L6-v2 embedder (offline) and a temporary data directory, so it can
be run again and again. No language model is loaded.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from memos import MemOS

CUBE = "travel-assistant"
CONVERSATION = [
    {"role": "user", "content": "I'm flying to Tokyo on March 14th for a robotics conference."},
    {"role": "assistant", "content": "Noted! Do you have a seat preference?"},
    {"role": "user", "content": "Always a window seat, please."},
    {"role": "user", "content": "I'm allergic to peanuts, so no peanut snacks on board."},
]


def search(mos: MemOS, query: str) -> None:
    """The two best of Sam's memories for ``query``, each with its fused score (hybrid search
    ranks by meaning and by shared words, and fuses the two rankings)."""
    print(f"\nsearch: {query!r}")
    for hit in mos.search(query, cube=CUBE, user="sam", k=2):
        print(f"  {hit.score:.3f}  {hit.item.text}")


def main(data_dir: Path) -> None:
    with MemOS.open(data_dir) as mos:
        cube = mos.create_cube(CUBE, owner="sam")
        print(f"created cube {cube.name!r} owned by {cube.owner} in {data_dir}")

        # one memory per message, all from the same conversation
        memories = mos.add(CONVERSATION, cube=CUBE, user="sam", session="trip-planning")
        print(f"\nadded {len(memories)} memories from the conversation:")
        for memory in memories:
            print(f"  {memory.id}  v{memory.version}  {memory.text}")

        search(mos, "where is Sam travelling?")
        search(mos, "what must the airline know about Sam's food?")

        # an agent gets the seat preference wrong...
        seat = memories[2]
        wrong = mos.update(
            seat.id,
            "Always an aisle seat, please.",
            user="booking-agent",
            expected_version=seat.version,
            reason="misread the booking form",
        )
        print(f"\nupdated the seat memory to version {wrong.version}: {wrong.text!r}")
        print(mos.diff(seat.id, 1, 2).text_diff)

        # ...and the change is undone: a rollback is a new version, never an erased one
        restored = mos.rollback(
            seat.id, to_version=1, user="sam", reason="I never asked for an aisle seat"
        )
        print(f"rolled back: version {restored.version} has the text of version 1 again")
        print(f"\nhistory of {seat.id}:")
        for entry in mos.history(seat.id):
            print(
                f"  v{entry.version}  {entry.event.op.value:<8}  by {entry.event.actor:<13}  "
                f"{entry.item.text!r}"
            )

        print("\nthe cube's log (each event's hash covers the one before it):")
        for event in mos.log(CUBE):
            reason = f"  ({event.reason})" if event.reason else ""
            print(
                f"  #{event.seq}  {event.op.value:<11}  by {event.actor:<13}  "
                f"{event.hash[:12]}{reason}"
            )

        report = mos.verify(CUBE)
        status = "verified" if report.ok else f"FAILED at seq {report.first_bad_seq}"
        print(f"\nverify: {status} ({report.events} events, head seq {report.head_seq})")


if __name__ == "__main__":
    with tempfile.TemporaryDirectory(prefix="memos-quickstart-") as tmp:
        main(Path(tmp))
