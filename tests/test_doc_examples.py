"""Every example in the documentation runs as written.

Each shell example (a fenced ``bash``, ``sh`` or ``console`` block of README.md or docs/*.md)
runs, in the order of its page, in one bash session per page, in a fresh folder that is also
``$HOME``: variables, files and background servers carry from one block to the next, as they
do for a reader who types them. In a ``console`` block the lines after ``$`` are the commands
(with their ``\\`` continuations and here-documents) and the rest is output; a command whose
shown output has an ``error:`` line must fail, every other command must succeed. The ports
8000 and 8001 become free ports and ``redis://127.0.0.1:6379/0`` a fresh prefix of the test
Redis, so pages run beside other tests. ``memos chat``, ``memos kv`` and ``memos lora`` run on
the tiny test model (``MEMOS_MODEL``). A block preceded by ``<!-- not run: reason -->`` is
skipped, which only commands that set up the project (make, git, pip) may be.

``memos`` itself is kept warm (``_warm_cli``): the real CLI, started once, not once per
command. ``memos serve`` and ``memos worker`` run as real processes.

The README's Python examples run too, twice in the same folder (a first example is run again),
with a real ``memos serve`` and a key for them in ``$MEMOS_URL`` and ``$MEMOS_API_KEY``.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from _models import tiny_model_dir
from _redis import drop_redis_store, fresh_redis_url
from _servers import free_port, serve_process
from _warm_cli import write_client

from memos import MemOS

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SHELLS = ("bash", "sh", "console")
NOT_RUN = re.compile(r"<!--\s*not run:\s*(?P<reason>[^>]*?)\s*-->")
# the only commands a page may leave unrun: setting up the project itself
SET_UP_COMMANDS = ("make", "git", "pip", "python -m pip", "cd")
FENCE = re.compile(r"^```(?P<lang>[\w-]*)\s*$")
HEREDOC = re.compile(r"<<-?\s*'?\"?(?P<end>\w+)'?\"?")
PAGE_TIMEOUT_S = 300


@dataclass(frozen=True)
class Block:
    page: Path
    line: int  # of the opening fence, 1-based
    lang: str
    lines: tuple[str, ...]
    not_run: str | None  # the reason given, for a block marked not run

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


@dataclass(frozen=True)
class Command:
    where: str
    text: str
    must_fail: bool


def blocks(page: Path) -> list[Block]:
    """The fenced blocks of ``page``, each with the ``not run`` marker just before it."""
    found: list[Block] = []
    lines = page.read_text(encoding="utf-8").splitlines()
    n = 0
    while n < len(lines):
        opening = FENCE.match(lines[n])
        if opening is None:
            n += 1
            continue
        end = next(i for i in range(n + 1, len(lines)) if lines[i].startswith("```"))
        before = next((lines[i] for i in range(n - 1, -1, -1) if lines[i].strip()), "")
        marker = NOT_RUN.search(before)
        found.append(
            Block(page, n + 1, opening["lang"], tuple(lines[n + 1 : end]),
                  marker["reason"] if marker else None)
        )  # fmt: skip
        n = end + 1
    return found


def _logical(lines: list[str], start: int) -> tuple[str, int]:
    """The command starting at ``lines[start]`` with its ``\\`` continuations and
    here-documents, and the index of the line after it."""
    text, n = lines[start], start + 1
    while text.endswith("\\") and n < len(lines):
        text += "\n" + lines[n]
        n += 1
    heredoc = HEREDOC.search(text)
    if heredoc is not None:
        while n < len(lines):
            text += "\n" + lines[n]
            n += 1
            if lines[n - 1].strip() == heredoc["end"]:
                break
    return text, n


def commands(block: Block) -> list[Command]:
    """The commands of a shell block, in order."""
    lines = list(block.lines)
    found: list[Command] = []
    n = 0
    while n < len(lines):
        line = lines[n]
        if block.lang == "console":
            if not line.startswith("$ "):
                n += 1
                continue
            lines[n] = line[2:]
        elif not line.strip() or line.lstrip().startswith("#"):
            n += 1
            continue
        where = f"{block.page.relative_to(ROOT)}:{block.line + 1 + n}"
        text, n = _logical(lines, n)
        output = []
        while block.lang == "console" and n < len(lines) and not lines[n].startswith("$ "):
            output.append(lines[n])
            n += 1
        found.append(Command(where, text, any(o.startswith("error:") for o in output)))
    return found


def shell_blocks(page: Path) -> list[Block]:
    return [block for block in blocks(page) if block.lang in SHELLS]


def script(page: Path, redis_url: str) -> str:
    """The bash script that runs the page's shell examples, checking each command's status."""
    ports = {"8000": str(free_port()), "8001": str(free_port())}
    parts = [
        "set -uo pipefail",
        'fail() { echo "doc example failed at $1 (exit $2): $3" >&2; kill $(jobs -p) 2>/dev/null; '
        "exit 1; }",
    ]
    for block in shell_blocks(page):
        if block.not_run is not None:
            continue
        for command in commands(block):
            text = command.text.replace("redis://127.0.0.1:6379/0", redis_url)
            for port, free in ports.items():
                text = re.sub(rf"(?<=:){port}\b|(?<=--port ){port}\b", free, text)
            shown = shlex.quote(command.text.splitlines()[0])
            parts.append(text)
            if text.rstrip().endswith("&"):
                continue
            check = "-eq" if not command.must_fail else "-ne"
            parts.append(f'rc=$?; [ "$rc" {check} 0 ] || fail {command.where} "$rc" {shown}')
    parts.append("kill $(jobs -p) 2>/dev/null; wait")
    return "\n".join(parts) + "\n"


@pytest.fixture(scope="module")
def warm_cli(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """The warm ``memos`` (see the module's docs) and the environment the examples run in."""
    root = tmp_path_factory.mktemp("doc-cli")
    # a Unix socket's path is short; the temporary folder is short, pytest's may not be
    sock = Path(tempfile.mkdtemp(prefix="memos-doc-")) / "cli.sock"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    for name in [n for n in env if n.startswith("MEMOS_") or n == "COLUMNS"]:
        del env[name]
    runner = subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("_warm_cli.py")), str(sock)],
        env=env, stdout=subprocess.PIPE, text=True, cwd=root,
    )  # fmt: skip
    assert runner.stdout is not None
    try:
        assert runner.stdout.readline().strip() == "ready"
        bin_dir = write_client(root / "bin").parent
        env.update(
            PATH=f"{bin_dir}{os.pathsep}{env['PATH']}",
            DOC_CLI_SOCKET=str(sock),
            DOC_MEMOS=str(Path(sys.executable).with_name("memos")),
            MEMOS_MODEL=str(tiny_model_dir(root)),
            MEMOS_MODEL_CACHE=str(root / "model-cache"),
        )
        yield env
    finally:
        runner.terminate()
        runner.wait(timeout=30)
        runner.stdout.close()
        sock.unlink(missing_ok=True)
        sock.parent.rmdir()


def _run_page(page: Path, env: dict[str, str], home: Path) -> subprocess.CompletedProcess[str]:
    home.mkdir()
    redis_url = fresh_redis_url()
    process = subprocess.Popen(
        ["bash", "-c", script(page, redis_url)],
        cwd=home, env={**env, "HOME": str(home)}, stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        out, err = process.communicate(timeout=PAGE_TIMEOUT_S)
    finally:
        # a background server the page left running goes with its session
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        process.wait()
        drop_redis_store(redis_url)
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


RUN_PAGES = [page for page in PAGES if any(b.not_run is None for b in shell_blocks(page))]


@pytest.mark.slow
@pytest.mark.parametrize("page", RUN_PAGES, ids=lambda page: page.name)
def test_shell_examples_run(page: Path, warm_cli: dict[str, str], tmp_path: Path) -> None:
    done = _run_page(page, warm_cli, tmp_path / "home")
    assert done.returncode == 0, f"{done.stderr[-6000:]}\n--- stdout:\n{done.stdout[-3000:]}"


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_only_setting_up_the_project_is_left_unrun(page: Path) -> None:
    for block in shell_blocks(page):
        if block.not_run is None:
            continue
        assert block.not_run, f"{block.where}: say why the block is not run"
        for command in commands(block):
            assert command.text.startswith(SET_UP_COMMANDS), (
                f"{block.where}: `{command.text}` can run in a test; only set-up commands "
                "(make, git, pip) may be left unrun"
            )


def test_the_parser_reads_console_commands_continuations_and_expected_failures() -> None:
    block = Block(
        ROOT / "README.md", 1, "console",
        ("$ memos add one \\", "    --cube c", "01ab", "$ cat > f <<'EOF'", "{}", "EOF",
         "$ memos show nope", "error: no memory with id 'nope'"),
        None,
    )  # fmt: skip
    found = commands(block)
    assert [c.text for c in found] == [
        "memos add one \\\n    --cube c", "cat > f <<'EOF'\n{}\nEOF", "memos show nope"
    ]  # fmt: skip
    assert [c.must_fail for c in found] == [False, False, True]
    assert [c.where for c in found] == ["README.md:2", "README.md:5", "README.md:8"]


def _python_blocks(page: Path) -> str:
    return "\n\n".join(
        "\n".join(block.lines)
        for block in blocks(page)
        if block.lang == "python" and block.not_run is None
    )


@pytest.mark.slow
def test_readme_python_examples_run_twice(tmp_path: Path) -> None:
    code = _python_blocks(ROOT / "README.md")
    assert "with MemOS" in code
    served = tmp_path / "served"
    with MemOS.open(served) as mos:
        _, key = mos.keys.create("alice")
        mos.keys.create("bob")
    work = tmp_path / "work"
    work.mkdir()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HOME": str(tmp_path)}
    for name in [n for n in env if n.startswith("MEMOS_")]:
        del env[name]
    # the OpenAI client's example chats: the server answers with the tiny test model
    model = tiny_model_dir(tmp_path / "model")
    options = ("--data-dir", str(served), "--model", str(model))
    with serve_process(*options, "--model-cache", str(tmp_path / "cache")) as (url, _):
        env.update(MEMOS_URL=url, MEMOS_API_KEY=key)
        outputs = []
        for _ in range(2):
            done = subprocess.run(
                [sys.executable, "-c", code], cwd=work, env=env, capture_output=True,
                text=True, timeout=300, check=False,
            )  # fmt: skip
            assert done.returncode == 0, done.stderr[-6000:]
            outputs.append(done.stdout)
    assert all(out.strip() for out in outputs), "the README's examples print what they found"
