"""MCP overhead: what a ``search`` costs as an MCP tool call over streamable HTTP (``/mcp`` of
``memos serve``), beside the embedded SDK's ``mos.search`` on the same cube and a REST
``POST /v1/cubes/{cube}/search`` to the same server, in one run.

One ``memos serve`` process over a fresh data dir holding one cube of synthetic memories; this
process is the one client. Each round asks one query four ways, in turn: the SDK (a
``MemOS`` over the same data dir, in this process), REST (httpx), MCP (the official ``mcp``
client, streamable HTTP) and ``jsonrpc`` (the same ``tools/call`` as one JSON-RPC POST to
``/mcp`` with httpx and no MCP client: the server's MCP layer without the client's), so drift
in the machine's load reaches all of them alike. Reported: p50, p90 and mean latency (ms) of
each, and the p50 of MCP over the SDK and over REST, and of ``jsonrpc`` over REST. The
embedder is the cube's: the bundled all-MiniLM-L6-v2 by default, or ``--embedder hash-64`` to
leave the model's time out and show the transports' alone.

    python benchmarks/mcp_overhead.py
    python benchmarks/mcp_overhead.py --items 200 --rounds 100 --embedder hash-64   # quick
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from memos import MemOS

MEMOS = Path(sys.executable).parent / "memos"
CUBE = "notes"
PRINCIPAL = "bench"
K = 10
MODES = ("sdk", "rest", "mcp", "jsonrpc")
# a tools/call as one JSON-RPC POST with no MCP client (the stateless transport answers it):
# what the server's MCP layer costs, told apart from what the SDK's client adds
JSONRPC_HEADERS = {"Accept": "application/json, text/event-stream"}
_PEOPLE = ("Alice", "Bruno", "Chen", "Dara", "Emeka", "Farah", "Goran", "Hana", "Ivo", "Jun")
_DOINGS = ("lives in", "works in", "flew to", "grew up in", "studies in", "moved to")
_PLACES = ("Lisbon", "Porto", "Nairobi", "Osaka", "Lima", "Oslo", "Quito", "Hanoi", "Accra")
_WHEN = ("last spring", "in 2019", "every summer", "since March", "for two years", "on Fridays")


def memory_texts(count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [
        f"{rng.choice(_PEOPLE)} {rng.choice(_DOINGS)} {rng.choice(_PLACES)} "
        f"{rng.choice(_WHEN)} (note {n})"
        for n in range(count)
    ]


def seed_data_dir(data_dir: Path, items: int, embedder: str | None) -> str:
    """The cube with ``items`` memories, and an API key of its owner; returns the key."""
    with MemOS.open(data_dir, create=True) as mos:
        _, token = mos.keys.create(PRINCIPAL)
        mos.create_cube(CUBE, owner=PRINCIPAL, embedder=embedder)
        mos.add_many(memory_texts(items, seed=0), cube=CUBE)
    return token


@contextmanager
def memos_serve(data_dir: Path) -> Iterator[str]:
    """``memos serve`` on a free port over ``data_dir`` until the block ends; its URL."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    command = [str(MEMOS), "--data-dir", str(data_dir), "serve", "--port", str(port),
               "--tick-interval", "0"]  # fmt: skip
    process = subprocess.Popen(command, env=env, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while not _healthy(url):
            if process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("memos serve did not start")
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=60)


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=2).is_success
    except httpx.TransportError:
        return False


async def measure(
    url: str, token: str, data_dir: Path, queries: Sequence[str]
) -> dict[str, list[float]]:
    """Each query asked the SDK's way, REST's and MCP's, in turn; milliseconds per mode."""
    timings: dict[str, list[float]] = {mode: [] for mode in MODES}
    headers = {"Authorization": f"Bearer {token}"}
    with (
        MemOS.open(data_dir) as root,
        httpx.Client(base_url=url, headers=headers, timeout=60) as rest,
    ):
        sdk = root.as_principal(PRINCIPAL)
        calls: dict[str, Callable[[str], Any]] = {
            "sdk": lambda q: sdk.search(q, cube=CUBE, k=K),
            "rest": lambda q: _rest_search(rest, q),
            "jsonrpc": lambda q: _jsonrpc_search(rest, q),
        }
        async with (
            httpx2.AsyncClient(headers=headers, timeout=60) as http,
            Client(streamable_http_client(f"{url}/mcp", http_client=http)) as mcp,
        ):
            for query in queries:
                for mode in MODES:
                    start = time.perf_counter()
                    if mode == "mcp":
                        await _mcp_search(mcp, query)
                    else:
                        calls[mode](query)
                    timings[mode].append((time.perf_counter() - start) * 1000)
    return timings


def _rest_search(client: httpx.Client, query: str) -> None:
    answer = client.post(f"/v1/cubes/{CUBE}/search", json={"query": query, "k": K})
    if answer.status_code != 200:
        raise SystemExit(f"REST search failed: {answer.status_code} {answer.text[:200]}")


def _jsonrpc_search(client: httpx.Client, query: str) -> None:
    arguments = {"cube": CUBE, "query": query, "k": K}
    call = {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
            "params": {"name": "search", "arguments": arguments}}  # fmt: skip
    answer = client.post("/mcp", json=call, headers=JSONRPC_HEADERS)
    if answer.status_code != 200 or answer.json()["result"].get("isError"):
        raise SystemExit(f"JSON-RPC search failed: {answer.status_code} {answer.text[:200]}")


async def _mcp_search(client: Client, query: str) -> None:
    result = await client.call_tool("search", {"cube": CUBE, "query": query, "k": K})
    if result.is_error:
        raise SystemExit(f"MCP search failed: {result.content}")


def pct(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def report(timings: dict[str, list[float]], warmup: int, run: dict[str, Any]) -> None:
    """Print the table, then one line of ``key=value`` pairs: the run's settings and figures."""
    kept = {mode: values[warmup:] for mode, values in timings.items()}
    figures: dict[str, float] = {}
    print("| mode | calls | p50 ms | p90 ms | mean ms |")
    print("| --- | --- | --- | --- | --- |")
    for mode, values in kept.items():
        p50, p90, mean = pct(values, 0.5), pct(values, 0.9), statistics.fmean(values)
        figures |= {f"{mode}_p50_ms": p50, f"{mode}_p90_ms": p90, f"{mode}_mean_ms": mean}
        print(f"| {mode} | {len(values)} | {p50:.2f} | {p90:.2f} | {mean:.2f} |")
    figures["mcp_over_sdk_p50_ms"] = figures["mcp_p50_ms"] - figures["sdk_p50_ms"]
    figures["mcp_over_rest_p50_ms"] = figures["mcp_p50_ms"] - figures["rest_p50_ms"]
    figures["jsonrpc_over_rest_p50_ms"] = figures["jsonrpc_p50_ms"] - figures["rest_p50_ms"]
    pairs = [f"{name}={value}" for name, value in run.items()]
    pairs += [f"{name}={value:.2f}" for name, value in figures.items()]
    print(" ".join(pairs))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=1000, help="memories in the cube")
    parser.add_argument("--rounds", type=int, default=300, help="queries, each asked 4 ways")
    parser.add_argument("--warmup", type=int, default=20, help="first rounds not counted")
    parser.add_argument("--embedder", default=None, help="the cube's embedder (default: MiniLM)")
    args = parser.parse_args(argv)
    queries = memory_texts(args.warmup + args.rounds, seed=1)
    with tempfile.TemporaryDirectory(prefix="memos-mcp-bench-") as tmp:
        data_dir = Path(tmp) / "data"
        token = seed_data_dir(data_dir, args.items, args.embedder)
        embedder = args.embedder or "all-MiniLM-L6-v2"
        print(f"{args.items} memories ({embedder}), {args.rounds} rounds, 1 client", flush=True)
        with memos_serve(data_dir) as url:
            timings = anyio.run(measure, url, token, data_dir, queries)
    report(timings, args.warmup, {"items": args.items, "rounds": args.rounds, "embedder": embedder})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
