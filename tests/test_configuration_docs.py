"""docs/configuration.md documents every environment variable the code reads and every setting
of the server."""

from __future__ import annotations

import re
from pathlib import Path

from memos.api import ServerSettings

from memos import Limits

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "configuration.md"
SOURCES = ("memos", "api", "stores", "schedulers")
READS = (
    r"os\.environ\.get\(\s*['\"](\w+)['\"]",
    r"os\.environ\[\s*['\"](\w+)['\"]\s*\]",
    r"os\.getenv\(\s*['\"](\w+)['\"]",
    r"['\"](\w+)['\"]\s+(?:not\s+)?in\s+os\.environ",
    r"envvar\s*=\s*['\"](\w+)['\"]",
    r"os\.environ\.setdefault\(\s*['\"](\w+)['\"]",
)


def environment_variables() -> set[str]:
    """Every variable named where the code reads the environment (typer's ``envvar=``
    included; a list of names counts each)."""
    found: set[str] = set()
    for folder in SOURCES:
        for path in (ROOT / folder).rglob("*.py"):
            text = path.read_text(encoding="utf-8")
            for pattern in READS:
                found.update(re.findall(pattern, text))
            for names in re.findall(r"envvar\s*=\s*\[([^\]]*)\]", text):
                found.update(re.findall(r"['\"](\w+)['\"]", names))
    return found


def documented() -> set[str]:
    return set(re.findall(r"`(\w+)`", PAGE.read_text(encoding="utf-8")))


def test_the_scan_finds_the_variables_the_cli_reads() -> None:
    assert {"MEMOS_DATA_DIR", "MEMOS_STORE", "MEMOS_MODEL", "COLUMNS"} <= environment_variables()


def test_every_environment_variable_read_is_documented() -> None:
    missing = environment_variables() - documented()
    assert not missing, f"docs/configuration.md does not document {sorted(missing)}"


def test_every_server_setting_and_limit_is_documented() -> None:
    names = set(ServerSettings.model_fields) | set(Limits.__dataclass_fields__)
    missing = names - documented()
    assert not missing, f"docs/configuration.md does not document {sorted(missing)}"
