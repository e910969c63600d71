"""Cube policies on every face: redaction on write (before embedding), quotas, legal holds,
retention (as jobs), refusals kept for the audit report, and the report itself."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from _backends import FACES, clients

from memos import EventOp, HashEmbedder, JobKind, JobState, MemOS
from memos.core._policies import CubePolicies, LegalHold, Quotas, RetentionRule
from memos.core._redaction import RedactionPolicy
from memos.errors import AccessDenied, InvalidInput, PolicyRefused, QuotaExceeded

EMAIL = "bob.smith+work@example.co.uk"
CARD = "4111 1111 1111 1111"
INSTANT = 1e-9  # days: anything stored has expired by the time expiry runs


@pytest.fixture(params=FACES)
def world(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[MemOS, Any]]:
    with clients(request.param, tmp_path / "data", embedder=HashEmbedder(64)) as (root, connect):
        yield root, connect("alice")


def test_policies_are_set_by_an_event_and_only_by_the_owner(world: tuple[MemOS, Any]) -> None:
    root, alice = world
    cube = alice.create_cube("notes").name
    assert alice.governance.policies(cube) == CubePolicies()
    wanted = CubePolicies(quotas=Quotas(items=10), holds=(LegalHold(name="case-1", user="bob"),))
    info = alice.governance.set_policies(cube, wanted, reason="counsel asked")
    assert info.policies == wanted
    assert alice.governance.policies(cube) == wanted
    event = alice.log(cube)[-1]
    assert (event.op, event.reason) == (EventOp.POLICY, "counsel asked")
    root.grant(cube, "carol", "write")
    carol = root.as_principal("carol")
    with pytest.raises(AccessDenied):
        carol.governance.set_policies(cube, CubePolicies())
    alice.governance.set_policies(cube, CubePolicies())  # the earlier policies back: undone
    assert alice.governance.policies(cube) == CubePolicies()
    assert alice.verify(cube).ok


def test_redaction_happens_before_embedding_and_the_event_holds_only_counts(
    world: tuple[MemOS, Any],
) -> None:
    root, alice = world
    cube = alice.create_cube("notes").name
    alice.governance.set_policies(cube, CubePolicies(redaction=RedactionPolicy()))
    item = alice.add(f"mail {EMAIL} or pay with {CARD} today", cube=cube, user="bob")
    assert item.text == "mail [EMAIL] or pay with [CARD] today"
    (vector,) = root.store.get_vectors([item.id]).values()
    assert np.array_equal(vector, HashEmbedder(64).embed([item.text])[0])
    created = alice.log(cube)[-1]
    assert created.payload["redacted"] == {"card": 1, "email": 1}
    assert EMAIL not in str(created.payload)
    updated = alice.update(item.id, f"call +44 20 7946 0958, mail {EMAIL}")
    assert updated.text == "call [PHONE], mail [EMAIL]"
    assert alice.log(cube)[-1].payload["redacted"] == {"email": 1, "phone": 1}
    assert alice.search(EMAIL, cube=cube, mode="keyword") == []
    report = alice.governance.report(cube)
    assert report.redacted == {"card": 1, "email": 2, "phone": 1}
    assert len(report.redactions) == 2


def test_quotas_refuse_at_the_limit_and_write_nothing(world: tuple[MemOS, Any]) -> None:
    _, alice = world
    cube = alice.create_cube("notes").name
    quotas = Quotas(items_per_user=2, bytes=40)
    alice.governance.set_policies(cube, CubePolicies(quotas=quotas))
    alice.add_many(["one", "two"], cube=cube, user="bob")
    head = alice.log(cube)[-1].seq
    with pytest.raises(QuotaExceeded) as refused:
        alice.add("three", cube=cube, user="bob")
    assert refused.value.details["quota"] == "items"
    alice.add("carol's", cube=cube, user="carol")
    with pytest.raises(QuotaExceeded):
        alice.add("x" * 40, cube=cube, user="dave")
    assert alice.log(cube)[-1].seq == head + 1
    codes = [r.code for r in alice.governance.report(cube).refusals]
    assert codes == ["quota_exceeded", "quota_exceeded"]


def test_a_legal_hold_wins_over_deletion_erasure_and_retention(world: tuple[MemOS, Any]) -> None:
    _, alice = world
    cube = alice.create_cube("notes").name
    held = alice.add("bob signed the contract", cube=cube, user="bob")
    free = alice.add("carol likes tea", cube=cube, user="carol")
    policies = CubePolicies(
        holds=(LegalHold(name="case-7", user="bob"),),
        retention=(RetentionRule(ttl_days=INSTANT),),
    )
    alice.governance.set_policies(cube, policies)
    head = alice.log(cube)[-1].seq
    with pytest.raises(PolicyRefused):
        alice.delete(held.id)
    with pytest.raises(PolicyRefused):
        alice.forget(user="bob")
    with pytest.raises(PolicyRefused):
        alice.rollback_cube(cube, to_seq=1)
    assert alice.log(cube)[-1].seq == head
    (expired,) = alice.governance.expire(cube)
    assert (expired.op, expired.item_id) == (EventOp.DELETE, free.id)
    assert expired.payload["retention"]["ttl_days"] == INSTANT
    assert alice.get(held.id).status == "active"
    report = alice.governance.report(cube)
    assert report.expired == 1
    assert [r.code for r in report.refusals] == ["policy_refused"] * 3
    assert [c.seq for c in report.policy_changes] == [head]


def test_retention_erases_when_its_rule_says_so(world: tuple[MemOS, Any]) -> None:
    _, alice = world
    cube = alice.create_cube("notes").name
    gone = alice.add("a passing remark", cube=cube, tags=["ephemeral"])
    kept = alice.add("a lasting fact", cube=cube)
    rule = RetentionRule(ttl_days=INSTANT, tag="ephemeral", action="erase")
    alice.governance.set_policies(cube, CubePolicies(retention=(rule,)))
    (erase,) = alice.governance.expire(cube)
    assert erase.op == EventOp.ERASE
    assert [h.item.id for h in alice.search("remark fact", cube=cube)] == [kept.id]
    (part,) = alice.governance.report(cube).erasures
    assert part.items == 1
    assert alice.verify(cube).ok
    assert gone.id not in {e.item_id for e in alice.log(cube) if e.payload}


def test_bad_policies_are_refused_and_change_nothing(world: tuple[MemOS, Any]) -> None:
    _, alice = world
    cube = alice.create_cube("notes").name
    head = alice.log(cube)[-1].seq
    for bad in (
        {"quotas": {"items": -1}},
        {"quotas": {"items": "3"}},
        {"retention": [{"ttl_days": 0}]},
        {"holds": [{"name": "a"}, {"name": "a"}]},
        {"redaction": {"custom": [{"name": "x", "pattern": "a*"}]}},
        {"surprise": True},
    ):
        with pytest.raises((InvalidInput, ValueError)):
            alice.governance.set_policies(cube, CubePolicies.model_validate(bad))
    assert alice.log(cube)[-1].seq == head


def test_retention_runs_as_jobs_the_ticker_queues(tmp_path: Path) -> None:
    from memos.schedulers import Ticker, Worker

    with MemOS.open(tmp_path / "data", embedder=HashEmbedder(64)) as mos:
        mos.create_cube("notes")
        item = mos.add("short lived", cube="notes")
        rule = RetentionRule(ttl_days=INSTANT)
        mos.governance.set_policies("notes", CubePolicies(retention=(rule,)))
        (job,) = [j for j in Ticker(mos).once() if j.kind == JobKind.EXPIRE]
        assert [j.kind for j in Ticker(mos).once()] == []  # one pending: none more
        done = Worker(mos).run_once()
        assert done is not None
        assert (done.id, done.state, done.result["expired"]) == (job.id, JobState.DONE, 1)
        assert mos.get(item.id).status == "deleted"
        assert mos.log("notes")[-1].reason.startswith(f"[{job.id}] retention")
