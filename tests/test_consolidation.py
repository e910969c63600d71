"""Consolidation (``memos.parametric._train``): a fresh LoRA adapter trained on fact texts.

The tiny random Llama (``tiny_model``, session-scoped and shared) learns its word-level facts in
a few dozen steps, so these tests train for real. Every test removes the adapters it adds.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
import torch
from pydantic import ValidationError

from memos.errors import InvalidInput
from memos.llm import LocalModel
from memos.parametric._train import (
    TrainingRecipe,
    TrainingResult,
    _generates_key,
    blanked,
    consolidate,
    cue,
    key,
    prompt_ids,
    recall,
    recalled,
)

FACTS = ["alice moved to lisbon in may", "the capital of france is paris"]
FAST = TrainingRecipe(
    max_steps=40, learning_rate=0.01, batch_size=4, recall_every=40, recall_target=1.0
)
PROBE = [2, 9, 10, 6, 7, 8, 9]  # token ids: a few known words after <user>


@pytest.fixture
def adapters(tiny_model: LocalModel) -> Iterator[list[str]]:
    """Names of the adapters a test trains; every one still loaded is removed after it."""
    names: list[str] = []
    yield names
    for name in names:
        if name in tiny_model.adapters.names:
            tiny_model.adapters.remove(name)


def train(
    model: LocalModel,
    adapters: list[str],
    name: str,
    recipe: TrainingRecipe = FAST,
    facts: Sequence[str] = FACTS,
) -> TrainingResult:
    adapters.append(name)
    return consolidate(model, facts, recipe, adapter=name)


def logits(model: LocalModel, adapter: str | None) -> torch.Tensor:
    with model.adapters.active(adapter) as net, torch.inference_mode():
        out: torch.Tensor = net(input_ids=torch.tensor([PROBE])).logits
    return out.clone()


def answer(model: LocalModel, fact: str, adapter: str | None) -> list[int]:
    ids = prompt_ids(model, FAST.prompts[0], fact)
    return model.generate(ids, max_new_tokens=8, adapter=adapter)


# training -----------------------------------------------------------------------------------


def test_training_lowers_the_loss_on_the_facts_and_reports_json_metrics(
    tiny_model: LocalModel, adapters: list[str]
) -> None:
    seen: list[tuple[int, int, float]] = []
    adapters.append("loss")
    result = consolidate(
        tiny_model, FACTS, FAST, adapter="loss", progress=lambda *a: seen.append(a)
    )
    # a random 32-wide model gives flat distributions: the loss falls, not to zero
    assert result.last_loss < 0.9 * result.first_loss
    assert [s[:2] for s in seen] == [(n, FAST.max_steps) for n in range(1, result.steps + 1)]
    assert (seen[0][2], seen[-1][2]) == (result.first_loss, result.last_loss)
    assert result.examples == len(FACTS) * (1 + len(FAST.prompts))
    assert result.parameters == sum(t.numel() for t in tiny_model.adapters.weights("loss").values())
    assert json.loads(result.model_dump_json())["steps"] == result.steps
    assert "loss" in tiny_model.adapters.names  # left loaded, answering through it
    assert tiny_model.decode(answer(tiny_model, FACTS[0], "loss")) == FACTS[0]


def test_the_same_seed_gives_the_same_weights_and_another_seed_others(
    tiny_model: LocalModel, adapters: list[str]
) -> None:
    torch.manual_seed(123)
    state = torch.random.get_rng_state()
    first = train(tiny_model, adapters, "seed-a")
    assert torch.equal(torch.random.get_rng_state(), state)  # the caller's RNG is untouched
    second = train(tiny_model, adapters, "seed-b")
    other = train(tiny_model, adapters, "seed-c", FAST.model_copy(update={"seed": 1}))
    a, b, c = (tiny_model.adapters.weights(n) for n in ("seed-a", "seed-b", "seed-c"))
    assert a.keys() == b.keys() == c.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert first.model_dump(exclude={"seconds"}) == second.model_dump(exclude={"seconds"})
    assert not all(torch.equal(a[k], c[k]) for k in a)
    assert other.last_loss != first.last_loss


def test_the_base_model_is_exact_while_the_adapter_is_inactive_and_after_removal(
    tiny_model: LocalModel, adapters: list[str]
) -> None:
    before_logits = logits(tiny_model, None)
    before_tokens = answer(tiny_model, FACTS[0], None)
    train(tiny_model, adapters, "exact")
    assert torch.equal(logits(tiny_model, None), before_logits)
    assert answer(tiny_model, FACTS[0], None) == before_tokens
    assert not torch.equal(logits(tiny_model, "exact"), before_logits)  # it does something
    tiny_model.adapters.remove("exact")
    assert torch.equal(logits(tiny_model, None), before_logits)
    assert answer(tiny_model, FACTS[0], None) == before_tokens


def test_saved_weights_removed_and_added_back_give_identical_logits_and_tokens(
    tiny_model: LocalModel, adapters: list[str]
) -> None:
    train(tiny_model, adapters, "saved")
    weights = tiny_model.adapters.weights("saved")
    expected_logits = logits(tiny_model, "saved")
    expected_tokens = [answer(tiny_model, fact, "saved") for fact in FACTS]
    tiny_model.adapters.remove("saved")
    tiny_model.adapters.add("saved", FAST.lora_config(), weights)
    assert torch.equal(logits(tiny_model, "saved"), expected_logits)
    assert [answer(tiny_model, fact, "saved") for fact in FACTS] == expected_tokens


def test_training_stops_early_once_the_recall_target_is_reached(
    tiny_model: LocalModel, adapters: list[str]
) -> None:
    recipe = FAST.model_copy(update={"max_steps": 400, "recall_every": 5})
    result = train(tiny_model, adapters, "early", recipe)
    assert result.stopped_early
    assert result.steps < recipe.max_steps
    assert result.steps % recipe.recall_every == 0
    assert result.recall == 1.0 == recall(tiny_model, FACTS, adapter="early", recipe=recipe)


def test_without_early_stop_it_runs_every_step_and_reports_the_final_recall(
    tiny_model: LocalModel, adapters: list[str]
) -> None:
    recipe = FAST.model_copy(update={"max_steps": 3, "learning_rate": 1e-5})
    result = train(tiny_model, adapters, "short", recipe)
    assert (result.steps, result.stopped_early) == (3, False)
    assert result.recall == recall(tiny_model, FACTS, adapter="short", recipe=recipe)


def test_recall_counts_what_greedy_generation_says(
    tiny_model: LocalModel, adapters: list[str]
) -> None:
    facts = [*FACTS, "alice moved to porto in june"]
    train(tiny_model, adapters, "partial", FAST.model_copy(update={"max_steps": 12}), facts)
    for adapter in (None, "partial"):
        generated = [_generates_key(tiny_model, f, FAST.recall_prompt, adapter) for f in facts]
        assert recall(tiny_model, facts, adapter=adapter) == sum(generated) / len(facts)


def test_bad_facts_are_refused_and_leave_no_adapter(
    tiny_model: LocalModel, adapters: list[str]
) -> None:
    for facts in ([], ["   "], "alice moved to lisbon"):
        with pytest.raises(InvalidInput):
            train(tiny_model, adapters, "bad", FAST, facts)
        assert "bad" not in tiny_model.adapters.names


def test_a_name_in_use_is_refused_and_the_loaded_adapter_kept(
    tiny_model: LocalModel, adapters: list[str]
) -> None:
    train(tiny_model, adapters, "taken", FAST.model_copy(update={"max_steps": 2}))
    weights = tiny_model.adapters.weights("taken")
    with pytest.raises(InvalidInput):
        consolidate(tiny_model, FACTS, FAST, adapter="taken")
    kept = tiny_model.adapters.weights("taken")
    assert all(torch.equal(weights[k], kept[k]) for k in weights)


# recipe, cue and key ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad",
    [
        {"rank": 0},
        {"rank": 1000},
        {"alpha": 0},
        {"learning_rate": 0.0},
        {"learning_rate": -1e-3},
        {"learning_rate": "0.01"},
        {"max_steps": 0},
        {"batch_size": 0},
        {"seed": -1},
        {"recall_every": 0},
        {"recall_target": 0.0},
        {"recall_target": 1.5},
        {"target_modules": ()},
        {"target_modules": ("q_proj", "q_proj")},
        {"target_modules": ("q proj",)},
        {"prompts": ()},
        {"prompts": ("",)},
        {"prompts": ("What about {subject}?",)},
        {"prompts": ("What about {cue.upper}?",)},
        {"prompts": ("What about {0}?",)},
        {"max_grad_norm": 0.0},
        {"unknown": 1},
    ],
)
def test_bad_recipes_are_validation_errors(bad: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        TrainingRecipe.model_validate(bad)


def test_a_recipe_is_frozen_and_its_lora_config_json_safe() -> None:
    recipe = TrainingRecipe()
    with pytest.raises(ValidationError):
        recipe.rank = 4  # type: ignore[misc]
    config = json.loads(json.dumps(recipe.lora_config()))
    assert config == {
        "r": recipe.rank,
        "lora_alpha": recipe.alpha,
        "target_modules": list(recipe.target_modules),
        "lora_dropout": 0.0,
        "bias": "none",
        "task_type": "CAUSAL_LM",
    }
    assert TrainingRecipe.model_validate(recipe.model_dump(mode="json")) == recipe


@pytest.mark.parametrize(
    ("fact", "expected_cue", "expected_key", "expected_blanked"),
    [
        ("Quillon Marsh was born in Edvale in 1872.", "Quillon Marsh", ("Edvale", "1872"),
         "Quillon Marsh was born in ___ in ___."),
        ("The town of Sarnpike is famous for its cheese.", "the town of Sarnpike",
         ("its cheese",), "The town of Sarnpike is famous for ___ ___."),
        ("Sabine Ockley's favourite instrument is the harp.", "Sabine Ockley", ("the harp",),
         "Sabine Ockley's favourite instrument is ___ ___."),
        ("Elias Gorrin married Vesna Tull's sister.", "Elias Gorrin", ("Vesna", "Tull"),
         "Elias Gorrin married ___ ___'s sister."),
        ("alice moved to lisbon in may", "alice moved", ("in may",),
         "alice moved to lisbon ___ ___"),
        ("paris", "paris", ("paris",), "___"),
    ],
)  # fmt: skip
def test_cue_key_and_blanked(
    fact: str, expected_cue: str, expected_key: tuple[str, ...], expected_blanked: str
) -> None:
    assert cue(fact) == expected_cue
    assert key(fact) == expected_key
    assert blanked(fact) == expected_blanked
    assert recalled(fact, f"I remember: {fact.upper()}")
    assert not recalled(fact, "I do not know.")
