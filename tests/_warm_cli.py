"""The ``memos`` command kept warm for the documentation's examples.

``memos`` takes seconds to start (torch, the embedding model), and the docs hold well over a
hundred commands. ``python _warm_cli.py SOCKET`` imports the CLI once and runs each command it
is sent through the real Typer app (``memos.cli.app``), in the caller's working directory and
with the caller's ``MEMOS_*`` settings, answering with its stdout, stderr and exit status. The
``memos`` executable the examples find on their ``PATH`` is :data:`CLIENT`: it sends its
arguments here, except ``memos serve`` and a ``memos worker`` that keeps running, which it
replaces itself with the installed ``memos`` so they are real server and worker processes.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import sys
from pathlib import Path

# settings the examples may set or export; every other variable is the runner's own
PASSED = ("COLUMNS",)
PASSED_PREFIX = "MEMOS_"

CLIENT = r"""import base64, json, os, socket, sys

args = sys.argv[1:]
if "serve" in args or ("worker" in args and "--once" not in args):
    os.execv(os.environ["DOC_MEMOS"], [os.environ["DOC_MEMOS"], *args])
stdin = b"" if sys.stdin is None or sys.stdin.isatty() else sys.stdin.buffer.read()
env = {k: v for k, v in os.environ.items() if k.startswith("MEMOS_") or k == "COLUMNS"}
request = {"args": args, "cwd": os.getcwd(), "env": env,
           "stdin": base64.b64encode(stdin).decode()}
with socket.socket(socket.AF_UNIX) as conn:
    conn.connect(os.environ["DOC_CLI_SOCKET"])
    conn.sendall(json.dumps(request).encode() + b"\n")
    answer = json.loads(conn.makefile("rb").readline())
sys.stdout.buffer.write(base64.b64decode(answer["stdout"]))
sys.stderr.buffer.write(base64.b64decode(answer["stderr"]))
sys.exit(answer["code"])
"""


def _run(request: dict[str, object]) -> dict[str, object]:
    from typer.testing import CliRunner

    from memos.cli import app

    client_env = request["env"]
    assert isinstance(client_env, dict)
    names = {n for n in os.environ if n.startswith(PASSED_PREFIX)} | set(client_env)
    names.update(PASSED)
    env = {name: client_env.get(name) for name in names}
    stdin = base64.b64decode(str(request["stdin"]))
    args = request["args"]
    assert isinstance(args, list)
    before = os.getcwd()
    os.chdir(str(request["cwd"]))
    try:
        result = CliRunner().invoke(app, args, input=stdin, env=env, prog_name="memos")
    finally:
        os.chdir(before)
    stderr = result.stderr_bytes or b""
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        import traceback

        assert result.exc_info is not None
        stderr += "".join(traceback.format_exception(*result.exc_info)).encode()
    return {
        "stdout": base64.b64encode(result.stdout_bytes).decode(),
        "stderr": base64.b64encode(stderr).decode(),
        "code": result.exit_code,
    }


def main(socket_path: str) -> None:
    from memos.cli import app  # noqa: F401  (imported once, before the first command)

    with socket.socket(socket.AF_UNIX) as server:
        server.bind(socket_path)
        server.listen()
        print("ready", flush=True)
        while True:
            conn, _ = server.accept()
            with conn, conn.makefile("rwb") as stream:
                line = stream.readline()
                if not line:
                    continue
                stream.write(json.dumps(_run(json.loads(line))).encode() + b"\n")
                stream.flush()


def write_client(folder: Path) -> Path:
    """The ``memos`` the examples run: :data:`CLIENT` under this interpreter."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "memos"
    path.write_text(f"#!{sys.executable} -S\n{CLIENT}", encoding="utf-8")
    path.chmod(0o755)
    return path


if __name__ == "__main__":
    main(sys.argv[1])
