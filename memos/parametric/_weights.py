"""Adapter tensors as stored bytes (fp32 safetensors or ComPEFT), checked against the model.

A stored adapter is trusted only once its tensors are exactly the LoRA factors the manifest's
settings imply for the loaded base model: the same names (every target linear layer, ``lora_A``
``[r, in]`` and ``lora_B`` ``[out, r]``), fp32, finite. Anything else is refused with
:class:`memos.errors.CorruptArtifact` before it reaches the model.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load, save

from memos.errors import CorruptArtifact
from memos.parametric._compress import compress, decompress
from memos.parametric._manifest import AdapterManifest, LoraSettings

Weights = dict[str, torch.Tensor]
_PREFIX = "base_model.model."


def expected_shapes(model: Any, lora: LoraSettings) -> dict[str, tuple[int, int]]:
    """The LoRA tensors (peft's names) an adapter with ``lora`` has on the HF ``model``."""
    shapes: dict[str, tuple[int, int]] = {}
    targets = set(lora.target_modules)
    for name, module in model.named_modules():
        if name.rsplit(".", 1)[-1] not in targets:
            continue
        linear = getattr(module, "base_layer", module)
        if not isinstance(linear, torch.nn.Linear):
            continue
        shapes[f"{_PREFIX}{name}.lora_A.weight"] = (lora.r, linear.in_features)
        shapes[f"{_PREFIX}{name}.lora_B.weight"] = (linear.out_features, lora.r)
    return shapes


def encode(weights: Mapping[str, torch.Tensor], storage: str, density: float | None) -> bytes:
    if storage == "compeft":
        if density is None:
            raise ValueError("compeft storage needs a density")
        return compress(weights, density=density)
    tensors = {name: t.detach().to(torch.float32).contiguous() for name, t in weights.items()}
    return save(tensors, metadata={"format": "memos-lora-fp32"})


def decode(data: bytes, manifest: AdapterManifest, model: Any) -> Weights:
    """The adapter's fp32 tensors, refused unless they fit ``model`` exactly."""
    weights = decompress(data) if manifest.storage == "compeft" else _fp32(data)
    check_fits(weights, expected_shapes(model, manifest.lora), manifest.parameters)
    return weights


def check_blob(data: bytes, manifest: AdapterManifest) -> None:
    """Without a model at hand (an import): the blob parses, holds the manifest's number of
    finite fp32 parameters, and nothing else."""
    weights = decompress(data) if manifest.storage == "compeft" else _fp32(data)
    shapes = {
        name: (int(t.shape[0]), int(t.shape[1])) for name, t in weights.items() if t.dim() == 2
    }
    if len(shapes) != len(weights):
        raise CorruptArtifact("an adapter tensor is not a matrix")
    check_fits(weights, shapes, manifest.parameters)


def check_fits(
    weights: Mapping[str, torch.Tensor], shapes: dict[str, tuple[int, int]], parameters: int
) -> None:
    if not shapes or set(weights) != set(shapes):
        raise CorruptArtifact("the adapter's tensors are not the LoRA factors of this model")
    for name, shape in shapes.items():
        tensor = weights[name]
        if tensor.dtype != torch.float32 or tuple(tensor.shape) != shape:
            raise CorruptArtifact(f"adapter tensor {name} is {tensor.dtype}{list(tensor.shape)}")
        if not bool(torch.isfinite(tensor).all()):
            raise CorruptArtifact(f"adapter tensor {name} holds non-finite values")
    if sum(t.numel() for t in weights.values()) != parameters:
        raise CorruptArtifact("the adapter's parameter count differs from its manifest")


def _fp32(data: bytes) -> Weights:
    try:
        return dict(load(data))
    except (SafetensorError, ValueError, RuntimeError, OverflowError, KeyError) as exc:
        raise CorruptArtifact(f"the adapter file is not valid safetensors: {exc}") from exc
