"""Unlearning without retraining: Selective Synaptic Dampening (SSD; Foster, Schoepf &
Brintrup 2023, "Fast Machine Unlearning Without Retraining Through Selective Synaptic
Dampening") of a consolidated LoRA adapter, so that the facts erased from memory leave it.

The importance of a parameter over a set of facts is its diagonal Fisher information: the
mean over the facts of its squared gradient of the loss of one rendering of the fact (the
recipe's first chat prompt about its cue, answered by the fact), taken on the tokens of the
fact's key only (what recall checks), each fact's squares scaled to sum to one so that every
fact weighs the same. With ``D_f`` the importance over the facts to forget and ``D_r`` over the
facts the adapter keeps, every parameter with ``D_f > alpha · D_r`` is multiplied by
``min(lam · D_r / D_f, 1)``; the others are left as they are.

Defaults: ``alpha = 1``, ``lam = 0.5``, not the paper's 10 and 1, which were tuned on full
image classifiers. In a rank-8 LoRA every factor entry serves every fact, so the importances
differ by small factors. On SmolLM2's adapter of 20 made-up facts with 5 erased
(``benchmarks/adapter_forgetting.py``, BENCHMARKS.md "Adapter forgetting"), the defaults left
1/5 of the erased facts recalled and 12/15 of the kept ones (14/15 before), in 9% of a
retrain's time; with the loss on every token and no scaling per fact, 4/5 and 15/15. Lower
``lam`` or ``alpha`` forgets more only by losing kept facts as fast (``lam = 0.1``: 0/5 and
5/15): SSD thins facts out of a LoRA adapter but does not remove them; retraining does.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from pydantic import ConfigDict

from memos.core._model import Model
from memos.errors import InvalidInput
from memos.parametric._manifest import LoraSettings, settings_of

if TYPE_CHECKING:
    import torch

    from memos.llm import LocalModel
    from memos.parametric._train import Example, TrainingRecipe
    from memos.parametric._weights import Weights

ALPHA = 1.0
LAMBDA = 0.5
_FACTS_PER_PASS = 4  # facts whose gradients one forward and backward pass computes
_PREFIX = "base_model.model."  # how peft's saved state names the model's parameters


class DampenReport(Model):
    """What one dampening did."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    dampened: int  # parameters multiplied by a factor below 1
    parameters: int  # the adapter's parameters
    share: float  # dampened / parameters
    seconds: float  # importance included


def importance(
    model: LocalModel, weights: Weights, recipe: TrainingRecipe, facts: Sequence[str]
) -> dict[str, torch.Tensor]:
    """The diagonal Fisher information of every parameter of ``weights`` over ``facts``: the
    mean over the facts of the squared gradient of the loss on the fact's key rendering, each
    fact's scaled to sum to one (see the module's docstring), keyed as ``weights`` (fp32).
    The weights are loaded into a slot of their own for the moment; nothing else on the model
    changes."""
    import torch

    from memos.parametric._density import slot
    from memos.parametric._train import _checked_facts

    facts = _checked_facts(facts)
    lora = settings_of(recipe)
    _check_fits(model, weights, lora)
    examples = sorted(
        ([key_rendering(model, fact, recipe)] for fact in facts),
        key=lambda rows: max(len(e.ids) for e in rows),  # like lengths share a pass
    )
    total = {key: torch.zeros(t.shape, dtype=torch.float32) for key, t in weights.items()}
    name = slot("importance")
    try:
        model.adapters.add(name, lora.peft_kwargs(), weights)
        for start in range(0, len(examples), _FACTS_PER_PASS):
            _add_squares(model, name, examples[start : start + _FACTS_PER_PASS], total)
    finally:
        if name in model.adapters.names:
            model.adapters.remove(name)
    return {key: value / len(facts) for key, value in total.items()}


def key_rendering(model: LocalModel, fact: str, recipe: TrainingRecipe) -> Example:
    """The recipe's first chat prompt asked about ``fact``'s cue, answered by the fact, with
    the loss on the tokens of its key only (:func:`memos.parametric._train.key`): what makes
    the fact recalled. The other tokens (the cue, the words and template every fact shares)
    matter to the kept facts as much as to the forgotten ones and would hide the difference
    dampening looks for; a fact whose key no token spans keeps every label. One rendering, not
    all of consolidation's: on SmolLM2 its importances dampen as well as all three renderings'
    do, in a third of the time."""
    from memos.parametric._train import Example, prompt_ids

    head = prompt_ids(model, recipe.prompts[0], fact)
    ids, on_key = _key_tokens(model, fact)
    labels = [t if k else -100 for t, k in zip(ids, on_key, strict=True)] if any(on_key) else ids
    return Example(tuple(head + ids), (-100,) * len(head) + tuple(labels))


def _key_tokens(model: LocalModel, fact: str) -> tuple[list[int], list[bool]]:
    """The fact's token ids, and whether each one spans a character of a key word."""
    from memos.parametric._train import _key_words

    words = list(re.finditer(r"\S+", fact))
    spans = [(words[n].start(), words[n].end()) for n in _key_words(fact)[0]]
    encoded = model.tokenizer(fact, add_special_tokens=False, return_offsets_mapping=True)
    on_key = [
        any(start < end_word and start_word < end for start_word, end_word in spans)
        for start, end in encoded["offset_mapping"]
    ]
    return [int(t) for t in encoded["input_ids"]], on_key


def _check_fits(model: LocalModel, weights: Weights, lora: LoraSettings) -> None:
    from memos.parametric._weights import expected_shapes

    shapes = {key: tuple(tensor.shape) for key, tensor in weights.items()}
    if shapes != expected_shapes(model.model, lora):
        raise InvalidInput("the weights are not the LoRA factors this recipe gives this model")


def _add_squares(
    model: LocalModel,
    name: str,
    facts: Sequence[Sequence[Example]],
    total: dict[str, torch.Tensor],
) -> None:
    """Add to ``total`` the squared gradient of each fact's loss (its renderings as one
    batch) through adapter ``name``, from one pass over all of them. A LoRA factor is a
    linear layer, so a row's gradient is its output gradient times its input, summed over
    positions (as Opacus computes per-sample gradients); a fact's is the sum over its rows."""
    import torch

    from memos.parametric._train import _collate, _pad_id

    owner = torch.tensor([n for n, rows in enumerate(facts) for _ in rows])
    batch = _collate([e for rows in facts for e in rows], _pad_id(model))
    # one pass at a time with generation on the same model, as training does
    with (
        model._lock,
        model.adapters.active(name) as net,
        _tapped(net, name) as taps,
        torch.enable_grad(),
    ):
        loss = _fact_losses(net, batch, owner, len(facts)).sum()
        grads = torch.autograd.grad(loss, [output for _, _, output in taps])
    per_fact: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        for (key, inputs, _), grad in zip(taps, grads, strict=True):
            rows = torch.einsum("nto,nti->noi", grad, inputs)
            summed = rows.new_zeros((len(facts), *rows.shape[1:])).index_add_(0, owner, rows)
            per_fact[key] = per_fact[key] + summed if key in per_fact else summed
        squares = {key: grad.square() for key, grad in per_fact.items()}
        mass = sum(square.flatten(1).sum(1) for square in squares.values())
        weight = 1.0 / torch.as_tensor(mass).clamp(min=torch.finfo(torch.float32).tiny)
        for key, square in squares.items():
            total[key] += torch.einsum("n,n...->...", weight, square)


def _fact_losses(
    net: Any, batch: dict[str, torch.Tensor], owner: torch.Tensor, facts: int
) -> torch.Tensor:
    """Each fact's mean token loss over its rows (what ``_loss`` gives for its batch)."""
    import torch.nn.functional as F  # noqa: N812

    from memos.parametric._train import _logits

    logits = _logits(net, batch)
    targets = batch["targets"]
    tokens = F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="none"
    ).view_as(targets)
    losses = tokens.new_zeros(facts).index_add_(0, owner, tokens.sum(-1))
    counts = tokens.new_zeros(facts).index_add_(0, owner, (targets != -100).sum(-1).to(tokens))
    return losses / counts


@contextmanager
def _tapped(net: Any, name: str) -> Iterator[list[tuple[str, torch.Tensor, torch.Tensor]]]:
    """While the block runs, every call of adapter ``name``'s LoRA factors appends its key
    (as peft saves it), input and output; the factors require gradients."""
    taps: list[tuple[str, torch.Tensor, torch.Tensor]] = []
    hooks = []
    for path, module in net.named_modules():
        head, _, tail = path.rpartition(".")
        if tail != name or not head.endswith((".lora_A", ".lora_B")):
            continue
        key = f"{_PREFIX}{head}.weight"
        module.weight.requires_grad_(True)  # so that the pass builds a graph through them

        def tap(_: Any, args: tuple[Any, ...], output: torch.Tensor, key: str = key) -> None:
            taps.append((key, args[0].detach(), output))

        hooks.append(module.register_forward_hook(tap))
    try:
        yield taps
    finally:
        for hook in hooks:
            hook.remove()


def dampen(
    model: LocalModel,
    weights: Weights,
    recipe: TrainingRecipe,
    forget: Sequence[str],
    retain: Sequence[str],
    *,
    alpha: float = ALPHA,
    lam: float = LAMBDA,
) -> tuple[Weights, DampenReport]:
    """``weights`` (an adapter ``recipe`` trained on ``forget`` and ``retain``, among others)
    with the parameters that matter to ``forget`` far more than to ``retain`` dampened (SSD,
    see the module's docstring), and what was done. ``weights`` is left as it is; an empty
    ``retain`` counts as no importance anywhere."""
    started = time.perf_counter()
    _check_positive(alpha=alpha, lam=lam)
    forgotten = importance(model, weights, recipe, forget)
    if isinstance(retain, str) or retain:
        kept = importance(model, weights, recipe, retain)
    else:
        kept = {key: value.new_zeros(value.shape) for key, value in forgotten.items()}
    new, count = dampened(weights, forgotten, kept, alpha=alpha, lam=lam)
    total = sum(t.numel() for t in weights.values())
    report = DampenReport(
        dampened=count,
        parameters=total,
        share=count / total,
        seconds=time.perf_counter() - started,
    )
    return new, report


def dampened(
    weights: Mapping[str, torch.Tensor],
    forget: Mapping[str, torch.Tensor],
    retain: Mapping[str, torch.Tensor],
    *,
    alpha: float,
    lam: float,
) -> tuple[Weights, int]:
    """``weights`` dampened by SSD given the importances ``forget`` and ``retain`` (keyed as
    ``weights``, same shapes), and how many parameters were; new tensors of the weights'
    dtypes."""
    import torch

    if not set(weights) == set(forget) == set(retain):
        raise InvalidInput("the importances are not of these weights")
    new: Weights = {}
    count = 0
    for key, tensor in weights.items():
        f, r = forget[key].to(torch.float32), retain[key].to(torch.float32)
        selected = f > alpha * r
        beta = torch.where(selected, (lam * r / f).clamp(max=1.0), torch.ones_like(f))
        new[key] = (tensor.to(torch.float32) * beta).to(tensor.dtype)
        count += int((selected & (beta < 1.0)).sum())
    return new, count


def _check_positive(**values: float) -> None:
    for label, value in values.items():
        if not (math.isfinite(value) and value > 0):
            raise InvalidInput(f"{label} must be a finite number above 0, not {value}")
