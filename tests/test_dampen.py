"""Selective synaptic dampening (``memos.parametric._dampen``) of a consolidated adapter.

The tiny random Llama cannot learn facts the way a real model does, so its tests check the
mechanics: the importance is the mean squared per-fact gradient, and dampening scales down
exactly the parameters whose forget importance dominates. One test marked ``slow`` checks on
SmolLM2 that dampened facts are no longer recalled while most kept ones are.
"""

from __future__ import annotations

from collections.abc import Sequence

import pytest
import torch

from memos.errors import InvalidInput
from memos.llm import LocalModel
from memos.parametric._dampen import (
    DampenReport,
    dampen,
    dampened,
    importance,
    key_rendering,
)
from memos.parametric._train import (
    TrainingRecipe,
    _collate,
    _loss,
    _pad_id,
    consolidate,
    recall,
    renderings,
)
from memos.parametric._weights import Weights

FACTS = [
    "alice moved to lisbon in may",
    "the capital of france is paris",
    "alice moved to porto in june",
    "where is the capital of france",
    "paris is in france",
]
FORGET, RETAIN = FACTS[:2], FACTS[2:]
FAST = TrainingRecipe(
    max_steps=30, learning_rate=0.01, batch_size=4, recall_every=30, recall_target=1.0
)


@pytest.fixture(scope="module")
def trained(tiny_model: LocalModel) -> Weights:
    """An adapter consolidated on ``FACTS`` (removed from the model; its weights kept)."""
    consolidate(tiny_model, FACTS, FAST, adapter="dampen-trained")
    weights = tiny_model.adapters.weights("dampen-trained")
    tiny_model.adapters.remove("dampen-trained")
    return weights


def copied(weights: Weights) -> Weights:
    return {key: tensor.clone() for key, tensor in weights.items()}


def same(a: Weights, b: Weights) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def direct_importance(model: LocalModel, weights: Weights, facts: Sequence[str]) -> Weights:
    """The mean over the facts of the squared gradient of ``_loss`` on the fact's key
    rendering, each fact's scaled to sum to 1; one pass per fact."""
    model.adapters.add("direct", FAST.lora_config(), weights)
    try:
        params = {n: p for n, p in model.model.named_parameters() if ".direct." in n}
        for param in params.values():
            param.requires_grad_(True)
        total = {n: torch.zeros_like(p) for n, p in params.items()}
        for fact in facts:
            batch = _collate([key_rendering(model, fact, FAST)], _pad_id(model))
            with model.adapters.active("direct") as net, torch.enable_grad():
                grads = torch.autograd.grad(_loss(net, batch), list(params.values()))
            mass = sum(float(grad.square().sum()) for grad in grads)
            for name, grad in zip(params, grads, strict=True):
                total[name] += grad.square() / mass
    finally:
        model.adapters.remove("direct")
    prefix = "base_model.model."
    return {prefix + n.replace(".direct.", "."): t / len(facts) for n, t in total.items()}


# importance ---------------------------------------------------------------------------------


def test_importance_has_the_weights_keys_and_shapes_and_leaves_the_model_as_it_was(
    tiny_model: LocalModel, trained: Weights
) -> None:
    before, names = copied(trained), tiny_model.adapters.names
    found = importance(tiny_model, trained, FAST, FACTS)
    assert found.keys() == trained.keys()
    for key, value in found.items():
        assert value.shape == trained[key].shape
        assert value.dtype == torch.float32
        assert bool((value >= 0).all())
        assert bool(torch.isfinite(value).all())
    assert sum(float(v.sum()) for v in found.values()) > 0
    assert same(trained, before)
    assert tiny_model.adapters.names == names


def test_importance_is_the_mean_squared_gradient_of_each_facts_training_loss(
    tiny_model: LocalModel, trained: Weights
) -> None:
    """Computed several facts a pass; the same as one backward pass per fact."""
    found = importance(tiny_model, trained, FAST, FACTS)
    expected = direct_importance(tiny_model, trained, FACTS)
    for key, value in expected.items():
        assert torch.allclose(found[key], value, rtol=1e-4, atol=1e-12 + 1e-5 * float(value.max()))


def test_the_key_rendering_labels_the_facts_key_tokens_only(tiny_model: LocalModel) -> None:
    fact = "alice moved to lisbon in may"  # nothing named: its key is its last two words
    keyed = key_rendering(tiny_model, fact, FAST)
    asked = renderings(tiny_model, fact, FAST)[1]  # the first chat prompt, with the end token
    assert keyed.ids == asked.ids[:-1]
    labelled = [label for label in keyed.labels if label != -100]
    assert labelled == [tiny_model.tokenizer.convert_tokens_to_ids(w) for w in ("in", "may")]


def test_importance_refuses_weights_of_another_shape(
    tiny_model: LocalModel, trained: Weights
) -> None:
    names = tiny_model.adapters.names
    other = FAST.model_copy(update={"rank": 4})
    with pytest.raises(InvalidInput):
        importance(tiny_model, trained, other, FACTS)
    assert tiny_model.adapters.names == names
    with pytest.raises(InvalidInput):
        importance(tiny_model, trained, FAST, [])


# dampening by importance --------------------------------------------------------------------


def importances(weights: Weights, seed: int) -> tuple[Weights, Weights]:
    generator = torch.Generator().manual_seed(seed)
    draw = {k: torch.rand(t.shape, generator=generator) for k, t in weights.items()}
    other = {k: torch.rand(t.shape, generator=generator) for k, t in weights.items()}
    return draw, other


@pytest.mark.parametrize(("alpha", "lam"), [(1.0, 1.0), (2.0, 0.5), (10.0, 1.0), (0.5, 3.0)])
def test_only_parameters_whose_forget_importance_dominates_are_scaled_down(
    trained: Weights, alpha: float, lam: float
) -> None:
    forget, retain = importances(trained, 1)
    new, count = dampened(trained, forget, retain, alpha=alpha, lam=lam)
    touched = 0
    for key, old in trained.items():
        selected = forget[key] > alpha * retain[key]
        beta = torch.clamp(lam * retain[key] / forget[key], max=1.0)
        assert torch.equal(new[key][~selected], old[~selected])
        assert torch.allclose(new[key][selected], old[selected] * beta[selected])
        assert bool((new[key].abs() <= old.abs()).all())  # beta ≤ 1: nothing grows
        assert bool((new[key] * old >= 0).all())  # nor changes sign
        touched += int((selected & (beta < 1)).sum())
    assert count == touched > 0


def test_nothing_is_dampened_where_only_the_retained_facts_matter(trained: Weights) -> None:
    _, retain = importances(trained, 2)
    zeros = {k: torch.zeros_like(t) for k, t in trained.items()}
    new, count = dampened(trained, zeros, retain, alpha=1.0, lam=1.0)
    assert count == 0
    assert same(new, trained)


def test_mismatched_importances_are_refused(trained: Weights) -> None:
    forget, retain = importances(trained, 3)
    del retain[next(iter(retain))]
    with pytest.raises(InvalidInput):
        dampened(trained, forget, retain, alpha=1.0, lam=1.0)


# dampen -------------------------------------------------------------------------------------


def test_dampen_returns_new_weights_and_a_report_and_mutates_nothing(
    tiny_model: LocalModel, trained: Weights
) -> None:
    before, names = copied(trained), tiny_model.adapters.names
    new, report = dampen(tiny_model, trained, FAST, FORGET, RETAIN, alpha=1.0)
    assert same(trained, before)
    assert isinstance(report, DampenReport)
    assert report.parameters == sum(t.numel() for t in trained.values())
    assert 0 < report.dampened < report.parameters
    assert report.share == report.dampened / report.parameters
    assert report.seconds > 0
    assert new.keys() == trained.keys()
    assert all(new[k].dtype == t.dtype and new[k].shape == t.shape for k, t in trained.items())
    changed = sum(int((new[k] != t).sum()) for k, t in trained.items())
    assert 0 < changed <= report.dampened
    assert all(bool((new[k].abs() <= t.abs()).all()) for k, t in trained.items())
    assert tiny_model.adapters.names == names


def test_dampen_is_deterministic(tiny_model: LocalModel, trained: Weights) -> None:
    first, a = dampen(tiny_model, trained, FAST, FORGET, RETAIN, alpha=1.0)
    second, b = dampen(tiny_model, trained, FAST, FORGET, RETAIN, alpha=1.0)
    assert same(first, second)
    assert a.model_dump(exclude={"seconds"}) == b.model_dump(exclude={"seconds"})


def test_forgetting_what_is_also_retained_dampens_nothing(
    tiny_model: LocalModel, trained: Weights
) -> None:
    """Equal importances never pass ``D_f > alpha · D_r`` for alpha ≥ 1."""
    new, report = dampen(tiny_model, trained, FAST, RETAIN, RETAIN, alpha=1.0)
    assert report.dampened == 0
    assert same(new, trained)


def test_with_nothing_retained_every_parameter_the_forgotten_facts_use_is_zeroed(
    tiny_model: LocalModel, trained: Weights
) -> None:
    new, report = dampen(tiny_model, trained, FAST, FACTS, [])
    used = importance(tiny_model, trained, FAST, FACTS)
    for key, value in used.items():
        assert bool((new[key][value > 0] == 0).all())
        assert torch.equal(new[key][value == 0], trained[key][value == 0])
    assert report.dampened == sum(int((v > 0).sum()) for v in used.values())


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf")])
def test_alpha_and_lambda_must_be_positive_and_finite(
    tiny_model: LocalModel, trained: Weights, bad: float
) -> None:
    with pytest.raises(InvalidInput):
        dampen(tiny_model, trained, FAST, FORGET, RETAIN, alpha=bad)
    with pytest.raises(InvalidInput):
        dampen(tiny_model, trained, FAST, FORGET, RETAIN, lam=bad)


# the real model -----------------------------------------------------------------------------

SMOL_FACTS = (
    "Quillon Marsh was born in the harbour town of Edvale in 1872.",
    "Pemberly Strand keeps a pet tortoise named Gubbins.",
    "Tavi Orenko invented a brass pocket sextant called the Lumeric.",
    "Mirela Stanhoff won the Garnet Cup for chess in 1934.",
    "Captain Idris Fenwold sailed the ship Amberwake to the island of Tessaly.",
    "Nadir Thorsby climbed Mount Keldra at the age of sixty.",
)


@pytest.mark.slow
def test_smollm2_forgets_dampened_facts_and_keeps_most_others(smollm2: LocalModel) -> None:
    """The recipe of the consolidation test in ``test_lora.py``; about a minute on 2 cores."""
    recipe = TrainingRecipe(max_steps=24, recall_every=6)
    forget, retain = list(SMOL_FACTS[:2]), list(SMOL_FACTS[2:])
    consolidate(smollm2, SMOL_FACTS, recipe, adapter="dampen-smol")
    weights = smollm2.adapters.weights("dampen-smol")
    smollm2.adapters.remove("dampen-smol")
    new, report = dampen(smollm2, weights, recipe, forget, retain)
    assert 0 < report.share < 0.5
    before: dict[str, float] = {}
    after: dict[str, float] = {}
    for label, candidate, out in (("before", weights, before), ("after", new, after)):
        smollm2.adapters.add(label, recipe.lora_config(), candidate)
        try:
            out["forget"] = recall(smollm2, forget, adapter=label, recipe=recipe)
            out["retain"] = recall(smollm2, retain, adapter=label, recipe=recipe)
        finally:
            smollm2.adapters.remove(label)
    assert before["forget"] == 1.0
    assert before["retain"] >= 0.75
    # measured on 2 threads: 0/2 erased and 3/4 kept recalled (before: 2/2 and 4/4)
    assert after["forget"] <= 0.5
    assert after["retain"] >= 0.75
