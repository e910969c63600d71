"""Real MemOS servers for tests: uvicorn on a free loopback port in a background thread, or a
``memos serve`` process."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import httpx
import uvicorn
from memos.api import ServerSettings, create_app

from memos import MemOS

STARTUP_TIMEOUT_S = 30.0


@contextmanager
def serve(mos: MemOS, settings: ServerSettings) -> Iterator[str]:
    """Serve ``create_app(settings, mos=mos)`` on 127.0.0.1 until the block ends; yields the
    base URL. The app closes ``mos`` when it shuts down (its lifespan owns it)."""
    config = uvicorn.Config(
        create_app(settings, mos=mos),
        host="127.0.0.1",
        port=0,
        log_level="warning",
        log_config=None,  # leave the test process's logging alone
        lifespan="on",
        http="h11",
        ws="none",
        timeout_graceful_shutdown=10,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="memos-test-server", daemon=True)
    thread.start()
    try:
        url = _started(server, thread)
        _wait_healthy(url)
        yield url
    finally:
        server.should_exit = True
        thread.join(STARTUP_TIMEOUT_S)
    if thread.is_alive():  # pragma: no cover - a server that would not stop
        raise RuntimeError("the test server did not shut down")


def _started(server: uvicorn.Server, thread: threading.Thread) -> str:
    """The URL of the server once it listens (port 0: the OS picked a free port)."""
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.01)
    host, port = server.servers[0].sockets[0].getsockname()[:2]
    return f"http://{host}:{port}"


def _wait_healthy(url: str) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    with httpx.Client(base_url=url, timeout=5.0) as client:
        while True:
            try:
                if client.get("/healthz").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the test server at {url} never became healthy")
            time.sleep(0.02)


def free_port() -> int:
    """A loopback port nothing listens on (free when asked: a server may take it, or not)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def serve_process(
    *root_options: str, env: Mapping[str, str] | None = None
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """``memos ROOT_OPTIONS serve`` as its own process on a free port (with ``env`` added to
    the environment) until the block ends; yields its base URL and the process (a test may
    kill it)."""
    port = free_port()
    memos = Path(sys.executable).parent / "memos"
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}
    command = [str(memos), *root_options, "serve", "--port", str(port)]
    process = subprocess.Popen(command, env=environment)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/healthz").is_success:
                    break
            except httpx.TransportError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("memos serve did not start") from None
                time.sleep(0.1)
        yield url, process
    finally:
        if process.poll() is None:
            process.terminate()
        process.wait(timeout=30)


@contextmanager
def worker_process(*root_options: str, lease_s: float = 2.0) -> Iterator[subprocess.Popen[str]]:
    """``memos ROOT_OPTIONS worker`` as its own process, running once it has said so on
    stderr, until the block ends; yields the process (a test may kill it)."""
    memos = Path(sys.executable).parent / "memos"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    command = [str(memos), *root_options, "worker", "--lease", str(lease_s), "--poll", "0.05"]
    process = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
    assert process.stderr is not None
    # keep reading its log once it has started, so that a full pipe never blocks it
    drain = threading.Thread(target=process.stderr.read, daemon=True)
    try:
        if not process.stderr.readline().startswith("worker "):
            raise RuntimeError("memos worker did not start")
        drain.start()
        yield process
    finally:
        if process.poll() is None:
            process.terminate()
        process.wait(timeout=60)
        if drain.is_alive():
            drain.join(timeout=10)
        process.stderr.close()
