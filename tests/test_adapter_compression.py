"""ComPEFT-style compressed LoRA weights (``memos.parametric._compress``).

A round trip keeps exactly each tensor's top-k entries by magnitude, as their signs times one
least-squares scale per tensor; sizes follow the bitmask formula. Bytes that are not exactly
such a file are a :class:`memos.errors.CorruptArtifact`, never another exception, never code
run from the file.
"""

from __future__ import annotations

import json
import math
import pickle
import random
import struct
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from safetensors.torch import load, save

from memos.errors import CorruptArtifact, InvalidInput
from memos.parametric._compress import (
    FORMAT,
    MAX_ELEMENTS,
    compress,
    decompress,
    kept_count,
    raw_bytes,
    reconstruction_error,
)

Weights = dict[str, torch.Tensor]
MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def lora_weights(
    seed: int = 0, *, layers: int = 2, r: int = 4, hidden: int = 24, inter: int = 40, kv: int = 8
) -> Weights:
    """Gaussian LoRA factors with the names and shapes peft gives a Llama: A [r, in], B [out, r]."""
    generator = torch.Generator().manual_seed(seed)
    io = {"q_proj": (hidden, hidden), "k_proj": (hidden, kv), "v_proj": (hidden, kv)}
    io |= {"o_proj": (hidden, hidden), "gate_proj": (hidden, inter), "up_proj": (hidden, inter)}
    io["down_proj"] = (inter, hidden)
    weights: Weights = {}
    for layer in range(layers):
        for module in MODULES:
            part = "mlp" if module in ("gate_proj", "up_proj", "down_proj") else "self_attn"
            prefix = f"base_model.model.model.layers.{layer}.{part}.{module}"
            fan_in, fan_out = io[module]
            weights[f"{prefix}.lora_A.weight"] = torch.randn(r, fan_in, generator=generator)
            weights[f"{prefix}.lora_B.weight"] = torch.randn(fan_out, r, generator=generator)
    return weights


def distinct(seed: int, *shapes: tuple[int, ...]) -> Weights:
    """Tensors whose magnitudes are all different, so the top-k is unambiguous."""
    generator = torch.Generator().manual_seed(seed)
    weights: Weights = {}
    for index, shape in enumerate(shapes):
        count = math.prod(shape)
        magnitude = (torch.randperm(count, generator=generator) + 1).to(torch.float32) / count
        sign = torch.randint(0, 2, (count,), generator=generator) * 2 - 1
        weights[f"w{index}"] = (magnitude * sign).reshape(shape)
    return weights


def header_of(data: bytes) -> dict[str, Any]:
    (size,) = struct.unpack("<Q", data[:8])
    header: dict[str, Any] = json.loads(data[8 : 8 + size])
    return header


def refused(data: bytes) -> CorruptArtifact:
    with pytest.raises(CorruptArtifact) as raised:
        decompress(data)
    assert raised.value.code == "corrupt_artifact"
    return raised.value


# round trips ----------------------------------------------------------------------------


@pytest.mark.parametrize("density", [0.05, 0.1, 0.3, 0.5])
def test_a_round_trip_keeps_the_top_k_as_signs_and_the_mean_magnitude(density: float) -> None:
    weights = distinct(1, (8, 96), (160, 8), (7, 13))
    restored = decompress(compress(weights, density=density))
    assert list(restored) == list(weights)
    for name, want in weights.items():
        got = restored[name]
        assert got.dtype == torch.float32
        assert got.shape == want.shape
        flat, out = want.reshape(-1), got.reshape(-1)
        count = round(density * flat.numel())
        top = torch.topk(flat.abs(), count).indices
        assert set(out.nonzero().reshape(-1).tolist()) == set(top.tolist())
        assert torch.equal(torch.sign(out[top]), torch.sign(flat[top]))
        scale = float(flat[top].abs().to(torch.float64).mean())
        assert torch.allclose(out[top].abs(), torch.tensor(scale), rtol=1e-6, atol=0)


def test_density_one_keeps_every_entry_as_its_sign_times_the_mean_magnitude() -> None:
    weights = lora_weights(2)
    weights["extra"] = torch.tensor([[0.5, 0.0, -2.0], [0.0, 1.5, -0.25]])
    restored = decompress(compress(weights, density=1.0))
    for name, want in weights.items():
        scale = want.abs()[want != 0].to(torch.float64).mean().to(torch.float32)
        assert torch.equal(restored[name], torch.sign(want) * scale), name


@pytest.mark.parametrize("density", [1e-12, 1e-3])
def test_a_tiny_density_keeps_the_largest_entry_of_each_tensor_exactly(density: float) -> None:
    """At least one entry per non-empty tensor is kept: its mean magnitude is itself."""
    weights = distinct(3, (8, 96), (5,), (2, 3, 4))
    weights["empty"] = torch.zeros(0, 4)
    weights["scalar"] = torch.tensor(-3.5)
    restored = decompress(compress(weights, density=density))
    assert [tuple(t.shape) for t in restored.values()] == [tuple(t.shape) for t in weights.values()]
    for name, want in weights.items():
        if want.numel() == 0:
            continue
        flat, out = want.reshape(-1), restored[name].reshape(-1)
        top = int(flat.abs().argmax())
        assert out.nonzero().reshape(-1).tolist() == [top]
        assert float(out[top]) == float(flat[top])


def test_zeros_stay_zero() -> None:
    """Exact zeros are never kept, even where k exceeds the nonzeros: a zero-initialised
    lora_B decodes to zeros, a sparse tensor keeps only its nonzeros."""
    weights = {
        "lora_B": torch.zeros(16, 4),
        "sparse": torch.tensor([[0.0, 3.0, 0.0, 0.0], [0.0, 0.0, -1.0, 0.0]]),
    }
    data = compress(weights, density=0.75)
    restored = decompress(data)
    assert torch.equal(restored["lora_B"], torch.zeros(16, 4))
    assert torch.equal(
        restored["sparse"], torch.tensor([[0.0, 2.0, 0.0, 0.0], [0.0, 0.0, -2.0, 0.0]])
    )
    assert load(data)["scales"].tolist() == [0.0, 2.0]
    assert header_of(data)["__metadata__"]["kept"] == "2"


def test_the_scale_is_the_least_squares_one() -> None:
    """For the kept support and signs, no other scale (a nudged one, ComPEFT's α·std for any
    α) reconstructs with a smaller error."""
    weights = lora_weights(4)
    restored = decompress(compress(weights, density=0.1))
    for name, want in weights.items():
        signs = torch.sign(restored[name]).to(torch.float64)
        chosen = float(restored[name].abs().max())
        std = float(want.to(torch.float64).std())
        best = _error(want, signs * chosen)
        others = [chosen * 0.99, chosen * 1.01, *(alpha / 4 * std for alpha in range(1, 16))]
        assert all(best <= _error(want, signs * scale) for scale in others), name


def _error(want: torch.Tensor, got: torch.Tensor) -> float:
    return float((want.to(torch.float64) - got).square().sum())


def test_the_error_falls_as_the_density_rises() -> None:
    """On Gaussian LoRA factors, up to density 0.4; at 1.0 (sign and scale only) it is
    sqrt(1 - 2/π) ≈ 0.60, the expected error of a Gaussian's sign times its mean magnitude."""
    weights = lora_weights(5, layers=2, r=8, hidden=64, inter=128, kv=16)
    densities = [0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.4]
    errors = [
        reconstruction_error(weights, decompress(compress(weights, density=d))) for d in densities
    ]
    assert errors == sorted(errors, reverse=True)
    assert len(set(errors)) == len(errors)
    assert 0.7 < errors[3] < 0.8
    full = reconstruction_error(weights, decompress(compress(weights, density=1.0)))
    assert abs(full - math.sqrt(1 - 2 / math.pi)) < 0.02


def test_the_output_tensors_are_independent() -> None:
    """Each decoded tensor owns its memory (safetensors refuses to save shared tensors)."""
    restored = decompress(compress(lora_weights(6), density=0.2))
    assert len(save(restored)) > 0


# sizes ----------------------------------------------------------------------------------


def _smollm2_adapter() -> Weights:
    """SmolLM2-135M's r=8 LoRA on every linear layer: 2.44M parameters."""
    return lora_weights(7, layers=30, r=8, hidden=576, inter=1536, kv=192)


@pytest.mark.parametrize("density", [0.05, 0.1, 0.3, 1.0])
def test_the_size_is_the_bitmask_formula(density: float) -> None:
    """mask bits for every entry, sign bits for the kept, one fp32 scale per tensor, plus a
    header that is mostly the names."""
    weights = lora_weights(8, layers=3)
    data = compress(weights, density=density)
    sizes = [t.numel() for t in weights.values()]
    kept = sum(kept_count(size, density) for size in sizes)
    payload = -(-sum(sizes) // 8) + -(-kept // 8) + 4 * len(sizes)
    (header,) = struct.unpack("<Q", data[:8])
    assert len(data) == 8 + header + payload
    names = len(json.dumps(json.dumps(list(weights))))
    assert header < names + 16 * len(sizes) + 500


def test_a_smollm2_adapter_compresses_far_below_a_megabyte() -> None:
    weights = _smollm2_adapter()
    params = sum(t.numel() for t in weights.values())
    assert params == 2_442_240
    raw = raw_bytes(weights)
    assert raw > 4 * params
    sizes = {d: len(compress(weights, density=d)) for d in (0.05, 0.1, 0.3)}
    assert sizes[0.05] < sizes[0.1] < sizes[0.3] < 1_000_000
    assert sizes[0.1] < params / 8 * 1.1 + 40_000
    assert raw / sizes[0.1] > 25


# bad arguments --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "density", [0, 0.0, -0.1, 1.0001, 2, math.nan, math.inf, True, "0.1", None]
)
def test_a_density_outside_zero_to_one_is_invalid(density: Any) -> None:
    with pytest.raises(InvalidInput):
        compress(lora_weights(), density=density)


BAD_WEIGHTS: dict[str, Any] = {
    "integer-tensor": {"a": torch.ones(2, 2, dtype=torch.int64)},
    "nan": {"a": torch.tensor([1.0, math.nan])},
    "inf": {"a": torch.tensor([1.0, math.inf])},
    "too-large-for-fp32": {"a": torch.tensor([1e300], dtype=torch.float64)},
    "name-not-a-string": {1: torch.ones(2)},
    "not-a-tensor": {"a": [1.0, 2.0]},
    "not-a-mapping": [("a", torch.ones(2))],
    "too-many-dims": {"a": torch.ones([1] * 9)},
}


@pytest.mark.parametrize("case", sorted(BAD_WEIGHTS))
def test_weights_that_cannot_be_stored_are_invalid(case: str) -> None:
    with pytest.raises(InvalidInput):
        compress(BAD_WEIGHTS[case], density=0.5)


def test_raw_bytes_and_reconstruction_error() -> None:
    weights = lora_weights(9)
    params = sum(t.numel() for t in weights.values())
    assert raw_bytes(weights) == len(save(weights))
    assert 4 * params < raw_bytes(weights) < 4 * params + 200 * len(weights)
    assert reconstruction_error(weights, weights) == 0.0
    zeros = {name: torch.zeros_like(t) for name, t in weights.items()}
    assert reconstruction_error(weights, zeros) == pytest.approx(1.0)
    assert reconstruction_error(zeros, zeros) == 0.0
    assert reconstruction_error(zeros, weights) == math.inf
    with pytest.raises(InvalidInput):
        reconstruction_error(weights, {})
    with pytest.raises(InvalidInput):
        reconstruction_error({"a": torch.ones(2)}, {"a": torch.ones(3)})


# properties -----------------------------------------------------------------------------

FP32 = st.floats(width=32, allow_nan=False, allow_infinity=False, allow_subnormal=True)
SHAPES = st.lists(st.integers(0, 12), min_size=0, max_size=3).map(tuple)
TENSORS = SHAPES.flatmap(lambda shape: arrays(np.float32, shape, elements=FP32))
DENSITIES = st.floats(min_value=1e-6, max_value=1.0, exclude_min=False)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(TENSORS, min_size=0, max_size=4), DENSITIES)
def test_a_round_trip_keeps_names_shapes_and_only_the_largest_entries(
    values: list[np.ndarray[Any, Any]], density: float
) -> None:
    weights = {f"t{i}.lora_A.weight": torch.from_numpy(v.copy()) for i, v in enumerate(values)}
    restored = decompress(compress(weights, density=density))
    assert list(restored) == list(weights)
    for name, want in weights.items():
        got = restored[name]
        assert got.shape == want.shape
        assert got.dtype == torch.float32
        _check_kept(want.reshape(-1), got.reshape(-1), density)


def _check_kept(want: torch.Tensor, got: torch.Tensor, density: float) -> None:
    kept = got != 0
    assert int(kept.sum()) <= kept_count(want.numel(), density)
    if not bool(kept.any()):
        # nothing kept: only where the tensor is empty or all zeros
        assert not bool(want.any())
        return
    magnitude = want.abs()
    assert bool((want[kept] != 0).all())
    assert bool((torch.sign(got[kept]) == torch.sign(want[kept])).all())
    # nothing dropped is larger than anything kept
    dropped = magnitude[~kept]
    assert dropped.numel() == 0 or float(magnitude[kept].min()) >= float(dropped.max())
    # one magnitude, the mean of the kept ones
    scales = got[kept].abs()
    assert bool((scales == scales[0]).all())
    mean = float(magnitude[kept].to(torch.float64).mean())
    # fp32 rounding: relative for normal numbers, one step for subnormal ones
    assert math.isclose(float(scales[0]), mean, rel_tol=1e-6, abs_tol=1.5e-45)


# not safetensors ------------------------------------------------------------------------


def valid() -> bytes:
    return compress(lora_weights(10, layers=1, r=2, hidden=8, inter=12, kv=4), density=0.25)


def raw_file(header: Any, data: bytes = b"") -> bytes:
    text = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + data


def _torch_saved(payload: object) -> bytes:
    import io

    buffer = io.BytesIO()
    torch.save({"x": payload}, buffer)
    return buffer.getvalue()


NOT_SAFETENSORS: dict[str, Callable[[bytes], bytes]] = {
    "empty": lambda d: b"",
    "seven-bytes": lambda d: b"\x01" * 7,
    "random-bytes": lambda d: random.Random(1).randbytes(len(d)),
    "zeros": lambda d: bytes(len(d)),
    "only-the-length": lambda d: d[:8],
    "truncated-in-header": lambda d: d[:40],
    "truncated-in-data": lambda d: d[:-5],
    "one-byte-short": lambda d: d[:-1],
    "a-byte-too-many": lambda d: d + b"\x00",
    "header-length-max": lambda d: b"\xff" * 8 + d[8:],
    "header-length-zero": lambda d: bytes(8) + d[8:],
    "header-not-json": lambda d: raw_file(b"{not json}"),
    "header-a-list": lambda d: raw_file([1, 2]),
    "header-null": lambda d: raw_file(None),
    "header-deeply-nested": lambda d: raw_file(b"[" * 10_000 + b"]" * 10_000),
    "no-tensors-no-metadata": lambda d: raw_file({}),
    "a-zip-file": lambda d: b"PK\x03\x04" + bytes(60),
    "a-torch-save-file": lambda d: _torch_saved(torch.ones(3)),
}


@pytest.mark.parametrize("case", sorted(NOT_SAFETENSORS))
def test_bytes_that_are_not_safetensors_are_corrupt(case: str) -> None:
    refused(NOT_SAFETENSORS[case](valid()))


def test_anything_but_bytes_is_corrupt() -> None:
    data = valid()
    others: list[Any] = [bytearray(data), memoryview(data), data.decode("latin-1"), None]
    for other in others:
        refused(other)


def _entry(dtype: str, shape: list[int], start: int, end: int) -> dict[str, Any]:
    return {"dtype": dtype, "shape": shape, "data_offsets": [start, end]}


BAD_HEADERS: dict[str, bytes] = {
    "huge-shape": raw_file({"mask": _entry("U8", [2**40], 0, 2**40)}, bytes(8)),
    "overflowing-shape": raw_file({"mask": _entry("U8", [2**31, 2**31, 2**31], 0, 8)}, bytes(8)),
    "offsets-past-the-data": raw_file({"mask": _entry("U8", [16], 0, 16)}, bytes(8)),
    "negative-shape": raw_file({"mask": _entry("U8", [-1], 0, 8)}, bytes(8)),
    "unknown-dtype": raw_file({"mask": _entry("U3", [2], 0, 2)}, bytes(2)),
    "f4-tensor": raw_file({"mask": _entry("F4", [4], 0, 2)}, bytes(2)),
    "metadata-not-strings": raw_file({"__metadata__": {"format": 1}}),
}


@pytest.mark.parametrize("case", sorted(BAD_HEADERS))
def test_a_header_describing_impossible_tensors_is_corrupt(case: str) -> None:
    refused(BAD_HEADERS[case])


# pickles --------------------------------------------------------------------------------


class Payload:
    """Unpickling this writes a marker file (and would run any code the same way)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Callable[..., Any], tuple[Any, ...]]:
        return (Path.write_text, (self.marker, "code ran"))


def pickles(marker: Path) -> Iterator[tuple[str, bytes]]:
    payload = pickle.dumps(Payload(marker))
    yield "a-pickle", payload
    yield "a-pickle-protocol-0", pickle.dumps(Payload(marker), protocol=0)
    yield "a-torch-save-with-a-pickle", _torch_saved(Payload(marker))
    yield "length-then-pickle", struct.pack("<Q", len(payload)) + payload
    # valid-looking metadata whose mask bytes are a pickle: read as bits, never unpickled
    metadata = header_of(valid())["__metadata__"]
    header = {"__metadata__": metadata, "mask": _entry("U8", [len(payload)], 0, len(payload))}
    yield "pickle-as-tensor-data", raw_file(header, payload)


def test_a_pickle_disguised_as_an_adapter_runs_nothing(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    for name, data in pickles(marker):
        refused(data)
        assert not marker.exists(), name
    # the payload does run when unpickled, so the check above is meaningful
    pickle.loads(pickle.dumps(Payload(marker)))
    assert marker.read_text() == "code ran"


# well-formed safetensors that are not a valid adapter -----------------------------------


def _parts(data: bytes) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    tensors = {name: tensor.clone() for name, tensor in load(data).items()}
    return tensors, dict(header_of(data)["__metadata__"])


def _meta(key: str, value: str | None) -> Callable[[bytes], bytes]:
    def craft(data: bytes) -> bytes:
        tensors, metadata = _parts(data)
        if value is None:
            del metadata[key]
        else:
            metadata[key] = value
        return save(tensors, metadata=metadata)

    return craft


def _shapes(change: Callable[[list[Any]], Any]) -> Callable[[bytes], bytes]:
    def craft(data: bytes) -> bytes:
        shapes = json.loads(header_of(data)["__metadata__"]["shapes"])
        return _meta("shapes", json.dumps(change(shapes)))(data)

    return craft


def _names(change: Callable[[list[Any]], Any]) -> Callable[[bytes], bytes]:
    def craft(data: bytes) -> bytes:
        names = json.loads(header_of(data)["__metadata__"]["names"])
        return _meta("names", json.dumps(change(names)))(data)

    return craft


def _set(shapes: list[Any], index: int, value: Any) -> list[Any]:
    shapes[index] = value
    return shapes


BAD_METADATA: dict[str, Callable[[bytes], bytes]] = {
    "no-metadata": lambda d: save(load(d)),
    "an-extra-key": _meta("comment", "hi"),
    **{f"no-{key}": _meta(key, None) for key in ("format", "format_version", "density")},
    **{f"no-{key}": _meta(key, None) for key in ("names", "shapes", "kept")},
    "other-format": _meta("format", "memos-lora-fp32"),
    "other-version": _meta("format_version", "2"),
    **{
        f"density-{text!r}": _meta("density", text)
        for text in ("0", "0.0", "-0.25", "1.5", "nan", "inf", "0.250", "2.5e-1", " 0.25", "x")
    },
    "names-not-json": _meta("names", "[a, b"),
    "names-an-object": _meta("names", "{}"),
    "names-numbers": _names(lambda names: list(range(len(names)))),
    "names-duplicated": _names(lambda names: [names[0], *names[:-1]]),
    "names-one-fewer": _names(lambda names: names[:-1]),
    "names-deeply-nested": _meta("names", "[" * 100_000 + "]" * 100_000),
    "shapes-one-fewer": _shapes(lambda shapes: shapes[:-1]),
    "shapes-not-lists": _shapes(lambda shapes: _set(shapes, 0, 16)),
    "shape-negative": _shapes(lambda shapes: _set(shapes, 0, [-2, -8])),
    "shape-floats": _shapes(lambda shapes: _set(shapes, 0, [2.0, 8.0])),
    "shape-bools": _shapes(lambda shapes: _set(shapes, 0, [True, 16])),
    "shape-strings": _shapes(lambda shapes: _set(shapes, 0, ["2", "8"])),
    "shape-nine-dims": _shapes(lambda shapes: _set(shapes, 0, [2, 8, *[1] * 7])),
    "shape-other-size": _shapes(lambda shapes: _set(shapes, 0, [5, 3])),
    "shape-2**40-elements": _shapes(lambda shapes: _set(shapes, 0, [2**20, 2**20])),
    "shapes-over-the-cap": _shapes(lambda shapes: [[MAX_ELEMENTS // 2 + 1]] * 2 + shapes[2:]),
    "shape-a-huge-integer": _meta("shapes", "[[1" + "0" * 5000 + "]]"),
    **{f"kept-{text!r}": _meta("kept", text) for text in ("-1", "01", "1.0", "", "x", "१", "1e3")},
    "kept-one-more": lambda d: _meta("kept", str(int(_parts(d)[1]["kept"]) + 1))(d),
    "kept-one-fewer": lambda d: _meta("kept", str(int(_parts(d)[1]["kept"]) - 1))(d),
}


@pytest.mark.parametrize("case", sorted(BAD_METADATA))
def test_tampered_metadata_is_corrupt(case: str) -> None:
    """Missing or extra keys, another format, a density that is not a canonical number in
    (0, 1], names or shapes that are not what they must be, too many elements, a kept count
    that is not canonical or not the mask's popcount."""
    refused(BAD_METADATA[case](valid()))


def _tensors(change: Callable[[dict[str, torch.Tensor]], None]) -> Callable[[bytes], bytes]:
    def craft(data: bytes) -> bytes:
        tensors, metadata = _parts(data)
        change(tensors)
        return save(tensors, metadata=metadata)

    return craft


def _bits(name: str, change: Callable[[np.ndarray[Any, Any]], None]) -> Callable[[bytes], bytes]:
    """Unpack tensor ``name``'s bits, change them, pack them back (same length)."""

    def edit(tensors: dict[str, torch.Tensor]) -> None:
        bits = np.unpackbits(tensors[name].numpy())
        change(bits)
        tensors[name] = torch.from_numpy(np.packbits(bits))

    return _tensors(edit)


def _set_bit(bits: np.ndarray[Any, Any], value: int, which: int = 0) -> None:
    """Set the ``which``-th bit that differs from ``value`` to ``value``."""
    bits[np.flatnonzero(bits != value)[which]] = value


def _drop(name: str) -> Callable[[dict[str, torch.Tensor]], None]:
    def change(tensors: dict[str, torch.Tensor]) -> None:
        del tensors[name]

    return change


def _put(name: str, tensor: torch.Tensor) -> Callable[[dict[str, torch.Tensor]], None]:
    return lambda tensors: tensors.update({name: tensor})


def _map(name: str, change: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[bytes], bytes]:
    return _tensors(lambda tensors: tensors.update({name: change(tensors[name])}))


def _poison_scale(value: float) -> Callable[[bytes], bytes]:
    def change(scales: torch.Tensor) -> torch.Tensor:
        scales[1] = value
        return scales

    return _map("scales", change)


def _mask_padding(data: bytes) -> bytes:
    """A file whose mask has padding bits (its total is not a multiple of 8), one set."""
    weights = {"a": torch.arange(1.0, 6.0)}
    tensors, metadata = _parts(compress(weights, density=0.4))
    tensors["mask"][-1] |= 1
    return save(tensors, metadata=metadata)


BAD_TENSORS: dict[str, Callable[[bytes], bytes]] = {
    **{f"no-{name}": _tensors(_drop(name)) for name in ("mask", "signs", "scales")},
    "an-extra-tensor": _tensors(_put("extra", torch.zeros(1))),
    "an-extra-empty-tensor": _tensors(_put("extra", torch.zeros(0))),
    "mask-int8": _map("mask", lambda t: t.to(torch.int8)),
    "mask-bool": _map("mask", lambda t: t.to(torch.bool)),
    "mask-2d": _map("mask", lambda t: t.reshape(1, -1)),
    "mask-one-byte-short": _map("mask", lambda t: t[:-1].clone()),
    "mask-one-byte-more": _map("mask", lambda t: torch.cat([t, torch.zeros(1, dtype=t.dtype)])),
    "signs-one-byte-short": _map("signs", lambda t: t[:-1].clone()),
    "signs-one-byte-more": _map("signs", lambda t: torch.cat([t, torch.zeros(1, dtype=t.dtype)])),
    "signs-int16": _map("signs", lambda t: t.to(torch.int16)),
    "scales-float64": _map("scales", lambda t: t.to(torch.float64)),
    "scales-bf16": _map("scales", lambda t: t.to(torch.bfloat16)),
    "scales-one-fewer": _map("scales", lambda t: t[:-1].clone()),
    "scales-2d": _map("scales", lambda t: t.reshape(-1, 1)),
    "scale-nan": _poison_scale(math.nan),
    "scale-inf": _poison_scale(math.inf),
    "scale-negative": _poison_scale(-0.5),
    # one more kept position than signs: the popcount is not the declared count
    "mask-one-bit-more": _bits("mask", lambda bits: _set_bit(bits, 1)),
    "mask-one-bit-fewer": _bits("mask", lambda bits: _set_bit(bits, 0)),
    "signs-padding-set": _bits("signs", lambda bits: bits.__setitem__(-1, 1)),
    "mask-padding-set": _mask_padding,
    # one more kept position and a matching count: more than the density allows
    "mask-and-kept-one-more": lambda d: _meta("kept", str(int(_parts(d)[1]["kept"]) + 1))(
        _bits("mask", lambda bits: _set_bit(bits, 1))(d)
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_TENSORS))
def test_tampered_tensors_are_corrupt(case: str) -> None:
    """Missing or extra tensors, other dtypes or lengths, a scale that is not finite and
    non-negative, a mask whose popcount is not the sign count or exceeds the density, set
    padding bits."""
    refused(BAD_TENSORS[case](valid()))


def _move_first_kept_bit(bits: np.ndarray[Any, Any]) -> None:
    """Move a kept position of the first tensor (16 entries) to one it dropped."""
    first = bits[:16]
    kept, dropped = np.flatnonzero(first == 1)[0], np.flatnonzero(first == 0)[0]
    first[kept], first[dropped] = 0, 1


def test_the_crafted_files_are_otherwise_valid() -> None:
    """The helpers above change only what they name: the unchanged file decodes, and so do
    the same edits made consistently (a moved mask bit, a changed sign)."""
    data = valid()
    assert (
        decompress(_meta("kept", _parts(data)[1]["kept"])(data)).keys() == decompress(data).keys()
    )
    moved = _bits("mask", _move_first_kept_bit)(data)
    assert decompress(moved).keys() == decompress(data).keys()
    flipped = _bits("signs", lambda bits: bits.__setitem__(0, 1 - bits[0]))(data)
    assert decompress(flipped).keys() == decompress(data).keys()


# fuzzing --------------------------------------------------------------------------------

VALID = valid()
(HEADER_SIZE,) = struct.unpack("<Q", VALID[:8])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(st.integers(0, len(VALID) - 1), st.integers(0, 255)), min_size=1, max_size=6
    ),
    st.booleans(),
    st.integers(0, 16),
)
def test_mutated_bytes_are_corrupt_or_decode_to_their_declared_shapes(
    edits: list[tuple[int, int]], in_data: bool, cut: int
) -> None:
    """Random byte changes (anywhere, or only in the tensor data), optionally truncated:
    either CorruptArtifact, or finite ternary tensors of the shapes the file declares."""
    data = bytearray(VALID)
    start = 8 + HEADER_SIZE if in_data else 0
    for position, value in edits:
        data[start + position % (len(VALID) - start)] = value
    mutated = bytes(data[: len(data) - cut])
    try:
        restored = decompress(mutated)
    except CorruptArtifact:
        return
    metadata = header_of(mutated)["__metadata__"]
    assert list(restored) == json.loads(metadata["names"])
    assert [list(t.shape) for t in restored.values()] == json.loads(metadata["shapes"])
    assert metadata["format"] == FORMAT
    for tensor in restored.values():
        assert tensor.dtype == torch.float32
        assert bool(torch.isfinite(tensor).all())
        assert len(set(tensor.abs().reshape(-1).tolist()) - {0.0}) <= 1
