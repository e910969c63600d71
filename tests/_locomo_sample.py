"""Made-up chats between friends in the shape of the LoCoMo benchmark's data file.

``samples()`` assembles the hand-written building blocks of ``locomo_topics.json`` into
conversations, the same every time: a list of ``{sample_id, conversation, qa}`` where
``conversation`` holds ``speaker_a``, ``speaker_b``, ``session_N_date_time`` and ``session_N``
(turns ``{speaker, dia_id: "D<session>:<turn>", text}``), and ``qa`` holds
``{question, answer, evidence: [dia_id, ...], category}`` (1 multi-hop, 2 temporal,
4 single-hop, as in LoCoMo). Run as a script, it writes that list as JSON, a file that the
benchmarks take in place of LoCoMo's.
"""

from __future__ import annotations

import json
import random
import re
import sys
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

TOPICS = Path(__file__).with_name("data") / "locomo_topics.json"
CONVERSATIONS = 10
SESSIONS = 12
NEWS_PER_SPEAKER = 2  # per session

Event = dict[str, Any]


def samples(
    conversations: int = CONVERSATIONS, sessions: int = SESSIONS, seed: int = 0
) -> list[dict[str, Any]]:
    bank = json.loads(TOPICS.read_text(encoding="utf-8"))
    people = bank["people"]
    if 2 * conversations > len(people):
        raise ValueError(f"{len(people)} people make at most {len(people) // 2} conversations")
    rng = random.Random(seed)
    start = datetime(2023, 1, 9)
    pairs = [people[2 * n : 2 * n + 2] for n in range(conversations)]
    return [
        _conversation(bank, rng, f"chat-{n + 1}", pair, sessions, start + n * timedelta(17))
        for n, pair in enumerate(pairs)
    ]


def _conversation(
    bank: dict[str, Any],
    rng: random.Random,
    sample_id: str,
    pair: list[str],
    sessions: int,
    start: datetime,
) -> dict[str, Any]:
    news = {name: rng.sample(bank["topics"], sessions * NEWS_PER_SPEAKER) for name in pair}
    conversation: dict[str, Any] = {"speaker_a": pair[0], "speaker_b": pair[1]}
    events: list[Event] = []
    day = start
    for number in range(1, sessions + 1):
        day += timedelta(days=rng.randint(6, 20))
        when = day.replace(hour=rng.randint(8, 21), minute=rng.randint(0, 59))
        conversation[f"session_{number}_date_time"] = _locomo_date(when)
        session = Session(number)
        first, second = rng.sample(pair, 2)
        session.say(first, fill(rng.choice(bank["greet"]), friend=second))
        session.say(second, fill(rng.choice(bank["greet_back"]), friend=first))
        for teller in [first, second] * NEWS_PER_SPEAKER:
            friend = pair[1] if teller == pair[0] else pair[0]
            topic = news[teller].pop()
            values = {slot: rng.choice(options) for slot, options in topic["slots"].items()}
            values |= {"name": teller, "friend": friend}
            follow_up = rng.randrange(len(topic["ask"]))
            detail = topic["detail"][follow_up]
            ask = topic["ask"][follow_up]
            tell = session.say(teller, fill(rng.choice(topic["tell"]), **values))
            session.say(friend, fill(_joined(rng.choice(bank["ask_openers"]), ask), **values))
            told = session.say(
                teller, fill(_joined(detail[0], rng.choice(bank["afterthoughts"])), **values)
            )
            react = _joined(rng.choice(bank["react_openers"]), rng.choice(topic["react"]))
            session.say(friend, fill(react, **values))
            events.append(
                {"topic": topic, "values": values, "tell": tell, "detail": (told, detail),
                 "date": when}
            )  # fmt: skip
        last, other = rng.sample(pair, 2)
        session.say(last, fill(rng.choice(bank["bye"]), friend=other))
        session.say(other, fill(rng.choice(bank["bye_back"]), friend=last))
        conversation[f"session_{number}"] = session.turns
    return {"sample_id": sample_id, "conversation": conversation, "qa": _questions(events, rng)}


class Session:
    def __init__(self, number: int) -> None:
        self.number = number
        self.turns: list[dict[str, str]] = []

    def say(self, speaker: str, text: str) -> str:
        dia_id = f"D{self.number}:{len(self.turns) + 1}"
        self.turns.append({"speaker": speaker, "dia_id": dia_id, "text": text})
        return dia_id


def _questions(events: list[Event], rng: random.Random) -> list[dict[str, Any]]:
    qa: list[dict[str, Any]] = []

    def ask(question: str, answer: str, evidence: list[str], category: int, name: str) -> None:
        qa.append(
            {"question": _about(question, name), "answer": _about(answer, name),
             "evidence": evidence, "category": category}
        )  # fmt: skip

    for event in events:
        topic, values = event["topic"], event["values"]
        name = values["name"]
        for question, answer in topic["tell_qa"]:
            ask(fill(question, **values), fill(answer, **values), [event["tell"]], 4, name)
        told, (_, question, answer) = event["detail"]
        ask(fill(question, **values), fill(answer, **values), [told], 4, name)
        date = event["date"].strftime("%d %B %Y").lstrip("0")
        ask(f"When did {name} {topic['did']}?", date, [event["tell"]], 2, name)
    for name in dict.fromkeys(event["values"]["name"] for event in events):
        own = [event for event in events if event["values"]["name"] == name]
        for _ in range(3):
            early, late = sorted(rng.sample(own, 2), key=own.index)
            ask(
                f"Which came first for {name}: to {late['topic']['did']} "
                f"or to {early['topic']['did']}?",
                f"to {early['topic']['did']}",
                [early["tell"], late["tell"]],
                1,
                name,
            )
    return qa


def _joined(*sentences: str) -> str:
    return " ".join(sentence for sentence in sentences if sentence)


def fill(template: str, **values: str) -> str:
    return template.format_map(values)


def _about(text: str, name: str) -> str:
    """A question or answer says whose news it is where the news itself says "my"."""
    return re.sub(r"\bmy\b", f"{name}'s", re.sub(r"\bMy\b", f"{name}'s", text))


def _locomo_date(when: datetime) -> str:
    """LoCoMo's session time, e.g. "1:56 pm on 8 May, 2023"."""
    hour = when.hour % 12 or 12
    noon = "am" if when.hour < 12 else "pm"
    return f"{hour}:{when.minute:02d} {noon} on {when.day} {when:%B}, {when.year}"


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(f"usage: python {sys.argv[0]} OUT.json")
    Path(sys.argv[1]).write_text(json.dumps(samples(), indent=1) + "\n", encoding="utf-8")
