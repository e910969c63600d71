"""Tier labels: a memory tagged ``no-kv`` never goes into a KV cache and one tagged
``no-parametric`` never into an adapter, by every path: by id (refused), by query (left out),
retraining, the scheduler (whatever its policy decides) and the store itself."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from memos.schedulers._policies import Balanced, BalancedParameters
from test_scheduler import STABLE, view

from memos import EventOp, MemOS
from memos.core import _scheduling
from memos.core._scheduling import CubeView, Decision, honoured, register_policy
from memos.errors import PolicyRefused

FAST = {"max_steps": 4, "learning_rate": 0.01, "batch_size": 2, "recall_every": 4}


@pytest.fixture
def labelled(chat_mos: MemOS) -> tuple[MemOS, dict[str, str]]:
    mos = chat_mos
    mos.create_cube("notes")
    ids = {
        "open": mos.add("alice moved to lisbon in may", cube="notes").id,
        "no-kv": mos.add("alice moved to porto in june", cube="notes", tags=["no-kv"]).id,
        "no-parametric": mos.add(
            "alice moved to braga in july", cube="notes", tags=["no-parametric"]
        ).id,
    }
    return mos, ids


def test_a_labelled_memory_is_refused_by_id_and_left_out_by_query(
    labelled: tuple[MemOS, dict[str, str]],
) -> None:
    mos, ids = labelled
    head = mos.log("notes")[-1].seq
    with pytest.raises(PolicyRefused) as refused:
        mos.kv.build("notes", [ids["open"], ids["no-kv"]])
    assert refused.value.details["label"] == "no-kv"
    with pytest.raises(PolicyRefused):
        mos.lora.consolidate("notes", [ids["no-parametric"]], name="x", recipe=FAST)
    assert mos.log("notes")[-1].seq == head  # refused before anything was made
    block = mos.kv.build("notes", query="alice moved", k=3)
    assert {s.item_id for s in block.sources} == {ids["open"], ids["no-parametric"]}
    adapter = mos.lora.consolidate("notes", query="alice moved", k=3, name="x", recipe=FAST)
    assert {s.item_id for s in adapter.sources} == {ids["open"], ids["no-kv"]}


def test_labelling_a_memory_retires_what_was_built_from_it_and_retraining_leaves_it_out(
    labelled: tuple[MemOS, dict[str, str]],
) -> None:
    mos, ids = labelled
    block = mos.kv.build("notes", [ids["open"]])
    first = mos.lora.consolidate("notes", [ids["open"], ids["no-kv"]], name="x", recipe=FAST)
    mos.update(ids["open"], tags=["no-kv", "no-parametric"])
    assert block.id not in {e.id for e in mos.kv.list("notes")}
    assert mos.lora.show("notes", "x").stale
    retrained = mos.lora.retrain("notes", "x")
    assert [s.item_id for s in retrained.sources] == [ids["no-kv"]]
    with pytest.raises(PolicyRefused):  # its weights saw a memory now labelled
        mos.lora.rollback("notes", "x", to_version=first.version)
    assert mos.verify("notes").ok


class _Rogue:
    """A policy that builds and consolidates every memory ever used, labels or not."""

    name = "rogue"
    parameters = BalancedParameters

    def plan(self, view: CubeView, parameters: Any) -> list[Decision]:
        used = tuple(sorted(view.access))
        return [
            Decision(action="kv_build", items=used, score=1.0, bytes=1, reason="all"),
            Decision(action="lora_consolidate", items=used, adapter="scheduler", score=1.0,
                     bytes=1, reason="all"),
        ]  # fmt: skip


def test_no_policy_takes_a_labelled_memory_into_a_tier(
    labelled: tuple[MemOS, dict[str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    mos, ids = labelled
    monkeypatch.setattr(_scheduling, "_POLICIES", dict(_scheduling._POLICIES))
    register_policy("rogue", f"{__name__}:_Rogue")
    mos.scheduler.configure("notes", policy="rogue")
    for _ in range(3):
        mos.search("alice moved", cube="notes", k=3)
    assert mos.scheduler.plan("notes").decisions == ()
    assert mos.scheduler.tick("notes").events == ()
    mos.update(ids["no-kv"], tags=[])  # the label goes: the block may be built now
    mos.search("alice moved", cube="notes", k=3)
    (build,) = mos.scheduler.plan("notes").decisions
    assert build.action == "kv_build"
    assert [e.op for e in mos.scheduler.tick("notes").events] == [EventOp.KV_BUILD]


def test_the_balanced_policy_plans_around_labels() -> None:
    labelled = replace(view(STABLE, uses=20), no_kv=frozenset({"a"}), no_parametric=frozenset("b"))
    plan = Balanced().plan(labelled, BalancedParameters(block_items=1, adapter_min_items=3))
    built = [d.items for d in plan if d.action == "kv_build"]
    assert ("a",) not in built
    assert len(built) == 3
    (consolidation,) = [d for d in plan if d.action == "lora_consolidate"]
    assert consolidation.items == ("a", "c", "d")


@settings(max_examples=60, deadline=None)
@given(
    heat=st.dictionaries(st.sampled_from("abcdefgh"), st.floats(0.0, 9.0), min_size=1),
    no_kv=st.frozensets(st.sampled_from("abcdefgh")),
    no_parametric=st.frozensets(st.sampled_from("abcdefgh")),
    uses=st.integers(1, 40),
)
def test_no_plan_names_a_labelled_memory_for_its_tier(
    heat: dict[str, float], no_kv: frozenset[str], no_parametric: frozenset[str], uses: int
) -> None:
    v = replace(view(heat, uses=uses), no_kv=no_kv, no_parametric=no_parametric)
    plan = Balanced().plan(v, BalancedParameters(adapter_min_items=1))
    assert honoured(plan, v) == tuple(plan)
