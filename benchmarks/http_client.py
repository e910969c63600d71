"""Per-request cost of the HTTP client (``MemOS.connect``) against a baseline revision's client,
on one ``memos serve`` started for the run (see ``cli_startup.served``: alice's MiniLM cube
``team`` with one memory).

Each round runs the current tree's client and the baseline's (``memos/`` of ``--baseline``,
exported and put first on ``PYTHONPATH``) one after the other, each in a fresh process that
times ``--calls`` calls of ``get_cube`` and of ``search`` on one connection, after one warm-up
call of each; medians per round, then the median over ``--rounds``.

    HF_HUB_OFFLINE=1 python benchmarks/http_client.py --baseline edd14b8

The last line holds the figures as ``key=value`` pairs (milliseconds).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from cli_startup import exported, seeded, served

_CLIENT = """
import json, os, statistics, sys, time
from memos import MemOS
calls = int(sys.argv[1])
with MemOS.connect(os.environ["MEMOS_URL"], api_key=os.environ["MEMOS_API_KEY"]) as client:
    timed = {"get_cube": lambda: client.get_cube("team"),
             "search": lambda: client.search("who sings?", cube="team", k=3)}
    medians = {}
    for name, call in timed.items():
        call()
        walls = []
        for _ in range(calls):
            start = time.perf_counter()
            call()
            walls.append(time.perf_counter() - start)
        medians[name] = statistics.median(walls) * 1000
print(json.dumps(medians))
"""


def client_medians(env: dict[str, str], calls: int) -> dict[str, float]:
    done = subprocess.run(
        [sys.executable, "-c", _CLIENT, str(calls)],
        env=env, cwd=Path(env["MEMOS_DATA_DIR"]).parent, capture_output=True, text=True,
        check=True,
    )  # fmt: skip
    return dict(json.loads(done.stdout))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", default="edd14b8", help="git revision of memos/")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--calls", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="memos-client-bench-") as scratch:
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "MEMOS_DATA_DIR": f"{scratch}/data"}
        seeded(env)
        old = exported(args.baseline, Path(scratch) / "baseline")
        with served(env) as remote:
            trees = {"now": remote, "baseline": {**remote, "PYTHONPATH": str(old)}}
            rounds: dict[str, list[dict[str, float]]] = {name: [] for name in trees}
            for _ in range(args.rounds):
                for name, tree in trees.items():
                    rounds[name].append(client_medians(tree, args.calls))
    figures = {}
    for name, got in rounds.items():
        for call in ("get_cube", "search"):
            figures[f"{call}_{name}_ms"] = statistics.median(r[call] for r in got)
    for call in ("get_cube", "search"):
        now, base = figures[f"{call}_now_ms"], figures[f"{call}_baseline_ms"]
        print(f"{call:<9} now {now:6.2f} ms  baseline {base:6.2f} ms  ratio {base / now:.2f}x")
    print(" ".join(f"{key}={value:.2f}" for key, value in figures.items()))


if __name__ == "__main__":
    main()
