"""How long a ``memos`` command takes from a fresh process: the start-up a person pays on each
command.

Each command kind runs ``--runs`` times (default 5) as a new process, interleaved with the
same command on ``--baseline`` (a git revision of ``memos/``, default 2a23293, the tree before
the lazy imports and the torch-free embedder), which runs from an exported copy of that
revision (``git archive``) put first on ``PYTHONPATH``. Medians of wall time and of the
child's CPU time (user + system, steadier on a shared machine) are reported against the goals:

- commands that load no model (``--help``, ``cube list``, ``log``, ``kv ls``): ≤ 0.5 s;
- checks that fail (a stale ``--expected-version``, a missing cube): ≤ 0.5 s, no model loaded;
- an embedded ``memos add`` or ``search`` on an all-MiniLM-L6-v2 cube: ≤ 1.5 s.

    HF_HUB_OFFLINE=1 python benchmarks/cli_startup.py
    HF_HUB_OFFLINE=1 python benchmarks/cli_startup.py --runs 3 --baseline none

The last line holds the figures as ``key=value`` pairs.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NO_MODEL_GOAL_S = 0.5
EMBEDDED_GOAL_S = 1.5


@dataclass(frozen=True)
class Kind:
    key: str
    args: tuple[str, ...]
    goal_s: float
    exit_code: int = 0


def kinds(item_id: str) -> list[Kind]:
    return [
        Kind("help", ("--help",), NO_MODEL_GOAL_S),
        Kind("cube_list", ("cube", "list"), NO_MODEL_GOAL_S),
        Kind("log", ("log", "--limit", "5"), NO_MODEL_GOAL_S),
        Kind("kv_ls", ("kv", "ls", "--cube", "notes"), NO_MODEL_GOAL_S),
        Kind(
            "stale_update",
            ("update", item_id, "changed", "--expected-version", "99"),
            NO_MODEL_GOAL_S,
            exit_code=4,
        ),
        Kind("missing_cube", ("add", "text", "--cube", "nope"), NO_MODEL_GOAL_S, exit_code=3),
        Kind("add", ("add", "Carol plays cello", "--cube", "notes"), EMBEDDED_GOAL_S),
        Kind("search", ("search", "who plays music?", "--cube", "notes"), EMBEDDED_GOAL_S),
    ]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="fresh processes per command")
    parser.add_argument(
        "--baseline", default="2a23293", help="a git revision to compare with, or none"
    )
    return parser.parse_args(argv)


def exported(revision: str, into: Path) -> Path:
    """``memos/`` at ``revision``, extracted under ``into``; the rest (stores, api) is shared."""
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", "--format=tar", revision, "memos"],
        capture_output=True,
        check=True,
    ).stdout
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    # the compiled fp8 kernel is a build product, not in git
    for built in (ROOT / "memos" / "codecs").glob("_fp8scan*.so"):
        (into / "memos" / "codecs" / built.name).write_bytes(built.read_bytes())
    return into


def memos(args: Sequence[str], env: dict[str, str]) -> tuple[float, float, int]:
    """Wall seconds, CPU seconds (user + system) and exit status of one ``memos`` process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(
        [str(Path(sys.executable).parent / "memos"), *args],
        env=env,
        cwd=Path(env["MEMOS_DATA_DIR"]).parent,  # not the repo, whose memos/ would shadow
        capture_output=True,
        text=True,
        check=False,
    )
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, done.returncode


def seeded(env: dict[str, str]) -> str:
    """A MiniLM cube ``notes`` with two memories; the id of the first."""
    run = Path(sys.executable).parent / "memos"
    subprocess.run([str(run), "cube", "create", "notes"], env=env, check=True, capture_output=True)
    ids = [
        subprocess.run(
            [str(run), "add", text, "--cube", "notes"],
            env=env,
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        for text in ("Alice moved to Lisbon in May 2023", "Bob prefers green tea")
    ]
    return ids[0]


def measure(
    kind: Kind, trees: dict[str, dict[str, str]], runs: int
) -> dict[str, tuple[float, float]]:
    """Per tree: median wall and CPU seconds over ``runs``, the trees interleaved."""
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in trees}
    for _ in range(runs):
        for name, env in trees.items():
            wall, cpu, code = memos(kind.args, env)
            if code != kind.exit_code:
                raise SystemExit(f"{name} {kind.key}: exit {code}, expected {kind.exit_code}")
            samples[name].append((wall, cpu))
    return {
        name: (statistics.median(w for w, _ in got), statistics.median(c for _, c in got))
        for name, got in samples.items()
    }


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="memos-cli-bench-") as scratch:
        base_env = {**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "120"}
        base_env["MEMOS_DATA_DIR"] = str(Path(scratch) / "data")
        trees = {"now": base_env}
        if args.baseline != "none":
            old = exported(args.baseline, Path(scratch) / "baseline")
            path = os.pathsep.join(filter(None, [str(old), base_env.get("PYTHONPATH")]))
            trees["baseline"] = {**base_env, "PYTHONPATH": path}
        item_id = seeded(base_env)
        load = os.getloadavg()[0]
        print(f"{args.runs} fresh processes per command; load average {load:.1f}")
        header = f"{'command':<14}{'goal s':>8}{'wall s':>9}{'cpu s':>8}"
        if "baseline" in trees:
            header += f"{'base wall':>11}{'base cpu':>10}{'ratio':>7}"
        print(header)
        figures = {"runs": str(args.runs), "load": f"{load:.1f}"}
        for kind in kinds(item_id):
            got = measure(kind, trees, args.runs)
            wall, cpu = got["now"]
            line = f"{kind.key:<14}{kind.goal_s:>8.1f}{wall:>9.2f}{cpu:>8.2f}"
            figures[f"{kind.key}_s"] = f"{wall:.2f}"
            figures[f"{kind.key}_cpu_s"] = f"{cpu:.2f}"
            if "baseline" in got:
                base_wall, base_cpu = got["baseline"]
                line += f"{base_wall:>11.2f}{base_cpu:>10.2f}{base_wall / wall:>6.1f}x"
                figures[f"{kind.key}_baseline_s"] = f"{base_wall:.2f}"
            print(line + ("" if wall <= kind.goal_s else "  (over the goal)"))
        print(" ".join(f"{key}={value}" for key, value in figures.items()))


if __name__ == "__main__":
    main()
