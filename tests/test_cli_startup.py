"""What a ``memos`` command imports: nothing that loads a model unless it runs one. Wall-clock
start-up is measured in benchmarks/cli_startup.py; these tests hold the imports that decide it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from _servers import serve_process

from memos import MemOS

HEAVY = ("torch", "sentence_transformers", "transformers", "peft", "ml_dtypes")
# what a command that reads only the log and the catalogues never needs: vectors and codecs
NUMERICS = ("numpy", "faiss", "memos.codecs", "memos.plaintext._indexes")
# what no command pays for before it runs: the engine's numerics, the models, the renderer
ENGINE = ("numpy", "faiss", "pydantic", "rich", "httpx", "memos.engine._mos")
# what a command over --url never needs: the local store, embedder and model, the server, and
# an HTTP library (the client speaks through the standard library's)
LOCAL = (
    *HEAVY,
    *NUMERICS,
    "tokenizers",
    "sqlite3",
    "memos.stores.sqlite",
    "memos.embedding._bert",
    "memos.engine._mos",
    "fastapi",
    "uvicorn",
    "pydantic_settings",
    "httpx",
    "httpcore",
    "anyio",
)

_RUN = """
import sys
from typer.testing import CliRunner
from memos.cli import app

data_dir, heavy_names = sys.argv[1], sys.argv[2].split(",")
runner = CliRunner()
commands = [line.split("|") for line in sys.argv[3:]]
for args, expected in ((a[:-1], int(a[-1])) for a in commands):
    result = runner.invoke(app, ["--data-dir", data_dir, *args])
    assert result.exit_code == expected, (args, result.exit_code, result.output)
    if args[0] == "add" and expected == 0:
        print("id", result.output.strip())
print("heavy", ",".join(m for m in heavy_names if m in sys.modules) or "none")
print("embedder", "loaded" if "memos.embedding._bert" in sys.modules else "not loaded")
"""


def _run(data_dir: Path, *commands: str, watch: tuple[str, ...] = HEAVY) -> dict[str, str]:
    done = subprocess.run(
        [sys.executable, "-c", _RUN, str(data_dir), ",".join(watch), *commands],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return dict(line.split(" ", 1) for line in done.stdout.splitlines())


def test_importing_the_cli_loads_no_model_code() -> None:
    code = f"import sys, memos.cli; print(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_importing_the_cli_loads_no_engine() -> None:
    code = f"import sys, memos.cli; print(sorted(m for m in {ENGINE!r} if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


_REMOTE = """
import sys
from typer.testing import CliRunner
from memos.cli import app

url, token, nowhere, local = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4].split(",")
runner = CliRunner()
base = ["--data-dir", nowhere, "--url", url, "--api-key", token]
for args in (["cube", "list"], ["add", "tea", "--cube", "notes"], ["search", "tea", "--cube",
             "notes"], ["log"], ["verify"]):
    result = runner.invoke(app, [*base, *args])
    assert result.exit_code == 0, (args, result.output)
print(",".join(m for m in local if m in sys.modules) or "none")
"""


@pytest.mark.slow
def test_commands_over_url_import_no_local_store_embedder_or_model(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    with MemOS.open(data_dir, create=True) as mos:
        _, token = mos.keys.create("alice")
        mos.create_cube("notes", owner="alice", embedder="hash-64")
    with serve_process("--data-dir", str(data_dir)) as (url, _):
        args = [url, token, str(tmp_path / "nowhere"), ",".join(LOCAL)]
        done = subprocess.run(
            [sys.executable, "-c", _REMOTE, *args], capture_output=True, text=True, timeout=300
        )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "none"
    assert not (tmp_path / "nowhere").exists()


@pytest.mark.slow
def test_commands_on_a_minilm_cube_never_import_torch(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    seeded = _run(
        data_dir,
        "cube|create|notes|0",
        "add|Alice moved to Lisbon in May 2023|--cube|notes|0",
    )
    item_id = seeded["id"]
    assert seeded["heavy"] == "none"
    checked = _run(
        data_dir,
        "--help|0",
        "cube|list|0",
        "log|0",
        "kv|ls|--cube|notes|0",
        "search|where does Alice live?|--cube|notes|0",
        f"update|{item_id}|Alice moved to Porto|--expected-version|1|0",
    )
    assert checked["heavy"] == "none"
    assert checked["embedder"] == "loaded"


@pytest.mark.slow
def test_commands_that_read_the_log_and_catalogues_load_no_vectors(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    item_id = _run(data_dir, "cube|create|notes|--embedder|hash-64|0", "add|tea|--cube|notes|0")
    checked = _run(
        data_dir,
        "cube|list|0",
        "log|--cube|notes|0",
        f"history|{item_id['id']}|0",
        f"show|{item_id['id']}|0",
        "kv|ls|--cube|notes|0",
        "lora|ls|--cube|notes|0",
        "policy|show|--cube|notes|0",
        "jobs|ls|0",
        watch=(*HEAVY, *NUMERICS, "httpx"),
    )
    assert checked["heavy"] == "none"


@pytest.mark.slow
def test_checks_that_fail_run_before_the_model_loads(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    item_id = _run(data_dir, "cube|create|notes|0", "add|Bob prefers tea|--cube|notes|0")["id"]
    refused = _run(
        data_dir,
        f"update|{item_id}|Bob prefers coffee|--expected-version|7|4",
        "add|text|--cube|nope|3",
        "search|tea|--cube|nope|3",
        f"delete|{item_id}|0",
        f"update|{item_id}|Bob prefers coffee|4",
    )
    assert refused["embedder"] == "not loaded"
