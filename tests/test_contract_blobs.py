"""The contract of ``BlobStore``: immutable blobs addressed by their sha256, on every backend.

``put_blob`` stores the bytes and returns their sha256 as 64 lowercase hex digits, the same on
every call with the same bytes (idempotent); ``get_blob`` gives those exact bytes back, from any
handle on the store and after it is reopened, ``None`` for a well-formed digest of nothing
stored, and ``InvalidInput`` for anything that is not a digest (it never names a path or key).
"""

from __future__ import annotations

import hashlib
import re

import numpy as np
import pytest
from _contract import StoreFactory, handles, race

from memos import Store
from memos.core._store import open_store
from memos.errors import InvalidInput

DIGEST = re.compile(r"[0-9a-f]{64}")

PAYLOADS = {
    "empty": b"",
    "one byte": b"\x00",
    "every byte value": bytes(range(256)) * 4,
    "text": "ünïcödé safetensors header 🙂".encode(),
    "3 MiB": np.random.default_rng(0).bytes(3 * 1024 * 1024),
}


def test_blobs_are_content_addressed(store: Store) -> None:
    data = b"\x00safetensors bytes \xff" * 100
    digest = store.put_blob(data)
    assert digest == hashlib.sha256(data).hexdigest()
    assert store.put_blob(data) == digest  # idempotent
    assert store.get_blob(digest) == data
    assert store.get_blob(hashlib.sha256(b"other").hexdigest()) is None
    empty = store.put_blob(b"")
    assert store.get_blob(empty) == b""
    for bad in ("", "../memos.db", "AB" * 32, "g" * 64, digest[:-1], "/" + digest[1:]):
        with pytest.raises(InvalidInput):
            store.get_blob(bad)


@pytest.mark.parametrize("data", PAYLOADS.values(), ids=PAYLOADS.keys())
def test_put_blob_returns_the_sha256_and_gives_the_bytes_back(store: Store, data: bytes) -> None:
    digest = store.put_blob(data)
    assert isinstance(digest, str)
    assert DIGEST.fullmatch(digest)
    assert digest == hashlib.sha256(data).hexdigest()
    got = store.get_blob(digest)
    assert isinstance(got, bytes)
    assert got == data


def test_put_blob_is_idempotent(store: Store) -> None:
    data = PAYLOADS["every byte value"]
    digest = store.put_blob(data)
    for _ in range(3):
        assert store.put_blob(data) == digest
        assert store.put_blob(bytes(bytearray(data))) == digest  # equal bytes, another object
    assert store.get_blob(digest) == data
    # another blob leaves it as it was
    other = store.put_blob(PAYLOADS["text"])
    assert store.get_blob(digest) == data
    assert store.get_blob(other) == PAYLOADS["text"]


def test_get_blob_is_none_when_absent(store: Store) -> None:
    never = [hashlib.sha256(data).hexdigest() for data in PAYLOADS.values()]
    for digest in never:
        assert store.get_blob(digest) is None  # an empty store
    assert store.get_blob("0" * 64) is None
    kept = PAYLOADS["text"]
    store.put_blob(kept)
    near = bytearray(kept)
    near[-1] ^= 1  # one bit off
    assert store.get_blob(hashlib.sha256(bytes(near)).hexdigest()) is None
    assert store.get_blob(hashlib.sha256(kept + b"\x00").hexdigest()) is None
    assert store.get_blob(hashlib.sha256(b"").hexdigest()) is None  # the empty blob too
    assert store.get_blob(hashlib.sha256(kept).hexdigest()) == kept


def test_a_malformed_digest_is_invalid_input_even_when_a_blob_matches(store: Store) -> None:
    data = PAYLOADS["text"]
    digest = store.put_blob(data)
    malformed = [
        digest.upper(),
        f" {digest}",
        f"{digest}\n",
        f"{digest}0",
        f"sha256:{digest}",
        digest[:32],
        "*",
        f"{digest[:-1]}*",
        f"../blobs/{digest}",
        "\x00" * 64,
    ]
    for bad in malformed:
        with pytest.raises(InvalidInput):
            store.get_blob(bad)
    assert store.get_blob(digest) == data


def test_blobs_outlive_the_store_handle(make_store: StoreFactory) -> None:
    store = make_store()
    digests = {name: store.put_blob(data) for name, data in PAYLOADS.items()}
    store.close()
    again = open_store(store.url)
    try:
        for name, digest in digests.items():
            assert again.get_blob(digest) == PAYLOADS[name], name
            assert again.put_blob(PAYLOADS[name]) == digest
    finally:
        again.close()


def test_a_blob_is_readable_from_every_handle_once_put(store: Store) -> None:
    """A blob is written before the commit that names it, perhaps by another process: once
    ``put_blob`` returns, every handle on the store reads it."""
    with handles(store, 2) as (writer, reader):
        digest = writer.put_blob(PAYLOADS["3 MiB"])
        assert reader.get_blob(digest) == PAYLOADS["3 MiB"]
        assert store.get_blob(digest) == PAYLOADS["3 MiB"]


def test_concurrent_puts_of_blobs(store: Store) -> None:
    same = PAYLOADS["3 MiB"]
    distinct = [f"blob {n}".encode() * 1000 for n in range(4)]
    with handles(store, 8) as stores:
        outcomes = race(
            stores, lambda other, n: other.put_blob(same if n % 2 else distinct[n // 2])
        )
    expected = [hashlib.sha256(same if n % 2 else distinct[n // 2]).hexdigest() for n in range(8)]
    assert outcomes == expected
    assert store.get_blob(hashlib.sha256(same).hexdigest()) == same
    for data in distinct:
        assert store.get_blob(hashlib.sha256(data).hexdigest()) == data
