"""Crafted and malformed KV cache files and manifests (invariant 5): nothing is unpickled, and
a file that is not exactly the cache its recorded manifest describes is refused with a typed
:class:`memos.errors.CorruptArtifact` before any tensor reaches a model, never another
exception, never code run from the file."""

from __future__ import annotations

import hashlib
import json
import pickle
import random
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from safetensors.torch import load, save

from memos import EventOp, HashEmbedder, MemOS
from memos.activation import KVEntry, KVManifest, cache_from_bytes, cache_to_bytes
from memos.core._derived import KV_KIND
from memos.core._store import Change
from memos.core._types import DerivedEntry, SourceRef
from memos.errors import CorruptArtifact, IntegrityError
from memos.llm import KV, LocalModel, ModelFingerprint

HEADS, TOKENS, DIM, LAYERS = 2, 5, 4, 2
TOKEN_IDS = [7, 3, 11, 3, 2]
FINGERPRINT = ModelFingerprint(weights_sha256="a" * 64, tokenizer_sha256="b" * 64)


def token_digest(token_ids: list[int]) -> str:
    return hashlib.sha256(json.dumps(token_ids).encode("ascii")).hexdigest()


def make_manifest(dtype: str = "fp32", **changes: Any) -> KVManifest:
    fields: dict[str, Any] = {
        "model_name": "tiny",
        "model": FINGERPRINT,
        "dtype": dtype,
        "layers": LAYERS,
        "kv_heads": HEADS,
        "head_dim": DIM,
        "tokens": TOKENS,
        "template_version": "memos-block-1/0123456789abcdef",
        "token_sha256": token_digest(TOKEN_IDS),
        "sources": (SourceRef(item_id="i1", version=1), SourceRef(item_id="i2", version=3)),
    }
    fields.update(changes)
    return KVManifest(**fields)


def make_layers(seed: int = 0) -> list[KV]:
    generator = torch.Generator().manual_seed(seed)
    shape = (1, HEADS, TOKENS, DIM)
    return [
        (torch.randn(shape, generator=generator), torch.randn(shape, generator=generator))
        for _ in range(LAYERS)
    ]


@dataclass(frozen=True)
class Valid:
    data: bytes
    manifest: KVManifest
    layers: list[KV]

    def tensors(self) -> dict[str, torch.Tensor]:
        return {name: tensor.clone() for name, tensor in load(self.data).items()}

    def resaved(self, tensors: dict[str, torch.Tensor], manifest: str | None = None) -> bytes:
        """A well-formed safetensors file of ``tensors`` carrying ``manifest`` (this file's
        own by default) in its header."""
        text = self.manifest.model_dump_json() if manifest is None else manifest
        return save(tensors, metadata={"manifest": text})


def valid(dtype: str = "fp32") -> Valid:
    manifest = make_manifest(dtype)
    layers = make_layers()
    return Valid(cache_to_bytes(manifest, TOKEN_IDS, layers), manifest, layers)


def raw_file(header: Any, data: bytes = b"", *, declared: int | None = None) -> bytes:
    """A file in the safetensors layout with any header (JSON-encoded unless bytes)."""
    text = header if isinstance(header, bytes) else json.dumps(header).encode()
    size = len(text) if declared is None else declared
    return struct.pack("<Q", size) + text + data


def header_of(data: bytes) -> dict[str, Any]:
    (size,) = struct.unpack("<Q", data[:8])
    header: dict[str, Any] = json.loads(data[8 : 8 + size])
    return header


def refused(data: bytes, manifest: KVManifest) -> CorruptArtifact:
    with pytest.raises(CorruptArtifact) as raised:
        cache_from_bytes(data, manifest)
    assert raised.value.status == 422
    assert raised.value.code == "corrupt_artifact"
    return raised.value


# valid files ----------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["fp32", "bf16", "int8"])
def test_a_valid_cache_file_round_trips(dtype: str) -> None:
    """A cache written by ``cache_to_bytes`` loads back to its token ids and fp32 layers of
    shape ``[1, H, T, D]`` (exactly for fp32), its header carrying the manifest."""
    file = valid(dtype)
    token_ids, layers = cache_from_bytes(file.data, file.manifest)
    assert token_ids == TOKEN_IDS
    assert len(layers) == LAYERS
    assert header_of(file.data)["__metadata__"] == {"manifest": file.manifest.model_dump_json()}
    for (keys, values), (want_keys, want_values) in zip(layers, file.layers, strict=True):
        for got, want in ((keys, want_keys), (values, want_values)):
            assert got.dtype == torch.float32
            assert got.shape == (1, HEADS, TOKENS, DIM)
            if dtype == "fp32":
                assert torch.equal(got, want)
            else:
                assert torch.allclose(got, want, atol=0.05, rtol=0.01)


# not safetensors ------------------------------------------------------------------------


def _truncated(cut: int) -> Callable[[Valid], bytes]:
    return lambda v: v.data[:cut] if cut >= 0 else v.data[: len(v.data) + cut]


NOT_SAFETENSORS: dict[str, Callable[[Valid], bytes]] = {
    "empty": lambda v: b"",
    "seven-bytes": lambda v: b"\x01" * 7,
    "random-bytes": lambda v: random.Random(1).randbytes(len(v.data)),
    "zeros": lambda v: bytes(len(v.data)),
    "only-the-length": _truncated(8),
    "truncated-in-header": _truncated(40),
    "truncated-in-data": _truncated(-10),
    "one-byte-short": _truncated(-1),
    "a-byte-too-many": lambda v: v.data + b"\x00",
    "header-length-past-the-end": lambda v: struct.pack("<Q", len(v.data)) + v.data[8:],
    "header-length-max": lambda v: b"\xff" * 8 + v.data[8:],
    "header-length-zero": lambda v: bytes(8) + v.data[8:],
    "header-not-json": lambda v: raw_file(b"{this is not json}   "),
    "header-not-utf8": lambda v: raw_file(b'{"\xff\xfe": 1}'),
    "header-a-list": lambda v: raw_file([1, 2, 3]),
    "header-a-string": lambda v: raw_file("token_ids"),
    "header-null": lambda v: raw_file(None),
    "header-deeply-nested": lambda v: raw_file(b"[" * 10_000 + b"]" * 10_000),
    "a-zip-file": lambda v: b"PK\x03\x04" + bytes(60),
    "a-torch-save-file": lambda v: _torch_saved(),
}


def _torch_saved() -> bytes:
    import io

    buffer = io.BytesIO()
    torch.save({"token_ids": torch.tensor(TOKEN_IDS)}, buffer)
    return buffer.getvalue()


@pytest.mark.parametrize("case", sorted(NOT_SAFETENSORS))
def test_a_file_that_is_not_safetensors_is_corrupt(case: str) -> None:
    """Random or truncated bytes, a bad header length, a header that is not a JSON object
    of tensors, another format: CorruptArtifact."""
    file = valid()
    refused(NOT_SAFETENSORS[case](file), file.manifest)


# bad headers ----------------------------------------------------------------------------


def _entry(dtype: str, shape: list[int], start: int, end: int) -> dict[str, Any]:
    return {"dtype": dtype, "shape": shape, "data_offsets": [start, end]}


BAD_HEADERS: dict[str, Callable[[Valid], bytes]] = {
    "huge-shape": lambda v: raw_file(
        {"token_ids": _entry("I64", [2**40], 0, 2**43)}, bytes(8 * TOKENS)
    ),
    "shape-overflowing-its-size": lambda v: raw_file(
        {"token_ids": _entry("I64", [2**31, 2**31, 2**31], 0, 8)}, bytes(8)
    ),
    "offsets-past-the-data": lambda v: raw_file(
        {"token_ids": _entry("I64", [TOKENS], 0, 8 * TOKENS)}, bytes(8 * TOKENS - 8)
    ),
    "offsets-not-matching-the-shape": lambda v: raw_file(
        {"token_ids": _entry("I64", [TOKENS], 0, 8 * TOKENS - 8)}, bytes(8 * TOKENS)
    ),
    "offsets-reversed": lambda v: raw_file(
        {"token_ids": _entry("I64", [0], 8, 0)}, bytes(8 * TOKENS)
    ),
    "overlapping-tensors": lambda v: raw_file(
        {"a": _entry("F32", [2], 0, 8), "b": _entry("F32", [2], 4, 12)}, bytes(12)
    ),
    "negative-shape": lambda v: raw_file({"token_ids": _entry("I64", [-1], 0, 8)}, bytes(8)),
    "unknown-dtype": lambda v: raw_file({"token_ids": _entry("I4", [2], 0, 1)}, bytes(1)),
    "metadata-not-strings": lambda v: raw_file(
        {"__metadata__": {"manifest": {"dtype": "fp32"}}}, b""
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_HEADERS))
def test_a_header_describing_impossible_tensors_is_corrupt(case: str) -> None:
    """Shapes larger than the file, sizes that overflow, offsets outside or inconsistent
    with the data, unknown dtypes: CorruptArtifact (and nothing of that size allocated)."""
    file = valid()
    refused(BAD_HEADERS[case](file), file.manifest)


# well-formed files that are not the recorded cache --------------------------------------


def _without(name: str) -> Callable[[Valid], bytes]:
    def craft(v: Valid) -> bytes:
        tensors = v.tensors()
        del tensors[name]
        return v.resaved(tensors)

    return craft


def _with(name: str, tensor: torch.Tensor) -> Callable[[Valid], bytes]:
    def craft(v: Valid) -> bytes:
        tensors = v.tensors()
        tensors[name] = tensor
        return v.resaved(tensors)

    return craft


def _converted(name: str, dtype: torch.dtype) -> Callable[[Valid], bytes]:
    def craft(v: Valid) -> bytes:
        tensors = v.tensors()
        tensors[name] = tensors[name].to(dtype)
        return v.resaved(tensors)

    return craft


def _reshaped(name: str, shape: tuple[int, ...]) -> Callable[[Valid], bytes]:
    def craft(v: Valid) -> bytes:
        tensors = v.tensors()
        tensors[name] = tensors[name].reshape(shape).contiguous()
        return v.resaved(tensors)

    return craft


def _poisoned(name: str, value: float, at: tuple[int, ...] = (0, 0, 0)) -> Callable[[Valid], bytes]:
    def craft(v: Valid) -> bytes:
        tensors = v.tensors()
        tensors[name][at] = value
        return v.resaved(tensors)

    return craft


def _tokens(token_ids: list[int]) -> Callable[[Valid], bytes]:
    return _with("token_ids", torch.tensor(token_ids, dtype=torch.int64))


def _header_manifest(text: Callable[[Valid], str | None]) -> Callable[[Valid], bytes]:
    def craft(v: Valid) -> bytes:
        tensors = v.tensors()
        manifest = text(v)
        if manifest is None:
            return save(tensors)
        return save(tensors, metadata={"manifest": manifest})

    return craft


def _exotic_extra(dtype: str, count: int, nbytes: int) -> Callable[[Valid], bytes]:
    """The valid file plus one tensor of a dtype that safetensors reads but its torch
    binding has no torch dtype for."""

    def craft(v: Valid) -> bytes:
        header = header_of(v.data)
        (size,) = struct.unpack("<Q", v.data[:8])
        body = v.data[8 + size :]
        header["zz"] = _entry(dtype, [count], len(body), len(body) + nbytes)
        return raw_file(header, body + b"\x01" * nbytes)

    return craft


FULL = (HEADS, TOKENS, DIM)
WRONG_FILES: dict[str, Callable[[Valid], bytes]] = {
    "missing-a-layer-tensor": _without("1.v"),
    "missing-token-ids": _without("token_ids"),
    "an-extra-tensor": _with("2.k", torch.zeros(FULL)),
    "an-extra-empty-tensor": _with("extra", torch.zeros(0)),
    "an-extra-f8e8m0-tensor": _exotic_extra("F8_E8M0", 2, 2),
    "an-extra-f4-tensor": _exotic_extra("F4", 4, 2),
    "an-extra-f6-tensor": _exotic_extra("F6_E2M3", 4, 3),
    "keys-float64": _converted("0.k", torch.float64),
    "keys-float16": _converted("0.k", torch.float16),
    "keys-bf16-in-an-fp32-file": _converted("0.k", torch.bfloat16),
    "keys-int8": _converted("0.k", torch.int8),
    "values-int32": _converted("1.v", torch.int32),
    "token-ids-int32": _converted("token_ids", torch.int32),
    "token-ids-float": _converted("token_ids", torch.float32),
    "keys-transposed-same-size": _reshaped("0.k", (HEADS, DIM, TOKENS)),
    "keys-flat": _reshaped("0.k", (HEADS * TOKENS * DIM,)),
    "keys-with-batch-dim": _reshaped("0.k", (1, *FULL)),
    "keys-one-token-more": _with("0.k", torch.zeros(HEADS, TOKENS + 1, DIM)),
    "token-ids-one-more": _tokens([*TOKEN_IDS, 2]),
    "keys-nan": _poisoned("0.k", float("nan")),
    "keys-inf": _poisoned("0.k", float("inf")),
    "values-minus-inf": _poisoned("1.v", float("-inf"), (1, 4, 3)),
    "token-ids-swapped": _tokens([3, 7, 11, 3, 2]),
    "token-ids-other": _tokens([7, 3, 11, 3, 9]),
    "no-manifest-in-header": _header_manifest(lambda v: None),
    "other-manifest-in-header": _header_manifest(
        lambda v: make_manifest(tokens=TOKENS + 1).model_dump_json()
    ),
    "other-model-in-header": _header_manifest(
        lambda v: make_manifest(
            model=ModelFingerprint(weights_sha256="c" * 64, tokenizer_sha256="b" * 64)
        ).model_dump_json()
    ),
    "manifest-reformatted-in-header": _header_manifest(
        lambda v: json.dumps(json.loads(v.manifest.model_dump_json()), indent=1)
    ),
    "manifest-not-json-in-header": _header_manifest(lambda v: "{"),
}


@pytest.mark.parametrize("case", sorted(WRONG_FILES))
def test_a_well_formed_file_that_is_not_the_recorded_cache_is_corrupt(case: str) -> None:
    """A valid safetensors file with a tensor missing or extra, of another dtype or shape,
    holding NaN or inf, other token ids, or a header manifest that is not exactly the
    recorded one: CorruptArtifact."""
    file = valid()
    refused(WRONG_FILES[case](file), file.manifest)


INT8_WRONG: dict[str, Callable[[Valid], bytes]] = {
    "codes-int8-not-uint8": _converted("0.k.q", torch.int8),
    "codes-float": _converted("0.v.q", torch.float32),
    "scale-per-token-for-keys": _with("0.k.scale", torch.ones(HEADS, TOKENS, 1)),
    "scale-per-channel-for-values": _with("1.v.scale", torch.ones(HEADS, 1, DIM)),
    "min-missing": _without("1.k.min"),
    "fp32-tensor-in-an-int8-file": _with("0.k", torch.zeros(FULL)),
    "scale-nan": _poisoned("0.k.scale", float("nan")),
    "min-inf": _poisoned("1.v.min", float("inf")),
    "scale-bf16": _converted("1.k.scale", torch.bfloat16),
}


@pytest.mark.parametrize("case", sorted(INT8_WRONG))
def test_a_malformed_int8_file_is_corrupt(case: str) -> None:
    """int8 files: codes must be uint8, keys' scales per channel, values' per token, all
    present and finite."""
    file = valid("int8")
    refused(INT8_WRONG[case](file), file.manifest)


@pytest.mark.parametrize("value", [float("inf"), float("-inf"), float("nan")])
def test_an_int8_file_with_a_non_finite_statistic_is_corrupt(value: float) -> None:
    """int8 statistics are fp16, so finite codes and statistics always decode to finite
    values (65504 x 255 is far below fp32's range); a non-finite statistic is refused."""
    file = valid("int8")
    for name in ("0.k.scale", "0.k.min", "1.v.scale", "1.v.min"):
        refused(_poisoned(name, value)(file), file.manifest)


def test_the_largest_finite_int8_statistics_decode_to_finite_values() -> None:
    file = valid("int8")
    tensors = file.tensors()
    tensors["0.k.scale"].fill_(65504.0)
    tensors["0.k.min"].fill_(65504.0)
    tensors["0.k.q"].fill_(255)
    _, layers = cache_from_bytes(file.resaved(tensors), file.manifest)
    assert all(bool(torch.isfinite(k).all() and torch.isfinite(v).all()) for k, v in layers)


def test_a_file_for_another_manifest_dtype_is_corrupt() -> None:
    """The same bytes are checked against the recorded manifest's dtype: an fp32 file is not
    a valid bf16 or int8 one, whatever its header says."""
    file = valid("fp32")
    for dtype in ("bf16", "int8"):
        refused(file.data, make_manifest(dtype))
    refused(valid("int8").data, file.manifest)


# pickles --------------------------------------------------------------------------------


class Payload:
    """Unpickling this writes a marker file (and would run any code the same way)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Callable[..., Any], tuple[Any, ...]]:
        return (Path.write_text, (self.marker, "code ran"))


def pickles(marker: Path) -> Iterator[tuple[str, bytes]]:
    payload = pickle.dumps(Payload(marker))
    assert not marker.exists()
    yield "a-pickle", payload
    yield "a-pickle-protocol-0", pickle.dumps(Payload(marker), protocol=0)
    yield "a-torch-save-with-a-pickle", _torch_saved_object(Payload(marker))
    # safetensors-shaped: a length that points at the pickle as if it were a header
    yield "length-then-pickle", struct.pack("<Q", len(payload)) + payload
    # a valid header whose tensor bytes are a pickle: read as numbers, never unpickled
    header = {
        "__metadata__": {"manifest": "x"},
        "token_ids": _entry("U8", [len(payload)], 0, len(payload)),
    }
    yield "pickle-as-tensor-data", raw_file(header, payload)


def _torch_saved_object(payload: object) -> bytes:
    import io

    buffer = io.BytesIO()
    torch.save({"x": payload}, buffer)
    return buffer.getvalue()


def test_a_pickle_disguised_as_a_cache_file_runs_nothing(tmp_path: Path) -> None:
    """Pickles (plain, in a torch.save zip, behind a safetensors length, as tensor bytes)
    are CorruptArtifact and their code never runs."""
    marker = tmp_path / "pwned"
    file = valid()
    for name, data in pickles(marker):
        with pytest.raises(CorruptArtifact):
            cache_from_bytes(data, file.manifest)
        assert not marker.exists(), name
    # the payload does run when unpickled, so the check above is meaningful
    pickle.loads(pickle.dumps(Payload(marker)))
    assert marker.read_text() == "code ran"


# manifests ------------------------------------------------------------------------------


def _manifest_json(**changes: Any) -> str:
    fields = json.loads(make_manifest().model_dump_json())
    for key, value in changes.items():
        if value is _MISSING:
            fields.pop(key)
        else:
            fields[key] = value
    return json.dumps(fields)


_MISSING = object()
BAD_MANIFESTS: dict[str, dict[str, Any]] = {
    "extra-field": {"comment": "hi"},
    "other-format": {"format": "pickle"},
    "other-format-version": {"format_version": 2},
    "format-version-as-string": {"format_version": "1"},
    "unknown-dtype": {"dtype": "fp16"},
    "dtype-not-a-string": {"dtype": 32},
    "layers-as-string": {"layers": "2"},
    "layers-as-float": {"layers": 2.5},
    "layers-as-bool": {"layers": True},
    "layers-zero": {"layers": 0},
    "layers-negative": {"layers": -2},
    "layers-huge": {"layers": 1025},
    "heads-huge": {"kv_heads": 10**9},
    "head-dim-huge": {"head_dim": 4097},
    "tokens-zero": {"tokens": 0},
    "tokens-huge": {"tokens": 2**40},
    "tokens-missing": {"tokens": _MISSING},
    "sha-uppercase": {"token_sha256": "A" * 64},
    "sha-short": {"token_sha256": "a" * 63},
    "sha-long": {"token_sha256": "a" * 65},
    "sha-not-hex": {"token_sha256": "g" * 64},
    "sha-with-newline": {"token_sha256": "a" * 64 + "\n"},
    "no-sources": {"sources": []},
    "source-version-zero": {"sources": [{"item_id": "i1", "version": 0}]},
    "source-extra-field": {"sources": [{"item_id": "i1", "version": 1, "x": 1}]},
    "sources-not-a-list": {"sources": "i1"},
    "model-name-too-long": {"model_name": "m" * 201},
    "template-version-too-long": {"template_version": "t" * 201},
    "model-missing": {"model": _MISSING},
    "model-missing-a-digest": {"model": {"weights_sha256": "a" * 64}},
    "model-a-string": {"model": "smollm2"},
}


@pytest.mark.parametrize("case", sorted(BAD_MANIFESTS))
def test_a_malformed_manifest_is_rejected(case: str) -> None:
    """Extra or missing fields, wrong types (no coercion), sizes out of range, a bad sha:
    ValidationError from KVManifest, CorruptArtifact through KVEntry.from_derived."""
    text = _manifest_json(**BAD_MANIFESTS[case])
    with pytest.raises(ValidationError):
        KVManifest.model_validate_json(text)
    entry = DerivedEntry(
        id="kv-x",
        cube="notes",
        kind=KV_KIND,
        blob="0" * 64,
        size=1,
        sources=make_manifest().sources,
        manifest=json.loads(text),
        created_at=datetime.now(UTC),
    )
    with pytest.raises(CorruptArtifact):
        KVEntry.from_derived(entry)


def test_a_manifest_naming_other_sources_than_its_record_is_corrupt() -> None:
    """The manifest and the catalogue record must name the same source versions."""
    manifest = make_manifest()
    good = DerivedEntry(
        id="kv-x",
        cube="notes",
        kind=KV_KIND,
        blob="0" * 64,
        size=1,
        sources=manifest.sources,
        manifest=manifest.model_dump(mode="json"),
        created_at=datetime.now(UTC),
    )
    assert KVEntry.from_derived(good).manifest == manifest
    for sources in (manifest.sources[:1], tuple(reversed(manifest.sources))):
        with pytest.raises(CorruptArtifact):
            KVEntry.from_derived(good.model_copy(update={"sources": sources}))


def test_a_valid_manifest_round_trips_through_json() -> None:
    manifest = make_manifest("int8")
    assert KVManifest.model_validate_json(manifest.model_dump_json()) == manifest
    assert manifest.bytes_fp32 == LAYERS * 2 * HEADS * TOKENS * DIM * 4


# end to end: the data dir ---------------------------------------------------------------


@dataclass(frozen=True)
class Stored:
    data_dir: Path
    cube: str
    entry: KVEntry


@pytest.fixture
def stored(chat_mos: MemOS, data_dir: Path) -> Stored:
    chat_mos.create_cube("notes")
    items = chat_mos.add_many(
        ["alice moved to lisbon in may", "the capital of france is paris"], cube="notes"
    )
    entry = chat_mos.kv.build("notes", [i.id for i in items])
    return Stored(data_dir, "notes", entry)


def _reopened(stored: Stored, model: LocalModel) -> MemOS:
    """A fresh MemOS on the data dir: nothing resident, every cache read from its file."""
    return MemOS.open(stored.data_dir, embedder=HashEmbedder(64), model=model)


def test_a_tampered_blob_is_an_integrity_error(stored: Stored, tiny_model: LocalModel) -> None:
    """Changed bytes in a stored cache file no longer match its digest: loading it (from a
    fresh instance) raises IntegrityError, and verify reports the cube broken."""
    path = stored.data_dir / "blobs" / f"{stored.entry.blob}.safetensors"
    data = bytearray(path.read_bytes())
    data[-3] ^= 0x40  # one bit of a value: still a well-formed file
    path.write_bytes(bytes(data))
    with _reopened(stored, tiny_model) as mos:
        with pytest.raises(IntegrityError) as raised:
            mos.kv.load(stored.entry)
        assert raised.value.code == "integrity_error"
        with pytest.raises(IntegrityError):
            mos.chat("where is alice", cube=stored.cube, k=2)
        report = mos.verify(stored.cube)
        assert not report.ok
        assert stored.entry.blob in (report.problem or "")
        # recomputing in full does not read the cache
        assert mos.chat("where is alice", cube=stored.cube, k=2, use_kv=False).cached_tokens == 0


def test_a_missing_blob_is_an_integrity_error(stored: Stored, tiny_model: LocalModel) -> None:
    (stored.data_dir / "blobs" / f"{stored.entry.blob}.safetensors").unlink()
    with _reopened(stored, tiny_model) as mos:
        with pytest.raises(IntegrityError, match="missing"):
            mos.kv.load(stored.entry)
        assert not mos.verify(stored.cube).ok


def _commit_crafted(mos: MemOS, stored: Stored, data: bytes) -> KVEntry:
    """A catalogue entry with the real entry's manifest and sources whose blob (stored
    under its true digest, so it passes the store's check) is ``data``."""
    entry = DerivedEntry(
        id="kv-crafted-" + hashlib.sha256(data).hexdigest()[:12],
        cube=stored.cube,
        kind=KV_KIND,
        blob=mos.store.put_blob(data),
        size=len(data),
        sources=stored.entry.sources,
        manifest=stored.entry.manifest.model_dump(mode="json"),
        created_at=datetime.now(UTC),
    )
    change = Change(
        op=EventOp.KV_BUILD, cube=stored.cube, actor="mallory", ts=entry.created_at, derived=entry
    )
    mos.store.commit([change])
    return KVEntry.from_derived(entry)


def test_a_crafted_blob_in_the_data_dir_is_corrupt_and_runs_nothing(
    stored: Stored, tiny_model: LocalModel, tmp_path: Path
) -> None:
    """Crafted blobs recorded with a genuine manifest (a pickle, NaN keys, the tensors of
    another block) are refused with CorruptArtifact when loaded, and no code runs."""
    marker = tmp_path / "pwned"
    genuine = (stored.data_dir / "blobs" / f"{stored.entry.blob}.safetensors").read_bytes()
    original = Valid(genuine, stored.entry.manifest, [])
    tensors = original.tensors()
    tensors["0.k"][0, 0, 0] = float("nan")
    other_tokens = original.tensors()
    other_tokens["token_ids"] = other_tokens["token_ids"].flip(0).contiguous()
    crafted = [
        pickle.dumps(Payload(marker)),
        original.resaved(tensors),
        original.resaved(other_tokens),
        genuine[:-4],
    ]
    with _reopened(stored, tiny_model) as mos:
        entries = [_commit_crafted(mos, stored, data) for data in crafted]
    with _reopened(stored, tiny_model) as mos:
        for entry in entries:
            with pytest.raises(CorruptArtifact):
                mos.kv.load(entry)
        assert mos.kv.resident() == {}
        # the genuine entry still loads and is used
        assert mos.kv.load(stored.entry).length == stored.entry.tokens
    assert not marker.exists()


# fuzzing --------------------------------------------------------------------------------

FUZZ_BASES = {dtype: valid(dtype) for dtype in ("fp32", "int8")}
EXPECTED = {dtype: cache_from_bytes(file.data, file.manifest) for dtype, file in FUZZ_BASES.items()}


def _protected_end(data: bytes) -> int:
    """Where the bytes whose every change must be caught end: the length, the header and
    the token ids (the data section's first tensor: safetensors puts int64 ones first)."""
    size: int = struct.unpack("<Q", data[:8])[0]
    start, end = header_of(data)["token_ids"]["data_offsets"]
    assert start == 0  # int64 tensors come first in the data section
    return 8 + size + int(end)


def _loads_identically(data: bytes, dtype: str) -> bool:
    token_ids, layers = cache_from_bytes(data, FUZZ_BASES[dtype].manifest)
    want_ids, want_layers = EXPECTED[dtype]
    return token_ids == want_ids and all(
        torch.equal(a, b)
        for (k, v), (wk, wv) in zip(layers, want_layers, strict=True)
        for a, b in ((k, wk), (v, wv))
    )


def _mutated(data: bytes, edits: list[tuple[int, int]], cut: int | None, tail: bytes) -> bytes:
    out = bytearray(data)
    for position, value in edits:
        out[position % len(out)] = value
    if cut is not None:
        out = out[: cut % (len(out) + 1)]
    return bytes(out) + tail


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    dtype=st.sampled_from(sorted(FUZZ_BASES)),
    edits=st.lists(st.tuples(st.integers(0, 2**20), st.integers(0, 255)), max_size=4),
    cut=st.none() | st.integers(0, 2**20),
    tail=st.binary(max_size=8),
)
def test_fuzzed_cache_files_load_as_a_cache_or_are_corrupt(
    dtype: str, edits: list[tuple[int, int]], cut: int | None, tail: bytes
) -> None:
    """Random byte changes, truncation and appended bytes: the loader raises only
    CorruptArtifact, and whatever it accepts is a cache of the manifest's token ids and
    shape with finite values (changed values are the store's digest's to catch)."""
    file = FUZZ_BASES[dtype]
    data = _mutated(file.data, edits, cut, tail)
    try:
        token_ids, layers = cache_from_bytes(data, file.manifest)
    except CorruptArtifact:
        return
    assert token_ids == TOKEN_IDS
    assert len(layers) == LAYERS
    for keys, values in layers:
        for tensor in (keys, values):
            assert tensor.dtype == torch.float32
            assert tensor.shape == (1, HEADS, TOKENS, DIM)
            assert bool(torch.isfinite(tensor).all())


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    dtype=st.sampled_from(sorted(FUZZ_BASES)),
    edits=st.lists(st.tuples(st.integers(0, 2**20), st.integers(0, 255)), min_size=1, max_size=3),
)
def test_fuzzed_headers_and_token_ids_load_identically_or_are_corrupt(
    dtype: str, edits: list[tuple[int, int]]
) -> None:
    """Changes confined to the length, the header (manifest, names, dtypes, shapes,
    offsets) and the token ids either leave an identical cache or are CorruptArtifact."""
    file = FUZZ_BASES[dtype]
    end = _protected_end(file.data)
    data = _mutated(file.data, [(p % end, v) for p, v in edits], None, b"")
    try:
        same = _loads_identically(data, dtype)
    except CorruptArtifact:
        return
    assert same


def test_the_fuzzed_files_are_mostly_refused_not_mostly_identical() -> None:
    """A sanity check of the fuzz targets: a single changed header byte is caught."""
    file = FUZZ_BASES["fp32"]
    (size,) = struct.unpack("<Q", file.data[:8])
    caught = tried = 0
    for position in range(0, 8 + size, max(size // 50, 1)):
        tried += 1
        data = bytearray(file.data)
        data[position] = (data[position] + 1) % 256
        try:
            cache_from_bytes(bytes(data), file.manifest)
        except CorruptArtifact:
            caught += 1
    assert caught == tried
