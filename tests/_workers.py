"""Subprocess workers for the crash and concurrency tests, and the parent-side helpers.

Run as a script (``python tests/_workers.py MODE ...``) each worker opens a data directory with
the deterministic ``HashEmbedder(64)`` and prints one JSON line per acknowledged write, flushed
*after* the call returned, so a line on the parent's side is a promise the store must keep.
Imported by the tests, the module offers :func:`spawn` and :class:`LineReader`.
"""

from __future__ import annotations

import json
import os
import random
import selectors
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

WORKER = Path(__file__).resolve()
HASH_DIM = 64


# --- parent side ------------------------------------------------------------------------------


@contextmanager
def spawn(*args: str, stderr_path: Path, stdin: bool = False) -> Iterator[subprocess.Popen[bytes]]:
    """Start ``python tests/_workers.py *args``; always killed, reaped and its pipes closed."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    with stderr_path.open("wb") as stderr:
        proc = subprocess.Popen(
            [sys.executable, str(WORKER), *args],
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=stderr,
            env=env,
        )
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=60)
            for pipe in (proc.stdin, proc.stdout):
                if pipe is not None:
                    pipe.close()


class LineReader:
    """Reads a worker's stdout as JSON lines with a bounded wait; a torn last line is dropped."""

    def __init__(self, proc: subprocess.Popen[bytes], stderr_path: Path) -> None:
        assert proc.stdout is not None
        self._proc = proc
        self._fd = proc.stdout.fileno()
        self._stderr_path = stderr_path
        self._buffer = b""
        self.lines: list[dict[str, Any]] = []
        self.eof = False

    def _fill(self, deadline: float) -> None:
        with selectors.DefaultSelector() as selector:
            selector.register(self._fd, selectors.EVENT_READ)
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not selector.select(remaining):
                raise TimeoutError(f"worker fell silent; stderr:\n{self.stderr()}")
        chunk = os.read(self._fd, 1 << 16)
        if not chunk:
            self.eof = True
            return
        self._buffer += chunk
        *complete, self._buffer = self._buffer.split(b"\n")
        self.lines.extend(json.loads(line) for line in complete if line.strip())

    def wait_for(self, count: int, timeout: float = 120.0) -> list[dict[str, Any]]:
        """Block until at least ``count`` lines arrived (fails if the worker exits first)."""
        deadline = time.monotonic() + timeout
        while len(self.lines) < count:
            if self.eof:
                raise AssertionError(
                    f"worker exited after {len(self.lines)} lines "
                    f"(rc={self._proc.poll()}); stderr:\n{self.stderr()}"
                )
            self._fill(deadline)
        return self.lines

    def drain(self, timeout: float = 60.0) -> list[dict[str, Any]]:
        """Read until the worker's stdout closes (after it exited or was killed)."""
        deadline = time.monotonic() + timeout
        while not self.eof:
            self._fill(deadline)
        return self.lines

    def stderr(self) -> str:
        return self._stderr_path.read_text(encoding="utf-8", errors="replace")


def send(proc: subprocess.Popen[bytes], message: dict[str, Any]) -> None:
    assert proc.stdin is not None
    proc.stdin.write(json.dumps(message).encode("utf-8") + b"\n")
    proc.stdin.flush()


# --- worker side ------------------------------------------------------------------------------


def _emit(**fields: Any) -> None:
    print(json.dumps(fields), flush=True)


def _open(data_dir: str, limits: Any = None) -> Any:
    from memos import HashEmbedder, MemOS

    return MemOS.open(data_dir, embedder=HashEmbedder(HASH_DIM), limits=limits)


def _ack(op: str, item: Any) -> None:
    _emit(op=op, id=item.id, version=item.version, text=item.text, status=item.status.value)


def crash_writer(data_dir: str, cube: str, prefill: int, seed: int) -> None:
    """Write until killed: an optional ``add_many`` prefill, then adds, updates and deletes
    one call at a time, each acknowledged on stdout once the call has returned."""
    mos = _open(data_dir)
    rng = random.Random(seed)
    live: list[str] = []
    if prefill:
        texts = [f"prefill {seed} memory {n} about topic {n % 37}" for n in range(prefill)]
        for item in mos.add_many(texts, cube=cube):
            _ack("add", item)
            live.append(item.id)
    for n in range(1_000_000):
        item = mos.add(f"writer {seed} note {n} on subject {rng.randrange(50)}", cube=cube)
        _ack("add", item)
        live.append(item.id)
        if n % 3 == 2:
            target = rng.choice(live)
            _ack("update", mos.update(target, f"revised {seed} note {n} for {target[-6:]}"))
        if n % 5 == 4:
            _ack("delete", mos.delete(live.pop(rng.randrange(len(live))), reason="crash test"))


def contender(data_dir: str, cube: str, shared_id: str, tag: str, adds: int) -> None:
    """Add ``adds`` memories and update ``shared_id`` after each, racing another contender;
    starts when the parent writes a line to stdin, ends with a JSON summary."""
    from memos.errors import VersionConflict

    mos = _open(data_dir)
    _emit(ready=True)
    sys.stdin.readline()
    added: list[str] = []
    updated, conflicts = 0, 0
    for n in range(adds):
        added.append(mos.add(f"{tag} adds memory {n}", cube=cube).id)
        try:
            mos.update(shared_id, f"shared note, {tag} edit {n}")
        except VersionConflict:
            conflicts += 1
        else:
            updated += 1
    mos.close()
    _emit(added=added, updated=updated, conflicts=conflicts)


def reader(data_dir: str, cube: str) -> None:
    """Answer one search per stdin line ``{"query", "k"}`` with the hit ids, until EOF."""
    from memos import Limits

    mos = _open(data_dir, Limits(max_k=100_000))
    _emit(ready=True)
    for line in sys.stdin:
        request = json.loads(line)
        hits = mos.search(request["query"], cube=cube, k=request["k"])
        _emit(ids=[hit.item.id for hit in hits], texts=[hit.item.text for hit in hits])
    mos.close()


def writer(data_dir: str, cube: str, script: str) -> None:
    """Apply a JSON list of ``{"op": "add"|"update"|"delete", ...}`` and exit cleanly."""
    mos = _open(data_dir)
    for step in json.loads(script):
        if step["op"] == "add":
            _ack("add", mos.add(step["text"], cube=cube))
        elif step["op"] == "update":
            _ack("update", mos.update(step["id"], step["text"]))
        else:
            _ack("delete", mos.delete(step["id"]))
    mos.close()


def bulk_writer(data_dir: str, cube: str, tag: str, rounds: int) -> None:
    """``rounds`` batches of 400 memories, each acknowledged; enough events that the index
    snapshots the cube again and again while another bulk writer does the same."""
    mos = _open(data_dir)
    for n in range(rounds):
        for item in mos.add_many([f"{tag} batch {n} memory {m}" for m in range(400)], cube=cube):
            _ack("add", item)
    mos.close()


def main(argv: list[str]) -> None:
    mode, *args = argv
    if mode == "crash-writer":
        crash_writer(args[0], args[1], int(args[2]), int(args[3]))
    elif mode == "contender":
        contender(args[0], args[1], args[2], args[3], int(args[4]))
    elif mode == "reader":
        reader(args[0], args[1])
    elif mode == "writer":
        writer(args[0], args[1], args[2])
    elif mode == "bulk-writer":
        bulk_writer(args[0], args[1], args[2], int(args[3]))
    else:
        raise SystemExit(f"unknown worker mode {mode!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
