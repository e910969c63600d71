"""A memory server shared over HTTP: `memos serve` in its own process, API keys for two
principals, and the Python client `MemOS.connect(url, api_key=...)`.

    python examples/server_and_client.py

The server runs on a free loopback port over a temporary data directory and is stopped at the
end; nothing else is left behind. No language model is loaded.
"""

from __future__ import annotations

import http.client
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from memos import MemOS
from memos.errors import MemosError

STARTUP_TIMEOUT_S = 60.0


def memos_command() -> str:
    """The `memos` console script of this Python environment (else the one on PATH)."""
    beside = Path(sys.executable).parent / "memos"
    if beside.exists():
        return str(beside)
    found = shutil.which("memos")
    if found is None:
        raise SystemExit("the `memos` command is not installed")
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def memos_server(data_dir: Path, log: Path) -> Iterator[str]:
    """`memos serve` over ``data_dir``, its log written to ``log``, until the block ends;
    yields its base URL."""
    port = free_port()
    command = [memos_command(), "--data-dir", str(data_dir), "serve", "--port", str(port)]
    with log.open("wb") as log_file:
        server = subprocess.Popen([*command, "--tick-interval", "0"], stderr=log_file)
        url = f"http://127.0.0.1:{port}"
        try:
            wait_until_healthy(port, server)
            print(f"server: memos serve (pid {server.pid}) listening at {url}")
            yield url
        finally:
            server.send_signal(signal.SIGINT)  # as Ctrl+C: requests in flight finish first
            code = server.wait(timeout=30)
            print(f"server: stopped by SIGINT (exit code {code}, as after Ctrl+C)")


def wait_until_healthy(port: int, server: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"memos serve exited with code {server.returncode}")
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        try:
            connection.request("GET", "/healthz")
            if connection.getresponse().status == 200:
                return
        except OSError:
            pass  # not listening yet
        finally:
            connection.close()
        time.sleep(0.2)
    raise SystemExit(f"memos serve did not answer within {STARTUP_TIMEOUT_S} s")


def make_keys(data_dir: Path, *principals: str) -> dict[str, str]:
    """API keys are the operator's: made on the embedded data directory (as `memos keys
    create --principal NAME` does), shown once, stored only as hashes."""
    with MemOS.open(data_dir) as operator:
        keys = {name: operator.keys.create(name)[1] for name in principals}
    for name, token in keys.items():
        print(f"operator: API key for {name}: {token[:12]}…")
    return keys


def main(workspace: Path) -> None:
    data_dir, log = workspace / "data", workspace / "server.log"
    keys = make_keys(data_dir, "alice", "bob")
    with memos_server(data_dir, log) as url, MemOS.connect(url, api_key=keys["alice"]) as alice:
        cube = alice.create_cube("team-notes")
        print(f"alice: created cube {cube.name!r} (owner {cube.owner})")
        for text in (
            "The deploy key rotates every Monday at 09:00 UTC.",
            "Staging runs on the old cluster until the migration in April.",
            "On-call hand-over happens in the #ops channel on Fridays.",
        ):
            alice.add(text, cube="team-notes", tags=["ops"])
        hits = alice.search("when does the deploy key rotate?", cube="team-notes", k=1)
        print(f"alice: search found {hits[0].item.text!r} (score {hits[0].score:.3f})")

        with MemOS.connect(url, api_key=keys["bob"]) as bob:
            try:
                bob.search("on-call", cube=cube.name)
            except MemosError as refused:
                print(f"bob: before a grant, {refused.code}: {refused.message}")
            alice.grant("team-notes", "bob", "read")
            print("alice: granted bob read access")
            hits = bob.search("who is on call and where?", cube=cube.name, k=1)
            print(f"bob: search found {hits[0].item.text!r}")

        report = alice.verify("team-notes")
        print(f"alice: verify {'ok' if report.ok else 'FAILED'}, {report.events} events")
    print("the server's log, one line per request:")
    for line in log.read_text(encoding="utf-8").splitlines():
        print(f"  | {line}")


if __name__ == "__main__":
    with tempfile.TemporaryDirectory(prefix="memos-server-") as tmp:
        main(Path(tmp))
