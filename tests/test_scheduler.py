"""The scheduler: policies decide from a cube's use which memories live as KV blocks, within the
cube's budgets; ``plan`` shows the decisions, ``tick`` carries them out as events that record
the migration, ``configure`` sets policy and budgets (one event). Policies are driven here
through synthetic views and synthetic access patterns, then through the SDK on every face."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from _backends import FACES, clients
from memos.schedulers._policies import Balanced, BalancedParameters

from memos import AccessStats, Budgets, EventOp, HashEmbedder, MemOS
from memos.core._scheduling import Block, CubeView, checked_parameters, policy
from memos.core._types import CoAccess
from memos.errors import InvalidInput
from memos.llm import LocalModel

NOW = datetime(2026, 12, 1, tzinfo=UTC)
DAY = 24 * 3600.0
PER_TOKEN = 100.0  # bytes of KV cache per token in the synthetic views


def view(
    heat: dict[str, float],
    pairs: dict[tuple[str, str], float] | None = None,
    blocks: list[Block] | None = None,
    budgets: Budgets | None = None,
    chars: int = 40,
) -> CubeView:
    """A view at NOW where each memory was last used now, with frequency ``heat``."""
    return CubeView(
        cube="c", now=NOW, half_life_s=DAY, chars=dict.fromkeys(heat, chars),
        access={i: AccessStats(item_id=i, count=1, last_access=NOW, frequency=h)
                for i, h in heat.items()},
        co_access={(a, b): CoAccess(a=a, b=b, count=1, last_access=NOW, frequency=f)
                   for (a, b), f in (pairs or {}).items()},
        blocks=blocks or [], kv_bytes_per_token=PER_TOKEN, chars_per_token=4.0,
        budgets=budgets or Budgets(),
    )  # fmt: skip


def decide(v: CubeView, **parameters: Any) -> list[tuple[str, tuple[str, ...], str | None]]:
    plan = Balanced().plan(v, BalancedParameters(**parameters))
    return [(d.action, d.items, d.entry) for d in plan]


# the balanced policy, on synthetic views ---------------------------------------------------


def test_memories_retrieved_together_become_one_block_hottest_first() -> None:
    v = view({"a": 3.0, "b": 5.0, "c": 2.0, "lone": 0.5}, {("a", "b"): 2.0, ("b", "c"): 1.0})
    (decision,) = Balanced().plan(v, BalancedParameters())
    assert (decision.action, decision.items) == ("kv_build", ("b", "a", "c"))
    assert decision.score == pytest.approx(10.0)  # the heat of its memories
    assert decision.bytes == int((40 + 3 * 10 + 3 * 40 / 4.0) * PER_TOKEN)
    assert "retrieved together" in decision.reason


def test_unrelated_hot_memories_are_blocks_of_their_own_and_cold_ones_none() -> None:
    v = view({"a": 2.0, "b": 3.0, "cold": 0.2}, {("a", "b"): 0.1})
    assert decide(v) == [("kv_build", ("b",), None), ("kv_build", ("a",), None)]
    assert decide(v, block_items=1, hot_min=2.5) == [("kv_build", ("b",), None)]


def test_a_block_of_memories_no_longer_used_is_dropped_as_cold() -> None:
    old = Block("kv-old", ("x", "y"), 50, 5_000)
    v = view({"x": 0.1, "y": 0.2}, blocks=[old])
    plan = Balanced().plan(v, BalancedParameters())
    assert [(d.action, d.entry) for d in plan] == [("kv_drop", "kv-old")]
    assert plan[0].reason.startswith("cold")


def test_a_block_that_holds_a_hot_group_is_kept_not_rebuilt() -> None:
    standing = Block("kv-1", ("b", "a"), 60, 6_000)
    v = view({"a": 3.0, "b": 5.0}, {("a", "b"): 2.0}, blocks=[standing])
    assert decide(v) == []


def test_the_budget_takes_the_densest_blocks_and_drops_the_rest() -> None:
    heat = {"a": 6.0, "b": 1.0, "c": 1.0}
    small = Budgets(kv_bytes=int(60 * PER_TOKEN))  # room for one single-memory block
    assert decide(view(heat, budgets=small)) == [("kv_build", ("a",), None)]
    one = Budgets(kv_blocks=1)
    assert decide(view(heat, budgets=one)) == [("kv_build", ("a",), None)]
    standing = [Block("kv-b", ("b",), 50, 5_000), Block("kv-c", ("c",), 50, 5_000)]
    lowered = Budgets(kv_blocks=1)  # a budget lowered under what stands
    decisions = decide(view({"b": 1.0, "c": 2.0}, blocks=standing, budgets=lowered))
    assert decisions == [("kv_drop", ("b",), "kv-b")]


def test_a_standing_block_is_kept_against_a_barely_denser_candidate() -> None:
    standing = Block("kv-a", ("a",), 60, 6_000)  # the size a one-memory candidate has
    v = view({"a": 2.0, "b": 2.2}, blocks=[standing], budgets=Budgets(kv_blocks=1))
    assert decide(v) == []  # 2.2 is not 1.5 x 2.0
    assert decide(v, keep_bonus=1.0) == [("kv_drop", ("a",), "kv-a"), ("kv_build", ("b",), None)]


def test_a_block_a_new_one_holds_entirely_is_superseded() -> None:
    part = Block("kv-part", ("a",), 50, 5_000)
    v = view({"a": 5.0, "b": 4.0}, {("a", "b"): 3.0}, blocks=[part])
    assert decide(v) == [("kv_drop", ("a",), "kv-part"), ("kv_build", ("a", "b"), None)]


def test_nothing_is_built_while_a_blocks_cost_is_unknown() -> None:
    v = view({"a": 5.0})
    unknown = CubeView(**{**v.__dict__, "kv_bytes_per_token": None})
    assert decide(unknown) == []


def test_the_policy_is_deterministic() -> None:
    heat = {f"m{n}": 1.0 + (n % 3) for n in range(30)}
    pairs = {(f"m{n}", f"m{n + 1}"): 1.0 for n in range(29)}
    assert decide(view(heat, pairs)) == decide(view(heat, pairs))


def test_policies_are_found_by_name_and_check_their_parameters() -> None:
    assert policy("balanced").name == "balanced"
    with pytest.raises(InvalidInput, match="unknown scheduler policy"):
        policy("nope")
    with pytest.raises(InvalidInput, match="block_items"):
        checked_parameters(policy("balanced"), {"block_items": 0})
    with pytest.raises(InvalidInput, match="colour"):
        checked_parameters(policy("balanced"), {"colour": "red"})


# the scheduler through the SDK, on the tiny model ------------------------------------------

FACTS = [
    "alice moved to lisbon in may",
    "the capital of france is paris",
    "alice moved to porto in june",
    "paris is where alice moved in june",
]


@pytest.fixture
def notes(chat_mos: MemOS) -> tuple[MemOS, list[str]]:
    chat_mos.create_cube("notes")
    items = chat_mos.add_many(FACTS, cube="notes")
    return chat_mos, [i.id for i in items]


def _ask(mos: Any, question: str, times: int, cube: str = "notes") -> list[str]:
    for _ in range(times):
        hits = [h.item.id for h in mos.search(question, cube=cube, k=2)]
    return hits


def test_a_hot_pair_becomes_a_block_that_chat_then_uses(notes: tuple[MemOS, list[str]]) -> None:
    mos, _ = notes
    hot = _ask(mos, "where did alice move", 4)
    head = mos.log("notes")[-1].seq
    plan = mos.scheduler.plan("notes")
    assert mos.log("notes")[-1].seq == head  # planning changes nothing
    (decision,) = plan.decisions
    assert decision.action == "kv_build"
    assert set(decision.items) == set(hot)
    assert plan.usage.kv_blocks == 0
    assert plan.after.kv_blocks == 1
    report = mos.scheduler.tick("notes")
    (event,) = report.events
    assert (event.op, event.actor) == (EventOp.KV_BUILD, "local")
    assert event.payload is not None
    assert event.payload["migration"] == {
        "policy": "balanced", "action": "kv_build", "score": decision.score,
        "reason": decision.reason, "items": list(decision.items),
    }  # fmt: skip
    assert event.reason is not None
    assert event.reason.startswith("scheduler (balanced, score")
    (entry,) = mos.kv.list("notes")
    assert [s.item_id for s in entry.sources] == list(decision.items)
    reply = mos.chat("where did alice move", cube="notes", k=2, max_new_tokens=4)
    assert reply.kv_entry == entry.id
    assert mos.scheduler.plan("notes").decisions == ()  # a second tick has nothing to do
    assert mos.verify("notes").ok


def test_a_lowered_budget_is_met_at_the_next_tick(notes: tuple[MemOS, list[str]]) -> None:
    mos, _ = notes
    _ask(mos, "where did alice move", 3)
    _ask(mos, "what is the capital of france", 3)
    mos.scheduler.tick("notes")
    assert len(mos.kv.list("notes")) >= 1
    info = mos.scheduler.configure("notes", budgets={"kv_blocks": 0}, reason="no room")
    assert info.scheduler is not None
    assert info.scheduler.budgets.kv_blocks == 0
    event = mos.log("notes")[-1]
    assert (event.op, event.reason) == (EventOp.CONFIGURE, "no room")
    report = mos.scheduler.tick("notes")
    assert {e.op for e in report.events} == {EventOp.KV_DROP}
    assert mos.kv.list("notes") == []
    assert mos.verify("notes").ok


def test_budgets_hold_after_every_tick(notes: tuple[MemOS, list[str]]) -> None:
    """Whatever the blocks' sizes come out as (they are estimated before they are built), no
    tick ends over the cube's budgets."""
    mos, _ = notes
    questions = ["where did alice move", "capital of france", "porto june", "paris"]
    for blocks, size in ((None, None), (2, None), (None, 30_000), (None, 12_000), (1, 6_000)):
        mos.scheduler.configure("notes", budgets={"kv_blocks": blocks, "kv_bytes": size})
        for question in questions:
            _ask(mos, question, 2)
            mos.scheduler.tick("notes")
            entries = mos.kv.list("notes")
            assert blocks is None or len(entries) <= blocks
            assert size is None or sum(e.size for e in entries) <= size
    assert mos.verify("notes").ok


def test_bad_configuration_is_refused_and_writes_nothing(notes: tuple[MemOS, list[str]]) -> None:
    mos, _ = notes
    head = mos.log("notes")[-1].seq
    for bad in (
        {"policy": "nope"},
        {"parameters": {"block_items": -1}},
        {"parameters": {"colour": "red"}},
        {"budgets": {"kv_bytes": -5}},
        {"budgets": {"kv_bytes": True}},
        {"budgets": {"kv_blocks": 1.5}},
        {"budgets": {"kv_blocks": "3"}},
        {"budgets": {"parsecs": 1}},
        {"parameters": ["not", "a", "mapping"]},
        {"enabled": "yes"},
    ):
        with pytest.raises(InvalidInput):
            mos.scheduler.configure("notes", **bad)
    assert mos.log("notes")[-1].seq == head


def test_a_disabled_scheduler_plans_nothing(notes: tuple[MemOS, list[str]]) -> None:
    mos, _ = notes
    _ask(mos, "where did alice move", 4)
    mos.scheduler.configure("notes", enabled=False)
    assert mos.scheduler.plan("notes").decisions == ()
    info = mos.scheduler.configure("notes", parameters={"hot_min": 2.0}, enabled=True)
    assert info.scheduler is not None
    assert info.scheduler.parameters == {"hot_min": 2.0}
    assert mos.scheduler.plan("notes").decisions


def test_only_a_writer_ticks_or_configures(notes: tuple[MemOS, list[str]]) -> None:
    mos, _ = notes
    mos.grant("notes", "reader", "read")
    reader = mos.as_principal("reader")
    assert reader.scheduler.plan("notes").cube == "notes"
    from memos.errors import AccessDenied

    with pytest.raises(AccessDenied):
        reader.scheduler.tick("notes")
    with pytest.raises(AccessDenied):
        reader.scheduler.configure("notes", enabled=False)


@pytest.fixture(params=FACES)
def sdk(request: pytest.FixtureRequest, tmp_path: Path, tiny_model: LocalModel) -> Iterator[Any]:
    handle = {"embedder": HashEmbedder(64), "model": tiny_model}
    with clients(request.param, tmp_path / "data", **handle) as (_, connect):
        yield connect("alice")


def test_plan_tick_and_configure_on_every_face(sdk: Any) -> None:
    cube = sdk.create_cube("notes").name
    sdk.add_many(FACTS, cube=cube)
    _ask(sdk, "where did alice move", 4, cube=cube)
    plan = sdk.scheduler.plan(cube)
    assert [d.action for d in plan.decisions] == ["kv_build"]
    report = sdk.scheduler.tick(cube)
    assert [e.op for e in report.events] == [EventOp.KV_BUILD]
    assert report.plan.decisions == plan.decisions or report.plan.policy == "balanced"
    info = sdk.scheduler.configure(cube, budgets={"kv_bytes": 0})
    assert info.scheduler.budgets.kv_bytes == 0
    assert [e.op for e in sdk.scheduler.tick(cube).events] == [EventOp.KV_DROP]
    with pytest.raises(InvalidInput):
        sdk.scheduler.configure(cube, policy="nope")
    assert sdk.verify(cube).ok


# ticks as jobs: the ticker queues them, workers run them -----------------------------------


def test_the_ticker_queues_one_tick_per_cube_with_something_to_do(
    notes: tuple[MemOS, list[str]],
) -> None:
    from memos.schedulers import Ticker

    mos, _ = notes
    mos.create_cube("idle")
    mos.add("nobody asks about this", cube="idle")
    ticker = Ticker(mos, interval_s=60)
    assert ticker.once() == []  # nothing used yet: nothing to do
    _ask(mos, "where did alice move", 3)
    (job,) = ticker.once()
    assert (job.cube, job.kind, job.state) == ("notes", "tick", "queued")
    assert ticker.once() == []  # one tick at a time per cube
    mos.scheduler.configure("notes", enabled=False)
    mos.jobs.cancel(job.id)
    assert ticker.once() == []  # a disabled cube is not ticked


def test_a_tick_job_runs_the_plan_with_its_tag_on_every_event(
    notes: tuple[MemOS, list[str]],
) -> None:
    from memos.schedulers import Worker

    mos, _ = notes
    _ask(mos, "where did alice move", 3)
    job = mos.jobs.submit("notes", "tick", reason="scheduled tick")
    done = Worker(mos).run_once()
    assert done is not None
    assert done.state == "done"
    assert done.result is not None
    assert done.result["migrations"] == 1
    event = mos.log("notes")[-1]
    assert event.op == EventOp.KV_BUILD
    assert event.reason is not None
    assert event.reason.startswith(f"{job.tag} scheduled tick scheduler (balanced")
    assert job.made(event)


def test_a_tick_taken_again_after_its_worker_died_finishes_the_plan(
    notes: tuple[MemOS, list[str]],
) -> None:
    from memos.schedulers import run_job

    from memos.core._types import utcnow

    mos, _ = notes
    _ask(mos, "where did alice move", 3)
    mos.scheduler.configure("notes", parameters={"co_min": 100.0})  # a block per memory
    plan = mos.scheduler.plan("notes")
    assert len(plan.decisions) == 2
    job = mos.jobs.submit("notes", "tick")
    first = mos.store.claim_job("w1", utcnow(), 0.001)
    assert first is not None
    # the first worker carried out one migration, then died: its event is in the log
    decision = plan.decisions[0]
    mos.kv.build("notes", list(decision.items), reason=f"{job.tag} half done")
    again = mos.store.claim_job("w2", utcnow() + timedelta(seconds=1), 60)
    assert again is not None
    assert again.attempts == 2
    finished = run_job(mos, again)
    assert finished.state == "done"  # run again rather than marked done by the first event
    assert {tuple(s.item_id for s in e.sources) for e in mos.kv.list("notes")} == {
        d.items for d in plan.decisions
    }
    assert mos.scheduler.plan("notes").decisions == ()
    assert mos.verify("notes").ok
