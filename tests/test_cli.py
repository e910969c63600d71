"""The ``memos`` command, run as the installed console script against real data dirs.

State is set up through the SDK (fast, in-process); every command under test runs in a
subprocess, exactly as a user runs it. Cubes use the ``hash-64`` embedder so no model loads.
Only the help/docs checks and the option parsers run in-process.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import typer
from _cli_result import Result
from typer.testing import CliRunner

from memos import MemoryItem, MemOS
from memos.cli import ExitCode, app
from memos.cli._parse import meta_pairs, meta_value
from memos.errors import InvalidInput

MEMOS = Path(sys.executable).with_name("memos")
DOCS = Path(__file__).resolve().parents[1] / "docs" / "cli.md"
EMBEDDER = "hash-64"


Cli = Callable[..., Result]


def run_memos(*args: str, data_dir: Path, env: Mapping[str, str] | None = None) -> Result:
    """``memos --data-dir DATA_DIR *args`` as its own process, with no setting of the caller's
    environment but ``env``'s."""
    settings = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    for name in ("MEMOS_DATA_DIR", "MEMOS_ANCHOR_KEY_FILE", "COLUMNS"):
        settings.pop(name, None)
    settings.update(env or {})
    done = subprocess.run(
        [str(MEMOS), "--data-dir", str(data_dir), *args],
        capture_output=True,
        text=True,
        env=settings,
        timeout=120,
        check=False,
    )
    return Result(done.returncode, done.stdout, done.stderr)


@pytest.fixture
def cli(data_dir: Path) -> Cli:
    def call(*args: str) -> Result:
        return run_memos(*args, data_dir=data_dir)

    return call


@dataclass(frozen=True)
class Seeded:
    """Cube ``notes`` (owner alice): events 1 cube_create, 2 add alice (Lisbon), 3 add bob,
    4 update alice (Porto). ``alice`` is at version 2."""

    alice: MemoryItem
    bob: MemoryItem


def _one(added: MemoryItem | list[MemoryItem]) -> MemoryItem:
    assert isinstance(added, MemoryItem)
    return added


@pytest.fixture
def seeded(data_dir: Path) -> Seeded:
    with MemOS.open(data_dir) as mos:
        mos.create_cube("notes", owner="alice", embedder=EMBEDDER)
        alice = _one(
            mos.add(
                "Alice moved to Lisbon in May 2023",
                cube="notes",
                user="alice",
                tags=["travel"],
                session="s1",
                occurred_at="2023-05-01T00:00:00+00:00",
            )
        )
        bob = _one(mos.add("Bob prefers green tea", cube="notes", user="bob", tags=["food"]))
        alice = mos.update(alice.id, "Alice moved to Porto in June 2023", user="alice")
    return Seeded(alice=alice, bob=bob)


@pytest.fixture
def sdk(data_dir: Path, seeded: Seeded) -> Iterator[Callable[[], MemOS]]:
    """Open the seeded data dir afresh (after the commands under test have run)."""
    opened: list[MemOS] = []

    def open_now() -> MemOS:
        opened.append(MemOS.open(data_dir, create=False))
        return opened[-1]

    yield open_now
    for mos in opened:
        mos.close()


def assert_error(result: Result, code: ExitCode, *fragments: str) -> None:
    """One line on stderr starting with ``error:``, no traceback, the expected exit code."""
    assert result.code == code, (result.code, result.out, result.err)
    lines = result.err.strip().splitlines()
    assert len(lines) == 1, result.err
    assert lines[0].startswith("error: "), lines[0]
    for fragment in fragments:
        assert fragment in lines[0]


# cubes ------------------------------------------------------------------------------------


@pytest.mark.slow
def test_cube_create_and_list(cli: Cli, data_dir: Path) -> None:
    created = cli("cube", "create", "notes", "--owner", "alice", "--embedder", EMBEDDER)
    assert created.code == 0, created.err
    assert "notes" in created.out
    assert (data_dir / "memos.db").exists()

    listed = cli("cube", "list", "--json")
    assert listed.code == 0, listed.err
    [cube] = listed.json()
    assert (cube["name"], cube["owner"], cube["embedder"]) == ("notes", "alice", EMBEDDER)
    assert (cube["dim"], cube["codec"]) == (64, "fp32")

    table = cli("cube", "list")
    assert table.code == 0, table.err
    assert re.search(r"notes\s+alice\s+hash-64\s+64\s+fp32", table.out), table.out

    assert_error(
        cli("cube", "create", "notes", "--embedder", EMBEDDER), ExitCode.CONFLICT, "'notes'"
    )


# add, search, show ------------------------------------------------------------------------


@pytest.mark.slow
def test_add_prints_only_the_id_and_keeps_typed_metadata(cli: Cli, seeded: Seeded) -> None:
    added = cli(
        "add", "Carol plays the cello", "--cube", "notes", "--user", "carol",
        "--tag", "music", "--tag", "hobby", "--session", "s9",
        "--meta", "n=3", "--meta", "score=1.5", "--meta", "ok=true", "--meta", "gone=null",
        "--meta", "source=chat log", "--meta", 'zip="01234"', "--meta", "expr=a=b",
    )  # fmt: skip
    assert added.code == 0, added.err
    item_id = added.out.strip()
    assert re.fullmatch(r"[0-9a-f]{32}", item_id), added.out

    shown = cli("show", item_id, "--json")
    assert shown.code == 0, shown.err
    item = shown.json()
    assert (item["id"], item["text"], item["user"]) == (item_id, "Carol plays the cello", "carol")
    assert item["tags"] == ["music", "hobby"]
    assert item["metadata"] == {
        "n": 3,
        "score": 1.5,
        "ok": True,
        "gone": None,
        "source": "chat log",
        "zip": "01234",
        "expr": "a=b",
        "session": "s9",
    }


@pytest.mark.slow
def test_search_json_ranks_and_filters(cli: Cli, seeded: Seeded) -> None:
    everything = cli("search", "Alice moved to Porto in June 2023", "--cube", "notes", "--json")
    assert everything.code == 0, everything.err
    hits = everything.json()
    assert hits[0]["item"]["id"] == seeded.alice.id
    assert {hit["item"]["id"] for hit in hits} == {seeded.alice.id, seeded.bob.id}
    scores = [hit["score"] for hit in hits]
    assert scores == sorted(scores, reverse=True)

    filtered = cli(
        "search", "tea", "--cube", "notes", "-k", "3", "--user", "alice", "--tag", "travel",
        "--session", "s1", "--since", "2023-01-01", "--until", "2023-12-31T23:59:59Z", "--json",
    )  # fmt: skip
    assert filtered.code == 0, filtered.err
    assert [hit["item"]["id"] for hit in filtered.json()] == [seeded.alice.id]


def test_ls_lists_filters_and_pages_oldest_first(cli: Cli, seeded: Seeded) -> None:
    listed = cli("ls", "--cube", "notes", "--json")
    assert listed.code == 0, listed.err
    ids = [item["id"] for item in listed.json()]
    assert ids == sorted(ids)
    assert set(ids) == {seeded.alice.id, seeded.bob.id}
    first = cli("ls", "--cube", "notes", "-n", "1", "--json").json()
    rest = cli("ls", "--cube", "notes", "--after", first[-1]["id"], "--json").json()
    assert [item["id"] for item in first + rest] == ids
    mine = cli("ls", "--cube", "notes", "--user", "alice", "--tag", "travel", "--session", "s1")
    assert mine.code == 0, mine.err
    assert seeded.alice.id in mine.out
    assert seeded.bob.id not in mine.out
    assert cli("ls", "--cube", "notes", "--limit", "0").code == ExitCode.INVALID_INPUT


@pytest.mark.slow
def test_search_and_show_print_tables(cli: Cli, seeded: Seeded) -> None:
    found = cli("search", "green tea", "--cube", "notes", "-k", "1")
    assert found.code == 0, found.err
    assert re.search(rf"-?\d\.\d{{3}}\s+{seeded.bob.id}\s+Bob prefers green tea", found.out)

    shown = cli("show", seeded.alice.id)
    assert shown.code == 0, shown.err
    assert re.search(r"version\s+2\b", shown.out)
    assert "Alice moved to Porto in June 2023" in shown.out


# update, history, diff, delete, rollback --------------------------------------------------


@pytest.mark.slow
def test_update_checks_the_expected_version(
    cli: Cli, seeded: Seeded, sdk: Callable[[], MemOS]
) -> None:
    updated = cli(
        "update", seeded.alice.id, "Alice lives in Faro", "--expected-version", "2",
        "--user", "alice", "--reason", "moved again",
    )  # fmt: skip
    assert updated.code == 0, updated.err
    assert "version 3" in updated.out

    stale = cli("update", seeded.alice.id, "Alice lives in Braga", "--expected-version", "2")
    assert_error(stale, ExitCode.CONFLICT, "version 3", "expected 2")

    history = cli("history", seeded.alice.id, "--json")
    assert history.code == 0, history.err
    entries = history.json()
    assert [e["version"] for e in entries] == [1, 2, 3]
    assert [e["event"]["op"] for e in entries] == ["create", "update", "update"]
    assert entries[-1]["event"]["reason"] == "moved again"
    assert entries[-1]["event"]["actor"] == "alice"
    assert sdk().get(seeded.alice.id).text == "Alice lives in Faro"


@pytest.mark.slow
def test_history_table(cli: Cli, seeded: Seeded) -> None:
    result = cli("history", seeded.alice.id)
    assert result.code == 0, result.err
    assert re.search(
        r"1\s+2\s+\S+ \S+\s+alice\s+create\s+active\s+Alice moved to Lisbon", result.out
    )
    assert re.search(
        r"2\s+4\s+\S+ \S+\s+alice\s+update\s+active\s+Alice moved to Porto", result.out
    )


@pytest.mark.slow
def test_diff_json_and_text(cli: Cli, seeded: Seeded) -> None:
    as_json = cli("diff", seeded.alice.id, "1", "2", "--json")
    assert as_json.code == 0, as_json.err
    diff = as_json.json()
    assert (diff["item_id"], diff["from_version"], diff["to_version"]) == (seeded.alice.id, 1, 2)
    [change] = diff["changes"]
    assert change == {
        "field": "text",
        "old": "Alice moved to Lisbon in May 2023",
        "new": "Alice moved to Porto in June 2023",
    }

    as_text = cli("diff", seeded.alice.id, "1", "2")
    assert as_text.code == 0, as_text.err
    assert "-Alice moved to Lisbon in May 2023" in as_text.out
    assert "+Alice moved to Porto in June 2023" in as_text.out


@pytest.mark.slow
def test_delete_then_rollback_restores_the_memory(
    cli: Cli, seeded: Seeded, sdk: Callable[[], MemOS]
) -> None:
    deleted = cli("delete", seeded.alice.id, "--reason", "user asked", "--user", "alice")
    assert deleted.code == 0, deleted.err
    assert seeded.alice.id in deleted.out

    restored = cli("rollback", seeded.alice.id, "--to-version", "1", "--reason", "bad edit")
    assert restored.code == 0, restored.err
    assert "version 4" in restored.out

    mos = sdk()
    item = mos.get(seeded.alice.id)
    assert (item.text, item.status.value, item.version) == (
        "Alice moved to Lisbon in May 2023",
        "active",
        4,
    )
    events = [entry.event for entry in mos.history(seeded.alice.id)]
    assert [(e.op.value, e.actor, e.reason) for e in events[-2:]] == [
        ("delete", "alice", "user asked"),
        ("rollback", "local", "bad edit"),
    ]


@pytest.mark.slow
def test_rollback_cube_to_seq(cli: Cli, seeded: Seeded, sdk: Callable[[], MemOS]) -> None:
    result = cli("rollback", "--cube", "notes", "--to-seq", "2", "--reason", "undo")
    assert result.code == 0, result.err
    assert "2 memories changed" in result.out

    mos = sdk()
    assert mos.get(seeded.alice.id).text == "Alice moved to Lisbon in May 2023"
    assert mos.get(seeded.bob.id).status.value == "deleted"
    tail = mos.log("notes")[-2:]
    assert [(e.seq, e.op.value, e.reason) for e in tail] == [
        (5, "rollback", "undo"),
        (6, "rollback", "undo"),
    ]
    assert mos.verify("notes").ok


# log and verify ---------------------------------------------------------------------------


@pytest.mark.slow
def test_log_json_covers_every_cube_and_limits(cli: Cli, seeded: Seeded, data_dir: Path) -> None:
    with MemOS.open(data_dir) as mos:
        mos.create_cube("other", owner="bob", embedder=EMBEDDER)
        expected = mos.log("notes")

    everything = cli("log", "--json")
    assert everything.code == 0, everything.err
    events = everything.json()
    assert [(e["cube"], e["seq"]) for e in events] == [
        ("notes", 1), ("notes", 2), ("notes", 3), ("notes", 4), ("other", 1),
    ]  # fmt: skip
    assert events[:4] == [event.model_dump(mode="json") for event in expected]

    newest = cli("log", "--cube", "notes", "--limit", "2")
    assert newest.code == 0, newest.err
    rows = [line.split() for line in newest.out.splitlines() if re.match(r"\s*\d+\s", line)]
    assert [row[0] for row in rows] == ["3", "4"]
    assert rows[1][3:6] == ["alice", "update", seeded.alice.id]
    assert rows[1][-1] == expected[3].hash[:8]


def _tamper(data_dir: Path, sql: str) -> None:
    conn = sqlite3.connect(data_dir / "memos.db")
    with conn:
        conn.execute(sql)
    conn.close()


@pytest.mark.slow
def test_verify_passes_then_names_the_first_tampered_event(
    cli: Cli, seeded: Seeded, data_dir: Path
) -> None:
    healthy = cli("verify")
    assert healthy.code == 0, healthy.err
    assert re.search(r"notes\s+ok\s+4\s+4", healthy.out), healthy.out

    _tamper(
        data_dir,
        "UPDATE payloads SET body = replace(body, 'Lisbon', 'Paris') "
        "WHERE cube = 'notes' AND seq = 2",
    )
    broken = cli("verify", "--cube", "notes")
    assert_error(broken, ExitCode.INTEGRITY, "'notes'", "first bad seq 2")
    assert "FAILED" in broken.out

    as_json = cli("verify", "--json")
    assert as_json.code == ExitCode.INTEGRITY
    report = as_json.json()
    assert report["ok"] is False
    [cube] = report["cubes"]
    assert (cube["cube"], cube["ok"], cube["first_bad_seq"]) == ("notes", False, 2)
    envelope = json.loads(as_json.err)
    assert envelope["error"]["code"] == "integrity_error"
    assert envelope["error"]["details"]["cubes"][0]["first_bad_seq"] == 2


# export and import ------------------------------------------------------------------------


@pytest.mark.slow
def test_export_import_round_trip(cli: Cli, seeded: Seeded, data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "export"
    exported = cli("export", "--cube", "notes", str(out))
    assert exported.code == 0, exported.err
    assert (out / "manifest.json").exists()

    copy_dir = tmp_path / "copy"
    imported = run_memos("import", str(out), data_dir=copy_dir)
    assert imported.code == 0, imported.err
    assert "'notes'" in imported.out

    with MemOS.open(data_dir, create=False) as source:
        original = source.log("notes")
    with MemOS.open(copy_dir, create=False) as copy:
        assert copy.log("notes") == original
        assert copy.verify("notes").ok
        assert copy.get(seeded.alice.id) == seeded.alice

    items = out / "items.jsonl"
    items.write_text(items.read_text().replace("Porto", "Paris"))
    refused = run_memos("import", str(out), data_dir=tmp_path / "third")
    assert_error(refused, ExitCode.INTEGRITY, "checksum")


# errors -----------------------------------------------------------------------------------

BAD_INPUT = [
    pytest.param(["add", "   ", "--cube", "notes"], ExitCode.INVALID_INPUT, "empty", id="empty"),
    pytest.param(["add", "x", "--cube", "nope"], ExitCode.NOT_FOUND, "'nope'", id="unknown-cube"),
    pytest.param(["show", "0" * 32], ExitCode.NOT_FOUND, "0" * 32, id="unknown-id"),
    pytest.param(
        ["add", "x", "--cube", "notes", "--meta", "novalue"],
        ExitCode.INVALID_INPUT,
        "--meta 'novalue'",
        id="bad-meta",
    ),
    pytest.param(
        ["search", "x", "--cube", "notes", "--since", "yesterday"],
        ExitCode.INVALID_INPUT,
        "since",
        id="bad-time",
    ),
    pytest.param(
        ["rollback", "{alice}"], ExitCode.INVALID_INPUT, "--to-version", id="rollback-usage"
    ),
    pytest.param(
        ["export", "--cube", "notes", "{db}/out"], ExitCode.STORAGE, "Not a directory", id="os"
    ),
]


@pytest.mark.parametrize(("args", "code", "fragment"), BAD_INPUT)
@pytest.mark.slow
def test_bad_input_is_one_line_and_changes_nothing(
    cli: Cli,
    seeded: Seeded,
    sdk: Callable[[], MemOS],
    data_dir: Path,
    args: list[str],
    code: ExitCode,
    fragment: str,
) -> None:
    db = str(data_dir / "memos.db")
    result = cli(*(arg.replace("{alice}", seeded.alice.id).replace("{db}", db) for arg in args))
    assert_error(result, code, fragment)
    assert result.out == ""
    assert sdk().store.head("notes")[0] == 4


@pytest.mark.slow
def test_json_errors_print_the_envelope(cli: Cli, seeded: Seeded) -> None:
    result = cli("show", "missing", "--json")
    assert result.code == ExitCode.NOT_FOUND
    assert json.loads(result.err) == {
        "error": {
            "code": "item_not_found",
            "message": "no memory with id 'missing'",
            "details": {"item_id": "missing"},
        }
    }


@pytest.mark.slow
def test_missing_data_dir_is_reported_and_not_created(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    result = run_memos("log", data_dir=missing)
    assert_error(result, ExitCode.STORAGE, "no MemOS data dir", str(missing))
    assert not missing.exists()


@pytest.mark.slow
def test_corrupt_data_dir_is_reported(tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "memos.db").write_bytes(b"this is not a database\n" * 200)
    assert_error(run_memos("cube", "list", data_dir=corrupt), ExitCode.STORAGE, "corrupt")


# lazy imports -----------------------------------------------------------------------------

_NO_TORCH = """
import sys
from typer.testing import CliRunner
from memos.cli import app

data_dir, item_id = sys.argv[1:]
runner = CliRunner()
for args in (
    ["cube", "list"], ["log"], ["verify"], ["show", item_id], ["history", item_id],
    ["search", "tea", "--cube", "notes"], ["add", "more tea", "--cube", "notes"],
    ["scheduler", "plan", "--cube", "notes"], ["scheduler", "status", "--cube", "notes"],
    ["audit", "migrations", "--cube", "notes"],
):
    result = runner.invoke(app, ["--data-dir", data_dir, *args])
    assert result.exit_code == 0, (args, result.output)
heavy = sorted({"torch", "sentence_transformers", "transformers"} & set(sys.modules))
print(",".join(heavy) or "none")
"""


@pytest.mark.slow
def test_commands_on_hash_cubes_never_import_torch(seeded: Seeded, data_dir: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", _NO_TORCH, str(data_dir), seeded.alice.id],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "none"


# help and docs (in-process) ---------------------------------------------------------------


def _subcommands(command: Any) -> dict[str, Any]:
    # typer ships its own copy of click, so groups are recognised by their ``commands``.
    found = getattr(command, "commands", None)
    return found if isinstance(found, dict) else {}


def _command_paths() -> list[tuple[str, ...]]:
    paths: list[tuple[str, ...]] = []

    def walk(command: Any, path: tuple[str, ...]) -> None:
        if path:
            paths.append(path)
        for name, sub in _subcommands(command).items():
            walk(sub, (*path, name))

    walk(typer.main.get_command(app), ())
    return paths


def _command(path: tuple[str, ...]) -> Any:
    command: Any = typer.main.get_command(app)
    for name in path:
        command = _subcommands(command)[name]
    return command


def _doc_sections() -> dict[str, str]:
    """``## `memos ...``` heading -> the section's text."""
    parts = re.split(r"^## `memos ([^`]+)`\s*$", DOCS.read_text(encoding="utf-8"), flags=re.M)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def test_the_app_has_every_command_of_the_issue() -> None:
    names = {" ".join(path) for path in _command_paths()}
    assert names == {
        "cube", "cube create", "cube list", "cube reencode", "cube refit", "cube stats",
        "add", "search", "ls", "show", "update", "delete",
        "history", "log", "diff", "rollback", "verify", "forget", "gc", "export", "import",
        "chat", "kv", "kv build", "kv ls", "kv drop",
        "lora", "lora consolidate", "lora ls", "lora show", "lora attach", "lora export",
        "lora import", "lora retrain", "lora rollback", "lora rm",
        "cube grant", "cube revoke", "keys", "keys create", "keys ls", "keys revoke", "serve",
        "jobs", "jobs submit", "jobs ls", "jobs show", "jobs wait", "jobs cancel", "worker",
        "scheduler", "scheduler status", "scheduler plan", "scheduler run", "scheduler configure",
        "scheduler revert", "audit", "audit migrations", "audit report",
        "policy", "policy show", "policy set", "policy expire", "mcp",
    }  # fmt: skip


@pytest.mark.parametrize("path", _command_paths(), ids=" ".join)
def test_every_command_has_help(path: tuple[str, ...]) -> None:
    command = _command(path)
    assert command.help, f"memos {' '.join(path)} has no help text"
    for param in command.params:
        assert getattr(param, "help", None), f"{param.name} of memos {' '.join(path)}"
    result = CliRunner().invoke(app, [*path, "--help"])
    assert result.exit_code == 0, result.output
    summary = command.help.strip().splitlines()[0]
    assert " ".join(summary.split()) in " ".join(result.output.split())


@pytest.mark.parametrize("path", _command_paths(), ids=" ".join)
def test_every_command_has_a_docs_section_with_an_example(path: tuple[str, ...]) -> None:
    name = " ".join(path)
    sections = _doc_sections()
    assert name in sections, f"docs/cli.md has no section for `memos {name}`"
    blocks = re.findall(r"```[a-z]*\n(.*?)```", sections[name], flags=re.S)
    assert any(f"memos {name}" in block for block in blocks), f"no example for memos {name}"


def test_docs_describe_no_command_that_does_not_exist() -> None:
    assert set(_doc_sections()) <= {" ".join(path) for path in _command_paths()}


def test_data_dir_comes_from_the_environment(seeded: Seeded, data_dir: Path) -> None:
    result = CliRunner().invoke(
        app, ["cube", "list", "--json"], env={"MEMOS_DATA_DIR": str(data_dir)}
    )
    assert result.exit_code == 0, result.output
    assert [cube["name"] for cube in json.loads(result.output)] == ["notes"]


def test_usage_errors_exit_with_the_invalid_input_code() -> None:
    assert CliRunner().invoke(app, ["log", "--limit", "0"]).exit_code == ExitCode.INVALID_INPUT
    assert CliRunner().invoke(app, ["no-such-command"]).exit_code == ExitCode.INVALID_INPUT


def test_version() -> None:
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output.startswith("memos ")


# option parsing ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        ("3", 3),
        ("-2", -2),
        ("1.5", 1.5),
        ("1e3", 1000.0),
        ("true", True),
        ("false", False),
        ("null", None),
        ('"42"', "42"),
        ("chat", "chat"),
        ("", ""),
        ("NaN", "NaN"),
        ("Infinity", "Infinity"),
        ("[1, 2]", "[1, 2]"),
        ('{"a": 1}', '{"a": 1}'),
        ("True", "True"),
    ],
)
def test_meta_values_are_json_scalars_or_text(raw: str, value: object) -> None:
    parsed = meta_value(raw)
    assert parsed == value
    assert type(parsed) is type(value)


def test_meta_pairs() -> None:
    assert meta_pairs(["a=1", "b=x=y", "a=2"]) == {"a": 2, "b": "x=y"}
    assert meta_pairs(None) == {}
    for bad in ("novalue", "=1", " =1"):
        with pytest.raises(InvalidInput, match="expected key=value"):
            meta_pairs([bad])
