"""Consolidation: a few gradient steps of a fresh LoRA adapter on memory texts (PERK-style
test-time learning), so the model answers from its parameters with no memory in the prompt.

The trainer sees only the fact texts. It renders each fact several ways and trains next-token
loss on the fact's tokens only (every other label is -100):

- the fact as plain text;
- chat turns whose user message is a prompt built from the fact's *cue* (its first words: up to
  the end of its first run of capitalised words after any leading article, else its first two
  words) and whose assistant message is the whole fact, ended by the end-of-sequence token.

A fact counts as *recalled* when greedy generation from the recall prompt's rendering (by
default a phrasing the adapter is not trained on) contains its *key*: the capitalised words and
numbers after the cue, or, when it has none, its last two words. The same check stops training
early and gives the result's ``recall``.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from string import Formatter
from typing import TYPE_CHECKING, Any

from pydantic import ConfigDict, Field, field_validator

from memos.core._model import Model
from memos.errors import InvalidInput

if TYPE_CHECKING:
    import torch

    from memos.llm import LocalModel

Progress = Callable[[int, int, float], None]
LLAMA_LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
_ARTICLES = frozenset({"the", "a", "an"})
_MODULE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]{0,99}$")
_STRIP = ".,;:!?\"'()[]{}"
_MAX_FACT_CHARS = 4000
_CHECK_BATCH = 16


class TrainingRecipe(Model):
    """How an adapter is trained on facts; the defaults are the ones measured in
    ``benchmarks/lora_recall.py`` (SmolLM2-135M, 20 facts, 2 CPU threads)."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    rank: int = Field(default=8, ge=1, le=256)
    alpha: int = Field(default=16, ge=1, le=4096)
    # lists are accepted for the tuples (a recipe comes from JSON); nothing else is coerced
    target_modules: tuple[str, ...] = Field(
        default=LLAMA_LINEAR, min_length=1, max_length=64, strict=False
    )
    learning_rate: float = Field(default=3e-3, gt=0.0, le=1.0)
    max_steps: int = Field(default=40, ge=1, le=100_000)
    batch_size: int = Field(default=8, ge=1, le=1024)
    seed: int = Field(default=0, ge=0, le=2**32 - 1)
    recall_every: int = Field(default=5, ge=1, le=100_000)
    # the recall check asks a phrasing not trained on; demanding every fact back from it kept
    # SmolLM2 training to max_steps on some seeds for a point or two of recall
    recall_target: float = Field(default=0.9, gt=0.0, le=1.0)
    # user messages of the chat renderings: "{cue}" is replaced by the fact's cue, "{blanked}"
    # by the fact with its key blanked out
    prompts: tuple[str, ...] = Field(
        default=("What do you remember about {cue}?", "Tell me about {cue}."),
        min_length=1,
        max_length=32,
        strict=False,
    )
    # the recall check's prompt; by default a phrasing not trained on, so that early stopping
    # waits until the facts come back to a question worded otherwise
    recall_prompt: str = "What do you know about {cue}?"
    plain_text: bool = True  # also train on the fact as plain text
    max_grad_norm: float = Field(default=1.0, gt=0.0, le=1e6)

    @field_validator("target_modules")
    @classmethod
    def _modules(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        bad = [name for name in value if not _MODULE.fullmatch(name)]
        if bad or len(set(value)) != len(value):
            raise ValueError(f"target modules must be distinct module names, not {bad or value}")
        return value

    @field_validator("prompts")
    @classmethod
    def _prompts(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for prompt in value:
            _check_prompt(prompt)
        return value

    @field_validator("recall_prompt")
    @classmethod
    def _recall_prompt(cls, value: str) -> str:
        return _check_prompt(value)

    def lora_config(self) -> dict[str, Any]:
        """``peft.LoraConfig`` keyword arguments, JSON-safe."""
        return {
            "r": self.rank,
            "lora_alpha": self.alpha,
            "target_modules": list(self.target_modules),
            "lora_dropout": 0.0,
            "bias": "none",
            "task_type": "CAUSAL_LM",
        }


def _check_prompt(prompt: str) -> str:
    fields = {f for _, f, _, _ in Formatter().parse(prompt) if f is not None}
    if not prompt.strip() or len(prompt) > 500 or not fields <= {"cue", "blanked"}:
        raise ValueError(f"a prompt is 1-500 characters, fields {{cue}} or {{blanked}}: {prompt!r}")
    return prompt


class TrainingResult(Model):
    """What one consolidation did; ``first_loss``/``last_loss`` are the mean token losses of
    the first and the last step's batch."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    steps: int
    seconds: float
    first_loss: float
    last_loss: float
    recall: float  # fraction of the facts recalled at the end
    stopped_early: bool
    examples: int  # renderings trained on
    parameters: int  # trainable adapter parameters


@dataclass(frozen=True)
class Example:
    """One rendering: token ids and their labels (-100 where no loss is taken)."""

    ids: tuple[int, ...]
    labels: tuple[int, ...]


# -- facts: cue and key ---------------------------------------------------------------------


def _words(fact: str) -> list[str]:
    return fact.split()


def _bare(word: str) -> str:
    word = word.strip(_STRIP)
    return word[:-2] if word.endswith(("'s", "’s")) else word


def _capitalised(word: str) -> bool:
    bare = _bare(word)
    return bool(bare) and bare[0].isupper()


def cue_length(fact: str) -> int:
    """How many of the fact's first words make its cue."""
    words = _words(fact)
    start = 1 if len(words) > 1 and _bare(words[0]).lower() in _ARTICLES else 0
    first = next((n for n in range(start, min(len(words), 6)) if _capitalised(words[n])), None)
    if first is None:
        return max(1, min(2, len(words) - 1))
    end = first
    while end + 1 < len(words) and _capitalised(words[end + 1]):
        end += 1
    return max(1, min(end + 1, len(words) - 1))


def cue(fact: str) -> str:
    """The fact's first words that name what it is about (what a prompt asks about)."""
    words = _words(fact)[: cue_length(fact)]
    words[-1] = _bare(words[-1])
    if len(words) > 1 and words[0].lower() in _ARTICLES:
        words[0] = words[0].lower()  # it goes mid-sentence: "about the town of Sarnpike"
    return " ".join(words)


def _named(word: str) -> bool:
    bare = _bare(word)
    return (
        bool(bare)
        and (bare[0].isupper() or any(c.isdigit() for c in bare))
        and (bare.lower() not in _ARTICLES)
    )


def _key_words(fact: str) -> tuple[list[int], bool]:
    """Indices of the key's words, and whether they are named (else the last two words)."""
    words = _words(fact)
    named = [n for n in range(cue_length(fact), len(words)) if _named(words[n])]
    return (named, True) if named else (list(range(max(0, len(words) - 2), len(words))), False)


def key(fact: str) -> tuple[str, ...]:
    """What an answer must contain for the fact to count as recalled."""
    words = _words(fact)
    indices, named = _key_words(fact)
    if named:
        return tuple(dict.fromkeys(_bare(words[n]) for n in indices))
    return (" ".join(_bare(words[n]) for n in indices).strip(),)


def blanked(fact: str) -> str:
    """The fact with its key's words blanked out (a cloze of it)."""
    words = _words(fact)
    for n in _key_words(fact)[0]:
        word = words[n]
        words[n] = word.replace(_bare(word), "___", 1) if _bare(word) else word
    return " ".join(words)


def recalled(fact: str, answer: str) -> bool:
    folded = " ".join(answer.split()).lower()
    return all(part.lower() in folded for part in key(fact))


# -- renderings -------------------------------------------------------------------------------


def _checked_facts(facts: Sequence[str]) -> list[str]:
    if isinstance(facts, str) or not facts:
        raise InvalidInput("consolidation needs a non-empty list of fact texts")
    checked = [" ".join(str(f).split()) for f in facts]
    if any(not f or len(f) > _MAX_FACT_CHARS for f in checked):
        raise InvalidInput(f"each fact is 1-{_MAX_FACT_CHARS} characters of text")
    return checked


def _text_ids(model: LocalModel, text: str) -> list[int]:
    ids = model.tokenizer(text, add_special_tokens=False)["input_ids"]
    return [int(t) for t in ids]


def _eos(model: LocalModel) -> list[int]:
    eos = model.tokenizer.eos_token_id
    return [] if eos is None else [int(eos)]


def prompt_ids(model: LocalModel, prompt: str, fact: str) -> list[int]:
    """The chat prompt asking ``prompt`` about ``fact``'s cue, ready for the answer."""
    user = prompt.format(cue=cue(fact), blanked=blanked(fact))
    return model.chat_ids([{"role": "user", "content": user}])


def renderings(model: LocalModel, fact: str, recipe: TrainingRecipe) -> list[Example]:
    """The examples one fact is trained on."""
    examples = []
    answer = tuple(_text_ids(model, fact))
    if recipe.plain_text and len(answer) > 1:  # the first token has nothing to follow
        examples.append(Example(answer, answer))
    examples += [_chat_example(model, prompt, fact, end=True) for prompt in recipe.prompts]
    return examples


def _chat_example(model: LocalModel, prompt: str, fact: str, *, end: bool) -> Example:
    """``prompt`` asked about the fact's cue, answered by the fact (and the end token)."""
    head = prompt_ids(model, prompt, fact)
    tail = _text_ids(model, fact) + (_eos(model) if end else [])
    return Example(tuple(head + tail), tuple([-100] * len(head) + tail))


def _collate(batch: Sequence[Example], pad: int) -> dict[str, torch.Tensor]:
    """Left-padded so every answer ends at the last position: logits are computed for the
    last ``keep`` positions only (the LM head is a fifth of the model's work)."""
    import torch

    width = max(len(e.ids) for e in batch)
    keep = max(len(e.ids) - _first_label(e) for e in batch) + 1
    ids = torch.full((len(batch), width), pad, dtype=torch.long)
    labels = torch.full((len(batch), width), -100, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, example in enumerate(batch):
        n = len(example.ids)
        ids[row, width - n :] = torch.tensor(example.ids)
        labels[row, width - n + 1 :] = torch.tensor(example.labels[1:])  # 0 follows nothing
        mask[row, width - n :] = 1
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    return {
        "input_ids": ids,
        "attention_mask": mask,
        "position_ids": positions,
        "targets": labels[:, width - keep + 1 :],
        "keep": torch.tensor(keep),
    }


def _first_label(example: Example) -> int:
    """The first position whose token is predicted (at least 1: position 0 has no context)."""
    first = next(n for n, label in enumerate(example.labels) if label != -100)
    return max(first, 1)


# -- training ---------------------------------------------------------------------------------


def _batches(lengths: Sequence[int], size: int, seed: int) -> Iterator[list[int]]:
    """Endless batches of example indices. Each epoch has every example once, in a seeded
    shuffle; within it, examples of like length are batched together, and the batches come in
    a shuffled order. (Padding is computed for nothing: for 20 facts rendered 13-65 tokens
    long, random batches of 8 computed 3,713 positions an epoch for 2,702 real, grouped 2,892.)"""
    import torch

    generator = torch.Generator().manual_seed(seed)
    while True:
        order = [int(i) for i in torch.randperm(len(lengths), generator=generator)]
        order.sort(key=lambda i: lengths[i])  # stable: like lengths stay shuffled
        batches = [order[n : n + size] for n in range(0, len(order), size)]
        for pick in torch.randperm(len(batches), generator=generator):
            yield batches[int(pick)]


def _logits(net: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Logits predicting ``batch["targets"]``."""
    logits: torch.Tensor = net(
        input_ids=batch["input_ids"],
        attention_mask=batch["attention_mask"],
        position_ids=batch["position_ids"],
        logits_to_keep=int(batch["keep"]),
    ).logits
    return logits[:, :-1]


def _loss(net: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    import torch.nn.functional as F  # noqa: N812

    logits = _logits(net, batch)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch["targets"].reshape(-1))


@dataclass
class _Run:
    """The state of one consolidation between steps."""

    model: LocalModel
    net: Any
    optimizer: Any
    adapter: str
    recipe: TrainingRecipe


def _step(run: _Run, batch: dict[str, torch.Tensor]) -> float:
    import torch

    # one pass at a time with generation on the same model, as generation does; the adapter is
    # set again since a generation through another adapter in between makes that one active
    with run.model._lock, run.model.adapters.active(run.adapter):
        run.optimizer.zero_grad(set_to_none=True)
        loss = _loss(run.net, batch)
        loss.backward()  # type: ignore[no-untyped-call]
        params = [p for group in run.optimizer.param_groups for p in group["params"]]
        torch.nn.utils.clip_grad_norm_(params, max_norm=run.recipe.max_grad_norm)
        run.optimizer.step()
    return float(loss.detach())


def _check_recall(run: _Run, facts: Sequence[str], *, final: bool) -> float:
    """The fraction recalled; before the last step only whether it reaches the target (it
    stops counting once the target is out of reach)."""
    needed = math.ceil(run.recipe.recall_target * len(facts) - 1e-9)
    run.net.eval()
    try:
        hits = _recalled(
            run.model, facts, run.recipe.recall_prompt, run.adapter,
            None if final else len(facts) - needed,
        )  # fmt: skip
    finally:
        run.net.train()
    return hits / len(facts)


def consolidate(
    model: LocalModel,
    facts: Sequence[str],
    recipe: TrainingRecipe,
    *,
    adapter: str,
    progress: Progress | None = None,
) -> TrainingResult:
    """Train a fresh adapter named ``adapter`` on ``facts`` (left loaded on the model).
    Deterministic for a seed on the CPU with a given thread count; the caller's RNG state is
    left as it was. Stops early once ``recipe.recall_target`` of the facts are recalled."""
    import torch

    facts = _checked_facts(facts)
    examples = [e for fact in facts for e in renderings(model, fact, recipe)]
    pad = _pad_id(model)
    started = time.perf_counter()
    created = False
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(recipe.seed)
        try:
            with model.adapters.training(adapter, recipe.lora_config()) as net:
                created = True
                params = [p for p in net.parameters() if p.requires_grad]
                optimizer = torch.optim.AdamW(params, lr=recipe.learning_rate, weight_decay=0.0)
                run = _Run(model, net, optimizer, adapter, recipe)
                losses, score = _train(run, examples, facts, pad, progress)
        except BaseException:
            if created:  # not a half-trained adapter left behind (nor another's removed)
                model.adapters.remove(adapter)
            raise
    return TrainingResult(
        steps=len(losses),
        seconds=time.perf_counter() - started,
        first_loss=losses[0],
        last_loss=losses[-1],
        recall=score,
        stopped_early=len(losses) < recipe.max_steps,
        examples=len(examples),
        parameters=sum(p.numel() for p in params),
    )


def _train(
    run: _Run,
    examples: Sequence[Example],
    facts: Sequence[str],
    pad: int,
    progress: Progress | None,
) -> tuple[list[float], float]:
    """The steps' losses and the last recall check's score."""
    recipe = run.recipe
    losses: list[float] = []
    score = 0.0
    batches = _batches([len(e.ids) for e in examples], recipe.batch_size, recipe.seed)
    for step, indices in zip(range(1, recipe.max_steps + 1), batches, strict=False):
        losses.append(_step(run, _collate([examples[i] for i in indices], pad)))
        if progress is not None:
            progress(step, recipe.max_steps, losses[-1])
        if step % recipe.recall_every == 0 or step == recipe.max_steps:
            score = _check_recall(run, facts, final=step == recipe.max_steps)
            if score >= recipe.recall_target:
                break
    return losses, score


def _pad_id(model: LocalModel) -> int:
    pad = model.tokenizer.pad_token_id
    if pad is None:
        pad = model.tokenizer.eos_token_id
    return 0 if pad is None else int(pad)


def recall(
    model: LocalModel,
    facts: Sequence[str],
    *,
    adapter: str | None,
    recipe: TrainingRecipe | None = None,
) -> float:
    """The fraction of ``facts`` whose key greedy generation from the recipe's recall prompt
    contains, through ``adapter`` (or the base model)."""
    facts = _checked_facts(facts)
    prompt = (recipe or TrainingRecipe()).recall_prompt
    return _recalled(model, facts, prompt, adapter, allowed_misses=None) / len(facts)


def _recalled(
    model: LocalModel,
    facts: Sequence[str],
    prompt: str,
    adapter: str | None,
    allowed_misses: int | None,
) -> int:
    """How many facts are recalled. A fact whose every token is the greedy choice after the
    prompt and the fact's earlier tokens (one batched teacher-forced pass for all) is what
    greedy generation would produce, so it counts without generating; the others are generated.
    Past ``allowed_misses`` misses it stops counting (a lower bound is then enough)."""
    hits = misses = 0
    for fact, verbatim in zip(facts, _verbatim(model, facts, prompt, adapter), strict=True):
        if verbatim or _generates_key(model, fact, prompt, adapter):
            hits += 1
            continue
        misses += 1
        if allowed_misses is not None and misses > allowed_misses:
            break
    return hits


def _verbatim(
    model: LocalModel, facts: Sequence[str], prompt: str, adapter: str | None
) -> list[bool]:
    import torch

    examples = [_chat_example(model, prompt, fact, end=False) for fact in facts]
    flags: list[bool] = []
    for start in range(0, len(examples), _CHECK_BATCH):
        batch = _collate(examples[start : start + _CHECK_BATCH], _pad_id(model))
        with model._lock, model.adapters.active(adapter) as net, torch.inference_mode():
            predicted = _logits(net, batch).argmax(-1)
        targets = batch["targets"]
        flags += [bool(row) for row in ((predicted == targets) | (targets == -100)).all(-1)]
    return flags


def _generates_key(model: LocalModel, fact: str, prompt: str, adapter: str | None) -> bool:
    budget = len(_text_ids(model, fact)) + 8
    tokens: list[int] = []
    stream = model.stream(prompt_ids(model, prompt, fact), max_new_tokens=budget, adapter=adapter)
    for token in stream:
        tokens.append(token)
        if recalled(fact, model.decode(tokens)):
            return True
    return False
