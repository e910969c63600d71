"""``memos lora`` and ``memos chat --adapter/--no-retrieve`` on the tiny random Llama.

Commands run in-process through typer's CliRunner, as in test_cli_kv.py. Training is what
costs time, so one adapter (``facts`` v1, 3 steps on both memories) is trained once per module
into a template data dir, and each test works on its own copy of it.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from _cli_result import Result
from _models import tiny_model_dir
from typer.testing import CliRunner

from memos import MemoryItem, MemOS
from memos.cli import ExitCode, app

EMBEDDER = "hash-64"
STEPS = ["--steps", "3"]
MAX_NEW = ["--max-new-tokens", "4"]
ASK = ["chat", "where alice moved", "--cube", "notes", "-k", "1", *MAX_NEW]
LS_COLUMNS = ["name", "version", "origin", "stale", "storage", "bytes", "parameters"]
TRAINED = re.compile(
    r"(?P<verb>consolidated|retrained) (?P<name>\S+) v(?P<version>\d+) \((?P<id>lora-[0-9a-f]+)\) "
    r"in cube 'notes': (?P<memories>\d+) memor(y|ies), 3 steps, \d+\.\d s, recall \d\.\d\d, "
    r"(compeft at density [\d.]+|fp32 \(compressed, its recall fell to \d\.\d\d\)), \d+ bytes\n"
)


Cli = Callable[..., Result]


@dataclass(frozen=True)
class Template:
    """A closed data dir: cube ``notes`` (events 1 cube_create, 2 add alice, 3 add paris,
    4 adapter_build of ``facts`` v1 on paris and alice)."""

    path: Path
    alice: MemoryItem
    paris: MemoryItem
    facts: dict[str, Any]  # the adapter's entry, as JSON


def _invoke(base: list[str], *args: str) -> Result:
    result = CliRunner().invoke(app, [*base, *args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return Result(result.exit_code, result.stdout, result.stderr)


def _base(data_dir: Path, model_dir: Path, cache: Path) -> list[str]:
    return ["--data-dir", str(data_dir), "--model", str(model_dir), "--model-cache", str(cache)]


def _one(added: MemoryItem | list[MemoryItem]) -> MemoryItem:
    assert isinstance(added, MemoryItem)
    return added


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_model_dir(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory, model_dir: Path) -> Template:
    root = tmp_path_factory.mktemp("lora-template")
    path = root / "data"
    with MemOS.open(path) as mos:
        mos.create_cube("notes", owner="alice", embedder=EMBEDDER)
        alice = _one(mos.add("alice moved to lisbon in may", cube="notes", user="alice"))
        paris = _one(mos.add("the capital of france is paris", cube="notes"))
    train = ["lora", "consolidate", "facts", "-c", "notes", "-i", paris.id, "-i", alice.id]
    built = ok(_invoke(_base(path, model_dir, root / "cache"), *train, *STEPS, "--json"))
    return Template(path=path, alice=alice, paris=paris, facts=built.json())


@pytest.fixture
def seeded(template: Template, data_dir: Path) -> Template:
    shutil.copytree(template.path, data_dir)
    return template


@pytest.fixture
def cli(data_dir: Path, model_dir: Path, tmp_path: Path) -> Cli:
    base = _base(data_dir, model_dir, tmp_path / "model-cache")
    return lambda *args: _invoke(base, *args)


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


def adapters(cli: Cli, *args: str) -> list[dict[str, Any]]:
    listed: list[dict[str, Any]] = ok(cli("lora", "ls", "--cube", "notes", *args, "--json")).json()
    return listed


def default_adapter(cli: Cli) -> str | None:
    [cube] = ok(cli("cube", "list", "--json")).json()
    name: str | None = cube["default_adapter"]
    return name


def summary(result: Result) -> str:
    return result.err.strip().splitlines()[-1]


# consolidate ------------------------------------------------------------------------------


def test_consolidate_by_items_shows_progress_then_one_line(cli: Cli, seeded: Template) -> None:
    paris, alice = seeded.paris.id, seeded.alice.id
    train = ["lora", "consolidate", "both", "--cube", "notes", "-i", paris, "-i", alice]
    result = ok(cli(*train, *STEPS, "-u", "alice", "-r", "learn them"))
    found = TRAINED.fullmatch(result.out)
    assert found, result.out
    assert (found["verb"], found["name"], found["version"]) == ("consolidated", "both", "1")
    assert found["memories"] == "2"
    # the progress bar, drawn once at its end on a non-terminal stderr
    assert "training" in result.err
    assert "3/3" in result.err
    assert "loss " in result.err
    [entry] = adapters(cli, "--name", "both")
    assert entry["id"] == found["id"]
    assert [s["item_id"] for s in entry["manifest"]["sources"]] == [paris, alice]
    assert ops(cli)[-1] == ("adapter_build", "alice", "learn them")


def test_consolidate_by_query_with_a_recipe_prints_json(cli: Cli, seeded: Template) -> None:
    recipe = ["--steps", "2", "--lr", "0.01", "--rank", "4", "--seed", "7", "--fp32"]
    query = ["--query", "alice lisbon", "-k", "1"]
    result = ok(cli("lora", "consolidate", "lisbon", "-c", "notes", *query, *recipe, "--json"))
    entry = result.json()
    manifest = entry["manifest"]
    assert [s["item_id"] for s in manifest["sources"]] == [seeded.alice.id]
    assert (manifest["name"], manifest["version"], manifest["origin"]) == (
        "lisbon",
        1,
        "consolidate",
    )
    assert manifest["recipe"]["max_steps"] == 2
    assert manifest["recipe"]["learning_rate"] == 0.01
    assert (manifest["recipe"]["rank"], manifest["lora"]["r"]) == (4, 4)
    assert manifest["recipe"]["seed"] == 7
    assert (manifest["storage"], manifest["density"]) == ("fp32", None)
    assert "compressed_recall" not in manifest["metrics"]
    assert manifest["metrics"]["steps"] == 2
    assert "2/2" in result.err
    assert adapters(cli, "--name", "lisbon") == [entry]


def test_a_new_consolidation_is_the_next_version(cli: Cli, seeded: Template) -> None:
    again = ["lora", "consolidate", "facts", "-c", "notes", "-i", seeded.alice.id, *STEPS]
    found = TRAINED.fullmatch(ok(cli(*again, "--density", "0.5")).out)
    assert found
    assert (found["version"], found["memories"]) == ("2", "1")
    assert [e["manifest"]["version"] for e in adapters(cli)] == [1, 2]


# ls and show ------------------------------------------------------------------------------


def test_ls_prints_a_table_or_json(cli: Cli, seeded: Template) -> None:
    ok(cli("lora", "rollback", "facts", "--cube", "notes", "--to-version", "1"))
    listed = adapters(cli)
    assert [(e["manifest"]["version"], e["manifest"]["origin"]) for e in listed] == [
        (1, "consolidate"),
        (2, "rollback"),
    ]
    assert listed[0] == seeded.facts
    header, _, *rows = ok(cli("lora", "ls", "--cube", "notes")).out.strip().splitlines()
    assert header.split() == [*LS_COLUMNS, "sources", "created"]
    for row, entry in zip(rows, listed, strict=True):
        manifest = entry["manifest"]
        assert row.split()[:8] == [
            "facts",
            str(manifest["version"]),
            manifest["origin"],
            "no",
            manifest["storage"],
            str(entry["size"]),
            str(manifest["parameters"]),
            "2",
        ]
    assert adapters(cli, "--name", "facts") == listed
    assert adapters(cli, "--name", "other") == []
    assert ok(cli("lora", "ls", "-c", "notes", "--name", "other")).out == "no adapters\n"


def test_show_prints_the_manifest_readably(cli: Cli, seeded: Template) -> None:
    facts = seeded.facts
    manifest = facts["manifest"]
    model = manifest["base_model"]
    text = ok(cli("lora", "show", "facts", "--cube", "notes")).out
    lines = [" ".join(line.split()) for line in text.splitlines()]
    assert "name facts" in lines
    assert "version 1" in lines
    assert f"id {facts['id']}" in lines
    assert "origin consolidate" in lines
    assert "stale no" in lines
    short = f"{model['weights_sha256'][:12]}/{model['tokenizer_sha256'][:12]}"
    assert f"base model tiny-0 ({short})" in lines
    assert f"parameters {manifest['parameters']}" in lines
    assert f"sources 2: {seeded.paris.id} v1, {seeded.alice.id} v1" in lines
    assert any(line.startswith("lora r=8, alpha=16 on down_proj, gate_proj") for line in lines)
    assert any(line.startswith("storage ") and f"{facts['size']} bytes" in line for line in lines)
    assert "max_steps=3" in text
    assert "first_loss=" in text

    assert ok(cli("lora", "show", "facts", "-c", "notes", "--json")).json() == facts
    assert ok(cli("lora", "show", "facts", "-c", "notes", "--version", "1", "--json")).json() == (
        facts
    )


# attach, chat ---------------------------------------------------------------------------


def test_attach_makes_chat_answer_through_it_until_detached(cli: Cli, seeded: Template) -> None:
    facts = seeded.facts["id"]
    attached = ok(cli("lora", "attach", "facts", "--cube", "notes", "-u", "alice", "-r", "use"))
    assert attached.out == "attached facts to cube 'notes': chat answers through it\n"
    assert default_adapter(cli) == "facts"

    reply = ok(cli(*ASK, "--json")).json()
    assert reply["adapter"] == facts
    streamed = ok(cli(*ASK))
    assert streamed.out == reply["answer"] + "\n"
    assert summary(streamed).endswith(f"; adapter: facts v1 ({facts})")

    detached = ok(cli("lora", "attach", "--cube", "notes", "--none"))
    assert detached.out == "detached cube 'notes': chat uses no adapter unless one is named\n"
    assert default_adapter(cli) is None
    assert ok(cli(*ASK, "--json")).json()["adapter"] is None
    assert "adapter" not in summary(ok(cli(*ASK)))
    assert ops(cli)[-2:] == [("adapter_attach", "alice", "use"), ("adapter_attach", "local", None)]


def test_chat_through_a_named_adapter_without_retrieval(
    cli: Cli, seeded: Template, data_dir: Path
) -> None:
    facts = seeded.facts["id"]
    ask = [*ASK, "--adapter", "facts", "--no-retrieve"]
    reply = ok(cli(*ask, "--json")).json()
    assert reply["memories"] == []
    assert reply["adapter"] == facts
    assert reply["kv_entry"] is None
    streamed = ok(cli(*ask))
    assert streamed.out == reply["answer"] + "\n"
    assert summary(streamed) == (
        f"memories: none; kv: none ({reply['prompt_tokens']} prompt tokens computed); "
        f"adapter: facts v1 ({facts})"
    )
    with MemOS.open(data_dir, create=False) as mos:  # no memory was used
        assert mos.access_stats([seeded.alice.id, seeded.paris.id]) == {}


# export, import ---------------------------------------------------------------------------


def test_export_then_import_round_trips_the_weights(
    cli: Cli, seeded: Template, tmp_path: Path
) -> None:
    out, again = tmp_path / "exported", tmp_path / "again"
    exported = ok(cli("lora", "export", "facts", str(out), "--cube", "notes", "--version", "1"))
    assert exported.out == f"exported facts v1 of cube 'notes' to {out}\n"
    assert sorted(p.name for p in out.iterdir()) == [
        "adapter_config.json",
        "adapter_model.safetensors",
        "memos_manifest.json",
    ]

    imported = ok(cli("lora", "import", str(out), "-c", "notes", "--name", "copy", "--json"))
    entry, facts = imported.json()["manifest"], seeded.facts["manifest"]
    assert (entry["name"], entry["version"], entry["origin"]) == ("copy", 1, "import")
    assert (entry["storage"], entry["density"], entry["sources"]) == ("fp32", None, [])
    for field in ("parameters", "lora", "base_model", "base_model_name"):
        assert entry[field] == facts[field], field
    ok(cli("lora", "export", "copy", str(again), "-c", "notes"))
    weights = "adapter_model.safetensors"
    assert (again / weights).read_bytes() == (out / weights).read_bytes()

    packed = ok(cli("lora", "import", str(out), "-c", "notes", "-n", "packed", "--density", "0.5"))
    assert re.fullmatch(
        r"imported packed v1 \(lora-[0-9a-f]+\) into cube 'notes': \d+ parameters, "
        r"compeft at density 0\.5, \d+ bytes\n",
        packed.out,
    )
    reply = ok(cli(*ASK, "--adapter", "packed", "--json")).json()
    assert reply["adapter"] == adapters(cli, "--name", "packed")[0]["id"]
    assert [op for op, _, _ in ops(cli)[-2:]] == ["adapter_build", "adapter_build"]


# rollback, retrain, rm --------------------------------------------------------------------


def test_rollback_makes_a_new_version_with_the_old_weights(cli: Cli, seeded: Template) -> None:
    again = ["lora", "consolidate", "facts", "-c", "notes", "-i", seeded.alice.id, *STEPS]
    ok(cli(*again, "--fp32"))
    rolled = ok(cli("lora", "rollback", "facts", "-c", "notes", "--to-version", "1", "-u", "bob"))
    v1, v2, v3 = adapters(cli)
    assert rolled.out == f"rolled back facts to v1: new version v3 ({v3['id']}) in cube 'notes'\n"
    assert v3["manifest"]["origin"] == "rollback"
    assert v3["manifest"]["from_version"] == 1
    assert (v3["blob"], v3["manifest"]["storage"]) == (v1["blob"], v1["manifest"]["storage"])
    assert v3["blob"] != v2["blob"]
    assert ops(cli)[-1] == ("adapter_build", "bob", None)
    assert ok(cli("lora", "show", "facts", "-c", "notes", "--json")).json() == v3


def test_rm_deletes_every_version_and_detaches(cli: Cli, seeded: Template) -> None:
    ok(cli("lora", "rollback", "facts", "-c", "notes", "--to-version", "1"))  # event 5
    ok(cli("lora", "attach", "facts", "-c", "notes"))  # event 6
    removed = ok(cli("lora", "rm", "facts", "--cube", "notes", "-u", "alice", "-r", "done"))
    assert removed.out == (
        "deleted facts from cube 'notes': 2 versions, and detached it (events 7-9)\n"
    )
    assert adapters(cli) == []
    assert ok(cli("lora", "ls", "--cube", "notes")).out == "no adapters\n"
    assert default_adapter(cli) is None
    assert ops(cli)[-3:] == [
        ("adapter_drop", "alice", "done"),
        ("adapter_drop", "alice", "done"),
        ("adapter_attach", "alice", "done"),
    ]
    assert ok(cli("verify")).code == 0


def test_a_deleted_source_makes_the_adapter_stale_until_retrained(
    cli: Cli, seeded: Template
) -> None:
    ok(cli("lora", "attach", "facts", "-c", "notes"))
    ok(cli("delete", seeded.alice.id))
    [stale] = adapters(cli)
    assert stale["stale"] is True
    row = ok(cli("lora", "ls", "-c", "notes")).out.strip().splitlines()[-1]
    assert row.split()[3] == "yes"
    assert "stale yes: a memory it learned has changed" in " ".join(
        ok(cli("lora", "show", "facts", "-c", "notes")).out.split()
    )

    before = ops(cli)
    refused = cli(*ASK, "--adapter", "facts")
    assert_error(refused, ExitCode.CONFLICT, "adapter 'facts' (v1)", "retrain")
    assert ops(cli) == before
    # the attached default is skipped while stale, not an error
    assert ok(cli(*ASK, "--json")).json()["adapter"] is None

    retrained = ok(cli("lora", "retrain", "facts", "--cube", "notes", "-r", "alice left"))
    found = TRAINED.fullmatch(retrained.out)
    assert found, retrained.out
    assert (found["verb"], found["version"], found["memories"]) == ("retrained", "2", "1")
    assert "3/3" in retrained.err
    latest = ok(cli("lora", "show", "facts", "-c", "notes", "--json")).json()
    assert latest["stale"] is False
    assert (latest["manifest"]["origin"], latest["manifest"]["from_version"]) == ("retrain", 1)
    assert [s["item_id"] for s in latest["manifest"]["sources"]] == [seeded.paris.id]
    assert ok(cli(*ASK, "--adapter", "facts", "--json")).json()["adapter"] == latest["id"]
    assert ok(cli(*ASK, "--json")).json()["adapter"] == latest["id"]
    assert ops(cli)[-1] == ("adapter_build", "local", "alice left")


# errors -----------------------------------------------------------------------------------

NOT_FOUND, INVALID = ExitCode.NOT_FOUND, ExitCode.INVALID_INPUT
CONSOLIDATE = ["lora", "consolidate", "new", "--cube", "notes"]

BAD_INPUT = [
    pytest.param(
        ["lora", "consolidate", "new", "--cube", "nope", "-i", "{alice}", *STEPS],
        NOT_FOUND, "no cube named 'nope'", id="consolidate-unknown-cube",
    ),
    pytest.param(["lora", "ls", "--cube", "nope"], NOT_FOUND, "no cube named", id="ls-cube"),
    pytest.param(
        ["lora", "show", "facts", "--cube", "nope"], NOT_FOUND, "no cube named", id="show-cube"
    ),
    pytest.param(
        ["lora", "attach", "facts", "--cube", "nope"], NOT_FOUND, "no cube named", id="attach-cube"
    ),
    pytest.param(
        ["lora", "export", "facts", "{out}", "--cube", "nope"],
        NOT_FOUND, "no cube named", id="export-cube",
    ),
    pytest.param(
        ["lora", "import", "{exported}", "--cube", "nope", "--name", "copy"],
        NOT_FOUND, "no cube named", id="import-cube",
    ),
    pytest.param(
        ["lora", "retrain", "facts", "--cube", "nope"],
        NOT_FOUND, "no cube named", id="retrain-cube",
    ),
    pytest.param(
        ["lora", "rollback", "facts", "--cube", "nope", "--to-version", "1"],
        NOT_FOUND, "no cube named", id="rollback-cube",
    ),
    pytest.param(
        ["lora", "rm", "facts", "--cube", "nope"], NOT_FOUND, "no cube named", id="rm-cube"
    ),
    pytest.param(
        ["lora", "show", "nope", "--cube", "notes"],
        NOT_FOUND, "cube 'notes' has no adapter 'nope'", id="show-unknown",
    ),
    pytest.param(
        ["lora", "show", "facts", "--cube", "notes", "--version", "9"],
        NOT_FOUND, "no adapter 'facts' version 9", id="show-unknown-version",
    ),
    pytest.param(
        ["lora", "attach", "nope", "--cube", "notes"], NOT_FOUND, "no adapter 'nope'", id="attach"
    ),
    pytest.param(
        ["lora", "export", "nope", "{out}", "--cube", "notes"],
        NOT_FOUND, "no adapter 'nope'", id="export-unknown",
    ),
    pytest.param(
        ["lora", "retrain", "nope", "--cube", "notes"], NOT_FOUND, "no adapter", id="retrain"
    ),
    pytest.param(
        ["lora", "rollback", "facts", "--cube", "notes", "--to-version", "9"],
        NOT_FOUND, "version 9", id="rollback-unknown-version",
    ),
    pytest.param(
        ["lora", "rollback", "facts", "--cube", "notes", "--to-version", "0"],
        INVALID, "to_version", id="rollback-version-0",
    ),
    pytest.param(["lora", "rm", "nope", "--cube", "notes"], NOT_FOUND, "no adapter", id="rm"),
    pytest.param(
        [*ASK, "--adapter", "nope"], NOT_FOUND, "no adapter 'nope'", id="chat-unknown-adapter"
    ),
    pytest.param(
        ["lora", "consolidate", "bad name", "--cube", "notes", "-i", "{alice}"],
        INVALID, "adapter name 'bad name'", id="bad-name",
    ),
    pytest.param(
        ["lora", "import", "{exported}", "--cube", "notes", "--name", "../up"],
        INVALID, "adapter name '../up'", id="import-bad-name",
    ),
    pytest.param(
        [*CONSOLIDATE, "-i", "{alice}", "--query", "alice"],
        INVALID, "item_ids or by a query", id="items-and-query",
    ),
    pytest.param(CONSOLIDATE, INVALID, "item_ids or by a query", id="neither"),
    pytest.param(
        [*CONSOLIDATE, "-i", "missing", *STEPS], NOT_FOUND, "missing", id="unknown-item"
    ),
    pytest.param(
        [*CONSOLIDATE, "-i", "{alice}", "--steps", "0"],
        INVALID, "not a training recipe", id="bad-steps",
    ),
    pytest.param(
        [*CONSOLIDATE, "-i", "{alice}", "--density", "0"],
        INVALID, "--density must be in (0, 1], not 0.0", id="density-0",
    ),
    pytest.param(
        [*CONSOLIDATE, "-i", "{alice}", "--density", "1.5"],
        INVALID, "--density must be in (0, 1]", id="density-above-1",
    ),
    pytest.param(
        [*CONSOLIDATE, "-i", "{alice}", "--density", "nan"],
        INVALID, "--density must be in (0, 1]", id="density-nan",
    ),
    pytest.param(
        [*CONSOLIDATE, "-i", "{alice}", "--density", "0.2", "--fp32"],
        INVALID, "not both", id="density-and-fp32",
    ),
    pytest.param(
        ["lora", "import", "{exported}", "--cube", "notes", "--name", "x", "--density", "2"],
        INVALID, "--density must be in (0, 1]", id="import-bad-density",
    ),
    pytest.param(
        ["lora", "import", "{pickled}", "--cube", "notes", "--name", "x"],
        INVALID, "pickled adapter_model.bin", id="import-pickle",
    ),
    pytest.param(
        ["lora", "import", "{file}", "--cube", "notes", "--name", "x"],
        INVALID, "is not an adapter directory", id="import-a-file",
    ),
    pytest.param(
        ["lora", "import", "{out}", "--cube", "notes", "--name", "x"],
        INVALID, "is not an adapter directory", id="import-missing-dir",
    ),
    pytest.param(
        ["lora", "export", "facts", "{file}", "--cube", "notes"],
        INVALID, "exists and is not empty", id="export-onto-a-file",
    ),
    pytest.param(
        ["lora", "export", "facts", "{exported}", "--cube", "notes"],
        INVALID, "exists and is not empty", id="export-into-a-full-dir",
    ),
    pytest.param(
        ["lora", "attach", "facts", "--cube", "notes", "--none"],
        INVALID, "one of them", id="attach-name-and-none",
    ),
    pytest.param(["lora", "attach", "--cube", "notes"], INVALID, "one of them", id="attach-none"),
]  # fmt: skip


@pytest.fixture
def paths(tmp_path: Path) -> dict[str, Path]:
    """Placeholders of BAD_INPUT: a pickled peft dir, a plain file, a dir with an adapter."""
    pickled, exported = tmp_path / "pickled", tmp_path / "exported"
    pickled.mkdir()
    (pickled / "adapter_config.json").write_text('{"peft_type": "LORA", "r": 8}')
    (pickled / "adapter_model.bin").write_bytes(b"\x80\x04not opened")
    exported.mkdir()
    (exported / "adapter_config.json").write_text("{}")
    (tmp_path / "file").write_text("not a directory")
    return {
        "pickled": pickled,
        "exported": exported,
        "file": tmp_path / "file",
        "out": tmp_path / "out",
    }


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


@pytest.mark.parametrize(("args", "code", "fragment"), BAD_INPUT)
def test_bad_input_is_one_line_and_changes_nothing(
    cli: Cli,
    seeded: Template,
    tmp_path: Path,
    paths: dict[str, Path],
    args: list[str],
    code: ExitCode,
    fragment: str,
) -> None:
    before, files = ops(cli), _snapshot(tmp_path / "exported")
    names = {"alice": seeded.alice.id, **{name: str(path) for name, path in paths.items()}}
    result = cli(*(_fill(arg, names) for arg in args))
    assert_error(result, code, fragment)
    assert ops(cli) == before
    assert adapters(cli) == [seeded.facts]
    assert default_adapter(cli) is None
    assert not paths["out"].exists()
    assert _snapshot(tmp_path / "exported") == files
    assert paths["file"].read_text() == "not a directory"


def _fill(arg: str, names: dict[str, str]) -> str:
    for name, value in names.items():
        arg = arg.replace("{" + name + "}", value)
    return arg


def test_json_errors_print_the_envelope(cli: Cli, seeded: Template) -> None:
    result = cli("lora", "ls", "--cube", "nope", "--json")
    assert result.code == ExitCode.NOT_FOUND
    assert json.loads(result.err)["error"]["code"] == "cube_not_found"
    result = cli(*CONSOLIDATE, "-i", seeded.alice.id, "--density", "2", "--json")
    assert result.code == ExitCode.INVALID_INPUT
    assert json.loads(result.err)["error"]["code"] == "invalid_input"
    result = cli("lora", "show", "nope", "--cube", "notes", "--json")
    assert result.code == ExitCode.NOT_FOUND
    assert json.loads(result.err)["error"]["details"] == {"adapter": "nope"}


def test_missing_data_dir_is_reported_and_not_created(cli: Cli, data_dir: Path) -> None:
    assert_error(cli("lora", "ls", "--cube", "notes"), ExitCode.STORAGE, "no MemOS data dir")
    result = cli("lora", "consolidate", "x", "--cube", "notes", "-q", "alice")
    assert_error(result, ExitCode.STORAGE, "no MemOS data dir")
    assert not data_dir.exists()
