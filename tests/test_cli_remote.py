"""``memos --url URL --api-key KEY ...`` (or ``MEMOS_URL``/``MEMOS_API_KEY``): the command
line against a real ``memos serve``, through the HTTP client, touching no local data."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from _cli_result import Result
from _servers import serve_process
from typer.testing import CliRunner

from memos import MemOS
from memos.cli import ExitCode, app

pytestmark = pytest.mark.slow  # spawns a server process

MEMOS = Path(sys.executable).parent / "memos"


@dataclass(frozen=True)
class Server:
    url: str
    token: str
    # a data dir that does not exist: a command that opened it would fail or create it
    nowhere: Path


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("remote")
    data_dir = root / "data"
    with MemOS.open(data_dir, create=True) as mos:
        _, token = mos.keys.create("alice")
    with serve_process("--data-dir", str(data_dir)) as (url, _):
        server = Server(url, token, root / "nowhere")
        made = remote(server, "cube", "create", "notes", "--embedder", "hash-64")
        assert made.code == 0, made
        yield server


def remote(server: Server, *args: str, key: str | None = None) -> Result:
    """``memos --url URL --api-key KEY ARGS`` in this process, with no data dir at hand."""
    options = ["--data-dir", str(server.nowhere), "--url", server.url]
    options += ["--api-key", server.token if key is None else key]
    result = CliRunner().invoke(app, [*options, *args], env={"MEMOS_URL": None})
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return Result(result.exit_code, result.stdout, result.stderr)


def ok(result: Result) -> Result:
    assert result.code == 0, result
    return result


def assert_error(result: Result, code: ExitCode, *fragments: str) -> None:
    """The CLI's usual failure: one ``error:`` line on stderr, nothing on stdout, ``code``."""
    assert result.code == code, result
    assert result.out == ""
    lines = result.err.strip().splitlines()
    assert len(lines) == 1, result.err
    assert lines[0].startswith("error: "), lines[0]
    for fragment in fragments:
        assert fragment in lines[0]


def test_add_search_show_log_verify_and_cube_list_run_on_the_server(server: Server) -> None:
    item_id = ok(remote(server, "add", "Alice moved to Lisbon", "--cube", "notes")).out.strip()
    hits = ok(remote(server, "search", "Lisbon", "--cube", "notes", "--json")).json()
    assert [hit["item"]["id"] for hit in hits] == [item_id]
    shown = ok(remote(server, "show", item_id, "--json")).json()
    assert shown["text"] == "Alice moved to Lisbon"
    events = ok(remote(server, "log", "--cube", "alice:notes", "--json")).json()
    created = [e for e in events if e["item_id"] == item_id]
    assert [(e["op"], e["actor"]) for e in created] == [("create", "alice")]
    assert "alice:notes" in ok(remote(server, "log")).out
    verified = ok(remote(server, "verify", "--json")).json()
    assert verified["ok"] is True
    assert [c["cube"] for c in verified["cubes"]] == ["alice:notes"]
    listed = ok(remote(server, "cube", "list", "--json")).json()
    assert [(c["name"], c["owner"]) for c in listed] == [("alice:notes", "alice")]
    assert "alice:notes" in ok(remote(server, "cube", "list")).out
    assert not server.nowhere.exists()


def test_failures_on_the_server_keep_their_exit_codes(server: Server) -> None:
    assert_error(remote(server, "show", "0" * 32), ExitCode.NOT_FOUND, "0" * 32)
    assert_error(remote(server, "add", "text", "--cube", "nope"), ExitCode.NOT_FOUND, "nope")
    envelope = remote(server, "show", "0" * 32, "--json")
    assert envelope.code == ExitCode.NOT_FOUND
    assert json.loads(envelope.err)["error"]["code"] == "item_not_found"


def test_a_bad_key_is_access_denied_and_never_printed(server: Server) -> None:
    bad = "memos_nobody_" + "x" * 32
    for args in (("cube", "list"), ("add", "text", "--cube", "notes"), ("verify",)):
        refused = remote(server, *args, key=bad)
        assert_error(refused, ExitCode.ACCESS_DENIED, "API key")
        assert bad not in refused.err
    assert_error(remote(server, "cube", "list", key=""), ExitCode.INVALID_INPUT, "--api-key")


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (("keys", "ls"), "`memos keys`"),
        (("worker", "--once"), "`memos worker`"),
        (("serve",), "`memos serve`"),
        (("log", "--anchor", "anchors.json"), "`memos log --anchor`"),
    ],
)
def test_commands_on_local_data_refuse_a_url(
    server: Server, args: tuple[str, ...], named: str
) -> None:
    assert_error(remote(server, *args), ExitCode.INVALID_INPUT, named, "--url")
    assert not server.nowhere.exists()


def test_memos_url_and_memos_api_key_from_the_environment(server: Server) -> None:
    env = {**os.environ, "MEMOS_URL": server.url, "MEMOS_API_KEY": server.token}
    env["MEMOS_DATA_DIR"] = str(server.nowhere)

    def memos(*args: str) -> Result:
        done = subprocess.run(
            [str(MEMOS), *args], capture_output=True, text=True, env=env, timeout=120
        )
        return Result(done.returncode, done.stdout, done.stderr)

    item_id = ok(memos("add", "Bob prefers green tea", "--cube", "notes")).out.strip()
    hits = ok(memos("search", "green tea", "--cube", "notes", "-k", "1", "--json")).json()
    assert [hit["item"]["id"] for hit in hits] == [item_id]
    env["MEMOS_API_KEY"] = "memos_nobody_" + "y" * 32
    refused = memos("cube", "list")
    assert_error(refused, ExitCode.ACCESS_DENIED)
    assert env["MEMOS_API_KEY"] not in refused.out + refused.err
    assert not server.nowhere.exists()
