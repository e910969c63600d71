"""The LoCoMo retrieval benchmark's scoring, on a small made-up conversation in LoCoMo's format.

The real data and mem0 are not needed: MemOS dense and plain FAISS run on the synthetic
conversation with the deterministic hash embedder.
"""

from __future__ import annotations

import io
import json
import math
import socket
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from memos import HashEmbedder

# appended, not prepended: benchmarks/ holds scripts (codecs.py) whose names must not shadow
# the standard library for the rest of the test session
sys.path.append(str(Path(__file__).resolve().parents[1] / "benchmarks"))

import locomo_retrieval as bench
import locomo_scoring as scoring

PET = "I adopted a grey cat named Pixel from the shelter"
BAKERY = "My sister runs a small bakery in Lisbon"
HIKE = "We hiked the Dolomites for a week last summer"
CELLO = "I started cello lessons on Tuesdays"
PAINTING = "Look what I painted yesterday!"


def turn(dia_id: str, speaker: str, text: str, **extra: str) -> dict[str, str]:
    return {"speaker": speaker, "dia_id": dia_id, "text": text, **extra}


def sample() -> dict[str, Any]:
    """Three sessions (numbered 1, 2, 10, to check numeric order) and one question of each
    kind the data has, irregular evidence included."""
    return {
        "sample_id": "conv-t1",
        "conversation": {
            "speaker_a": "Ana",
            "speaker_b": "Ben",
            "session_1_date_time": "1:56 pm on 8 May, 2023",
            "session_1": [
                turn("D1:1", "Ana", PET),
                turn("D1:2", "Ben", BAKERY),
            ],
            "session_10_date_time": "9:05 am on 2 October, 2023",
            "session_10": [
                turn(
                    "D10:1", "Ana", PAINTING, img_url="x.jpg", blip_caption="a sunset over a lake"
                ),
                turn("D10:2", "Ben", ""),  # an empty turn is not a memory
            ],
            "session_2_date_time": "7:30 pm on 20 June, 2023",
            "session_2": [
                turn("D2:1", "Ben", HIKE),
                turn("D2:2", "Ana", CELLO),
            ],
        },
        "qa": [
            {"question": PET, "answer": "Pixel", "evidence": ["D1:1"], "category": 4},
            {"question": HIKE, "answer": "2023", "evidence": ["D2:1"], "category": 2},
            {
                "question": "pets and bakery",
                "answer": "a cat; a bakery",
                "evidence": ["D1:1; D1:2"],
                "category": 1,
            },
            {
                "question": CELLO,
                "adversarial_answer": "piano",
                "evidence": ["D:2:2", "D"],
                "category": 5,
            },
            {"question": "open question", "answer": "?", "evidence": [], "category": 3},
            {"question": "lost evidence", "answer": "?", "evidence": ["D9:9"], "category": 3},
            {
                "question": "a sunset over a lake painting",
                "answer": "sunset",
                "evidence": ["D10:1", "D4:4"],
                "category": 3,
            },
        ],
    }


@pytest.fixture
def conversation() -> scoring.Conversation:
    return scoring.parse_sample(sample())


# -- reading ----------------------------------------------------------------------------------


def test_turns_in_session_order_with_captions_and_metadata(
    conversation: scoring.Conversation,
) -> None:
    assert [t.dia_id for t in conversation.turns] == ["D1:1", "D1:2", "D2:1", "D2:2", "D10:1"]
    painting = conversation.turns[-1]
    assert painting.text == f"{PAINTING} [shares an image: a sunset over a lake]"
    assert painting.session == 10
    assert painting.occurred_at == datetime(2023, 10, 2, 9, 5, tzinfo=UTC)
    record = conversation.turns[0].record()
    assert record == {
        "text": PET,
        "user": "conv-t1",
        "session": "conv-t1/session_1",
        "occurred_at": datetime(2023, 5, 8, 13, 56, tzinfo=UTC),
        "metadata": {
            "dia_id": "D1:1",
            "speaker": "Ana",
            "session_date": "1:56 pm on 8 May, 2023",
            "conversation": "conv-t1",
        },
    }


def test_speaker_in_text_is_an_option() -> None:
    with_speaker = scoring.parse_sample(sample(), speaker_in_text=True)
    assert with_speaker.turns[0].text == f"Ana: {PET}"
    assert with_speaker.turns[0].speaker == "Ana"


def test_unparseable_session_date_gives_no_time() -> None:
    assert scoring.parse_session_date("sometime in May") is None


def test_irregular_evidence_is_normalised_and_the_rest_reported() -> None:
    known = {"D1:1", "D1:2", "D11:26"}
    evidence, dropped = scoring.normalize_evidence(
        ["D1:1; D1:2", "D:11:26", "D", "D9:9", "D1:1"], known
    )
    assert evidence == frozenset({"D1:1", "D1:2", "D11:26"})
    assert dropped == ("D", "D9:9")


def test_questions_without_evidence_are_skipped_and_counted(
    conversation: scoring.Conversation,
) -> None:
    asked = [q.text for q in conversation.questions]
    assert asked == [PET, HIKE, "pets and bakery", CELLO, "a sunset over a lake painting"]
    adversarial = conversation.questions[3]
    assert adversarial.answer == "piano"
    assert adversarial.evidence == frozenset({"D2:2"})
    assert adversarial.dropped_evidence == ("D",)
    assert conversation.questions[-1].dropped_evidence == ("D4:4",)
    summary = scoring.skipped_summary([conversation])
    assert summary["count"] == 2
    assert summary["by_reason"] == {"no evidence": 1, "evidence names no turn": 1}
    assert summary["by_category"] == {"open-domain": 2}
    assert summary["questions"] == ["conv-t1#4", "conv-t1#5"]


def test_load_and_iterate_questions(tmp_path: Path) -> None:
    second = sample()
    second["sample_id"] = "conv-t2"
    path = tmp_path / "locomo.json"
    path.write_text(json.dumps([sample(), second]), encoding="utf-8")
    both = scoring.load_conversations(path)
    assert [c.sample_id for c in both] == ["conv-t1", "conv-t2"]
    assert [c.sample_id for c in scoring.load_conversations(path, limit=1)] == ["conv-t1"]
    assert len(list(scoring.iter_questions(both))) == 10
    firsts = list(scoring.iter_questions(both, per_conversation=1))
    assert [(q.conversation, q.text) for q in firsts] == [("conv-t1", PET), ("conv-t2", PET)]


# -- scoring ----------------------------------------------------------------------------------


def test_hit_all_and_first_rank() -> None:
    evidence = frozenset({"D1:2", "D3:4"})
    ranked = ["D9:9", "D1:2", "D5:5", "D3:4"]
    assert not scoring.hit_at(ranked, evidence, 1)
    assert scoring.hit_at(ranked, evidence, 2)
    assert not scoring.all_at(ranked, evidence, 3)
    assert scoring.all_at(ranked, evidence, 4)
    assert scoring.all_at(ranked, evidence, 10)  # a short list is read as it is
    assert scoring.first_hit_rank(ranked, evidence) == 2
    assert scoring.first_hit_rank(["D7:7"], evidence) is None
    assert scoring.first_hit_rank([], evidence) is None


def test_recall_per_category_and_overall(conversation: scoring.Conversation) -> None:
    pet, hike, multi, adversarial, _ = conversation.questions
    rankings = [
        (pet, ["D1:1", "D2:1"]),  # single-hop: hit at 1
        (hike, ["D1:1", "D2:1"]),  # temporal: hit at 2 only
        (multi, ["D1:2", "D2:2", "D1:1"]),  # multi-hop: hit at 1, all evidence at 3
        (adversarial, ["D1:1"]),  # adversarial: no hit
    ]
    table = scoring.score(rankings, ks=(1, 2, 3))
    assert table["single-hop"].recall(1) == 1.0
    assert table["temporal"].recall(1) == 0.0
    assert table["temporal"].recall(2) == 1.0
    assert table["multi-hop"].recall(1) == 1.0
    assert table["multi-hop"].all_recall(2) == 0.0
    assert table["multi-hop"].all_recall(3) == 1.0
    assert table["adversarial"].recall(3) == 0.0
    overall = table[scoring.OVERALL]
    assert overall.questions == 4
    assert [overall.recall(k) for k in (1, 2, 3)] == [0.5, 0.75, 0.75]
    assert [overall.all_recall(k) for k in (1, 2, 3)] == [0.25, 0.5, 0.75]
    assert table["open-domain"].questions == 0
    assert math.isnan(table["open-domain"].recall(1))
    assert overall.as_dict((1, 3)) == {
        "questions": 4,
        "recall": {"1": 0.5, "3": 0.75},
        "all_evidence": {"1": 0.25, "3": 0.75},
    }


def test_percentile_and_latency_summary() -> None:
    values = [4.0, 1.0, 3.0, 2.0, 5.0]
    assert scoring.percentile(values, 50) == 3.0
    assert scoring.percentile(values, 0) == 1.0
    assert scoring.percentile(values, 100) == 5.0
    assert scoring.percentile([1.0, 2.0], 95) == pytest.approx(1.95)
    assert math.isnan(scoring.percentile([], 50))
    with pytest.raises(ValueError, match="outside"):
        scoring.percentile(values, 101)
    summary = scoring.latency_summary([0.001, 0.002, 0.003])
    assert summary == pytest.approx({"p50_ms": 2.0, "p95_ms": 2.9, "mean_ms": 2.0, "n": 3.0})
    assert math.isnan(scoring.latency_summary([])["p50_ms"])


# -- the runner, MemOS dense against plain FAISS, with the hash embedder -----------------------


def test_memos_dense_and_faiss_on_the_synthetic_conversation(
    conversation: scoring.Conversation, tmp_path: Path
) -> None:
    embedder = HashEmbedder(64)
    setup = bench.build_systems(["memos-dense", "faiss"], tmp_path, embedder)
    try:
        log = bench.run([conversation], setup.backends, setup.searchers, k=3)
    finally:
        for backend in setup.backends:
            backend.close()
    systems = bench.results(log, setup.searchers, ks=(1, 3))
    assert [s.name for s in systems] == ["memos-dense", "faiss"]
    for system in systems:
        assert system.recall[scoring.OVERALL].questions == 5
        # questions that repeat a turn's words find it first
        assert system.recall["single-hop"].recall(1) == 1.0
        assert system.recall["temporal"].recall(1) == 1.0
        assert system.recall["adversarial"].recall(1) == 1.0
        assert system.turns == 5
        assert system.search["n"] == 5
        assert system.first_hit_ranks[:2] == [1, 1]
    dense, flat = systems
    assert dense.add["n"] == 5  # MemOS adds one turn per call
    assert flat.add["n"] == 0  # FAISS ingests in bulk
    # the same embedder and exact search: MemOS and plain FAISS rank alike
    assert bench.ranking_agreement(log) == {"memos-dense = faiss": 1.0}
    assert bench.goal_verdict(systems) == {
        "evaluated": False,
        "reason": "no MemOS hybrid result in this run",
    }
    out = io.StringIO()
    console = Console(file=out, width=200)
    for table in (
        bench.recall_table(systems, (1, 3)),
        bench.summary_table(systems, 3),
        bench.latency_table(systems),
    ):
        console.print(table)
    text = out.getvalue()
    assert "MemOS dense" in text
    assert "plain FAISS IndexFlatIP" in text
    assert "overall (5)" in text


def test_search_modes_follow_what_memos_offers(tmp_path: Path) -> None:
    setup = bench.build_systems(["memos-dense", "memos-hybrid"], tmp_path, HashEmbedder(64))
    names = [s.name for s in setup.searchers]
    try:
        if bench.memos_supports_modes():
            assert names == ["memos-dense", "memos-hybrid"]
        else:
            assert names == ["memos-dense"]
            assert "memos-hybrid" in setup.unavailable
            with pytest.raises(SystemExit, match="memos-hybrid"):
                bench.build_systems(["memos-hybrid"], tmp_path / "strict", HashEmbedder(64), True)
    finally:
        for backend in setup.backends:
            backend.close()


def test_goal_verdict_margins() -> None:
    def system(name: str, hits: int, p50: float) -> bench.SystemResult:
        recall = scoring.Recall(questions=100, hits={10: hits}, complete={10: hits})
        return bench.SystemResult(
            name, name, name, {scoring.OVERALL: recall}, {"p50_ms": p50}, {}, 0.0, 0, []
        )

    met = bench.goal_verdict(
        [system("memos-hybrid", 70, 10.0), system("mem0", 64, 11.0), system("faiss", 65, 1.0)]
    )
    assert met["met"]
    assert met["vs_mem0"]["margin"] == pytest.approx(0.06)
    missed = bench.goal_verdict(
        [system("memos-hybrid", 70, 12.0), system("mem0", 64, 11.0), system("faiss", 66, 1.0)]
    )
    assert not missed["met"]
    assert not missed["vs_faiss"]["met"]
    assert not missed["search_p50_ratio_vs_mem0"]["met"]
    assert any("NOT MET" in line for line in bench.verdict_lines(missed))


# -- configuration and the network guard ----------------------------------------------------


def test_arguments() -> None:
    quick = bench.parse_args(["data.json", "--quick", "--k-list", "10,1,5,5"])
    assert quick.ks == (1, 5, 10)
    assert (quick.limit_conversations, quick.max_questions) == (1, 40)
    assert quick.systems == bench.ALL_SYSTEMS
    assert not quick.systems_given
    assert not quick.speaker_in_text
    assert bench.parse_args(["--speaker-in-text"]).speaker_in_text
    chosen = bench.parse_args(["--systems", "faiss,mem0"])
    assert chosen.systems == ("faiss", "mem0")
    assert chosen.systems_given
    with pytest.raises(SystemExit):
        bench.parse_args(["--systems", "faiss,pinecone"])
    with pytest.raises(SystemExit):
        bench.parse_args(["--k-list", "0,5"])


def test_mem0_configuration_points_only_at_loopback_and_local_files() -> None:
    config = bench.mem0_config(Path("/tmp/x"), "conv-1", "/models/minilm", 384)
    assert config["vector_store"]["provider"] == "faiss"
    assert config["embedder"]["config"]["model"] == "/models/minilm"
    assert config["embedder"]["config"]["model_kwargs"]["local_files_only"] is True
    urls = [v for v in json.dumps(config).split('"') if "://" in v]
    assert urls == [bench.UNREACHABLE_LLM_URL]
    assert bench.is_loopback(bench.UNREACHABLE_LLM_URL.split("//")[1].split(":")[0])


def test_network_guard_refuses_all_but_loopback() -> None:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    real_connect = socket.socket.connect
    try:
        with bench.NetworkGuard() as guard:
            with socket.create_connection(listener.getsockname(), timeout=5):
                pass
            with pytest.raises(OSError, match="network guard"):
                socket.create_connection(("192.0.2.1", 80), timeout=1)
            with pytest.raises(OSError, match="network guard"):
                socket.getaddrinfo("example.invalid", 443)
        assert guard.blocked == ["192.0.2.1:80", "lookup 'example.invalid'"]
    finally:
        listener.close()
    assert socket.socket.connect is real_connect


def test_results_json_has_no_nan() -> None:
    payload = {"a": float("nan"), "b": [1.0, float("nan")], "c": ({"d": float("nan")},)}
    assert bench.json_safe(payload) == {"a": None, "b": [1.0, None], "c": [{"d": None}]}


def test_loopback_names() -> None:
    assert bench.is_loopback("127.0.0.1")
    assert bench.is_loopback("::1")
    assert bench.is_loopback("localhost")
    assert not bench.is_loopback("10.0.0.1")
    assert not bench.is_loopback("us.i.posthog.com")
    assert not bench.is_loopback(None)
