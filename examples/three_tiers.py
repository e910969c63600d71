"""One question, answered from each of the three memory tiers.

The memories are four made-up facts that no language model can know. The same question is put
to the bundled SmolLM2-135M-Instruct four ways:

0. the base model with no memory at all: it can only guess;
1. **plaintext**: the memories a search retrieves are written into the prompt;
2. **activation**: the same prompt, but its memory block is a stored KV cache, so the model
   only reads the question (time to first token printed beside recomputing the whole prompt);
3. **parametric**: a LoRA adapter, trained for a few steps on the memories the question
   retrieves, answers with no memory in the prompt at all.

Each answer is checked for the fact's key word and the verdict printed as it is: a model of
135M parameters can miss, and so can an adapter trained for seconds.

    python examples/three_tiers.py

Fully offline; the bundled model is converted once into ``$MEMOS_MODEL_CACHE`` (default
``~/.cache/memos/models``). Everything else lives in a temporary directory.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path

from memos import ChatReply, MemOS

CUBE = "explorers"
FACTS = (
    "Captain Idris Fenwold sailed the ship Amberwake to the island of Tessaly.",
    "Quillon Marsh was born in the harbour town of Edvale in 1872.",
    "Tavi Orenko invented a brass pocket sextant called the Lumeric.",
    "Mirela Stanhoff won the Garnet Cup for chess in 1934.",
)
QUESTION = "To which island did Captain Idris Fenwold sail?"
EXPECTED = "Tessaly"
RETRIEVED = 2
MAX_NEW_TOKENS = 20
TIMING_RUNS = 3
# Consolidation made quick for the few memories the question retrieves: one chat rendering of
# each (the default recipe trains three), all of them in each step's batch, a higher learning
# rate, and a stop at the first recall check (every 4 steps) that gets every one of them back.
RECIPE = {
    "prompts": ["What do you remember about {cue}?"],
    "plain_text": False,
    "batch_size": RETRIEVED,
    "learning_rate": 5e-3,
    "max_steps": 12,
    "recall_every": 4,
    "recall_target": 1.0,
}


def model_cache() -> Path:
    return Path(os.environ.get("MEMOS_MODEL_CACHE", "~/.cache/memos/models")).expanduser()


def verdict(reply: ChatReply) -> str:
    if EXPECTED.lower() in reply.answer.lower():
        return f"knows: {EXPECTED!r} is in the answer"
    return f"does not know: {EXPECTED!r} is not in the answer"


def show(label: str, reply: ChatReply) -> None:
    print(f"  answer: {reply.answer.strip()!r}")
    print(f"  {label} {verdict(reply)}")


def ask_base_model(mos: MemOS) -> None:
    print("\n0. The base model, no memory in the prompt")
    show("base model", mos.chat(QUESTION, cube=CUBE, retrieve=False, max_new_tokens=MAX_NEW_TOKENS))


def ask_plaintext(mos: MemOS) -> ChatReply:
    print("\n1. Plaintext: the retrieved memories are written into the prompt")
    for hit in mos.search(QUESTION, cube=CUBE, k=RETRIEVED):
        print(f"  retrieved {hit.score:.3f}  {hit.item.text}")
    reply = mos.chat(QUESTION, cube=CUBE, k=RETRIEVED, max_new_tokens=MAX_NEW_TOKENS)
    print(f"  prompt: {reply.prompt_tokens} tokens, {len(reply.memories)} memories")
    show("plaintext", reply)
    return reply


def first_token_seconds(mos: MemOS, *, use_kv: bool) -> float:
    """Time to first token: a one-token answer is the prefill of whatever the KV block does
    not cover, then the first token."""
    start = time.perf_counter()
    mos.chat(QUESTION, cube=CUBE, k=RETRIEVED, use_kv=use_kv, max_new_tokens=1)
    return time.perf_counter() - start


def ask_kv_block(mos: MemOS, plaintext: ChatReply) -> None:
    print("\n2. Activation: the memories' KV cache is the prompt's prefix")
    entry = mos.kv.build(CUBE, query=QUESTION, k=RETRIEVED)
    print(
        f"  KV block {entry.id}: {entry.tokens} tokens of {len(entry.sources)} memories, "
        f"{entry.size / 2**20:.1f} MiB ({entry.manifest.dtype})"
    )
    reply = mos.chat(QUESTION, cube=CUBE, k=RETRIEVED, max_new_tokens=MAX_NEW_TOKENS)
    timings: dict[bool, list[float]] = {True: [], False: []}
    for _ in range(TIMING_RUNS):
        for use_kv in (True, False):
            timings[use_kv].append(first_token_seconds(mos, use_kv=use_kv))
    cached, recomputed = (statistics.median(timings[flag]) for flag in (True, False))
    print(f"  prompt: {reply.prompt_tokens} tokens, {reply.cached_tokens} of them from the block")
    print(
        f"  time to first token: {cached * 1000:.0f} ms from the KV block, "
        f"{recomputed * 1000:.0f} ms recomputing the same prompt "
        f"({recomputed / cached:.1f}x; median of {TIMING_RUNS})"
    )
    same = reply.tokens == plaintext.tokens
    print(f"  same answer, token for token, as from the plaintext prompt: {same}")
    show("KV block", reply)


def report_step(step: int, steps: int, loss: float) -> None:
    print(f"  step {step:>2}/{steps}  loss {loss:.3f}", flush=True)


def ask_adapter(mos: MemOS) -> None:
    print("\n3. Parametric: an adapter trained on the memories, no memory in the prompt")
    start = time.perf_counter()
    entry = mos.lora.consolidate(
        CUBE,
        query=QUESTION,
        k=RETRIEVED,
        name="explorers",
        recipe=RECIPE,
        density=None,
        progress=report_step,
    )
    seconds = time.perf_counter() - start
    steps, recall = entry.manifest.metrics["steps"], float(entry.manifest.metrics["recall"])
    print(
        f"  adapter {entry.name!r} v{entry.version}: {len(entry.sources)} memories learned in "
        f"{steps} steps, {seconds:.1f} s; the trainer's own check recalled {recall:.0%} of them"
    )
    reply = mos.chat(
        QUESTION, cube=CUBE, adapter="explorers", retrieve=False, max_new_tokens=MAX_NEW_TOKENS
    )
    print(f"  prompt: {reply.prompt_tokens} tokens, {len(reply.memories)} memories")
    show("adapter", reply)
    if EXPECTED.lower() not in reply.answer.lower():
        print(
            "  this short training did not put the fact in the weights; the default recipe "
            "trains longer on more renderings of each fact (see benchmarks/lora_recall.py)"
        )


def main(data_dir: Path) -> None:
    with MemOS.open(data_dir, model_cache=model_cache()) as mos:
        mos.create_cube(CUBE)
        for fact in FACTS:
            mos.add(fact, cube=CUBE)
        print(f"{len(FACTS)} memories in cube {CUBE!r}; question: {QUESTION!r}")
        ask_base_model(mos)
        plaintext = ask_plaintext(mos)
        ask_kv_block(mos, plaintext)
        ask_adapter(mos)


if __name__ == "__main__":
    with tempfile.TemporaryDirectory(prefix="memos-three-tiers-") as tmp:
        main(Path(tmp))
