"""``memos policy show|set|expire`` and ``memos audit report`` as a person would type them."""

from __future__ import annotations

import json
from pathlib import Path

from test_cli_kv import EMBEDDER, Cli, cli, model_dir

from memos import MemOS
from memos.cli import ExitCode

__all__ = ["cli", "model_dir"]  # the fixtures shared with test_cli_kv

POLICIES = {
    "holds": [{"name": "case-7", "user": "bob"}],
    "retention": [{"tag": "chat", "ttl_days": 1e-9}],
    "redaction": {},
    "quotas": {"items_per_user": 3},
}


def test_set_show_expire_and_report(cli: Cli, data_dir: Path, tmp_path: Path) -> None:
    with MemOS.open(data_dir) as mos:
        mos.create_cube("notes", embedder=EMBEDDER)
        chat = mos.add("small talk", cube="notes", user="carol", tags=["chat"]).id
        held = mos.add("bob's statement", cube="notes", user="bob", tags=["chat"]).id
    file = tmp_path / "policies.json"
    file.write_text(json.dumps(POLICIES))
    done = cli("policy", "set", "--cube", "notes", str(file), "--reason", "legal review")
    assert done.code == 0, done.err
    shown = json.loads(cli("policy", "show", "--cube", "notes").out)
    assert shown["holds"][0]["name"] == "case-7"
    assert shown["redaction"]["kinds"] == ["email", "phone", "card", "iban"]
    added = cli("add", "write to me at carol@example.org", "--cube", "notes").out.strip()
    assert cli("show", added, "--json").json()["text"] == "write to me at [EMAIL]"
    assert cli("delete", held).code == ExitCode.CONFLICT
    expired = cli("policy", "expire", "--cube", "notes", "--json")
    assert [e["item_id"] for e in expired.json()] == [chat]
    report = cli("audit", "report", "--cube", "notes", "--json").json()
    assert report["expired"] == 1
    assert report["redacted"] == {"email": 1}
    assert [r["code"] for r in report["refusals"]] == ["policy_refused"]
    table = cli("audit", "report", "--cube", "notes")
    assert "redacted on write (1 writes): email 1" in table.out
    assert "legal hold 'case-7'" in table.out


def test_policies_that_do_not_check_out_are_refused(
    cli: Cli, data_dir: Path, tmp_path: Path
) -> None:
    with MemOS.open(data_dir) as mos:
        mos.create_cube("notes", embedder=EMBEDDER)
    file = tmp_path / "bad.json"
    for bad in ('{"quotas": {"items": -1}}', "not json", '{"holds": [{"user": "x"}]}'):
        file.write_text(bad)
        assert cli("policy", "set", "--cube", "notes", str(file)).code == ExitCode.INVALID_INPUT
    assert cli("policy", "set", "--cube", "notes", str(tmp_path / "none.json")).code == 2
