"""``memos forget`` and ``memos verify --receipt`` as a person would type them."""

from __future__ import annotations

import json
from pathlib import Path

from test_cli_kv import EMBEDDER, Cli, cli, model_dir

from memos import MemOS
from memos.cli import ExitCode

__all__ = ["cli", "model_dir"]  # the fixtures shared with test_cli_kv


def _seeded(data_dir: Path) -> list[str]:
    with MemOS.open(data_dir) as mos:
        mos.create_cube("notes", embedder=EMBEDDER)
        bob = mos.add("bob's pin is 4417", cube="notes", user="bob", metadata={"case": 7})
        mos.add("carol likes tea", cube="notes", user="carol")
        mos.kv.build("notes", [bob.id])
        return [bob.id]


def test_forget_writes_a_receipt_that_verify_checks(
    cli: Cli, data_dir: Path, tmp_path: Path
) -> None:
    (bob,) = _seeded(data_dir)
    receipt = tmp_path / "bob.json"
    done = cli("forget", "--user", "bob", "--cube", "notes", "--receipt", str(receipt), "--yes")
    assert done.code == 0, done.err
    assert "notes" in done.out
    (part,) = json.loads(receipt.read_text())["cubes"]
    assert (part["record"]["items"], len(part["record"]["blocks"])) == ([bob], 1)
    checked = cli("verify", "--receipt", str(receipt), "--json")
    assert checked.code == 0, checked.err
    assert checked.json()["ok"] is True
    assert cli("show", bob).code == ExitCode.NOT_FOUND
    again = cli("forget", "--user", "bob", "--yes", "--json")
    assert (again.code, again.json()["cubes"]) == (0, [])


def test_an_edited_receipt_or_a_foreign_one_fails(cli: Cli, data_dir: Path, tmp_path: Path) -> None:
    _seeded(data_dir)
    receipt = tmp_path / "r.json"
    assert cli("forget", "--where", "case=7", "--receipt", str(receipt), "--yes").code == 0
    data = json.loads(receipt.read_text())
    data["cubes"][0]["record"]["items"] = ["someone-else"]
    receipt.write_text(json.dumps(data))
    edited = cli("verify", "--receipt", str(receipt))
    assert edited.code == ExitCode.INTEGRITY
    assert "does not match its digest" in edited.err
    data = json.loads(receipt.read_text())
    data["cubes"][0]["record"]["items"] = ["x"]
    data["cubes"][0]["digest"] = _digest_of(data["cubes"][0]["record"])
    receipt.write_text(json.dumps(data))
    foreign = cli("verify", "--receipt", str(receipt))
    assert foreign.code == ExitCode.INTEGRITY
    assert "no erasure event" in foreign.out + foreign.err


def test_forget_asks_first_and_needs_a_subject(cli: Cli, data_dir: Path) -> None:
    _seeded(data_dir)
    assert cli("forget", "--cube", "notes").code == ExitCode.INVALID_INPUT
    declined = cli("forget", "--user", "bob")  # no answer: nothing is erased
    assert declined.code != 0
    with MemOS.open(data_dir) as mos:
        assert len(mos.search("pin", cube="notes", user="bob")) == 1


def _digest_of(record: dict[str, object]) -> str:
    from memos import ErasureRecord

    return ErasureRecord.model_validate(record).digest
