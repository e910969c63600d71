"""The contract of ``Store`` as a whole: every backend is each of the six protocols it combines
(``CubeLog``, ``DerivedArtifacts``, ``AccessLog``, ``KeyStore``, ``JobQueue``, ``BlobStore``),
each held to its own suite in ``tests/test_contract_<concern>.py``.
"""

from __future__ import annotations

import inspect
from typing import Protocol

import pytest

from memos import Store
from memos.core._store import AccessLog, BlobStore, CubeLog, DerivedArtifacts, JobQueue, KeyStore

PROTOCOLS = (CubeLog, DerivedArtifacts, AccessLog, KeyStore, JobQueue, BlobStore)


def members(protocol: type) -> list[str]:
    """The attributes and methods ``protocol`` itself declares."""
    declared = [name for name, value in vars(protocol).items() if inspect.isfunction(value)]
    names = {*declared, *getattr(protocol, "__annotations__", {})}
    return sorted(name for name in names if not name.startswith("_"))


def test_store_satisfies_protocol(store: Store) -> None:
    assert isinstance(store, Store)
    assert isinstance(store.url, str)


def test_the_store_is_the_six_protocols() -> None:
    """``PROTOCOLS`` is what ``Store`` combines, so a protocol added to it is checked below."""
    assert [base for base in Store.__bases__ if base is not Protocol] == list(PROTOCOLS)
    declared = [name for protocol in PROTOCOLS for name in members(protocol)]
    assert len(declared) == len(set(declared))  # no member declared by two protocols
    for protocol in PROTOCOLS:
        assert members(protocol), protocol
        assert not isinstance(object(), protocol)  # the check below can fail


@pytest.mark.parametrize("protocol", PROTOCOLS, ids=lambda p: p.__name__)
def test_each_backend_satisfies_each_protocol(store: Store, protocol: type) -> None:
    assert isinstance(store, protocol)
    backend = type(store)
    for name in members(protocol):
        if name == "url":
            continue
        declared = inspect.signature(getattr(protocol, name))
        implemented = inspect.signature(getattr(backend, name))
        # the same parameters, in the same order, of the same kinds and defaults: a caller
        # that names an argument reaches every backend alike
        assert [(p.name, p.kind, p.default) for p in implemented.parameters.values()] == [
            (p.name, p.kind, p.default) for p in declared.parameters.values()
        ], f"{backend.__name__}.{name}{implemented} is not {protocol.__name__}.{name}{declared}"
