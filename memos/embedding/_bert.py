"""A BERT encoder's forward pass in numpy, for sentence embeddings (mean pooling, L2 norm).

torch costs seconds to import; a command that embeds one memory or one query needs a few
milliseconds of matrix products, which numpy does as well. The weights are a Hugging Face
``BertModel`` safetensors file, read as-is, so the vectors are the ones the same model gives
through ``transformers`` (tests hold the two within float32 rounding).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

Matrix = NDArray[np.float32]

# Abramowitz & Stegun 7.1.26: erf within 1.5e-7 everywhere, below float32's resolution of
# BERT's activations; numpy has no erf and scipy's import would cost more than the forward.
_ERF_P = 0.3275911
_ERF_A = (0.254829592, -0.284496736, 1.421413741, -1.453152027, 1.061405429)


@dataclass(frozen=True)
class Dense:
    weight: Matrix  # [out, in], as torch stores it
    bias: Matrix

    def __call__(self, x: Matrix) -> Matrix:
        out: Matrix = x @ self.weight.T + self.bias
        return out


@dataclass(frozen=True)
class LayerNorm:
    weight: Matrix
    bias: Matrix
    eps: float

    def __call__(self, x: Matrix) -> Matrix:
        centred = x - x.mean(axis=-1, keepdims=True)
        variance = (centred * centred).mean(axis=-1, keepdims=True)
        out: Matrix = centred / np.sqrt(variance + np.float32(self.eps)) * self.weight + self.bias
        return out


@dataclass(frozen=True)
class Layer:
    query: Dense
    key: Dense
    value: Dense
    attention_out: Dense
    attention_norm: LayerNorm
    intermediate: Dense
    output: Dense
    output_norm: LayerNorm


@dataclass(frozen=True)
class BertEncoder:
    word: Matrix
    position: Matrix
    token_type: Matrix
    embedding_norm: LayerNorm
    layers: tuple[Layer, ...]
    heads: int

    def sentence_embeddings(self, ids: NDArray[np.int64], mask: NDArray[np.int64]) -> Matrix:
        """L2-normalised mean of the last hidden states over the real (unmasked) tokens of
        each row of ``ids`` [batch, tokens]."""
        hidden = self.hidden_states(ids, mask)
        weights = mask.astype(np.float32)[:, :, None]
        summed = (hidden * weights).sum(axis=1)
        pooled = summed / np.maximum(weights.sum(axis=1), np.float32(1e-9))
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        out: Matrix = pooled / np.maximum(norms, np.float32(1e-12))
        return np.ascontiguousarray(out, dtype=np.float32)

    def hidden_states(self, ids: NDArray[np.int64], mask: NDArray[np.int64]) -> Matrix:
        tokens = ids.shape[1]
        x = self.word[ids] + self.position[:tokens] + self.token_type[0]
        x = self.embedding_norm(x)
        # padding keys get a large negative score, so softmax gives them no weight
        bias = np.where(mask[:, None, None, :] > 0, np.float32(0.0), np.float32(-1e9))
        for layer in self.layers:
            x = layer.attention_norm(x + layer.attention_out(self._attention(layer, x, bias)))
            x = layer.output_norm(x + layer.output(_gelu(layer.intermediate(x))))
        return x

    def _attention(self, layer: Layer, x: Matrix, bias: Matrix) -> Matrix:
        batch, tokens, width = x.shape
        head_dim = width // self.heads

        def split(projected: Matrix) -> Matrix:
            return projected.reshape(batch, tokens, self.heads, head_dim).transpose(0, 2, 1, 3)

        q, k, v = split(layer.query(x)), split(layer.key(x)), split(layer.value(x))
        scores = q @ k.transpose(0, 1, 3, 2) / np.float32(math.sqrt(head_dim)) + bias
        scores = np.exp(scores - scores.max(axis=-1, keepdims=True))
        scores /= scores.sum(axis=-1, keepdims=True)
        context: Matrix = (scores @ v).transpose(0, 2, 1, 3).reshape(batch, tokens, width)
        return context


def _gelu(x: Matrix) -> Matrix:
    """The exact (erf) GELU BERT uses, not the tanh approximation."""
    z = np.abs(x) * np.float32(1 / math.sqrt(2))
    t = np.float32(1.0) / (np.float32(1.0) + np.float32(_ERF_P) * z)
    poly = np.zeros_like(t)
    for coefficient in reversed(_ERF_A):
        poly = (poly + np.float32(coefficient)) * t
    erf = np.copysign(np.float32(1.0) - poly * np.exp(-z * z), x)
    out: Matrix = np.float32(0.5) * x * (np.float32(1.0) + erf)
    return out


def load_bert(weights: Path, *, layers: int, heads: int, eps: float) -> BertEncoder:
    """The encoder stored in a ``BertModel`` safetensors file (names without a ``bert.``
    prefix, as sentence-transformers saves them)."""
    from safetensors.numpy import load_file

    tensors = load_file(str(weights))

    def get(name: str) -> Matrix:
        return np.ascontiguousarray(tensors[name], dtype=np.float32)

    def dense(prefix: str) -> Dense:
        return Dense(get(f"{prefix}.weight"), get(f"{prefix}.bias"))

    def norm(prefix: str) -> LayerNorm:
        return LayerNorm(get(f"{prefix}.weight"), get(f"{prefix}.bias"), eps)

    def layer(index: int) -> Layer:
        p = f"encoder.layer.{index}"
        return Layer(
            query=dense(f"{p}.attention.self.query"),
            key=dense(f"{p}.attention.self.key"),
            value=dense(f"{p}.attention.self.value"),
            attention_out=dense(f"{p}.attention.output.dense"),
            attention_norm=norm(f"{p}.attention.output.LayerNorm"),
            intermediate=dense(f"{p}.intermediate.dense"),
            output=dense(f"{p}.output.dense"),
            output_norm=norm(f"{p}.output.LayerNorm"),
        )

    return BertEncoder(
        word=get("embeddings.word_embeddings.weight"),
        position=get("embeddings.position_embeddings.weight"),
        token_type=get("embeddings.token_type_embeddings.weight"),
        embedding_norm=norm("embeddings.LayerNorm"),
        layers=tuple(layer(i) for i in range(layers)),
        heads=heads,
    )
