"""Redaction on write against embedding, in one run: what redacting a memory adds to writing it.

N conversational texts (a seeded mix of one to three sentences, about a third of them holding an
e-mail address, a phone number, a card number or an IBAN) are redacted one by one, as a write
redacts each memory, and embedded with the project's embedder (all-MiniLM-L6-v2) in one batch,
as ``add_many`` embeds. Each is timed ``--repeats`` times after a warm-up, in alternating order
so drift on a shared machine falls on both alike; the medians are reported. Redaction runs with
the default policy, and again with two custom RE2 patterns added. The last line gives
``redaction_share = redact time / embed time`` (goal: at most 0.05) as ``key=value`` pairs.

    HF_HUB_OFFLINE=1 python benchmarks/redaction_overhead.py
    HF_HUB_OFFLINE=1 python benchmarks/redaction_overhead.py --texts 2048 --repeats 3
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence

from ingest_search import configure_environment  # this script's folder

from memos import MiniLMEmbedder
from memos.core._redaction import CustomPattern, RedactionPolicy, redact

GOAL = 0.05
SENTENCES = (
    "I moved to {city} last spring and I still miss the old neighbourhood.",
    "We talked about the trip to {city}; {name} wants to leave on Friday morning.",
    "{name} said the meeting moved to Thursday at 10:30, room 4.2.",
    "My sister {name} just started a new job at the hospital in {city}.",
    "Remind me that the dentist appointment is on 2024-03-15 at 9am.",
    "I prefer tea over coffee, and oat milk if there is any.",
    "The project deadline slipped by two weeks, version 1.4.2 ships in May.",
    "{name} recommended a book about the history of {city}, 350 pages long.",
    "We spent about 1,200 euros on the flat renovation in 2023.",
    "Our daughter turns 7 in June and wants a bike for her birthday.",
)
PERSONAL = (
    "You can reach {name} at {first}.{last}@example.com if I am not around.",
    "My new number is +44 20 7946 {four}, call after six.",
    "Call the office on (555) 123-{four} before noon.",
    "The card ending the subscription is 4111 1111 1111 1111, please cancel it.",
    "Send the deposit to IBAN DE89 3704 0044 0532 0130 00 by the end of the month.",
    "{name} wrote from {first}_{last}@mail.example.org about the invoice.",
)
NAMES = ("Alice", "Bruno", "Chen", "Dara", "Emeka", "Farah", "Gustav", "Hana", "Ivo", "Jun")
CITIES = ("Lisbon", "Osaka", "Nairobi", "Toronto", "Kraków", "Lyon", "Austin", "Hanoi")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--texts", type=int, default=512, help="texts to redact and embed")
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds of each")
    parser.add_argument("--personal-share", type=float, default=0.33)
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def fill(template: str, rng: random.Random) -> str:
    first, last = rng.sample(NAMES, 2)
    return template.format(
        name=first,
        first=first.lower(),
        last=last.lower(),
        city=rng.choice(CITIES),
        four=f"{rng.randrange(10_000):04d}",
    )


def make_texts(n: int, share: float, seed: int) -> list[str]:
    rng = random.Random(seed)
    texts = []
    for _ in range(n):
        sentences = [fill(rng.choice(SENTENCES), rng) for _ in range(rng.randint(1, 3))]
        if rng.random() < share:
            sentences.insert(rng.randrange(len(sentences) + 1), fill(rng.choice(PERSONAL), rng))
        texts.append(" ".join(sentences))
    return texts


def timed(work: Callable[[], object], rounds: list[float]) -> None:
    start = time.perf_counter()
    work()
    rounds.append(time.perf_counter() - start)


def main(argv: Sequence[str] | None = None) -> int:
    configure_environment()
    args = parse_args(argv)
    texts = make_texts(args.texts, args.personal_share, args.seed)
    plain = RedactionPolicy()
    custom = RedactionPolicy(
        custom=(
            CustomPattern(name="employee_id", pattern=r"\bEMP-\d{6}\b"),
            CustomPattern(name="codename", pattern=r"(?i)\bproject [a-z]+\b"),
        )
    )
    embedder = MiniLMEmbedder()
    jobs: dict[str, Callable[[], object]] = {
        "redact (default policy)": lambda: [redact(text, plain) for text in texts],
        "redact (+2 custom RE2)": lambda: [redact(text, custom) for text in texts],
        "embed (MiniLM, one batch)": lambda: embedder.embed(texts),
    }
    for work in jobs.values():  # warm-up: the model's load, the regular expressions' caches
        work()
    rounds: dict[str, list[float]] = {name: [] for name in jobs}
    names = list(jobs)
    for repeat in range(args.repeats):
        for name in names[repeat % 3 :] + names[: repeat % 3]:
            timed(jobs[name], rounds[name])
    seconds = {name: statistics.median(values) for name, values in rounds.items()}
    found: Counter[str] = Counter()
    for text in texts:
        found.update(redact(text, plain).counts)
    embed_s = seconds["embed (MiniLM, one batch)"]

    import torch

    print(
        f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"torch {torch.__version__} ({torch.get_num_threads()} threads), Python "
        f"{platform.python_version()}; {len(texts)} texts, "
        f"{sum(map(len, texts)) / len(texts):.0f} chars each on average, "
        f"median of {args.repeats} rounds"
    )
    print(f"# replaced in the default policy's pass: {dict(sorted(found.items()))}")
    print("| step | total ms | µs per text | share of embed |")
    print("|---|---|---|---|")
    for name, value in seconds.items():
        print(
            f"| {name} | {value * 1e3:.2f} | {value / len(texts) * 1e6:.1f} | "
            f"{value / embed_s:.4f} |"
        )
    redact_s = seconds["redact (default policy)"]
    share = redact_s / embed_s
    print(
        f"texts={len(texts)} redact_ms={redact_s * 1e3:.2f} "
        f"redact_custom_ms={seconds['redact (+2 custom RE2)'] * 1e3:.2f} "
        f"embed_ms={embed_s * 1e3:.1f} redaction_share={share:.4f} "
        f"goal={GOAL} met={share <= GOAL}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
