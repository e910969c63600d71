"""``memos keys``, ``memos cube grant|revoke`` and ``memos serve`` through the real command."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from _servers import serve_process
from test_cli import Cli, Seeded, assert_error, cli, run_memos, sdk, seeded

from memos import MemOS
from memos.cli._session import ExitCode
from memos.core._keys import authenticate

__all__ = ["cli", "sdk", "seeded"]  # fixtures shared with test_cli


def test_keys_create_prints_a_key_once_that_authenticates(cli: Cli, data_dir: Path) -> None:
    made = cli("keys", "create", "--principal", "alice")
    assert made.code == 0, made.err
    token = made.out.strip()
    assert "not shown again" in made.err
    listed = cli("keys", "ls", "--json").json()
    assert [k["principal"] for k in listed] == ["alice"]
    assert "secret_sha256" not in listed[0]
    assert token.split("_", 2)[2] not in cli("keys", "ls").out
    with MemOS.open(data_dir) as mos:
        assert authenticate(mos.store, token).principal == "alice"
    revoked = cli("keys", "revoke", listed[0]["id"])
    assert revoked.code == 0, revoked.err
    assert cli("keys", "ls", "--json").json()[0]["revoked_at"] is not None
    assert_error(cli("keys", "revoke", "nope"), ExitCode.NOT_FOUND, "nope")
    assert_error(cli("keys", "create", "--principal", ""), ExitCode.INVALID_INPUT)


def test_cube_grant_and_revoke_are_logged(cli: Cli, seeded: Seeded) -> None:
    granted = cli("cube", "grant", "notes", "bob", "--access", "write", "--reason", "pairing")
    assert granted.code == 0, granted.err
    assert cli("cube", "list", "--json").json()[0]["grants"] == {"bob": "write"}
    assert_error(
        cli("cube", "grant", "notes", "carol", "--access", "admin"), ExitCode.INVALID_INPUT
    )
    assert cli("cube", "revoke", "notes", "bob").code == 0
    assert_error(cli("cube", "revoke", "notes", "bob"), ExitCode.NOT_FOUND)
    ops = [e["op"] for e in cli("log", "--cube", "notes", "--json").json()]
    assert ops[-2:] == ["grant", "revoke"]
    assert cli("verify", "--cube", "notes").code == 0


@pytest.mark.slow
def test_serve_answers_with_the_keys_of_its_data_dir(cli: Cli, data_dir: Path) -> None:
    token = cli("keys", "create", "--principal", "alice").out.strip()
    with serve_process("--data-dir", str(data_dir)) as (base, _):
        headers = {"Authorization": f"Bearer {token}"}
        made = httpx.post(f"{base}/v1/cubes", json={"name": "notes", "embedder": "hash-64"},
                          headers=headers)  # fmt: skip
        assert made.status_code == 201, made.text
        assert made.json()["owner"] == "alice"
        assert httpx.get(f"{base}/v1/cubes").status_code == 401
    listed = json.loads(run_memos("cube", "list", "--json", data_dir=data_dir).out)
    assert [c["name"] for c in listed] == ["alice:notes"]
