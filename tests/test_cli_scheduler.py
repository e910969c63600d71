"""``memos scheduler`` on the tiny random Llama: status, plan, run and configure, as a person
would type them, with rich tables and ``--json``."""

from __future__ import annotations

from pathlib import Path

from test_cli_kv import EMBEDDER, Cli, cli, model_dir

from memos import EventOp, MemOS
from memos.cli import ExitCode

__all__ = ["cli", "model_dir"]  # the fixtures shared with test_cli_kv

FACTS = ["alice moved to lisbon in may", "alice moved to porto in june"]


def _used(data_dir: Path) -> None:
    with MemOS.open(data_dir) as mos:
        mos.create_cube("notes", embedder=EMBEDDER)
        mos.add_many(FACTS, cube="notes")
        for _ in range(3):
            mos.search("where did alice move", cube="notes", k=2)


def test_plan_then_run_then_nothing_left(cli: Cli, data_dir: Path) -> None:
    _used(data_dir)
    plan = cli("scheduler", "plan", "--cube", "notes", "--json")
    assert plan.code == 0, plan.err
    (decision,) = plan.json()["decisions"]
    assert decision["action"] == "kv_build"
    table = cli("scheduler", "plan", "--cube", "notes")
    assert "kv_build" in table.out
    assert "retrieved together" in table.out
    ran = cli("scheduler", "run", "--cube", "notes", "--json")
    assert ran.code == 0, ran.err
    (event,) = ran.json()["events"]
    assert event["op"] == EventOp.KV_BUILD
    assert event["payload"]["migration"]["policy"] == "balanced"
    assert "nothing to do" in cli("scheduler", "plan", "--cube", "notes").out
    status = cli("scheduler", "status", "--cube", "notes", "--json").json()
    assert status["usage"]["kv_blocks"] == 1


def test_configure_sets_budgets_and_refuses_bad_input(cli: Cli, data_dir: Path) -> None:
    _used(data_dir)
    done = cli("scheduler", "configure", "--cube", "notes", "--budgets", '{"kv_blocks": 0}',
               "--parameters", '{"hot_min": 2}', "--reason", "tight", "--json")  # fmt: skip
    assert done.code == 0, done.err
    assert done.json()["scheduler"]["budgets"]["kv_blocks"] == 0
    assert done.json()["scheduler"]["parameters"] == {"hot_min": 2}
    shown = cli("scheduler", "status", "--cube", "notes")
    assert "budget kv_blocks" in shown.out
    with MemOS.open(data_dir) as mos:
        head = mos.log("notes")[-1]
    assert (head.op, head.reason) == (EventOp.CONFIGURE, "tight")
    for bad in (["--budgets", "[1]"], ["--budgets", "{nope"], ["--policy", "nope"],
                ["--parameters", '{"block_items": 0}']):  # fmt: skip
        result = cli("scheduler", "configure", "--cube", "notes", *bad)
        assert result.code == ExitCode.INVALID_INPUT, (bad, result.err)
    with MemOS.open(data_dir) as mos:
        assert mos.log("notes")[-1].seq == head.seq


def test_audit_shows_why_memories_moved_and_revert_undoes_a_migration(
    cli: Cli, data_dir: Path
) -> None:
    _used(data_dir)
    assert "no migrations" in cli("audit", "migrations", "--cube", "notes").out
    (event,) = cli("scheduler", "run", "--cube", "notes", "--json").json()["events"]
    shown = cli("audit", "migrations", "--cube", "notes")
    assert shown.code == 0, shown.err
    assert "kv_build" in shown.out
    assert "balanced: hot group of 2 memories" in shown.out
    undone = cli("scheduler", "revert", str(event["seq"]), "--cube", "notes", "--reason", "no")
    assert undone.code == 0, undone.err
    assert "kv_drop" in undone.out
    (migration,) = cli("audit", "migrations", "--cube", "notes", "--json").json()
    assert (migration["seq"], migration["reverted_by"]) == (event["seq"], event["seq"] + 1)
    again = cli("scheduler", "revert", str(event["seq"]), "--cube", "notes")
    assert again.code == ExitCode.CONFLICT, again.err
    assert "reverted already" in again.err
    assert cli("scheduler", "revert", "1", "--cube", "notes").code == ExitCode.INVALID_INPUT
