"""Parametric memory: adapters as versioned, audited, forgettable entries of a cube.

The tiny random Llama (``tiny_model``) learns its word-level facts in a few dozen steps, so
these tests train for real; one test marked ``slow`` consolidates real facts into SmolLM2.
Every adapter a test loads stays on the shared model under a slot of its own.
"""

from __future__ import annotations

import json
import pickle
import threading
from pathlib import Path
from typing import Any

import pytest
import torch
from _models import tiny_model_dir
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM

from memos import EventOp, HashEmbedder, MemoryItem, MemOS
from memos.errors import (
    Conflict,
    CorruptArtifact,
    InvalidInput,
    ItemNotFound,
    ModelMismatch,
    NotFound,
)
from memos.llm import LocalModel
from memos.parametric import AdapterEntry
from memos.parametric._catalog import MAX_LOADED_ADAPTERS
from memos.parametric._train import recall

CUBE = "facts"
ALICE = "alice moved to lisbon in may"
PARIS = "the capital of france is paris"
FAST = {"max_steps": 60, "learning_rate": 0.01, "batch_size": 4, "recall_every": 10}


@pytest.fixture
def facts(chat_mos: MemOS) -> tuple[MemOS, MemoryItem, MemoryItem]:
    chat_mos.create_cube(CUBE)
    return chat_mos, chat_mos.add(ALICE, cube=CUBE), chat_mos.add(PARIS, cube=CUBE)


@pytest.fixture
def trained(facts: tuple[MemOS, MemoryItem, MemoryItem]) -> AdapterEntry:
    mos, alice, paris = facts
    return mos.lora.consolidate(CUBE, [alice.id, paris.id], name="trip", recipe=FAST)


def log_ops(mos: MemOS) -> list[EventOp]:
    return [event.op for event in mos.log(CUBE)]


# consolidation and chat -------------------------------------------------------------------


def test_consolidation_learns_the_facts_and_records_a_version(
    facts: tuple[MemOS, MemoryItem, MemoryItem], trained: AdapterEntry
) -> None:
    mos, alice, paris = facts
    assert (trained.name, trained.version, trained.manifest.origin) == ("trip", 1, "consolidate")
    assert [(s.item_id, s.version) for s in trained.sources] == [(alice.id, 1), (paris.id, 1)]
    metrics = trained.manifest.metrics
    assert float(metrics["last_loss"]) < float(metrics["first_loss"])
    assert trained.manifest.base_model == mos.model().fingerprint
    assert trained.manifest.recipe is not None
    assert trained.manifest.recipe["learning_rate"] == FAST["learning_rate"]
    assert log_ops(mos)[-1] == EventOp.ADAPTER_BUILD
    slot = mos.lora.activate(trained)
    assert recall(mos._engine.local_model(), [ALICE, PARIS], adapter=slot) == 1.0
    assert mos.verify(CUBE).ok


def test_chat_through_an_adapter_leaves_the_base_model_exact(
    facts: tuple[MemOS, MemoryItem, MemoryItem], trained: AdapterEntry
) -> None:
    mos = facts[0]
    before = mos.chat("where is alice", cube=CUBE, max_new_tokens=8, retrieve=False)
    through = mos.chat(
        "where is alice", cube=CUBE, max_new_tokens=8, adapter="trip", retrieve=False
    )
    after = mos.chat("where is alice", cube=CUBE, max_new_tokens=8, retrieve=False)
    assert through.adapter == trained.id
    assert through.memories == ()
    assert before.adapter is None
    assert before.tokens == after.tokens
    assert through.tokens != before.tokens


def test_an_attached_adapter_is_the_cubes_default_until_detached(
    facts: tuple[MemOS, MemoryItem, MemoryItem], trained: AdapterEntry
) -> None:
    mos = facts[0]
    info = mos.lora.attach(CUBE, "trip", reason="use it")
    assert info.default_adapter == "trip" == mos.get_cube(CUBE).default_adapter
    assert mos.chat("where is alice", cube=CUBE, max_new_tokens=4).adapter == trained.id
    assert mos.log(CUBE)[-1].op == EventOp.ADAPTER_ATTACH
    mos.lora.attach(CUBE, None)
    assert mos.chat("where is alice", cube=CUBE, max_new_tokens=4).adapter is None
    assert mos.verify(CUBE).ok


def test_switching_adapters_gives_each_its_own_answer(
    facts: tuple[MemOS, MemoryItem, MemoryItem], trained: AdapterEntry
) -> None:
    mos, alice, _ = facts
    other = mos.lora.consolidate(CUBE, [alice.id], name="alice", recipe=FAST | {"seed": 3})
    ask = {"cube": CUBE, "max_new_tokens": 8, "retrieve": False}
    alone = {n: mos.chat("where is alice", adapter=n, **ask).tokens for n in ("trip", "alice")}
    for _ in range(2):
        for name in ("alice", "trip"):
            assert mos.chat("where is alice", adapter=name, **ask).tokens == alone[name]
    assert other.version == 1


# forgetting -------------------------------------------------------------------------------


@pytest.mark.parametrize("change", ["update", "delete"])
def test_a_changed_source_marks_the_adapter_stale_in_the_same_commit(
    facts: tuple[MemOS, MemoryItem, MemoryItem], trained: AdapterEntry, change: str
) -> None:
    mos, alice, _ = facts
    if change == "update":
        mos.update(alice.id, "alice moved to porto in june")
    else:
        mos.delete(alice.id)
    events = mos.log(CUBE)
    assert [e.op for e in events[-2:]] == [EventOp(change), EventOp.ADAPTER_STALE]
    assert events[-1].reason is not None
    assert alice.id in events[-1].reason
    [entry] = mos.lora.list(CUBE)
    assert entry.stale
    with pytest.raises(Conflict):
        mos.chat("where is alice", cube=CUBE, adapter="trip")
    mos.lora.attach(CUBE, "trip")
    assert mos.chat("where is alice", cube=CUBE, max_new_tokens=4).adapter is None
    assert mos.verify(CUBE).ok


def test_a_deleted_fact_is_no_longer_recalled_after_retraining(
    facts: tuple[MemOS, MemoryItem, MemoryItem], trained: AdapterEntry
) -> None:
    mos, alice, paris = facts
    model = mos._engine.local_model()
    assert recall(model, [ALICE], adapter=mos.lora.activate(trained)) == 1.0
    mos.delete(alice.id, reason="forget me")
    retrained = mos.lora.retrain(CUBE, "trip")
    assert (retrained.version, retrained.manifest.origin) == (2, "retrain")
    assert retrained.manifest.from_version == 1
    assert [s.item_id for s in retrained.sources] == [paris.id]
    assert not retrained.stale
    slot = mos.lora.activate(retrained)
    assert recall(model, [ALICE], adapter=slot) == 0.0
    assert recall(model, [PARIS], adapter=slot) == 1.0
    reply = mos.chat("where is alice", cube=CUBE, adapter="trip", retrieve=False)
    assert reply.adapter == retrained.id


def test_rollback_is_a_new_version_with_the_old_weights(
    facts: tuple[MemOS, MemoryItem, MemoryItem], trained: AdapterEntry
) -> None:
    mos, _, paris = facts
    second = mos.lora.consolidate(CUBE, [paris.id], name="trip", recipe=FAST)
    back = mos.lora.rollback(CUBE, "trip", to_version=1, reason="v2 was worse")
    assert (second.version, back.version) == (2, 3)
    assert (back.manifest.origin, back.manifest.from_version) == ("rollback", 1)
    assert back.blob == trained.blob
    assert back.sources == trained.sources
    assert not back.stale
    assert mos.lora.show(CUBE, "trip").version == 3
    assert [e.version for e in mos.lora.list(CUBE, "trip")] == [1, 2, 3]


def test_rolling_back_to_a_version_whose_sources_changed_is_stale(
    facts: tuple[MemOS, MemoryItem, MemoryItem], trained: AdapterEntry
) -> None:
    mos, alice, _ = facts
    mos.update(alice.id, "alice moved to porto in june")
    mos.lora.retrain(CUBE, "trip")
    back = mos.lora.rollback(CUBE, "trip", to_version=1)
    assert back.stale
    with pytest.raises(Conflict):
        mos.chat("where is alice", cube=CUBE, adapter="trip")


def test_delete_removes_every_version_and_detaches(
    facts: tuple[MemOS, MemoryItem, MemoryItem], trained: AdapterEntry
) -> None:
    mos, _, paris = facts
    mos.lora.consolidate(CUBE, [paris.id], name="trip", recipe=FAST)
    mos.lora.attach(CUBE, "trip")
    events = mos.lora.delete(CUBE, "trip", reason="done")
    assert [e.op for e in events] == [EventOp.ADAPTER_DROP] * 2 + [EventOp.ADAPTER_ATTACH]
    assert mos.lora.list(CUBE) == []
    assert mos.get_cube(CUBE).default_adapter is None
    with pytest.raises(NotFound):
        mos.lora.show(CUBE, "trip")
    assert mos.verify(CUBE).ok


# portability and identity -----------------------------------------------------------------


def test_an_exported_adapter_loads_in_peft_itself_with_the_same_logits(
    facts: tuple[MemOS, MemoryItem, MemoryItem],
    trained: AdapterEntry,
    tmp_path: Path,
    tiny_model: LocalModel,
) -> None:
    mos = facts[0]
    directory = mos.lora.export(CUBE, "trip", tmp_path / "trip")
    assert sorted(p.name for p in directory.iterdir()) == [
        "adapter_config.json",
        "adapter_model.safetensors",
        "memos_manifest.json",
    ]
    source = tiny_model_dir(tmp_path / "base")
    fresh = AutoModelForCausalLM.from_pretrained(source, local_files_only=True)
    peft_model = PeftModel.from_pretrained(fresh, directory).eval()
    ids = torch.tensor([tiny_model.chat_ids([{"role": "user", "content": "where is alice"}])])
    slot = mos.lora.activate(trained)
    with torch.inference_mode(), tiny_model.adapters.active(slot) as ours:
        expected = ours(input_ids=ids).logits
    with torch.inference_mode():
        got = peft_model(input_ids=ids).logits
    torch.testing.assert_close(got, expected)


def test_export_then_import_is_a_new_version_with_the_same_weights(
    facts: tuple[MemOS, MemoryItem, MemoryItem], trained: AdapterEntry, tmp_path: Path
) -> None:
    mos = facts[0]
    directory = mos.lora.export(CUBE, "trip", tmp_path / "trip")
    imported = mos.lora.import_adapter(CUBE, directory, name="copy")
    assert (imported.version, imported.manifest.origin) == (1, "import")
    assert imported.sources == ()
    assert imported.manifest.parameters == trained.manifest.parameters
    ask = {"cube": CUBE, "max_new_tokens": 8, "retrieve": False}
    assert (
        mos.chat("where is alice", adapter="copy", **ask).tokens
        == mos.chat("where is alice", adapter="trip", **ask).tokens
    )


def test_a_peft_directory_made_by_peft_imports(
    facts: tuple[MemOS, MemoryItem, MemoryItem], tmp_path: Path
) -> None:
    mos = facts[0]
    base = AutoModelForCausalLM.from_pretrained(
        tiny_model_dir(tmp_path / "base"), local_files_only=True
    )
    config = LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"])
    peft_model = get_peft_model(base, config)
    peft_model.save_pretrained(tmp_path / "peft")
    entry = mos.lora.import_adapter(CUBE, tmp_path / "peft", name="outside")
    assert entry.manifest.lora.target_modules == ("q_proj", "v_proj")
    assert mos.chat("where is alice", cube=CUBE, adapter="outside", max_new_tokens=2).adapter


def test_an_adapter_of_another_base_model_is_refused(
    facts: tuple[MemOS, MemoryItem, MemoryItem],
    trained: AdapterEntry,
    tmp_path: Path,
    data_dir: Path,
) -> None:
    mos = facts[0]
    exported = mos.lora.export(CUBE, "trip", tmp_path / "trip")
    mos.close()
    other = LocalModel.load(tiny_model_dir(tmp_path / "other", seed=1), cache_dir=tmp_path)
    with MemOS.open(data_dir, embedder=HashEmbedder(64), model=other) as elsewhere:
        with pytest.raises(ModelMismatch):
            elsewhere.lora.activate(elsewhere.lora.show(CUBE, "trip"))
        with pytest.raises(ModelMismatch):
            elsewhere.chat("where is alice", cube=CUBE, adapter="trip")
        before = elsewhere.log(CUBE)
        with pytest.raises(ModelMismatch):
            elsewhere.lora.import_adapter(CUBE, exported, name="again")
        assert elsewhere.log(CUBE) == before


# crafted input ----------------------------------------------------------------------------


class Marker:
    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.write_text, (self.path, "ran"))


def crafted_dirs(source: Path, root: Path) -> dict[str, tuple[Path, type[Exception]]]:
    """Directories derived from a valid export, each broken in one way."""
    weights = load_file(source / "adapter_model.safetensors")
    config = json.loads((source / "adapter_config.json").read_text())
    cases: dict[str, tuple[dict[str, Any] | str, dict[str, torch.Tensor] | bytes, type]] = {
        "config not json": ("{nope", weights, CorruptArtifact),
        "config a list": ("[]", weights, CorruptArtifact),
        "not lora": (config | {"peft_type": "IA3"}, weights, CorruptArtifact),
        "dora": (config | {"use_dora": True}, weights, CorruptArtifact),
        "regex targets": (config | {"target_modules": ".*proj"}, weights, CorruptArtifact),
        "zero rank": (config | {"r": 0}, weights, CorruptArtifact),
        "other rank": (config | {"r": config["r"] * 2}, weights, ModelMismatch),
        "fewer targets": (config | {"target_modules": ["q_proj"]}, weights, ModelMismatch),
        "extra tensor": (config, weights | {"x.lora_A.weight": torch.zeros(2, 2)}, ModelMismatch),
        "missing tensor": (config, dict(list(weights.items())[1:]), ModelMismatch),
        "nan": (config, {k: v.fill_(float("nan")) for k, v in weights.items()}, CorruptArtifact),
        "integer": (config, {k: v.to(torch.int32) for k, v in weights.items()}, CorruptArtifact),
        "pickle": (config, pickle.dumps(Marker(root / "ran.txt")), CorruptArtifact),
        "garbage": (config, b"\x00" * 64, CorruptArtifact),
    }
    made = {}
    for n, (case, (cfg, tensors, error)) in enumerate(cases.items()):
        directory = root / f"case-{n}"
        directory.mkdir(parents=True)
        text = cfg if isinstance(cfg, str) else json.dumps(cfg)
        (directory / "adapter_config.json").write_text(text)
        target = directory / "adapter_model.safetensors"
        if isinstance(tensors, bytes):
            target.write_bytes(tensors)
        else:
            save_file({k: v.contiguous() for k, v in tensors.items()}, target)
        made[case] = (directory, error)
    return made


def test_crafted_adapter_directories_get_typed_errors_and_run_nothing(
    facts: tuple[MemOS, MemoryItem, MemoryItem], trained: AdapterEntry, tmp_path: Path
) -> None:
    mos = facts[0]
    source = mos.lora.export(CUBE, "trip", tmp_path / "source")
    (source / "memos_manifest.json").unlink()
    before = mos.log(CUBE)
    for case, (directory, error) in crafted_dirs(source, tmp_path / "crafted").items():
        with pytest.raises(error):
            mos.lora.import_adapter(CUBE, directory, name="crafted")
        assert mos.log(CUBE) == before, case
    assert not (tmp_path / "crafted" / "ran.txt").exists()


def test_pickled_bin_weights_and_non_directories_are_refused(
    facts: tuple[MemOS, MemoryItem, MemoryItem], tmp_path: Path
) -> None:
    mos = facts[0]
    directory = tmp_path / "bin"
    directory.mkdir()
    (directory / "adapter_config.json").write_text("{}")
    (directory / "adapter_model.bin").write_bytes(pickle.dumps(Marker(tmp_path / "ran.txt")))
    with pytest.raises(InvalidInput, match="pickled"):
        mos.lora.import_adapter(CUBE, directory, name="bin")
    with pytest.raises(InvalidInput):
        mos.lora.import_adapter(CUBE, tmp_path / "absent", name="none")
    assert not (tmp_path / "ran.txt").exists()
    assert mos.lora.list(CUBE) == []


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (lambda m, a: m.lora.consolidate(CUBE, [a.id], name="bad name!"), InvalidInput),
        (lambda m, a: m.lora.consolidate(CUBE, [a.id], name=""), InvalidInput),
        (lambda m, a: m.lora.consolidate(CUBE, [a.id], name="x", query="alice"), InvalidInput),
        (lambda m, a: m.lora.consolidate(CUBE, name="x"), InvalidInput),
        (lambda m, a: m.lora.consolidate(CUBE, [], name="x"), InvalidInput),
        (lambda m, a: m.lora.consolidate(CUBE, [a.id, a.id], name="x"), InvalidInput),
        (lambda m, a: m.lora.consolidate(CUBE, ["nope"], name="x"), ItemNotFound),
        (lambda m, a: m.lora.consolidate(CUBE, [a.id], name="x", recipe={"rank": 0}), InvalidInput),
        (lambda m, a: m.lora.consolidate(CUBE, [a.id], name="x", recipe={"lr": 1}), InvalidInput),
        (lambda m, a: m.lora.show(CUBE, "absent"), NotFound),
        (lambda m, a: m.lora.attach(CUBE, "absent"), NotFound),
        (lambda m, a: m.lora.retrain(CUBE, "absent"), NotFound),
        (lambda m, a: m.lora.delete(CUBE, "absent"), NotFound),
        (lambda m, a: m.chat("alice", cube=CUBE, adapter="absent"), NotFound),
    ],
)
def test_bad_requests_raise_typed_errors_and_write_nothing(
    facts: tuple[MemOS, MemoryItem, MemoryItem], call: Any, error: type[Exception]
) -> None:
    mos, alice, _ = facts
    before = mos.log(CUBE)
    with pytest.raises(error):
        call(mos, alice)
    assert mos.log(CUBE) == before


def test_adapters_travel_with_a_cube_export(
    facts: tuple[MemOS, MemoryItem, MemoryItem],
    trained: AdapterEntry,
    tmp_path: Path,
    tiny_model: LocalModel,
) -> None:
    mos = facts[0]
    mos.lora.attach(CUBE, "trip")
    exported = mos.export_cube(CUBE, tmp_path / "export")
    expected = mos.chat("where is alice", cube=CUBE, max_new_tokens=6, retrieve=False)
    with MemOS.open(tmp_path / "other", embedder=HashEmbedder(64), model=tiny_model) as other:
        other.import_cube(exported)
        assert other.lora.list(CUBE) == [trained]
        assert other.verify(CUBE).ok
        reply = other.chat("where is alice", cube=CUBE, max_new_tokens=6, retrieve=False)
    assert reply.adapter == trained.id
    assert reply.tokens == expected.tokens


# the real model ---------------------------------------------------------------------------

SMOL_FACTS = (
    "Quillon Marsh was born in the harbour town of Edvale in 1872.",
    "The Vantrell Bridge over the river Oskam was opened by Mayor Ilse Dorn.",
    "Pemberly Strand keeps a pet tortoise named Gubbins.",
)


@pytest.mark.slow
def test_smollm2_recalls_consolidated_facts_and_forgets_a_deleted_one(
    data_dir: Path, smollm2: LocalModel
) -> None:
    with MemOS.open(data_dir, embedder=HashEmbedder(64), model=smollm2) as mos:
        mos.create_cube(CUBE)
        items = [mos.add(fact, cube=CUBE) for fact in SMOL_FACTS]
        assert recall(smollm2, list(SMOL_FACTS), adapter=None) == 0.0
        recipe = {"max_steps": 24, "recall_every": 6}
        ids = [i.id for i in items]
        entry = mos.lora.consolidate(CUBE, ids, name="smol", recipe=recipe, density=None)
        slot = mos.lora.activate(entry)
        assert recall(smollm2, list(SMOL_FACTS), adapter=slot) >= 2 / 3
        mos.delete(items[0].id)
        retrained = mos.lora.retrain(CUBE, "smol")
        assert recall(smollm2, [SMOL_FACTS[0]], adapter=mos.lora.activate(retrained)) == 0.0


def test_a_version_number_taken_meanwhile_goes_to_the_next(
    facts: tuple[MemOS, MemoryItem, MemoryItem], trained: AdapterEntry
) -> None:
    """A training that counted the versions before another one landed (two workers training
    one adapter) commits under the next free number instead of a second v1."""
    mos, _, _ = facts
    info = mos.get_cube(CUBE)
    catalog = mos.lora._tier
    late = catalog._commit(info, trained.manifest, trained.blob, trained.size, False, None, "late")
    assert (trained.version, late.version) == (1, 2)
    assert [e.version for e in mos.lora.list(CUBE, "trip")] == [1, 2]
    assert mos.verify(CUBE).ok


def test_chats_through_an_adapter_are_unchanged_while_another_one_trains(
    facts: tuple[MemOS, MemoryItem, MemoryItem], trained: AdapterEntry
) -> None:
    """Training adds, points and removes LoRA layers on the model that chats run through: each
    of those changes waits for the pass in flight, so a concurrent chat through another adapter
    (or none) answers exactly as it does alone."""
    mos, _, paris = facts
    ask = {"cube": CUBE, "max_new_tokens": 8, "retrieve": False}
    alone = {
        name: mos.chat("where is alice", adapter=name, **ask).tokens for name in ("trip", None)
    }
    answers: list[tuple[str | None, tuple[int, ...]]] = []
    done = threading.Event()

    def chat_meanwhile() -> None:
        while not done.is_set():
            for name in ("trip", None):
                answers.append((name, mos.chat("where is alice", adapter=name, **ask).tokens))

    chatter = threading.Thread(target=chat_meanwhile)
    chatter.start()
    try:
        # each new version: a slot added, trained, checked and removed
        for seed in range(8):
            mos.lora.consolidate(CUBE, [paris.id], name="paris", recipe=FAST | {"seed": seed})
            if len(answers) >= 20:
                break
    finally:
        done.set()
        chatter.join()
    assert len(answers) >= 6
    assert all(tokens == alone[name] for name, tokens in answers), answers


def test_a_process_keeps_a_bounded_number_of_adapters_loaded(
    facts: tuple[MemOS, MemoryItem, MemoryItem], trained: AdapterEntry, tiny_model: LocalModel
) -> None:
    """Each version chat asks for is loaded once; past MAX_LOADED_ADAPTERS the one asked for
    least recently goes, unless a stream is generating through it."""
    mos, _, _ = facts
    versions = [trained]
    for _ in range(MAX_LOADED_ADAPTERS + 1):
        versions.append(mos.lora.rollback(CUBE, "trip", to_version=1))
    first = mos.lora.activate(versions[0])
    with tiny_model.adapters.held(first):  # a stream through it is under way
        slots = [mos.lora.activate(entry) for entry in versions[1:]]
        assert first in tiny_model.adapters.names
    loaded = [s for s in tiny_model.adapters.names if s.startswith("lora-")]
    assert len(loaded) <= MAX_LOADED_ADAPTERS + 1  # the held one stayed beyond the bound
    assert slots[-MAX_LOADED_ADAPTERS:] == [s for s in slots if s in loaded]
    mos.lora.activate(versions[-1])  # nothing holds the first one now
    assert first not in tiny_model.adapters.names
    loaded = [s for s in tiny_model.adapters.names if s.startswith("lora-")]
    assert len(loaded) <= MAX_LOADED_ADAPTERS
    # an evicted version loads again when asked for, and answers as before
    ask = {"cube": CUBE, "max_new_tokens": 8, "retrieve": False}
    before = mos.chat("where is alice", adapter="trip", **ask).tokens
    assert mos.lora.activate(versions[0]) in tiny_model.adapters.names
    assert mos.chat("where is alice", adapter="trip", **ask).tokens == before
