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
from hypothesis import given, settings
from hypothesis import strategies as st
from memos.schedulers._policies import Balanced, BalancedParameters

from memos import AccessStats, Budgets, EventOp, HashEmbedder, MemOS
from memos.core._scheduling import (
    Adapter,
    Block,
    CubeView,
    VectorIndex,
    checked_parameters,
    policy,
)
from memos.core._types import CoAccess
from memos.errors import InvalidInput
from memos.llm import LocalModel, OpenAICompatible

NOW = datetime(2026, 12, 1, tzinfo=UTC)
DAY = 24 * 3600.0
PER_TOKEN = 100.0  # bytes of KV cache per token in the synthetic views
ESTIMATED = PER_TOKEN * 1.02  # the policy's estimate of a block's bytes per token


def view(
    heat: dict[str, float],
    pairs: dict[tuple[str, str], float] | None = None,
    blocks: list[Block] | None = None,
    budgets: Budgets | None = None,
    chars: int = 40,
    uses: int = 1,
    adapters: tuple[Adapter, ...] = (),
    vectors: VectorIndex | None = None,
    last_use: datetime = NOW,
) -> CubeView:
    """A view at NOW where each memory was used ``uses`` times, last at ``last_use``, with
    frequency ``heat`` then; the cube was made 90 days before NOW."""
    return CubeView(
        cube="c", now=NOW, half_life_s=DAY, chars=dict.fromkeys(heat, chars),
        access={i: AccessStats(item_id=i, count=uses, last_access=last_use, frequency=h)
                for i, h in heat.items()},
        co_access={(a, b): CoAccess(a=a, b=b, count=1, last_access=NOW, frequency=f)
                   for (a, b), f in (pairs or {}).items()},
        blocks=blocks or [], kv_bytes_per_token=PER_TOKEN, chars_per_token=4.0,
        budgets=budgets or Budgets(), adapters=adapters, vectors=vectors,
        created_at=NOW - timedelta(days=90),
    )  # fmt: skip


def decide(v: CubeView, **parameters: Any) -> list[tuple[str, tuple[str, ...], str | None]]:
    plan = Balanced().plan(v, BalancedParameters(**parameters))
    return [(d.action, d.items, d.entry or d.adapter or d.codec) for d in plan]


# the balanced policy, on synthetic views ---------------------------------------------------


def test_the_hot_memories_become_one_block_hottest_first() -> None:
    v = view({"a": 3.0, "b": 5.0, "c": 2.0, "once": 0.6, "cold": 0.3}, {("a", "b"): 2.0})
    (decision,) = Balanced().plan(v, BalancedParameters())
    assert (decision.action, decision.items) == ("kv_build", ("b", "a", "c", "once"))
    assert decision.score == pytest.approx(10.6)  # the heat of its memories
    assert decision.bytes == int((40 + 4 * 16 + 4 * 40 / 4.0) * ESTIMATED)
    assert decision.extends is None


def test_with_co_min_memories_retrieved_together_are_blocks_of_their_own() -> None:
    v = view({"a": 3.0, "b": 5.0, "c": 2.0, "lone": 1.0}, {("a", "b"): 2.0, ("b", "c"): 1.0})
    assert decide(v, co_min=0.5) == [
        ("kv_build", ("b", "a", "c"), None), ("kv_build", ("lone",), None),
    ]  # fmt: skip
    (first, _) = Balanced().plan(v, BalancedParameters(co_min=0.5))
    assert "retrieved together" in first.reason
    assert decide(v, co_min=0.5, block_items=1, hot_min=2.5) == [
        ("kv_build", ("b",), None), ("kv_build", ("a",), None),
    ]  # fmt: skip


def test_a_block_of_memories_no_longer_used_is_dropped_as_cold() -> None:
    old = Block("kv-old", ("x", "y"), 50, 5_000)
    v = view({"x": 0.1, "y": 0.2}, blocks=[old])
    plan = Balanced().plan(v, BalancedParameters())
    assert [(d.action, d.entry) for d in plan] == [("kv_drop", "kv-old")]
    assert plan[0].reason.startswith("cold")


def test_a_block_that_holds_the_hot_memories_is_kept_not_rebuilt() -> None:
    standing = Block("kv-1", ("a", "b"), 60, 6_000)
    v = view({"a": 3.0, "b": 5.0}, {("a", "b"): 2.0}, blocks=[standing])
    assert decide(v) == []


def test_a_block_grows_by_the_memories_that_became_hot_after_it() -> None:
    """The standing block is followed by the new hot memories, hottest first, as many as the
    budget takes; the build extends it (its cache is continued) and it is dropped after."""
    standing = Block("kv-1", ("a", "b"), 60, 6_000)
    heat = {"a": 3.0, "b": 2.0, "c": 5.0, "d": 1.0, "e": 0.7}
    room = 6_000 + int((40 + 2 * 26) * ESTIMATED) - int(40 * ESTIMATED)  # two more lines
    plan = Balanced().plan(view(heat, blocks=[standing], budgets=Budgets(kv_bytes=room)),
                           BalancedParameters())  # fmt: skip
    assert [(d.action, d.items, d.entry, d.extends) for d in plan] == [
        ("kv_build", ("a", "b", "c", "d"), None, "kv-1"),
        ("kv_drop", ("a", "b"), "kv-1", None),
    ]
    assert plan[0].bytes == room
    assert plan[0].reason.startswith("grown: 2 more hot memories after the 2 of block kv-1")
    assert plan[1].reason.startswith("extended")


def test_a_block_is_replaced_only_by_memories_worth_keep_bonus_times_more() -> None:
    """When the budget holds no more than the standing block, hotter memories replace it only
    when worth ``keep_bonus`` times what it holds; a block is rebuilt for them then."""
    standing = Block("kv-1", ("a", "b"), 92, 9_000)  # about two memories' estimate
    full = Budgets(kv_bytes=int(92 * ESTIMATED))
    barely = {"a": 2.0, "b": 2.0, "c": 4.5, "d": 0.1}  # c, a: 6.5 against 4.0 x 1.25 = 5.0
    assert decide(view({**barely, "c": 2.9}, blocks=[standing], budgets=full)) == []
    plan = Balanced().plan(view(barely, blocks=[standing], budgets=full), BalancedParameters())
    # its first memory stays first in the new block, whose build reuses the cache of it
    assert [(d.action, d.items, d.extends) for d in plan] == [
        ("kv_build", ("a", "c"), "kv-1"), ("kv_drop", ("a", "b"), None),
    ]  # fmt: skip
    assert "replacing block kv-1 (the cache of its first 1 reused)" in plan[0].reason
    assert plan[1].reason.startswith("replaced")
    cold_first = {**barely, "a": 0.1, "b": 4.0}  # c, b: 8.5 against 4.1 x 1.25; a goes
    assert decide(view(cold_first, blocks=[standing], budgets=full)) == [
        ("kv_drop", ("a", "b"), "kv-1"), ("kv_build", ("c", "b"), None),
    ]  # fmt: skip
    assert decide(view(barely, blocks=[standing], budgets=full), keep_bonus=2.0) == []


def test_the_budget_takes_the_densest_blocks_and_drops_the_rest() -> None:
    heat = {"a": 6.0, "b": 1.0, "c": 1.0}
    small = Budgets(kv_bytes=int(66 * ESTIMATED))  # room for one single-memory block
    assert decide(view(heat, budgets=small)) == [("kv_build", ("a",), None)]
    one = Budgets(kv_blocks=1)
    assert decide(view(heat, budgets=one)) == [("kv_build", ("a", "b", "c"), None)]
    assert decide(view(heat, budgets=one), block_items=1) == [("kv_build", ("a",), None)]
    standing = [Block("kv-b", ("b",), 50, 5_000), Block("kv-c", ("c",), 50, 5_000)]
    lowered = Budgets(kv_blocks=1)  # a budget lowered under what stands
    decisions = decide(view({"b": 1.0, "c": 2.0}, blocks=standing, budgets=lowered),
                       block_items=1)  # fmt: skip
    assert decisions == [("kv_drop", ("b",), "kv-b")]
    tight = Budgets(kv_bytes=4_000)  # under a standing block's own size
    assert decide(view({"b": 1.0}, blocks=standing[:1], budgets=tight)) == [
        ("kv_drop", ("b",), "kv-b"),
    ]  # fmt: skip


def test_a_standing_block_is_kept_against_a_barely_denser_candidate() -> None:
    standing = Block("kv-a", ("a",), 66, int(66 * ESTIMATED))  # a one-memory estimate
    v = view({"a": 2.0, "b": 2.2}, blocks=[standing], budgets=Budgets(kv_blocks=1))
    assert decide(v, block_items=1) == []  # 2.2 is not 1.25 x 2.0
    assert decide(v, block_items=1, keep_bonus=1.0) == [
        ("kv_drop", ("a",), "kv-a"), ("kv_build", ("b",), None),
    ]  # fmt: skip


def test_a_block_a_kept_one_holds_entirely_is_superseded() -> None:
    part = Block("kv-part", ("b",), 50, 5_000)
    whole = Block("kv-whole", ("a", "b"), 60, 6_000)
    v = view({"a": 5.0, "b": 4.0}, blocks=[part, whole])
    plan = Balanced().plan(v, BalancedParameters())
    assert [(d.action, d.entry) for d in plan] == [("kv_drop", "kv-part")]
    assert plan[0].reason.startswith("superseded")


def test_nothing_is_built_while_a_blocks_cost_is_unknown() -> None:
    v = view({"a": 5.0})
    unknown = CubeView(**{**v.__dict__, "kv_bytes_per_token": None})
    assert decide(unknown) == []


def test_the_policy_is_deterministic() -> None:
    heat = {f"m{n}": 1.0 + (n % 3) for n in range(30)}
    pairs = {(f"m{n}", f"m{n + 1}"): 1.0 for n in range(29)}
    assert decide(view(heat, pairs)) == decide(view(heat, pairs))


def test_a_group_larger_than_the_room_left_keeps_its_hottest_memories() -> None:
    # a block of n memories of 40 characters: (40 + 16 n + 10 n) tokens of 102 bytes (estimated)
    heat = {"a": 5.0, "b": 4.0, "c": 3.0}
    pairs = {("a", "b"): 2.0, ("a", "c"): 2.0, ("b", "c"): 2.0}
    assert decide(view(heat, pairs, budgets=Budgets(kv_bytes=9_500))) == [
        ("kv_build", ("a", "b"), None)
    ]
    assert decide(view(heat, pairs, budgets=Budgets(kv_bytes=5_000))) == []


def adapter(name: str, version: int, items: tuple[str, ...], **fields: Any) -> Adapter:
    made = NOW - timedelta(days=10 - version)
    return Adapter(
        id=f"{name}-{version}", name=name, version=version, size=fields.pop("size", 1000),
        created_at=made, items=items, **fields,
    )  # fmt: skip


STABLE = {"a": 3.0, "b": 2.5, "c": 2.0, "d": 1.5}


def test_a_stable_hot_set_is_consolidated_into_the_schedulers_adapter() -> None:
    (decision,) = Balanced().plan(view(STABLE, uses=20), BalancedParameters(block_items=1))[4:]
    assert (decision.action, decision.adapter, decision.items) == (
        "lora_consolidate", "scheduler", ("a", "b", "c", "d"),
    )  # fmt: skip
    assert decision.reason.startswith("stable hot set: 4 memories used 16+ times")
    assert decide(view(STABLE, uses=15), block_items=1)[4:] == []  # not used often enough
    assert decide(view(STABLE, uses=20), block_items=1, stable_uses=0)[4:] == []  # turned off
    colder = view({**STABLE, "d": 0.4}, uses=20)
    assert decide(colder, block_items=1)[3:] == []  # three are hot: fewer than adapter_min_items


def test_a_stable_set_the_adapter_holds_is_not_consolidated_again() -> None:
    held = (adapter("scheduler", 1, ("a", "b", "c", "d")),)
    assert decide(view(STABLE, uses=20, adapters=held), block_items=1)[4:] == []
    moved = (adapter("scheduler", 1, ("a", "b", "c", "x")),)  # one of four new: 25%
    assert decide(view(STABLE, uses=20, adapters=moved), block_items=1)[4:] == [
        ("lora_consolidate", ("a", "b", "c", "d"), "scheduler")
    ]


def test_adapter_versions_over_budget_go_oldest_first_but_never_the_default() -> None:
    versions = (
        adapter("trip", 1, ("x",), default=False),
        adapter("trip", 2, ("x",), default=True),
        adapter("notes", 1, ("y",)),
        adapter("notes", 2, ("y",)),
    )
    oldest_first = [("lora_drop", ("y",), "notes-1"), ("lora_drop", ("x",), "trip-1")]
    assert decide(view({}, adapters=versions, budgets=Budgets(adapters=2))) == oldest_first
    assert decide(view({}, adapters=versions, budgets=Budgets(adapter_bytes=2500))) == oldest_first
    # the default's latest version stays, whatever the budget
    assert decide(view({}, adapters=versions, budgets=Budgets(adapters=0))) == [
        *oldest_first, ("lora_drop", ("y",), "notes-2"),
    ]  # fmt: skip


def test_a_consolidation_makes_room_from_the_schedulers_own_versions_or_is_not_made() -> None:
    own = (adapter("scheduler", 1, ("a", "x")), adapter("user", 1, ("z",)))
    roomy = view(STABLE, uses=20, adapters=own, budgets=Budgets(adapters=2))
    assert decide(roomy, block_items=1)[4:] == [
        ("lora_drop", ("a", "x"), "scheduler-1"),
        ("lora_consolidate", ("a", "b", "c", "d"), "scheduler"),
    ]
    cramped = view(STABLE, uses=20, adapters=own, budgets=Budgets(adapters=1))
    assert decide(cramped, block_items=1)[4:] == [("lora_drop", ("a", "x"), "scheduler-1")]
    nothing = view(STABLE, uses=20, budgets=Budgets(adapter_bytes=1000))
    assert decide(nothing, block_items=1)[4:] == []  # 2 MiB estimated: it cannot fit


def index(codec: str, active: int, fit_items: int | None = None) -> VectorIndex:
    fitted = codec != "fp32"
    return VectorIndex(codec=codec, dim=384, active=active, fitted=fitted, fit_items=fit_items)


def test_an_index_over_its_vector_budget_is_reencoded_to_the_largest_codec_that_fits() -> None:
    big = index("fp32", 20_000)  # 1536 bytes a vector: 30.7 MB
    (decision,) = Balanced().plan(
        view({}, vectors=big, budgets=Budgets(vector_bytes=4_000_000)), BalancedParameters()
    )
    assert (decision.action, decision.codec, decision.bytes) == (
        "reencode",
        "pca188+fp8",
        3_840_000,
    )
    assert decision.reason.startswith("over budget: the index takes 30720000 bytes of its 4000000")
    tight = view({}, vectors=big, budgets=Budgets(vector_bytes=10))
    assert decide(tight) == [("reencode", (), "pca48+fp8")]  # none fits: the smallest
    small = view({}, vectors=index("fp32", 500), budgets=Budgets(vector_bytes=10))
    assert decide(small) == [("reencode", (), "fp16")]  # too few memories to fit the others
    within = view({"a": 1.0}, vectors=big, budgets=Budgets(vector_bytes=31_000_000))
    assert decide(within, hot_min=5.0) == []


def test_a_cold_cube_is_reencoded_to_the_cold_codec() -> None:
    idle = NOW - timedelta(days=40)
    cold = view({"a": 0.01}, vectors=index("pca188+fp8", 20_000), last_use=idle)
    assert decide(cold) == [("reencode", (), "pca48+fp8")]
    assert decide(cold, cold_days=60) == []  # used 40 days ago: not cold for 60
    assert decide(view({}, vectors=index("pca188+fp8", 9_999), last_use=idle)) == []
    warm = view({"a": 1.0}, vectors=index("pca188+fp8", 20_000))
    assert decide(warm, hot_min=5.0) == []
    young = CubeView(**{**cold.__dict__, "created_at": NOW - timedelta(days=1)})
    assert decide(young) == []  # never used, but made yesterday


def test_a_cube_grown_well_past_its_fitted_codec_is_refitted() -> None:
    assert decide(view({}, vectors=index("pca188+fp8", 2_000, fit_items=1_000))) == [
        ("refit", (), "pca188+fp8")
    ]
    assert decide(view({}, vectors=index("pca188+fp8", 1_999, fit_items=1_000))) == []
    assert (
        decide(view({}, vectors=index("pca188+fp8", 2_999, fit_items=1_000)), refit_growth=3) == []
    )


IDS = [f"m{i}" for i in range(12)]


@st.composite
def views(draw: st.DrawFn) -> CubeView:
    """Any cube: memories of any heat and use, pairs, standing blocks and adapter versions
    of any size, an index of any size and codec, and any budgets."""
    heat = draw(st.dictionaries(st.sampled_from(IDS), st.floats(0, 20), max_size=12))
    pairs = draw(st.dictionaries(
        st.tuples(st.sampled_from(IDS), st.sampled_from(IDS)).filter(lambda p: p[0] < p[1])
        .map(tuple), st.floats(0, 5), max_size=20,
    ))  # fmt: skip
    items = st.lists(st.sampled_from(IDS), min_size=1, max_size=6, unique=True).map(tuple)
    sizes = st.integers(1, 30_000)
    blocks = [Block(f"kv-{n}", b, 10, size) for n, (b, size) in
              enumerate(draw(st.lists(st.tuples(items, sizes), max_size=5)))]  # fmt: skip
    adapters = tuple(
        adapter(name, version, held, size=size, default=name == "user" and version == 1)
        for version, (name, held, size) in enumerate(
            draw(st.lists(st.tuples(st.sampled_from(["user", "scheduler"]), items, sizes),
                          max_size=5)), 1)
    )  # fmt: skip
    limit = st.none() | st.integers(0, 60_000)
    budgets = Budgets(
        kv_bytes=draw(limit), kv_blocks=draw(st.none() | st.integers(0, 4)),
        adapters=draw(st.none() | st.integers(0, 4)), adapter_bytes=draw(limit),
        vector_bytes=draw(st.none() | st.integers(0, 40_000_000)),
    )  # fmt: skip
    codec = draw(st.sampled_from(["fp32", "fp16", "int8", "pca188+fp8", "pca48+fp8"]))
    vectors = index(codec, draw(st.integers(0, 30_000)), draw(st.none() | st.integers(1, 20_000)))
    idle = timedelta(days=draw(st.integers(0, 60)))
    return view(heat, pairs, blocks, budgets, uses=draw(st.integers(1, 40)), adapters=adapters,
                vectors=vectors, last_use=NOW - idle)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(views())
def test_a_plan_always_ends_within_the_budgets_it_can_meet(v: CubeView) -> None:
    """Whatever the cube, the plan's decisions leave every tier within its budgets (the
    adapter chat uses by default excepted), touch only what exists, and say why."""
    plan = Balanced().plan(v, BalancedParameters())
    assert plan == Balanced().plan(v, BalancedParameters())  # deterministic
    budgets, blocks, versions = (
        v.budgets,
        {b.id: b for b in v.blocks},
        {a.id: a for a in v.adapters},
    )
    dropped = {d.entry for d in plan if d.action in ("kv_drop", "lora_drop")}
    assert len(dropped) == len([d for d in plan if d.action in ("kv_drop", "lora_drop")])
    assert dropped <= set(blocks) | set(versions)
    kept = [b for b in v.blocks if b.id not in dropped]
    built = [d for d in plan if d.action == "kv_build"]
    kv = sum(b.size for b in kept) + sum(d.bytes for d in built)
    assert budgets.kv_bytes is None or kv <= budgets.kv_bytes
    assert budgets.kv_blocks is None or len(kept) + len(built) <= budgets.kv_blocks
    held = [a for a in v.adapters if a.id not in dropped]
    made = [d for d in plan if d.action == "lora_consolidate"]
    assert len(made) <= 1
    assert all(a.id not in dropped for a in v.adapters if a.default)
    if not any(a.default for a in v.adapters):
        count, size = len(held) + len(made), sum(a.size for a in held) + sum(d.bytes for d in made)
        assert budgets.adapters is None or count <= budgets.adapters
        assert budgets.adapter_bytes is None or size <= budgets.adapter_bytes
    assert len([d for d in plan if d.action in ("reencode", "refit")]) <= 1
    assert all(d.reason and d.score >= 0 for d in plan)


def test_policies_are_found_by_name_and_check_their_parameters() -> None:
    assert policy("balanced").name == "balanced"
    with pytest.raises(InvalidInput, match="unknown scheduler policy"):
        policy("nope")
    with pytest.raises(InvalidInput, match="block_items"):
        checked_parameters(policy("balanced"), {"block_items": 0})
    with pytest.raises(InvalidInput, match="colour"):
        checked_parameters(policy("balanced"), {"colour": "red"})
    with pytest.raises(InvalidInput, match="unknown codec 'zip'"):
        checked_parameters(policy("balanced"), {"codecs": "fp16,zip"})
    with pytest.raises(InvalidInput, match="adapter"):
        checked_parameters(policy("balanced"), {"adapter": "no spaces please"})


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


def test_through_an_upstream_model_nothing_is_planned_for_the_kv_or_parametric_tier(
    data_dir: Path,
) -> None:
    # planning and ticking never call the model: the upstream's port need not answer
    upstream = OpenAICompatible("http://127.0.0.1:9/v1", "elsewhere")
    with MemOS.open(data_dir, embedder=HashEmbedder(64), model=upstream) as mos:
        mos.create_cube("notes")
        mos.add_many(FACTS, cube="notes")
        _ask(mos, "where did alice move", 4)
        plan = mos.scheduler.plan("notes")
        assert plan.decisions == ()
        assert mos.scheduler.tick("notes").events == ()
        assert mos.kv.list("notes") == []


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


def test_a_tick_grows_a_block_computing_only_the_memories_it_adds(
    notes: tuple[MemOS, list[str]],
) -> None:
    """Memories that became hot after a block was built are added after its own: the build
    continues its cache (``extends``, ``prefilled``), then the block it grew from is dropped,
    and chats over the grown block answer as recomputed ones."""
    mos, _ = notes
    first = _ask(mos, "where did alice move", 4)
    mos.scheduler.tick("notes")
    (base,) = mos.kv.list("notes")
    later = _ask(mos, "the capital of france is paris", 6)
    assert set(later) - set(first)
    report = mos.scheduler.tick("notes")
    assert [e.op for e in report.events] == [EventOp.KV_BUILD, EventOp.KV_DROP]
    build, drop = report.events
    (grown,) = mos.kv.list("notes")
    assert build.payload is not None
    assert drop.payload is not None
    assert build.payload["extends"] == base.id
    assert build.payload["prefilled"] == grown.tokens - base.tokens > 0
    assert {s.item_id for s in base.sources} == set(first)
    assert grown.sources[: len(base.sources)] == base.sources
    assert set(later) <= {s.item_id for s in grown.sources}
    assert drop.payload["migration"]["reason"].startswith("extended")
    for question in ("where did alice move", "the capital of france", "june"):
        cached = mos.chat(question, cube="notes", k=2, max_new_tokens=8)
        full = mos.chat(question, cube="notes", k=2, max_new_tokens=8, use_kv=False)
        assert cached.kv_entry == grown.id
        assert cached.tokens == full.tokens, question
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


def test_a_tick_consolidates_a_stable_hot_set_within_the_adapter_budget(
    notes: tuple[MemOS, list[str]],
) -> None:
    mos, _ = notes
    mos.scheduler.configure(
        "notes", parameters={"stable_uses": 3, "adapter_min_items": 2, "block_items": 1},
        budgets={"adapters": 1, "kv_blocks": 0},
    )  # fmt: skip
    first = set(_ask(mos, "where did alice move", 3))
    report = mos.scheduler.tick("notes")
    (event,) = report.events
    assert event.op == EventOp.ADAPTER_BUILD
    assert event.payload is not None
    assert event.payload["migration"]["action"] == "lora_consolidate"
    (version,) = mos.lora.list("notes")
    assert (version.name, version.version) == ("scheduler", 1)
    assert {s.item_id for s in version.sources} == first
    assert mos.scheduler.plan("notes").decisions == ()  # the set is held: nothing to do
    second = set(_ask(mos, "the capital of france", 4))
    assert second - first
    report = mos.scheduler.tick("notes")
    assert [e.op for e in report.events] == [EventOp.ADAPTER_DROP, EventOp.ADAPTER_BUILD]
    (newer,) = mos.lora.list("notes")  # the budget: one version
    assert newer.id != version.id
    assert {s.item_id for s in newer.sources} >= second
    assert mos.get_cube("notes").default_adapter is None  # the scheduler never attaches
    drop, build = report.events
    (restored,) = mos.scheduler.revert("notes", drop.seq)  # the older version comes back
    assert restored.op == EventOp.ADAPTER_BUILD
    assert {v.blob for v in mos.lora.list("notes")} == {version.blob, newer.blob}
    (gone,) = mos.scheduler.revert("notes", build.seq)
    assert gone.op == EventOp.ADAPTER_DROP
    (left,) = mos.lora.list("notes")
    assert left.blob == version.blob
    assert mos.verify("notes").ok


def test_a_migration_is_listed_with_its_reason_and_reverted_like_any_change(
    notes: tuple[MemOS, list[str]],
) -> None:
    mos, _ = notes
    hot = _ask(mos, "where did alice move", 4)
    (built,) = mos.scheduler.tick("notes").events
    (entry,) = mos.kv.list("notes")
    (migration,) = mos.scheduler.history("notes")
    assert (migration.seq, migration.op, migration.action) == (built.seq, "kv_build", "kv_build")
    assert (migration.target, set(migration.items), migration.reverted_by) == (
        entry.id, set(hot), None,
    )  # fmt: skip
    assert migration.reason.startswith("hot group of 2 memories")
    (undone,) = mos.scheduler.revert("notes", built.seq, reason="not now")
    assert (undone.op, undone.reason) == (EventOp.KV_DROP, "not now")
    assert undone.payload is not None
    assert undone.payload["revert"] == {"seq": built.seq, "action": "kv_build"}
    assert mos.kv.list("notes") == []
    assert mos.scheduler.history("notes")[0].reverted_by == undone.seq
    from memos.errors import Conflict, NotFound

    with pytest.raises(Conflict, match="reverted already"):
        mos.scheduler.revert("notes", built.seq)
    # a drop reverted builds the block again, from the same memories in the same order
    mos.scheduler.tick("notes")
    mos.scheduler.configure("notes", budgets={"kv_blocks": 0})
    (dropped,) = mos.scheduler.tick("notes").events
    (rebuilt,) = mos.scheduler.revert("notes", dropped.seq)
    assert rebuilt.op == EventOp.KV_BUILD
    (again,) = mos.kv.list("notes")
    assert [s.item_id for s in again.sources] == [s.item_id for s in entry.sources]
    assert [m.seq for m in mos.scheduler.history("notes", limit=2)] == [
        m.seq for m in mos.scheduler.history("notes")[-2:]
    ]
    head = mos.log("notes")[-1].seq
    with pytest.raises(InvalidInput, match="not a migration"):
        mos.scheduler.revert("notes", 1)
    with pytest.raises(NotFound):
        mos.scheduler.revert("notes", head + 10)
    for bad in (0, -1, True, "3"):
        with pytest.raises(InvalidInput):
            mos.scheduler.revert("notes", bad)  # type: ignore[arg-type]
    assert mos.log("notes")[-1].seq == head  # refusals write nothing
    assert mos.verify("notes").ok


def test_the_kv_a_process_holds_for_a_cube_stays_within_its_resident_budget(
    notes: tuple[MemOS, list[str]],
) -> None:
    mos, ids = notes
    first = mos.kv.build("notes", ids[:2])
    second = mos.kv.build("notes", ids[2:])
    held = mos.kv.resident("notes")
    assert set(held) == {first.blob, second.blob}
    one = max(held.values())
    mos.scheduler.configure("notes", budgets={"kv_resident_bytes": one}, enabled=False)
    mos.scheduler.tick("notes")  # a lowered budget is met at the next tick, even so
    assert set(mos.kv.resident("notes")) == {second.blob}  # the most recently used stays
    reply = mos.chat(FACTS[0], cube="notes", k=1, max_new_tokens=2)
    assert reply.kv_entry == first.id
    assert set(mos.kv.resident("notes")) == {first.blob}  # loaded: the other one goes
    mos.scheduler.configure("notes", budgets={"kv_resident_bytes": 0})
    again = mos.chat(FACTS[3], cube="notes", k=1, max_new_tokens=2)
    assert (again.kv_entry, again.cached_tokens > 0) == (second.id, True)  # used, not held
    assert mos.kv.resident("notes") == {}  # and the cube's others go with it


BULK = 1000  # the fit_min of the fitted codecs


def _bulk(mos: MemOS, cube: str, n: int, start: int = 0) -> None:
    mos.add_many([f"note {i} about topic {i % 37}" for i in range(start, start + n)], cube=cube)


def test_a_tick_reencodes_an_index_over_its_vector_budget_then_refits_it_once_grown(
    chat_mos: MemOS,
) -> None:
    mos = chat_mos
    mos.create_cube("bulk", codec="fp32")  # 64-d: 256 bytes a vector
    _bulk(mos, "bulk", BULK)
    mos.search("note", cube="bulk")  # a use now: the cube is not cold
    mos.scheduler.configure("bulk", budgets={"vector_bytes": 100_000, "kv_blocks": 0})
    plan = mos.scheduler.plan("bulk")
    assert plan.usage.vector_bytes == 256 * BULK
    (decision,) = plan.decisions
    assert (decision.action, decision.codec, decision.bytes) == ("reencode", "int8", 64 * BULK)
    (event,) = mos.scheduler.tick("bulk").events
    assert event.op == EventOp.REENCODE
    assert event.payload is not None
    assert event.payload["migration"]["action"] == "reencode"
    info = mos.get_cube("bulk")
    assert (info.codec, info.codec_fit_items) == ("int8", BULK)
    assert mos.scheduler.plan("bulk").usage.vector_bytes == 64 * BULK
    assert mos.scheduler.plan("bulk").decisions == ()
    _bulk(mos, "bulk", BULK, start=BULK)
    mos.scheduler.configure("bulk", budgets={"vector_bytes": None})
    (decision,) = mos.scheduler.plan("bulk").decisions
    assert decision.action == "refit"
    assert decision.reason.startswith(f"drift: the cube grew from {BULK} to {2 * BULK}")
    (event,) = mos.scheduler.tick("bulk").events
    assert event.op == EventOp.CODEC_FIT
    assert mos.get_cube("bulk").codec_fit_items == 2 * BULK
    assert [h.item.text for h in mos.search("note 1500 about topic 20", cube="bulk", k=1)] == [
        "note 1500 about topic 20"
    ]
    (refit, reencode) = mos.scheduler.history("bulk")[::-1]
    fitted_first = mos.log("bulk")[reencode.seq - 1].payload
    assert fitted_first is not None
    mos.scheduler.revert("bulk", refit.seq)  # the first fit's state comes back
    info = mos.get_cube("bulk")
    assert (info.codec, info.codec_state, info.codec_fit_items) == (
        "int8", fitted_first["codec_state"], BULK,
    )  # fmt: skip
    mos.scheduler.revert("bulk", reencode.seq)
    info = mos.get_cube("bulk")
    assert (info.codec, info.codec_state, info.codec_fit_items) == ("fp32", None, None)
    assert mos.scheduler.plan("bulk").usage.vector_bytes == 256 * 2 * BULK
    assert mos.verify("bulk").ok


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
    built, dropped = sdk.scheduler.history(cube)
    assert (built.action, dropped.action) == ("kv_build", "kv_drop")
    (undone,) = sdk.scheduler.revert(cube, dropped.seq)
    assert undone.op == EventOp.KV_BUILD
    assert sdk.scheduler.history(cube)[-1].reverted_by == undone.seq
    assert sdk.verify(cube).ok


def test_configuration_is_checked_alike_on_every_face(sdk: Any) -> None:
    """Over HTTP as embedded, a value of the wrong type is refused, never coerced."""
    cube = sdk.create_cube("notes").name
    head = sdk.log(cube)[-1].seq
    for budgets in (
        {"kv_blocks": "3"},
        {"kv_blocks": 1.5},
        {"kv_bytes": True},
        {"vector_bytes": -1},
    ):
        with pytest.raises(InvalidInput):
            sdk.scheduler.configure(cube, budgets=budgets)
    for parameters in ({"block_items": "3"}, {"hot_min": "x"}, {"block_items": True},
                       {"block_items": 2.5}, {"cold_codec": "zip"}):  # fmt: skip
        with pytest.raises(InvalidInput):
            sdk.scheduler.configure(cube, parameters=parameters)
    assert sdk.log(cube)[-1].seq == head
    info = sdk.scheduler.configure(cube, parameters={"hot_min": 2, "codecs": "fp16"})
    assert info.scheduler.parameters == {"hot_min": 2, "codecs": "fp16"}


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
