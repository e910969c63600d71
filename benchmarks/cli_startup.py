"""How long a ``memos`` command takes from a fresh process: the start-up a person pays on each
command.

Each command kind runs ``--runs`` times (default 5) as a new process, interleaved with the
same command on ``--baseline`` (a git revision of ``memos/``, default 2a23293, the tree before
the lazy imports and the torch-free embedder), which runs from an exported copy of that
revision (``git archive``) put first on ``PYTHONPATH``. Both trees are compiled to bytecode
first, as an installed package is (with ``PYTHONDONTWRITEBYTECODE`` set, a checkout would
otherwise compile every module it imports on every run). Medians of wall time and of the
child's CPU time (user + system, steadier on a shared machine) are reported against the goals:

- commands that load no model (``--help``, ``cube list``, ``log``, ``kv ls``): ≤ 0.5 s;
- checks that fail (a stale ``--expected-version``, a missing cube): ≤ 0.5 s, no model loaded;
- an embedded ``memos add`` or ``search`` on an all-MiniLM-L6-v2 cube: ≤ 1.5 s;
- any command against a running ``memos serve`` (``MEMOS_URL`` and ``MEMOS_API_KEY`` set):
  ≤ 0.3 s. These run on the baseline too when it has ``--url`` (not 2a23293), against one
  server started for the run on the same data dir, with a key for principal ``alice`` and her
  all-MiniLM-L6-v2 cube ``team`` (the server embeds; its model is loaded before timing).

    HF_HUB_OFFLINE=1 python benchmarks/cli_startup.py
    HF_HUB_OFFLINE=1 python benchmarks/cli_startup.py --runs 3 --baseline none

The last line holds the figures as ``key=value`` pairs, with ``floor_s``: a Python process that
only imports the libraries every command needs (typer, pydantic, rich, http.client), the
least any command can take.
"""

from __future__ import annotations

import argparse
import compileall
import os
import resource
import socket
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NO_MODEL_GOAL_S = 0.5
EMBEDDED_GOAL_S = 1.5
REMOTE_GOAL_S = 0.3


@dataclass(frozen=True)
class Kind:
    key: str
    args: tuple[str, ...]
    goal_s: float
    exit_code: int = 0
    # run against the server (MEMOS_URL), on the current tree only
    remote: bool = False


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
        Kind("url_cube_list", ("cube", "list"), REMOTE_GOAL_S, remote=True),
        Kind("url_log", ("log", "--limit", "5"), REMOTE_GOAL_S, remote=True),
        Kind("url_add", ("add", "Dave plays drums", "--cube", "team"), REMOTE_GOAL_S, remote=True),
        Kind(
            "url_search",
            ("search", "who plays music?", "--cube", "team"),
            REMOTE_GOAL_S,
            remote=True,
        ),
        Kind("url_verify", ("verify", "--cube", "team"), REMOTE_GOAL_S, remote=True),
        Kind("url_bad_key", ("cube", "list"), REMOTE_GOAL_S, exit_code=7, remote=True),
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


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def served(env: dict[str, str]) -> Iterator[dict[str, str]]:
    """``memos serve`` on the data dir until the block ends; yields the environment of a
    command against it: ``MEMOS_URL`` and the ``MEMOS_API_KEY`` of alice, whose cube ``team``
    holds one memory (so the server's embedder is loaded)."""
    run = str(Path(sys.executable).parent / "memos")
    token = subprocess.run(
        [run, "keys", "create", "--principal", "alice"],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    url = f"http://127.0.0.1:{_free_port()}"
    server = subprocess.Popen(
        [run, "serve", "--port", url.rsplit(":", 1)[1]],
        env=env,
        cwd=Path(env["MEMOS_DATA_DIR"]).parent,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_healthy(url, server)
        remote = {**env, "MEMOS_URL": url, "MEMOS_API_KEY": token}
        for args in (("cube", "create", "team"), ("add", "Erin sings", "--cube", "team")):
            subprocess.run([run, *args], env=remote, check=True, capture_output=True)
        yield remote
    finally:
        server.terminate()
        server.wait(timeout=30)


def _wait_healthy(url: str, server: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 120
    while True:
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=5) as answer:
                if answer.status == 200:
                    return
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("memos serve did not start") from None
            time.sleep(0.1)


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
        for name in ("MEMOS_URL", "MEMOS_API_KEY", "MEMOS_STORE"):
            base_env.pop(name, None)  # the local commands work on the scratch data dir
        trees = {"now": base_env}
        compileall.compile_dir(ROOT / "memos", quiet=1)
        if args.baseline != "none":
            old = exported(args.baseline, Path(scratch) / "baseline")
            compileall.compile_dir(old, quiet=1)
            path = os.pathsep.join(filter(None, [str(old), base_env.get("PYTHONPATH")]))
            trees["baseline"] = {**base_env, "PYTHONPATH": path}
        item_id = seeded(base_env)
        with served(base_env) as remote:
            bad_key = {**remote, "MEMOS_API_KEY": "memos_nobody_" + "x" * 32}
            report(args.runs, item_id, trees, {"": remote, "url_bad_key": bad_key})


def _knows_url(env: dict[str, str]) -> bool:
    """Whether the tree of ``env`` has the ``--url`` option (from 2026-12-07 on)."""
    done = subprocess.run(
        [str(Path(sys.executable).parent / "memos"), "--help"],
        env={**env, "COLUMNS": "200"}, cwd=Path(env["MEMOS_DATA_DIR"]).parent,
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    return "--url" in done.stdout


def report(
    runs: int,
    item_id: str,
    trees: dict[str, dict[str, str]],
    remote: dict[str, dict[str, str]],
) -> None:
    """Measure every kind and print the table and the ``key=value`` line; ``remote`` holds
    the environment of the commands against the server (by kind, else under "")."""
    load = os.getloadavg()[0]
    print(f"{runs} fresh processes per command; load average {load:.1f}")
    header = f"{'command':<15}{'goal s':>7}{'wall s':>9}{'cpu s':>8}"
    if "baseline" in trees:
        header += f"{'base wall':>11}{'base cpu':>10}{'ratio':>7}"
    print(header)
    figures = {"runs": str(runs), "load": f"{load:.1f}"}
    remote_baseline = "baseline" in trees and _knows_url(trees["baseline"])
    for kind in kinds(item_id):
        on = trees
        if kind.remote:
            on = {"now": remote.get(kind.key, remote[""])}
            if remote_baseline:
                on["baseline"] = {**on["now"], "PYTHONPATH": trees["baseline"]["PYTHONPATH"]}
        got = measure(kind, on, runs)
        wall, cpu = got["now"]
        line = f"{kind.key:<15}{kind.goal_s:>7.1f}{wall:>9.2f}{cpu:>8.2f}"
        figures[f"{kind.key}_s"] = f"{wall:.2f}"
        figures[f"{kind.key}_cpu_s"] = f"{cpu:.2f}"
        if "baseline" in got:
            base_wall, base_cpu = got["baseline"]
            line += f"{base_wall:>11.2f}{base_cpu:>10.2f}{base_wall / wall:>6.1f}x"
            figures[f"{kind.key}_baseline_s"] = f"{base_wall:.2f}"
            figures[f"{kind.key}_baseline_cpu_s"] = f"{base_cpu:.2f}"
        print(line + ("" if wall <= kind.goal_s else "  (over the goal)"))
    floor = _floor(runs)
    print(f"floor: python importing typer, pydantic, rich and http.client: {floor:.2f} s")
    figures["floor_s"] = f"{floor:.2f}"
    print(" ".join(f"{key}={value}" for key, value in figures.items()))


# what any command of this CLI imports before it does anything: its libraries, none of memos
_FLOOR = "import typer, rich.console, rich.table, http.client\nfrom pydantic import BaseModel"


def _floor(runs: int) -> float:
    """Median wall seconds of a Python process that only imports the CLI's libraries."""
    walls = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", _FLOOR], check=True)
        walls.append(time.perf_counter() - start)
    return statistics.median(walls)


if __name__ == "__main__":
    main()
