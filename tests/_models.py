"""Models for tests: a tiny randomly initialised Llama with a word-level tokenizer (built in
milliseconds from a config), and where the real SmolLM2 is converted once per machine."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

WORDS = [
    *("alice", "moved", "to", "lisbon", "porto", "in", "may", "june", "the"),
    *("capital", "of", "france", "is", "paris", "what", "where"),
]
SPECIALS = ["<pad>", "<eos>", "<user>", "<assistant>", "<system>"]
TEMPLATE = (
    "{% for m in messages %}{{ '<' + m['role'] + '> ' + m['content'] + ' ' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<assistant> ' }}{% endif %}"
)


def tiny_model_dir(root: Path, seed: int = 0) -> Path:
    vocab = {token: n for n, token in enumerate([*SPECIALS, "<unk>", *WORDS])}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core, eos_token="<eos>", pad_token="<pad>", unk_token="<unk>"
    )
    tokenizer.chat_template = TEMPLATE
    config = LlamaConfig(
        vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
        eos_token_id=vocab["<eos>"], pad_token_id=vocab["<pad>"],
    )  # fmt: skip
    torch.manual_seed(seed)
    path = root / f"tiny-{seed}"
    LlamaForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def model_cache(config: pytest.Config) -> Path:
    """Where the bundled SmolLM2 is converted to safetensors: pytest's cache, kept between
    runs, so only the first run on a machine pays the ~35 s conversion."""
    return Path(config.cache.mkdir("memos-models"))
