"""A local causal language model through ``transformers``, computing in fp32 on the CPU.

fp32 is deliberate: on CPUs without native bf16, bf16 prefill measured 5× slower; artifacts
derived from the model (KV caches, adapters) may still be stored in smaller dtypes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from memos.errors import ModelUnavailable
from memos.llm._weights import (
    ModelFingerprint,
    bundled_gguf,
    fingerprint,
    materialized_gguf,
)


class LocalModel:
    """A tokenizer and a causal LM loaded from a local directory, identified by fingerprint."""

    def __init__(self, model: Any, tokenizer: Any, fingerprint: ModelFingerprint, name: str):
        self.model = model
        self.tokenizer = tokenizer
        self.fingerprint = fingerprint
        self.name = name

    @classmethod
    def load(cls, source: str | Path | None = None, *, cache_dir: Path) -> LocalModel:
        """Load a Hugging Face model directory, a ``.gguf`` file (converted once into
        ``cache_dir``), or, with no source, the bundled SmolLM2-135M-Instruct."""
        path = bundled_gguf() if source is None else Path(source)
        if path.suffix == ".gguf":
            path = materialized_gguf(path, cache_dir)
        if not (path / "config.json").exists():
            raise ModelUnavailable(f"{path} is not a model directory (no config.json)")
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True)
        model.eval()  # type: ignore[no-untyped-call]
        return cls(model, tokenizer, fingerprint(path), name=path.name)

    def chat_ids(
        self, messages: Sequence[Mapping[str, str]], *, add_generation_prompt: bool = True
    ) -> list[int]:
        """Token ids of a chat rendered with the model's own template."""
        rendered = self.tokenizer.apply_chat_template(
            [dict(m) for m in messages],
            add_generation_prompt=add_generation_prompt,
            tokenize=True,
        )
        # transformers 5 returns a BatchEncoding here; older versions a plain list.
        ids = rendered["input_ids"] if hasattr(rendered, "keys") else rendered
        return [int(t) for t in ids]

    def generate(self, input_ids: Sequence[int], *, max_new_tokens: int = 64) -> list[int]:
        """Greedy continuation of ``input_ids``, stopping at the end-of-sequence token."""
        import torch

        prompt = torch.tensor([list(input_ids)], dtype=torch.long)
        with torch.inference_mode():
            output = self.model.generate(
                prompt,
                attention_mask=torch.ones_like(prompt),
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=self.tokenizer.pad_token_id or self.tokenizer.eos_token_id,
            )
        return [int(t) for t in output[0, prompt.shape[1] :]]

    def decode(self, ids: Sequence[int]) -> str:
        text: str = self.tokenizer.decode(list(ids), skip_special_tokens=True)
        return text
