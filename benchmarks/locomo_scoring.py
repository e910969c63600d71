"""The pure parts of the LoCoMo retrieval benchmark: reading conversations, scoring rankings.

No model, store or clock here, so the tests can check every rule on a small synthetic
conversation. A LoCoMo file is a list of samples ``{sample_id, conversation, qa}``; each
dialogue turn becomes one memory, each question one search inside its conversation, and a
ranking is scored against the question's ``evidence`` (the dia_ids of the turns that hold the
answer):

- ``hit@k`` (reported as recall@k): at least one evidence turn is among the top ``k``;
- ``all@k``: every evidence turn is among the top ``k`` (stricter; impossible at ``k`` = 1
  for a question with two evidence turns).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

CATEGORIES: dict[int, str] = {
    1: "multi-hop",
    2: "temporal",
    3: "open-domain",
    4: "single-hop",
    5: "adversarial",
}
OVERALL = "overall"
SESSION_DATE_FORMAT = "%I:%M %p on %d %B, %Y"  # LoCoMo's "1:56 pm on 8 May, 2023"

_SESSION_KEY = re.compile(r"session_(\d+)$")
# "D8:6", and the malformed "D:11:26" seen in the data; anything else is not an id
_DIA_ID = re.compile(r"D:?(\d+):(\d+)")


# -- reading ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Turn:
    """One dialogue turn: the unit stored as a memory."""

    conversation: str
    dia_id: str
    speaker: str
    text: str
    session: int
    session_date: str

    @property
    def occurred_at(self) -> datetime | None:
        return parse_session_date(self.session_date)

    @property
    def session_id(self) -> str:
        return f"{self.conversation}/session_{self.session}"

    def metadata(self) -> dict[str, str]:
        return {
            "dia_id": self.dia_id,
            "speaker": self.speaker,
            "session_date": self.session_date,
            "conversation": self.conversation,
        }

    def record(self) -> dict[str, Any]:
        """The record ``MemOS.add``/``add_many`` takes for this turn."""
        return {
            "text": self.text,
            "user": self.conversation,
            "session": self.session_id,
            "occurred_at": self.occurred_at,
            "metadata": self.metadata(),
        }


@dataclass(frozen=True)
class Question:
    conversation: str
    number: int  # position in the sample's qa list
    text: str
    category: int
    answer: str
    evidence: frozenset[str]
    dropped_evidence: tuple[str, ...] = ()  # raw entries that name no turn of the conversation


@dataclass(frozen=True)
class Skipped:
    conversation: str
    number: int
    category: int
    reason: str


@dataclass(frozen=True)
class Conversation:
    sample_id: str
    turns: tuple[Turn, ...]
    questions: tuple[Question, ...]
    skipped: tuple[Skipped, ...] = ()


def parse_session_date(value: str) -> datetime | None:
    try:
        return datetime.strptime(value.strip(), SESSION_DATE_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        return None


def turn_text(raw: Mapping[str, Any]) -> str:
    """A turn's text; a shared image is kept as its caption, the only content it has."""
    text = str(raw.get("text") or "").strip()
    caption = str(raw.get("blip_caption") or "").strip()
    if caption:
        text = f"{text} [shares an image: {caption}]".strip()
    return text


def conversation_turns(
    sample_id: str, conversation: Mapping[str, Any], speaker_in_text: bool = False
) -> list[Turn]:
    """Every turn with text, sessions in numeric order (``session_10`` after ``session_9``);
    with ``speaker_in_text`` each text starts with ``"<speaker>: "``."""
    numbers = sorted(int(m[1]) for key in conversation if (m := _SESSION_KEY.match(key)))
    turns: list[Turn] = []
    for number in numbers:
        date = str(conversation.get(f"session_{number}_date_time") or "")
        for raw in conversation[f"session_{number}"]:
            text = turn_text(raw)
            if text and speaker_in_text:
                text = f"{raw['speaker']}: {text}"
            if text:
                turns.append(
                    Turn(sample_id, str(raw["dia_id"]), str(raw["speaker"]), text, number, date)
                )
    return turns


def normalize_evidence(
    raw: Iterable[object], known: frozenset[str] | set[str]
) -> tuple[frozenset[str], tuple[str, ...]]:
    """The evidence ids that name turns of the conversation, and the raw entries that did not.

    The data has a few irregular entries: two ids in one string (``"D8:6; D9:17"``), a
    stray colon (``"D:11:26"``), a bare ``"D"``, an id of a turn that does not exist.
    """
    found: set[str] = set()
    dropped: list[str] = []
    for entry in raw:
        ids = [f"D{m[1]}:{m[2]}" for m in _DIA_ID.finditer(str(entry))]
        resolved = [dia_id for dia_id in ids if dia_id in known]
        found.update(resolved)
        if not resolved or len(resolved) < len(ids):
            dropped.append(str(entry))
    return frozenset(found), tuple(dropped)


def parse_sample(sample: Mapping[str, Any], speaker_in_text: bool = False) -> Conversation:
    sample_id = str(sample["sample_id"])
    turns = conversation_turns(sample_id, sample["conversation"], speaker_in_text)
    known = frozenset(turn.dia_id for turn in turns)
    questions: list[Question] = []
    skipped: list[Skipped] = []
    for number, qa in enumerate(sample.get("qa", [])):
        category = int(qa.get("category", 0))
        raw_evidence = qa.get("evidence") or []
        evidence, dropped = normalize_evidence(raw_evidence, known)
        if not evidence:
            reason = "no evidence" if not raw_evidence else "evidence names no turn"
            skipped.append(Skipped(sample_id, number, category, reason))
            continue
        answer = qa.get("answer", qa.get("adversarial_answer", ""))
        questions.append(
            Question(
                sample_id,
                number,
                str(qa["question"]),
                category,
                str(answer),
                evidence,
                dropped,
            )
        )
    return Conversation(sample_id, tuple(turns), tuple(questions), tuple(skipped))


def load_conversations(
    path: Path, limit: int | None = None, speaker_in_text: bool = False
) -> list[Conversation]:
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    samples = data if limit is None else data[:limit]
    return [parse_sample(sample, speaker_in_text) for sample in samples]


def iter_questions(
    conversations: Iterable[Conversation], per_conversation: int | None = None
) -> Iterator[Question]:
    for conversation in conversations:
        questions = conversation.questions
        yield from questions if per_conversation is None else questions[:per_conversation]


def skipped_summary(conversations: Iterable[Conversation]) -> dict[str, Any]:
    skipped = [s for c in conversations for s in c.skipped]
    return {
        "count": len(skipped),
        "by_reason": dict(Counter(s.reason for s in skipped)),
        "by_category": {
            CATEGORIES.get(cat, str(cat)): n
            for cat, n in sorted(Counter(s.category for s in skipped).items())
        },
        "questions": [f"{s.conversation}#{s.number}" for s in skipped],
    }


# -- scoring ------------------------------------------------------------------------------------


def hit_at(ranked: Sequence[str], evidence: frozenset[str], k: int) -> bool:
    """At least one evidence turn among the top ``k``."""
    return any(dia_id in evidence for dia_id in ranked[:k])


def all_at(ranked: Sequence[str], evidence: frozenset[str], k: int) -> bool:
    """Every evidence turn among the top ``k``."""
    return evidence <= set(ranked[:k])


def first_hit_rank(ranked: Sequence[str], evidence: frozenset[str]) -> int | None:
    """1-based rank of the first evidence turn, ``None`` when none was retrieved."""
    return next((rank for rank, dia_id in enumerate(ranked, 1) if dia_id in evidence), None)


@dataclass
class Recall:
    """Counts for one group of questions (a category, or all of them)."""

    questions: int = 0
    hits: dict[int, int] = field(default_factory=dict)
    complete: dict[int, int] = field(default_factory=dict)

    def add(self, ranked: Sequence[str], evidence: frozenset[str], ks: Sequence[int]) -> None:
        self.questions += 1
        for k in ks:
            self.hits[k] = self.hits.get(k, 0) + hit_at(ranked, evidence, k)
            self.complete[k] = self.complete.get(k, 0) + all_at(ranked, evidence, k)

    def recall(self, k: int) -> float:
        return self.hits.get(k, 0) / self.questions if self.questions else float("nan")

    def all_recall(self, k: int) -> float:
        return self.complete.get(k, 0) / self.questions if self.questions else float("nan")

    def as_dict(self, ks: Sequence[int]) -> dict[str, Any]:
        return {
            "questions": self.questions,
            "recall": {str(k): self.recall(k) for k in ks},
            "all_evidence": {str(k): self.all_recall(k) for k in ks},
        }


def category_name(category: int) -> str:
    return CATEGORIES.get(category, f"category {category}")


def score(
    rankings: Iterable[tuple[Question, Sequence[str]]], ks: Sequence[int]
) -> dict[str, Recall]:
    """Recall per category name and over all questions (key ``"overall"``)."""
    groups: dict[str, Recall] = {name: Recall() for name in CATEGORIES.values()}
    groups[OVERALL] = Recall()
    for question, ranked in rankings:
        for name in (category_name(question.category), OVERALL):
            groups.setdefault(name, Recall()).add(ranked, question.evidence, ks)
    return groups


# -- latency ------------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100), linear between the two nearest ranks; NaN if empty."""
    if not 0 <= q <= 100:
        raise ValueError(f"percentile {q} is outside 0-100")
    if not len(values):
        return float("nan")
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))


def latency_summary(seconds: Sequence[float]) -> dict[str, float]:
    ms = [s * 1000.0 for s in seconds]
    return {
        "p50_ms": percentile(ms, 50),
        "p95_ms": percentile(ms, 95),
        "mean_ms": float(np.mean(ms)) if ms else float("nan"),
        "n": float(len(ms)),
    }
