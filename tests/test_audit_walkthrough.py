"""docs/audit-and-rollback.md runs as written.

Its fenced ``console`` and ``bash`` blocks are one shell session: every command runs, in order,
in one bash process in an empty folder (so ``ID=$(...)`` carries on to later commands), with the
project's ``memos`` first on PATH. A command must exit 0, unless the doc's next command is
``echo $?``, which prints the status it had. Where a ``console`` block shows a command's output,
each line of it must appear in what the command printed (stdout and stderr), once ids, hashes
and times are masked and runs of spaces made one.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[1] / "docs" / "audit-and-rollback.md"
FENCE = re.compile(r"^```(\w*)\n(.*?)^```$", re.MULTILINE | re.DOTALL)
HEX = re.compile(r"\b[0-9a-f]{8,64}\b")
TIME = re.compile(r"\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:\d{2})?")
RULE = re.compile(r"^[─━═\s]*$")
# the environment the doc's reader has set nothing of
UNSET = ("MEMOS_DATA_DIR", "MEMOS_STORE", "MEMOS_MODEL", "MEMOS_ANCHOR_KEY_FILE", "COLUMNS")


@dataclass(frozen=True)
class Step:
    command: str
    shown: tuple[str, ...]  # the output lines the doc shows for it


def steps(markdown: str) -> list[Step]:
    """The commands of the doc's console and bash blocks, in order, with their shown output."""
    found: list[Step] = []
    for language, body in FENCE.findall(markdown):
        if language not in ("console", "bash"):
            continue
        found += _console(body) if language == "console" else _bash(body)
    return found


def _console(body: str) -> list[Step]:
    found: list[Step] = []
    lines = iter(body.splitlines())
    command: list[str] = []
    shown: list[str] = []
    for line in lines:
        if line.startswith("$ "):
            if command:
                found.append(Step("\n".join(command), tuple(shown)))
            command, shown = [line[2:]], []
            while command[-1].endswith("\\"):
                command.append(next(lines))
        elif command:
            shown.append(line)
    if command:
        found.append(Step("\n".join(command), tuple(shown)))
    return found


def _bash(body: str) -> list[Step]:
    found: list[Step] = []
    command: list[str] = []
    for line in body.splitlines():
        if not command and (not line.strip() or line.lstrip().startswith("#")):
            continue
        command.append(line)
        if not line.endswith("\\"):
            found.append(Step("\n".join(command), ()))
            command = []
    return found


def masked(line: str) -> str:
    return " ".join(HEX.sub("<hex>", TIME.sub("<time>", line)).split())


def session_script(walk: list[Step], out: Path) -> str:
    """One bash script running every step, keeping each one's output and exit status; the
    status is restored after the bookkeeping, so the doc's ``echo $?`` prints it."""
    parts = []
    for n, step in enumerate(walk):
        parts.append(
            f"{{\n{step.command}\n}} > {out}/{n}.out 2>&1 < /dev/null\n"
            f"status=$?; echo $status > {out}/{n}.status; (exit $status)"
        )
    return "\n".join(parts) + "\n"


def test_the_walkthrough_covers_audit_rollback_and_tampering() -> None:
    commands = "\n".join(step.command for step in steps(DOC.read_text(encoding="utf-8")))
    for needed in (
        "memos log",
        "memos history",
        "memos diff",
        "memos rollback",
        "memos verify",
        "--anchor",
        "sqlite3",
        "echo $?",
    ):
        assert needed in commands, needed


@pytest.mark.slow
def test_the_walkthrough_runs_as_written(tmp_path: Path) -> None:
    walk = steps(DOC.read_text(encoding="utf-8"))
    out, work = tmp_path / "out", tmp_path / "work"
    out.mkdir()
    work.mkdir()
    env = {key: value for key, value in os.environ.items() if key not in UNSET}
    env |= {
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
    }
    subprocess.run(
        ["bash", "-c", session_script(walk, out)], cwd=work, env=env, check=False, timeout=540
    )
    for n, step in enumerate(walk):
        assert (out / f"{n}.status").exists(), f"the session stopped before: {step.command}"
        status = int((out / f"{n}.status").read_text())
        printed = (out / f"{n}.out").read_text(encoding="utf-8")
        followed_by_status = n + 1 < len(walk) and walk[n + 1].command == "echo $?"
        if not followed_by_status:
            assert status == 0, f"{step.command!r} exited {status}:\n{printed}"
        lines = {masked(line) for line in printed.splitlines()}
        for shown in step.shown:
            if RULE.match(shown):
                continue
            assert masked(shown) in lines, f"{step.command!r} did not print {shown!r}:\n{printed}"
