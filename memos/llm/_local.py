"""A local causal language model through ``transformers``, computing in fp32 on the CPU.

fp32 is deliberate: on CPUs without native bf16, bf16 prefill measured 5× slower; artifacts
derived from the model (KV caches, adapters) may still be stored in smaller dtypes.

Generation is a plain greedy loop over the model's forward pass (no ``generate``): it streams
token by token, computes logits for the last position only, and can start from a
:class:`ResidentPrefix` so that only the tokens after the prefix are prefilled.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from memos.errors import InvalidInput, ModelUnavailable
from memos.llm._adapters import AdapterSlots
from memos.llm._backend import ChatMessage
from memos.llm._prefix import KV, ResidentPrefix
from memos.llm._shapes import ModelShape, SplitPrompt
from memos.llm._weights import (
    ModelFingerprint,
    bundled_gguf,
    fingerprint,
    materialized_gguf,
    quiet_progress,
)


class LocalModel:
    """A tokenizer and a causal LM loaded from a local directory, identified by fingerprint."""

    def __init__(self, model: Any, tokenizer: Any, fingerprint: ModelFingerprint, name: str):
        self.model = model
        self.tokenizer = tokenizer
        self.fingerprint = fingerprint
        self.name = name
        self.shape = _shape(model.config)
        self._stop_ids = _stop_ids(model, tokenizer)
        # one forward pass at a time (torch already uses every core for one); held per pass,
        # never across a stream's yields, so concurrent streams interleave. Reentrant: adding
        # or removing an adapter takes it too, so the layers never change under a pass
        self._lock = threading.RLock()
        self.adapters = AdapterSlots(model, self._lock)

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

        with quiet_progress():
            tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
            model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True)
        model.eval()  # type: ignore[no-untyped-call]
        return cls(model, tokenizer, fingerprint(path), name=path.name)

    # prompts ----------------------------------------------------------------------------

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

    def split_prompt(
        self,
        system: str,
        user: str,
        *,
        cached: int | None = None,
        history: Sequence[ChatMessage] = (),
    ) -> SplitPrompt:
        """The chat ``[system, *history, user]`` rendered by the model's template and tokenized
        in two parts, each on its own: ``prefix``, the rendering up to the end of the first
        ``cached`` characters of the system message (all of them by default; never its
        end-of-turn), and ``rest``. The same ids serve a cached and a fully recomputed run, and
        a system message that extends another's (a memory block with memories after it) has
        that one's prefix; earlier turns (``history``) come after it, in ``rest``."""
        cached = len(system) if cached is None else cached
        if not 0 <= cached <= len(system):
            raise InvalidInput(f"cached must be within the system message, not {cached}")
        turns = [{"role": m["role"], "content": m["content"]} for m in history]
        messages = [
            {"role": "system", "content": system},
            *turns,
            {"role": "user", "content": user},
        ]
        full = self._render(messages, generation=True)
        end = self._system_end(system)
        if end is None or not full.startswith(self._render_system(system)):
            raise InvalidInput(
                f"the chat template of {self.name} does not render the system message as a "
                "prefix of the prompt; memory blocks cannot be cached for it"
            )
        cut = end - (len(system) - cached)
        return SplitPrompt(self._tokens(full[:cut]), self._tokens(full[cut:]))

    def _render_system(self, system: str) -> str:
        return self._render([{"role": "system", "content": system}], generation=False)

    def _system_end(self, system: str) -> int | None:
        """Where the system message's text ends in its rendering: the first character at
        which it differs from the rendering of a longer message (``None`` when the template
        does not render the message as it is)."""
        head, longer = self._render_system(system), self._render_system(system + "\x1f")
        pairs = enumerate(zip(head, longer, strict=False))
        end = next((i for i, (a, b) in pairs if a != b), len(head))
        return end if head[end - len(system) : end] == system else None

    def template_sha256(self) -> str:
        template = getattr(self.tokenizer, "chat_template", None) or ""
        return hashlib.sha256(str(template).encode("utf-8")).hexdigest()

    def _render(self, messages: list[dict[str, str]], *, generation: bool) -> str:
        text: str = self.tokenizer.apply_chat_template(
            messages, add_generation_prompt=generation, tokenize=False
        )
        return text

    def _tokens(self, text: str) -> tuple[int, ...]:
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return tuple(int(t) for t in ids)

    # inference --------------------------------------------------------------------------

    def prefill(self, ids: Sequence[int], *, prefix: ResidentPrefix | None = None) -> list[KV]:
        """The KV cache of ``ids`` read from position 0: ``(keys, values)`` per layer. With
        ``prefix`` (whose tokens must start ``ids``, and leave some after them) its cache is
        read as it is and only the rest of ``ids`` is computed, as a chat over it would."""
        import torch

        ids = [int(t) for t in ids]
        self._check_length(len(ids))
        start = _after(prefix, ids)
        with contextlib.ExitStack() as held:
            cache = None if prefix is None else held.enter_context(prefix.session(len(ids) - start))
            with self._lock, self.adapters.active(None) as net, torch.inference_mode():
                output = net(
                    input_ids=torch.tensor([ids[start:]], dtype=torch.long),
                    cache=cache,
                    use_cache=True,
                    logits_to_keep=1,
                )
            return [(layer.keys.clone(), layer.values.clone()) for layer in output.cache.layers]

    def stream(
        self,
        ids: Sequence[int],
        *,
        max_new_tokens: int = 64,
        prefix: ResidentPrefix | None = None,
        adapter: str | None = None,
    ) -> Iterator[int]:
        """Greedy tokens after ``ids``, one at a time, up to a stop token. With ``prefix``
        (whose tokens must start ``ids``) only the rest of ``ids`` is prefilled; with
        ``adapter`` that loaded LoRA adapter is active. The prompt is checked here, before the
        first token is asked for."""
        ids = [int(t) for t in ids]
        if prefix is not None and adapter is not None:
            raise InvalidInput("a KV cache is the base model's: it cannot serve an adapter")
        self._check_length(len(ids) + max_new_tokens)
        start = _after(prefix, ids)
        if adapter is not None and adapter not in self.adapters.names:
            raise InvalidInput(f"no adapter named {adapter!r} is loaded")
        return self._greedy(ids[start:], max_new_tokens, prefix, adapter)

    def generate(
        self,
        input_ids: Sequence[int],
        *,
        max_new_tokens: int = 64,
        prefix: ResidentPrefix | None = None,
        adapter: str | None = None,
    ) -> list[int]:
        """Greedy continuation of ``input_ids``, stopping at the end-of-sequence token."""
        return list(
            self.stream(input_ids, max_new_tokens=max_new_tokens, prefix=prefix, adapter=adapter)
        )

    def _greedy(
        self,
        rest: list[int],
        max_new_tokens: int,
        prefix: ResidentPrefix | None,
        adapter: str | None,
    ) -> Iterator[int]:
        from transformers import DynamicCache

        with self.adapters.held(adapter):
            if prefix is None:
                fresh = DynamicCache(config=self.model.config)
                yield from self._decode(fresh, rest, max_new_tokens, adapter)
                return
            with prefix.session(len(rest) + max_new_tokens) as cache:
                yield from self._decode(cache, rest, max_new_tokens, adapter)

    def _decode(
        self, cache: Any, rest: list[int], max_new_tokens: int, adapter: str | None
    ) -> Iterator[int]:
        import torch

        step = torch.tensor([rest], dtype=torch.long)
        for _ in range(max_new_tokens):
            # the adapter is set per pass: streams through different adapters interleave
            with self._lock, self.adapters.active(adapter) as net, torch.inference_mode():
                logits = net(input_ids=step, cache=cache, use_cache=True, logits_to_keep=1).logits
            token = int(logits[0, -1].argmax())
            if token in self._stop_ids:
                return
            yield token
            step = torch.tensor([[token]], dtype=torch.long)

    def _check_length(self, tokens: int) -> None:
        if tokens > self.shape.max_positions:
            raise InvalidInput(
                f"{tokens} tokens exceed the {self.shape.max_positions} positions of {self.name}"
            )

    def decode(self, ids: Sequence[int]) -> str:
        text: str = self.tokenizer.decode(list(ids), skip_special_tokens=True)
        return text


def _after(prefix: ResidentPrefix | None, ids: Sequence[int]) -> int:
    """Where ``ids`` go on after ``prefix`` (0 without one); refused unless they start with its
    tokens and have more after them."""
    if prefix is None:
        return 0
    if tuple(ids[: prefix.length]) != prefix.token_ids:
        raise InvalidInput("the prompt does not start with the cached prefix's tokens")
    if prefix.length == len(ids):
        raise InvalidInput("the prompt must have tokens after its cached prefix")
    return prefix.length


def _shape(config: Any) -> ModelShape:
    heads = int(config.num_attention_heads)
    head_dim = getattr(config, "head_dim", None) or int(config.hidden_size) // heads
    return ModelShape(
        layers=int(config.num_hidden_layers),
        kv_heads=int(getattr(config, "num_key_value_heads", None) or heads),
        head_dim=int(head_dim),
        max_positions=int(config.max_position_embeddings),
    )


def _stop_ids(model: Any, tokenizer: Any) -> frozenset[int]:
    stops: set[int] = set()
    for value in (getattr(model.generation_config, "eos_token_id", None), tokenizer.eos_token_id):
        if isinstance(value, int):
            stops.add(value)
        elif isinstance(value, list | tuple):
            stops.update(int(v) for v in value)
    return frozenset(stops)
