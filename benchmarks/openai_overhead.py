"""What the OpenAI-compatible endpoint adds to a chat: ``POST /v1/chat/completions`` through the
official ``openai`` client (streaming) against the SDK's ``chat_stream`` on the same cube,
questions and model, side by side in one process.

One ``MemOS`` over a temporary SQLite data dir (a cube of short facts, the deterministic hash
embedder: retrieval costs the same on both sides), the bundled SmolLM2-135M-Instruct, and a
uvicorn server in a thread of the same process over that ``MemOS``. For 1 and 8 concurrent
clients, rounds alternate the two paths (which goes first alternates too); each client asks
its questions one after the other. Per request: the time to the first piece of the answer
(TTFT: the first chunk with content, or the SDK stream's first piece) and to its end (the
stream exhausted; the endpoint's includes the usage chunk and ``[DONE]``). The p50 of each, and
the endpoint's overhead: its p50 less the SDK's ("overhead"), and the median over rounds of
the difference of the two paths' p50 in the same round ("paired": it cancels the drift of a
shared machine); and each path's requests per second over the wall time of its rounds. Every
endpoint answer is checked to equal the SDK's for the same question (greedy decoding).

With 8 clients the model runs one forward pass at a time (its lock), so the requests queue:
TTFT and total are then mostly waiting, and their p50 depends on the order the lock is granted
in, which is not the same on the two paths (an SDK thread that releases the lock and asks again
at once often gets it back; a served stream asks again only once its piece has been sent).
Requests per second tells what the endpoint costs in throughput.

    OMP_NUM_THREADS=1 python benchmarks/openai_overhead.py
    OMP_NUM_THREADS=1 python benchmarks/openai_overhead.py --rounds 2 --clients 1,2  # quick
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FACTS = [
    "the deploy key rotates every monday at nine",
    "alice is the on-call engineer this week",
    "the staging database lives in frankfurt",
    "bob prefers tea over coffee",
    "the quarterly review is on the third of march",
    "the office wifi password changed in january",
    "carol leads the search team",
    "the build server restarts nightly at two",
    "dave moved from lisbon to porto last spring",
    "the team lunch is every friday",
    "backups are kept for thirty days",
    "the api rate limit is one hundred requests per minute",
]
QUESTIONS = [
    "when does the deploy key rotate?",
    "who is on call this week?",
    "where is the staging database?",
    "what does bob drink?",
    "when is the quarterly review?",
    "who leads the search team?",
    "when does the build server restart?",
    "where did dave move?",
]
CUBE = "notes"
PRINCIPAL = "alice"


@dataclass(frozen=True)
class Config:
    clients: tuple[int, ...]
    rounds: int
    per_client: int
    new_tokens: int
    k: int
    threads: int
    model_cache: Path


@dataclass(frozen=True)
class Timing:
    ttft_s: float
    total_s: float
    answer: str
    question: str


Ask = Callable[[str], Timing]


def parse_args(argv: Sequence[str] | None) -> Config:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--clients", default="1,8", help="concurrent clients, comma separated")
    parser.add_argument("--rounds", type=int, default=12, help="rounds per path and level")
    parser.add_argument("--per-client", type=int, default=1, help="requests per client a round")
    parser.add_argument("--new-tokens", type=int, default=16, help="greedy tokens per answer")
    parser.add_argument("--k", type=int, default=3, help="memories retrieved per question")
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    parser.add_argument(
        "--model-cache", type=Path, default=Path("~/.cache/memos/models"),
        help="where the bundled GGUF is converted once to safetensors",
    )  # fmt: skip
    args = parser.parse_args(argv)
    return Config(
        clients=tuple(int(c) for c in args.clients.split(",")),
        rounds=args.rounds,
        per_client=args.per_client,
        new_tokens=args.new_tokens,
        k=args.k,
        threads=args.threads,
        model_cache=args.model_cache.expanduser(),
    )


# -- the two paths ----------------------------------------------------------------------------


def sdk_path(handle: Any, config: Config) -> Ask:
    """A question through ``chat_stream`` on the principal's handle."""

    def ask(question: str) -> Timing:
        start = time.perf_counter()
        stream = handle.chat_stream(
            question, cube=CUBE, k=config.k, max_new_tokens=config.new_tokens
        )
        first, pieces = None, []
        for piece in stream:
            if first is None and piece:
                first = time.perf_counter()
            pieces.append(piece)
        end = time.perf_counter()
        return Timing((first or end) - start, end - start, "".join(pieces), question)

    return ask


def endpoint_path(client: Any, config: Config) -> Ask:
    """A question through ``/v1/chat/completions``, streamed, with the usage chunk."""

    def ask(question: str) -> Timing:
        start = time.perf_counter()
        stream = client.chat.completions.create(
            model=f"memos:{CUBE}",
            messages=[{"role": "user", "content": question}],
            max_tokens=config.new_tokens,
            stream=True,
            stream_options={"include_usage": True},
            extra_body={"k": config.k},
        )
        first, pieces = None, []
        for chunk in stream:
            text = chunk.choices[0].delta.content if chunk.choices else None
            if text:
                first = first or time.perf_counter()
                pieces.append(text)
        end = time.perf_counter()
        return Timing((first or end) - start, end - start, "".join(pieces), question)

    return ask


def run_clients(ask: Ask, clients: int, per_client: int, offset: int) -> list[Timing]:
    """``clients`` threads, each asking ``per_client`` questions in turn; every timing."""
    timings: list[Timing] = []
    lock = threading.Lock()

    def loop(n: int) -> None:
        for i in range(per_client):
            question = QUESTIONS[(offset + n * per_client + i) % len(QUESTIONS)]
            timing = ask(question)
            with lock:
                timings.append(timing)

    threads = [threading.Thread(target=loop, args=(n,)) for n in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return timings


# -- the server -------------------------------------------------------------------------------


@contextmanager
def served(mos: Any) -> Iterator[str]:
    """``memos serve``'s app over ``mos`` on a free loopback port, in a thread of this
    process, until the block ends; yields its base URL."""
    import uvicorn
    from memos.api import ServerSettings, create_app

    settings = ServerSettings(store="sqlite:///unused", tick_interval_s=0)
    config = uvicorn.Config(
        create_app(settings, mos=mos), host="127.0.0.1", port=0, log_level="warning",
        log_config=None, lifespan="on", http="h11", ws="none",
    )  # fmt: skip
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="memos-bench-server", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the server did not start")
            time.sleep(0.01)
        host, port = server.servers[0].sockets[0].getsockname()[:2]
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(30)


# -- the run ----------------------------------------------------------------------------------


def p50_ms(values: Sequence[float]) -> float:
    return statistics.median(values) * 1000


@dataclass
class Level:
    """One path at one number of clients: every request's timing, and the rounds' wall time."""

    timings: list[Timing] = field(default_factory=list)
    wall_s: float = 0.0
    # each round's p50 TTFT and total: paired with the other path's same round
    rounds: list[tuple[float, float]] = field(default_factory=list)


def measure(
    paths: dict[str, Ask], config: Config, log: Callable[[str], None]
) -> dict[int, dict[str, Level]]:
    """Every level's timings per path, the paths alternating round by round."""
    results: dict[int, dict[str, Level]] = {}
    for clients in config.clients:
        per_path = {name: Level() for name in paths}
        for round_ in range(config.rounds):
            order = list(paths) if round_ % 2 == 0 else list(reversed(paths))
            for name in order:
                start = time.perf_counter()
                timings = run_clients(paths[name], clients, config.per_client, offset=round_)
                per_path[name].wall_s += time.perf_counter() - start
                per_path[name].timings += timings
                per_path[name].rounds.append(
                    (p50_ms([t.ttft_s for t in timings]), p50_ms([t.total_s for t in timings]))
                )
            if (round_ + 1) % 4 == 0 or round_ + 1 == config.rounds:
                log(f"{clients} client(s): round {round_ + 1}/{config.rounds} done")
        results[clients] = per_path
    return results


def report(results: dict[int, dict[str, Level]], expected: dict[str, str]) -> str:
    """The table, and the last line of ``key=value`` pairs."""
    lines = [
        f"{'clients':>7} {'path':>9} {'n':>4} {'ttft p50 ms':>12} {'total p50 ms':>13} "
        f"{'req/s':>7}",
    ]
    pairs: dict[str, str] = {}
    equal = True
    for clients, per_path in results.items():
        for name, level in per_path.items():
            timings = level.timings
            ttft = p50_ms([t.ttft_s for t in timings])
            total = p50_ms([t.total_s for t in timings])
            rate = len(timings) / level.wall_s
            lines.append(
                f"{clients:>7} {name:>9} {len(timings):>4} {ttft:>12.1f} {total:>13.1f} "
                f"{rate:>7.2f}"
            )
            pairs[f"{name}_ttft_ms_p50_{clients}"] = f"{ttft:.1f}"
            pairs[f"{name}_total_ms_p50_{clients}"] = f"{total:.1f}"
            pairs[f"{name}_req_per_s_{clients}"] = f"{rate:.3f}"
            equal &= all(t.answer == expected[t.question] for t in timings)
        paired = zip(per_path["endpoint"].rounds, per_path["sdk"].rounds, strict=True)
        differences = [(e[0] - s[0], e[1] - s[1]) for e, s in paired]
        for n, metric in enumerate(("ttft", "total")):
            overhead = float(pairs[f"endpoint_{metric}_ms_p50_{clients}"]) - float(
                pairs[f"sdk_{metric}_ms_p50_{clients}"]
            )
            pairs[f"{metric}_overhead_ms_p50_{clients}"] = f"{overhead:.1f}"
            by_round = statistics.median(d[n] for d in differences)
            pairs[f"{metric}_overhead_ms_paired_{clients}"] = f"{by_round:.1f}"
        for label, kind in (("overhead", "p50"), ("paired", "paired")):
            lines.append(
                f"{clients:>7} {label:>9} {'':>4} "
                f"{float(pairs[f'ttft_overhead_ms_{kind}_{clients}']):>12.1f} "
                f"{float(pairs[f'total_overhead_ms_{kind}_{clients}']):>13.1f}"
            )
    pairs["answers_equal"] = str(equal).lower()
    lines.append(" ".join(f"{key}={value}" for key, value in pairs.items()))
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    config = parse_args(argv)
    started = time.perf_counter()

    def log(message: str) -> None:
        print(f"[{time.perf_counter() - started:6.1f} s] {message}", file=sys.stderr, flush=True)

    import torch
    from openai import OpenAI

    from memos import HashEmbedder, MemOS
    from memos.llm import LocalModel

    torch.set_num_threads(config.threads)
    load_at_start = os.getloadavg()
    log(f"load average {load_at_start}; loading SmolLM2 (a first run converts the GGUF)")
    model = LocalModel.load(None, cache_dir=config.model_cache)
    with tempfile.TemporaryDirectory(prefix="memos-openai-bench-") as tmp:
        mos = MemOS.open(Path(tmp) / "data", embedder=HashEmbedder(64), model=model)
        _, token = mos.keys.create(PRINCIPAL)
        alice = mos.as_principal(PRINCIPAL)
        alice.create_cube(CUBE)
        alice.add_many(FACTS, cube=CUBE)
        expected = {
            q: alice.chat(q, cube=CUBE, k=config.k, max_new_tokens=config.new_tokens).answer
            for q in QUESTIONS
        }  # also the warm-up of the SDK path
        with served(mos) as url, OpenAI(base_url=f"{url}/v1", api_key=token) as client:
            paths = {"sdk": sdk_path(alice, config), "endpoint": endpoint_path(client, config)}
            for question in QUESTIONS[:2]:  # the endpoint's warm-up
                paths["endpoint"](question)
            results = measure(paths, config, log)
    load_at_end = os.getloadavg()
    print(
        f"\nSmolLM2-135M-Instruct, torch {torch.__version__}, {config.threads} thread(s), "
        f"{config.new_tokens} new tokens, k={config.k}, {os.cpu_count()} cores; load average "
        f"{load_at_start[0]:.2f} at start, {load_at_end[0]:.2f} at end; "
        f"{time.perf_counter() - started:.0f} s in all\n"
    )
    print(report(results, expected))
    return 0


if __name__ == "__main__":
    sys.exit(main())
