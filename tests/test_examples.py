"""Every script in examples/ runs as a user runs it and says what it should.

Each example runs as its own process from an empty folder, with the bundled SmolLM2 converted
where the other real-model tests find it (pytest's cache, through ``MEMOS_MODEL_CACHE``), so
no run depends on the home folder's cache. A new example is picked up by the glob; the lines it
must print, where it has some here, are the ones that show its job was done.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest
from _models import model_cache

EXAMPLES_DIR = Path(__file__).resolve().parents[1] / "examples"
EXAMPLES = sorted(EXAMPLES_DIR.glob("*.py"))
EXPECTED: dict[str, tuple[str, ...]] = {
    "demo.py": (
        "same answer, token for token: True",
        "restored as version 4: 'Alice moved to Lisbon in May 2023'",
        "verify: ok=True events=10",
        "imported copy verifies: True",
    ),
    "quickstart.py": (
        "added 4 memories from the conversation:",
        "0.045  I'm allergic to peanuts, so no peanut snacks on board.",
        "updated the seat memory to version 2: 'Always an aisle seat, please.'",
        "+Always an aisle seat, please.",
        "rolled back: version 3 has the text of version 1 again",
        "verify: verified (7 events, head seq 7)",
    ),
    "three_tiers.py": (
        "base model does not know: 'Tessaly' is not in the answer",
        "plaintext knows: 'Tessaly' is in the answer",
        "prompt: 128 tokens, 105 of them from the block",
        "same answer, token for token, as from the plaintext prompt: True",
        "KV block knows: 'Tessaly' is in the answer",
        "prompt: 53 tokens, 0 memories",
        "adapter knows: 'Tessaly' is in the answer",
    ),
    "server_and_client.py": (
        "alice: created cube 'alice:team-notes' (owner alice)",
        "bob: before a grant, cube_not_found: no cube named 'alice:team-notes'",
        "bob: search found 'On-call hand-over happens in the #ops channel on Fridays.'",
        "alice: verify ok, 5 events",
        "server: stopped by SIGINT (exit code 130, as after Ctrl+C)",
    ),
}


def test_every_example_is_found_and_documented() -> None:
    names = {path.name for path in EXAMPLES}
    assert set(EXPECTED) <= names, set(EXPECTED) - names
    for path in EXAMPLES:
        module = ast.parse(path.read_text(encoding="utf-8"))
        assert ast.get_docstring(module), f"{path.name} has no docstring saying what it shows"


@pytest.mark.slow
@pytest.mark.parametrize("example", EXAMPLES, ids=lambda path: path.name)
def test_example_runs(example: Path, tmp_path: Path, pytestconfig: pytest.Config) -> None:
    env = {key: value for key, value in os.environ.items() if not key.startswith("MEMOS_")}
    env |= {
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "MEMOS_MODEL_CACHE": str(model_cache(pytestconfig)),
        "PYTHONUNBUFFERED": "1",
    }
    done = subprocess.run(
        [sys.executable, str(example)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=570,
    )
    assert done.returncode == 0, f"{example.name} exited {done.returncode}:\n{done.stderr}"
    lines = [line.strip() for line in done.stdout.splitlines()]
    for expected in EXPECTED.get(example.name, ()):
        assert expected.strip() in lines, (
            f"{example.name} did not print {expected!r}:\n{done.stdout}"
        )
    assert not list(tmp_path.iterdir()), "the example left files in its working folder"
