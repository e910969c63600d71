"""``memos chat`` and ``memos kv`` on the tiny random Llama (``--model DIR``).

Commands run in-process through typer's CliRunner (each call opens the data dir and loads the
model afresh, as a separate process would); one slow test runs the console script itself.
Memories use only words the tiny model knows, and stay short: it has 256 positions.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from _cli_result import Result
from _models import tiny_model_dir
from typer.testing import CliRunner

from memos import MemoryItem, MemOS
from memos.cli import ExitCode, app

EMBEDDER = "hash-64"
MAX_NEW = ["--max-new-tokens", "6"]


Cli = Callable[..., Result]


@dataclass(frozen=True)
class Seeded:
    """Cube ``notes``: events 1 cube_create, 2 add alice, 3 add paris."""

    alice: MemoryItem
    paris: MemoryItem


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_model_dir(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture
def cli(data_dir: Path, model_dir: Path, tmp_path: Path) -> Cli:
    base = ["--data-dir", str(data_dir), "--model", str(model_dir)]
    base += ["--model-cache", str(tmp_path / "model-cache")]

    def call(*args: str, env: dict[str, str] | None = None) -> Result:
        result = CliRunner().invoke(app, [*base, *args], env=env)
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            raise result.exception
        return Result(result.exit_code, result.stdout, result.stderr)

    return call


def _one(added: MemoryItem | list[MemoryItem]) -> MemoryItem:
    assert isinstance(added, MemoryItem)
    return added


@pytest.fixture
def seeded(data_dir: Path) -> Seeded:
    with MemOS.open(data_dir) as mos:
        mos.create_cube("notes", owner="alice", embedder=EMBEDDER)
        alice = _one(mos.add("alice moved to lisbon in may", cube="notes", user="alice"))
        paris = _one(mos.add("the capital of france is paris", cube="notes"))
    return Seeded(alice=alice, paris=paris)


def ok(result: Result) -> Result:
    assert result.code == 0, (result.code, result.out, result.err)
    return result


def assert_error(result: Result, code: ExitCode, *fragments: str) -> None:
    """One line on stderr starting with ``error:``, nothing on stdout, the expected code."""
    assert result.code == code, (result.code, result.out, result.err)
    assert result.out == ""
    lines = result.err.strip().splitlines()
    assert len(lines) == 1, result.err
    assert lines[0].startswith("error: "), lines[0]
    for fragment in fragments:
        assert fragment in lines[0]


def ops(cli: Cli) -> list[tuple[str, str, str | None]]:
    """(op, actor, reason) of every event, oldest first."""
    return [(e["op"], e["actor"], e["reason"]) for e in ok(cli("log", "--json")).json()]


# kv build, ls, drop -----------------------------------------------------------------------


def test_kv_build_by_items_and_by_query_then_ls(cli: Cli, seeded: Seeded) -> None:
    alice, paris = seeded.alice.id, seeded.paris.id
    built = ok(cli("kv", "build", "--cube", "notes", "--item", paris, "--item", alice))
    assert built.out.startswith("built kv-")
    assert "in cube 'notes': 2 memories" in built.out
    assert "fp32" in built.out

    query = ["--query", "alice lisbon", "-k", "1", "--dtype", "int8"]
    by_query = ok(
        cli("kv", "build", "-c", "notes", *query, "-u", "alice", "-r", "warm up", "--json")
    ).json()
    assert [s["item_id"] for s in by_query["manifest"]["sources"]] == [alice]
    assert by_query["manifest"]["dtype"] == "int8"
    assert by_query["manifest"]["model_name"] == "tiny-0"
    assert by_query["size"] > 0

    listed = ok(cli("kv", "ls", "--cube", "notes", "--json")).json()
    assert [e["id"] for e in listed] == [built.out.split()[1], by_query["id"]]
    first = listed[0]["manifest"]
    assert [s["item_id"] for s in first["sources"]] == [paris, alice]
    assert [s["version"] for s in first["sources"]] == [1, 1]

    table = ok(cli("kv", "ls", "--cube", "notes")).out
    header, _, *rows = table.strip().splitlines()
    assert header.split() == ["id", "tokens", "dtype", "size", "sources", "model", "created"]
    short = f"{first['model']['weights_sha256'][:12]}/{first['model']['tokenizer_sha256'][:12]}"
    for row, entry in zip(rows, listed, strict=True):
        cells = row.split()
        assert cells[:6] == [
            entry["id"],
            str(entry["manifest"]["tokens"]),
            entry["manifest"]["dtype"],
            str(entry["size"]),
            str(len(entry["manifest"]["sources"])),
            short,
        ]
    assert ops(cli)[-2:] == [("kv_build", "local", None), ("kv_build", "alice", "warm up")]


def test_cube_kv_dtype_is_the_default_of_its_caches(cli: Cli, data_dir: Path) -> None:
    created = ok(cli("cube", "create", "small", "--embedder", EMBEDDER, "--kv-dtype", "bf16"))
    assert "KV caches bf16" in created.out
    item = ok(cli("add", "the capital of france is paris", "--cube", "small")).out.strip()
    entry = ok(cli("kv", "build", "--cube", "small", "--item", item, "--json")).json()
    assert entry["manifest"]["dtype"] == "bf16"
    [cube] = ok(cli("cube", "list", "--json")).json()
    assert cube["kv_dtype"] == "bf16"


def test_cube_create_refuses_an_unknown_kv_dtype(cli: Cli, seeded: Seeded) -> None:
    before = ops(cli)
    result = cli("cube", "create", "other", "--embedder", EMBEDDER, "--kv-dtype", "fp16")
    assert_error(result, ExitCode.INVALID_INPUT, "kv_dtype", "fp16")
    assert [c["name"] for c in ok(cli("cube", "list", "--json")).json()] == ["notes"]
    assert ops(cli) == before


def test_kv_drop_retires_the_entry(cli: Cli, seeded: Seeded) -> None:
    entry = ok(cli("kv", "build", "-c", "notes", "-i", seeded.alice.id, "--json")).json()
    dropped = ok(cli("kv", "drop", entry["id"], "--cube", "notes", "-u", "alice", "-r", "stale"))
    assert dropped.out.strip() == f"dropped {entry['id']} from cube 'notes' (event 5)"
    assert ok(cli("kv", "ls", "--cube", "notes", "--json")).json() == []
    assert ok(cli("kv", "ls", "--cube", "notes")).out.strip() == "no KV entries"
    assert ops(cli)[-1] == ("kv_drop", "alice", "stale")


# chat -------------------------------------------------------------------------------------


def test_chat_without_a_block_streams_and_reports_no_cache(cli: Cli, seeded: Seeded) -> None:
    reply = ok(cli("chat", "where alice moved", "--cube", "notes", "-k", "2", *MAX_NEW, "--json"))
    data = reply.json()
    assert data["kv_entry"] is None
    assert data["cached_tokens"] == 0
    assert 0 < len(data["tokens"]) <= 6
    assert {m["id"] for m in data["memories"]} == {seeded.alice.id, seeded.paris.id}
    assert "memories:" not in reply.err  # with --json, the reply says it all

    streamed = ok(cli("chat", "where alice moved", "--cube", "notes", "-k", "2", *MAX_NEW))
    assert streamed.out == data["answer"] + "\n"
    summary = streamed.err.strip().splitlines()[-1]
    ids = ", ".join(m["id"] for m in data["memories"])
    assert summary == (
        f"memories: {ids}; kv: none ({data['prompt_tokens']} prompt tokens computed)"
    )


def test_chat_reuses_a_block_and_no_kv_recomputes_the_same_answer(cli: Cli, seeded: Seeded) -> None:
    entry = ok(
        cli("kv", "build", "-c", "notes", "-i", seeded.alice.id, "-i", seeded.paris.id, "--json")
    ).json()
    ask = ["chat", "where alice moved", "--cube", "notes", "-k", "2", *MAX_NEW]

    cached = ok(cli(*ask, "--json")).json()
    assert cached["kv_entry"] == entry["id"]
    assert cached["cached_tokens"] == entry["manifest"]["tokens"] > 0
    assert cached["prompt_tokens"] > cached["cached_tokens"]
    # the prompt holds the block's memories, in the block's order
    assert [m["id"] for m in cached["memories"]] == [seeded.alice.id, seeded.paris.id]

    recomputed = ok(cli(*ask, "--no-kv", "--json")).json()
    assert recomputed["cached_tokens"] == 0
    assert recomputed["kv_entry"] == entry["id"]
    for field in ("tokens", "answer", "prompt_tokens", "memories"):
        assert recomputed[field] == cached[field], field

    streamed = ok(cli(*ask))
    assert streamed.out == cached["answer"] + "\n"
    assert (
        streamed.err.strip()
        .splitlines()[-1]
        .endswith(
            f"; kv: {entry['id']} ({cached['cached_tokens']} of {cached['prompt_tokens']} "
            "prompt tokens cached)"
        )
    )
    no_kv = ok(cli(*ask, "--no-kv"))
    assert no_kv.out == streamed.out
    assert f"(0 of {cached['prompt_tokens']} prompt tokens cached)" in no_kv.err


def test_chat_stops_before_a_stop_sequence(cli: Cli, seeded: Seeded) -> None:
    ask = ["chat", "where alice moved", "--cube", "notes", "-k", "2", "--max-new-tokens", "24"]
    full = ok(cli(*ask, "--json")).json()
    word = full["answer"].split()[1]
    cut = ok(cli(*ask, "--stop", "never said", "--stop", word, "--json")).json()
    assert cut["answer"] == full["answer"][: full["answer"].index(word)]
    assert cut["stop"] == word
    assert ok(cli(*ask, "--stop", word)).out == cut["answer"] + "\n"
    refused = cli(*ask, *[arg for n in range(5) for arg in ("--stop", f"s{n}")])
    assert_error(refused, ExitCode.INVALID_INPUT, "stop holds 5 sequences")


def test_chat_counts_the_memories_it_used(cli: Cli, seeded: Seeded, data_dir: Path) -> None:
    ok(cli("chat", "where alice moved", "--cube", "notes", "-k", "1", *MAX_NEW))
    with MemOS.open(data_dir, create=False) as mos:
        stats = mos.access_stats([seeded.alice.id, seeded.paris.id])
    assert sum(s.count for s in stats.values()) == 1


# errors -----------------------------------------------------------------------------------

BAD_INPUT = [
    pytest.param(
        ["kv", "build", "--cube", "nope", "--item", "{alice}"],
        ExitCode.NOT_FOUND, "no cube named 'nope'", id="build-unknown-cube",
    ),
    pytest.param(
        ["kv", "ls", "--cube", "nope"], ExitCode.NOT_FOUND, "no cube named", id="ls-unknown-cube"
    ),
    pytest.param(
        ["kv", "drop", "kv-nope", "--cube", "nope"],
        ExitCode.NOT_FOUND, "no cube named", id="drop-unknown-cube",
    ),
    pytest.param(
        ["chat", "where", "--cube", "nope"], ExitCode.NOT_FOUND, "no cube named", id="chat-cube"
    ),
    pytest.param(
        ["kv", "build", "--cube", "notes", "--item", "{alice}", "--dtype", "fp16"],
        ExitCode.INVALID_INPUT, "fp16", id="bad-dtype",
    ),
    pytest.param(
        ["kv", "build", "--cube", "notes", "--item", "{alice}", "--query", "alice"],
        ExitCode.INVALID_INPUT, "one of them", id="items-and-query",
    ),
    pytest.param(
        ["kv", "build", "--cube", "notes"], ExitCode.INVALID_INPUT, "one of them", id="neither"
    ),
    pytest.param(
        ["kv", "build", "--cube", "notes", "--item", "{alice}", "--item", "{alice}"],
        ExitCode.INVALID_INPUT, "distinct", id="repeated-item",
    ),
    pytest.param(
        ["kv", "build", "--cube", "notes", "--item", "missing"],
        ExitCode.NOT_FOUND, "missing", id="unknown-item",
    ),
    pytest.param(
        ["kv", "build", "--cube", "notes", "--query", "alice", "-k", "0"],
        ExitCode.INVALID_INPUT, "k", id="bad-k",
    ),
    pytest.param(
        ["kv", "drop", "kv-nope", "--cube", "notes"],
        ExitCode.NOT_FOUND, "no KV entry 'kv-nope'", id="unknown-entry",
    ),
    pytest.param(
        ["chat", "where", "--cube", "notes", "--max-new-tokens", "0"],
        ExitCode.INVALID_INPUT, "max_new_tokens", id="bad-max-new-tokens",
    ),
    pytest.param(
        ["--model", "{missing}", "chat", "where", "--cube", "notes"],
        ExitCode.ERROR, "not a model directory", id="missing-model",
    ),
    pytest.param(
        ["--model", "{missing}", "kv", "build", "--cube", "notes", "-i", "{alice}"],
        ExitCode.ERROR, "not a model directory", id="missing-model-build",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("args", "code", "fragment"), BAD_INPUT)
def test_bad_input_is_one_line_and_changes_nothing(
    cli: Cli,
    seeded: Seeded,
    tmp_path: Path,
    data_dir: Path,
    args: list[str],
    code: ExitCode,
    fragment: str,
) -> None:
    before = ops(cli)
    missing = str(tmp_path / "no-model")
    result = cli(
        *(a.replace("{alice}", seeded.alice.id).replace("{missing}", missing) for a in args)
    )
    assert_error(result, code, fragment)
    assert ops(cli) == before
    assert ok(cli("kv", "ls", "--cube", "notes", "--json")).json() == []
    with MemOS.open(data_dir, create=False) as mos:
        assert mos.access_stats([seeded.alice.id, seeded.paris.id]) == {}


def test_json_errors_print_the_envelope(cli: Cli, seeded: Seeded) -> None:
    result = cli("kv", "ls", "--cube", "nope", "--json")
    assert result.code == ExitCode.NOT_FOUND
    assert json.loads(result.err)["error"]["code"] == "cube_not_found"
    result = cli("chat", "where", "--cube", "nope", "--json")
    assert result.code == ExitCode.NOT_FOUND
    assert json.loads(result.err)["error"]["code"] == "cube_not_found"


def test_missing_data_dir_is_reported_and_not_created(cli: Cli, data_dir: Path) -> None:
    assert_error(cli("kv", "ls", "--cube", "notes"), ExitCode.STORAGE, "no MemOS data dir")
    assert_error(cli("chat", "where", "--cube", "notes"), ExitCode.STORAGE, "no MemOS data dir")
    assert not data_dir.exists()


# the model comes from the environment ------------------------------------------------------


def test_model_comes_from_the_environment(
    seeded: Seeded, data_dir: Path, model_dir: Path, tmp_path: Path
) -> None:
    env = {
        "MEMOS_DATA_DIR": str(data_dir),
        "MEMOS_MODEL": str(model_dir),
        "MEMOS_MODEL_CACHE": str(tmp_path / "model-cache"),
    }
    result = CliRunner().invoke(
        app, ["kv", "build", "--cube", "notes", "-i", seeded.alice.id, "--json"], env=env
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["manifest"]["model_name"] == model_dir.name


@pytest.mark.slow
def test_the_console_script_streams_a_chat(
    cli: Cli, seeded: Seeded, data_dir: Path, model_dir: Path, tmp_path: Path
) -> None:
    ok(cli("kv", "build", "-c", "notes", "-i", seeded.alice.id, "-i", seeded.paris.id))
    ask = ["chat", "where alice moved", "--cube", "notes", "-k", "2", *MAX_NEW]
    expected = ok(cli(*ask, "--json")).json()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    env |= {"MEMOS_DATA_DIR": str(data_dir), "MEMOS_MODEL": str(model_dir)}
    env["MEMOS_MODEL_CACHE"] = str(tmp_path / "model-cache")
    done = subprocess.run(
        [str(Path(sys.executable).with_name("memos")), *ask],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == expected["answer"] + "\n"
    summary = done.stderr.strip().splitlines()[-1]
    assert summary.startswith(f"memories: {seeded.alice.id}, {seeded.paris.id}; kv: kv-")
    assert f"({expected['cached_tokens']} of {expected['prompt_tokens']} prompt" in summary
