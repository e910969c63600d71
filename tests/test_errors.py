"""Bad input gets a typed ``memos.errors`` exception with the right HTTP status, and changes
nothing: the log, the items and the cube list are the same after the failed call."""

from __future__ import annotations

import inspect
import math
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import memos.errors as errors_module
from memos import HashEmbedder, MemOS
from memos.errors import (
    Conflict,
    CubeExists,
    CubeNotFound,
    DataDirError,
    InvalidInput,
    ItemNotFound,
    MemosError,
    TextTooLong,
    VersionConflict,
    VersionNotFound,
)


@dataclass(frozen=True)
class Seeded:
    cube: str
    item: str
    deleted: str


@pytest.fixture
def seeded(mos: MemOS, cube: str) -> Seeded:
    item = mos.add(
        "Alice moved to Lisbon in May 2023",
        cube=cube,
        user="alice",
        tags=["travel"],
        metadata={"source": "chat"},
    )
    mos.update(item.id, "Alice moved to Porto in June 2023")
    gone = mos.add("a memory about to be deleted", cube=cube)
    mos.delete(gone.id)
    mos.create_cube("other", owner="bob")
    mos.add("an unrelated memory", cube="other")
    return Seeded(cube=cube, item=item.id, deleted=gone.id)


def _state(mos: MemOS) -> tuple[Any, ...]:
    cubes = mos.list_cubes()
    logs = {c.name: mos.log(c.name) for c in cubes}
    items = {c.name: list(mos.store.iter_items(c.name)) for c in cubes}
    return cubes, logs, items


Call = Callable[[MemOS, Seeded], object]
LONG = "x" * 32_001

# name -> (call, expected class). Each call must fail before or inside its one transaction.
CASES: dict[str, tuple[Call, type[MemosError]]] = {
    # text
    "add-empty-text": (lambda m, s: m.add("", cube=s.cube), InvalidInput),
    "add-whitespace-text": (lambda m, s: m.add(" \n\t ", cube=s.cube), InvalidInput),
    "add-oversized-text": (lambda m, s: m.add(LONG, cube=s.cube), TextTooLong),
    "add-int-text": (lambda m, s: m.add(42, cube=s.cube), InvalidInput),  # type: ignore[call-overload]
    "add-none-text": (lambda m, s: m.add(None, cube=s.cube), InvalidInput),  # type: ignore[call-overload]
    "add-bytes-text": (lambda m, s: m.add(b"bytes", cube=s.cube), InvalidInput),  # type: ignore[call-overload]
    "add-nul-text": (lambda m, s: m.add("a\x00b", cube=s.cube), InvalidInput),
    "add-empty-message-list": (lambda m, s: m.add([], cube=s.cube), InvalidInput),
    # cubes
    "add-unknown-cube": (lambda m, s: m.add("hello", cube="nope"), CubeNotFound),
    "add-bad-cube-name": (lambda m, s: m.add("hello", cube="bad name!"), InvalidInput),
    "add-empty-cube-name": (lambda m, s: m.add("hello", cube=""), InvalidInput),
    "add-path-cube-name": (lambda m, s: m.add("hello", cube="../etc"), InvalidInput),
    "add-non-str-cube": (lambda m, s: m.add("hello", cube=7), InvalidInput),  # type: ignore[call-overload]
    "create-existing-cube": (lambda m, s: m.create_cube(s.cube), CubeExists),
    "create-bad-cube-name": (lambda m, s: m.create_cube("-leading-dash"), InvalidInput),
    "create-long-cube-name": (lambda m, s: m.create_cube("c" * 65), InvalidInput),
    "create-empty-owner": (lambda m, s: m.create_cube("fresh", owner=""), InvalidInput),
    "create-unknown-embedder": (
        lambda m, s: m.create_cube("fresh", embedder="no-such-model"),
        InvalidInput,
    ),
    "create-unknown-codec": (lambda m, s: m.create_cube("fresh", codec="fp4"), InvalidInput),
    "log-unknown-cube": (lambda m, s: m.log("nope"), CubeNotFound),
    "verify-unknown-cube": (lambda m, s: m.verify("nope"), CubeNotFound),
    "get-cube-unknown": (lambda m, s: m.get_cube("nope"), CubeNotFound),
    "export-unknown-cube": (lambda m, s: m.export_cube("nope", "/nonexistent/x"), CubeNotFound),
    # metadata
    "meta-nested-dict": (
        lambda m, s: m.add("hi", cube=s.cube, metadata={"a": {"b": 1}}),  # type: ignore[dict-item]
        InvalidInput,
    ),
    "meta-list": (
        lambda m, s: m.add("hi", cube=s.cube, metadata={"a": [1, 2]}),  # type: ignore[dict-item]
        InvalidInput,
    ),
    "meta-nan": (lambda m, s: m.add("hi", cube=s.cube, metadata={"a": math.nan}), InvalidInput),
    "meta-inf": (lambda m, s: m.add("hi", cube=s.cube, metadata={"a": -math.inf}), InvalidInput),
    "meta-huge-int": (lambda m, s: m.add("hi", cube=s.cube, metadata={"a": 2**64}), InvalidInput),
    "meta-bytes": (
        lambda m, s: m.add("hi", cube=s.cube, metadata={"a": b"x"}),  # type: ignore[dict-item]
        InvalidInput,
    ),
    "meta-key-with-space": (
        lambda m, s: m.add("hi", cube=s.cube, metadata={"bad key": 1}),
        InvalidInput,
    ),
    "meta-empty-key": (lambda m, s: m.add("hi", cube=s.cube, metadata={"": 1}), InvalidInput),
    "meta-int-key": (
        lambda m, s: m.add("hi", cube=s.cube, metadata={1: 1}),  # type: ignore[dict-item]
        InvalidInput,
    ),
    "meta-long-value": (
        lambda m, s: m.add("hi", cube=s.cube, metadata={"a": "v" * 5000}),
        InvalidInput,
    ),
    "meta-too-many-keys": (
        lambda m, s: m.add("hi", cube=s.cube, metadata={f"k{n}": n for n in range(65)}),
        InvalidInput,
    ),
    "meta-not-a-mapping": (
        lambda m, s: m.add("hi", cube=s.cube, metadata=[("a", 1)]),  # type: ignore[arg-type]
        InvalidInput,
    ),
    # tags and principals
    "tags-bare-string": (lambda m, s: m.add("hi", cube=s.cube, tags="travel"), InvalidInput),
    "tags-empty-tag": (lambda m, s: m.add("hi", cube=s.cube, tags=["ok", ""]), InvalidInput),
    "tags-blank-tag": (lambda m, s: m.add("hi", cube=s.cube, tags=["  "]), InvalidInput),
    "tags-non-str": (
        lambda m, s: m.add("hi", cube=s.cube, tags=[5]),  # type: ignore[list-item]
        InvalidInput,
    ),
    "tags-too-long": (lambda m, s: m.add("hi", cube=s.cube, tags=["t" * 65]), InvalidInput),
    "tags-too-many": (
        lambda m, s: m.add("hi", cube=s.cube, tags=[f"t{n}" for n in range(33)]),
        InvalidInput,
    ),
    "user-empty": (lambda m, s: m.add("hi", cube=s.cube, user=""), InvalidInput),
    "user-non-str": (lambda m, s: m.add("hi", cube=s.cube, user=5), InvalidInput),  # type: ignore[call-overload]
    "session-empty": (lambda m, s: m.add("hi", cube=s.cube, session=" "), InvalidInput),
    "occurred-at-garbage": (
        lambda m, s: m.add("hi", cube=s.cube, occurred_at="yesterday-ish"),
        InvalidInput,
    ),
    # search
    "search-k-zero": (lambda m, s: m.search("q", cube=s.cube, k=0), InvalidInput),
    "search-k-negative": (lambda m, s: m.search("q", cube=s.cube, k=-1), InvalidInput),
    "search-k-float": (lambda m, s: m.search("q", cube=s.cube, k=1.5), InvalidInput),  # type: ignore[arg-type]
    "search-k-bool": (lambda m, s: m.search("q", cube=s.cube, k=True), InvalidInput),
    "search-k-str": (lambda m, s: m.search("q", cube=s.cube, k="5"), InvalidInput),  # type: ignore[arg-type]
    "search-k-too-big": (lambda m, s: m.search("q", cube=s.cube, k=1001), InvalidInput),
    "search-empty-query": (lambda m, s: m.search(" ", cube=s.cube), InvalidInput),
    "search-unknown-cube": (lambda m, s: m.search("q", cube="nope"), CubeNotFound),
    "search-bad-tags": (lambda m, s: m.search("q", cube=s.cube, tags="travel"), InvalidInput),
    "search-bad-where": (
        lambda m, s: m.search("q", cube=s.cube, where={"a": [1]}),  # type: ignore[dict-item]
        InvalidInput,
    ),
    "search-bad-since": (lambda m, s: m.search("q", cube=s.cube, since="soon"), InvalidInput),
    # unknown ids
    "get-unknown-id": (lambda m, s: m.get("0" * 32), ItemNotFound),
    "get-non-str-id": (lambda m, s: m.get(123), ItemNotFound),  # type: ignore[arg-type]
    "update-unknown-id": (lambda m, s: m.update("0" * 32, "new text"), ItemNotFound),
    "delete-unknown-id": (lambda m, s: m.delete("0" * 32), ItemNotFound),
    "history-unknown-id": (lambda m, s: m.history("0" * 32), ItemNotFound),
    "diff-unknown-id": (lambda m, s: m.diff("0" * 32, 1, 2), ItemNotFound),
    "rollback-unknown-id": (lambda m, s: m.rollback("0" * 32, to_version=1), ItemNotFound),
    # update, delete, rollback
    "update-nothing": (lambda m, s: m.update(s.item), InvalidInput),
    "update-empty-text": (lambda m, s: m.update(s.item, ""), InvalidInput),
    "update-oversized-text": (lambda m, s: m.update(s.item, LONG), TextTooLong),
    "update-bad-metadata": (
        lambda m, s: m.update(s.item, metadata={"a": math.nan}),
        InvalidInput,
    ),
    "update-bad-tags": (lambda m, s: m.update(s.item, tags="travel"), InvalidInput),
    "update-bad-reason": (lambda m, s: m.update(s.item, "x", reason=5), InvalidInput),  # type: ignore[arg-type]
    "update-stale-version": (
        lambda m, s: m.update(s.item, "x", expected_version=1),
        VersionConflict,
    ),
    "update-deleted-item": (lambda m, s: m.update(s.deleted, "bring it back"), Conflict),
    "delete-deleted-item": (lambda m, s: m.delete(s.deleted), Conflict),
    "rollback-missing-version": (lambda m, s: m.rollback(s.item, to_version=99), VersionNotFound),
    "rollback-version-zero": (lambda m, s: m.rollback(s.item, to_version=0), VersionNotFound),
    "diff-missing-version": (lambda m, s: m.diff(s.item, 1, 7), VersionNotFound),
    "rollback-cube-unknown": (lambda m, s: m.rollback_cube("nope", to_seq=1), CubeNotFound),
    "rollback-cube-seq-zero": (lambda m, s: m.rollback_cube(s.cube, to_seq=0), InvalidInput),
    "rollback-cube-seq-past-head": (
        lambda m, s: m.rollback_cube(s.cube, to_seq=10_000),
        InvalidInput,
    ),
    # add_many: one bad record among many writes nothing at all
    "add-many-one-bad-in-middle": (
        lambda m, s: m.add_many(["fine one", "fine two", "", "fine three"], cube=s.cube),
        InvalidInput,
    ),
    "add-many-bad-last-of-later-batch": (
        lambda m, s: m.add_many(
            [*(f"fine {n}" for n in range(600)), {"text": "x", "metadata": {"a": {}}}],
            cube=s.cube,
            batch_size=256,
        ),
        InvalidInput,
    ),
    "add-many-oversized-one": (
        lambda m, s: m.add_many(["fine", LONG], cube=s.cube),
        TextTooLong,
    ),
    "add-many-empty": (lambda m, s: m.add_many([], cube=s.cube), InvalidInput),
    "add-many-a-string": (lambda m, s: m.add_many("oops", cube=s.cube), InvalidInput),
    "add-many-unknown-field": (
        lambda m, s: m.add_many([{"text": "x", "colour": "red"}], cube=s.cube),
        InvalidInput,
    ),
    "add-many-non-record": (
        lambda m, s: m.add_many(["fine", 42], cube=s.cube),  # type: ignore[list-item]
        InvalidInput,
    ),
    "add-many-batch-size-zero": (
        lambda m, s: m.add_many(["fine"], cube=s.cube, batch_size=0),
        InvalidInput,
    ),
    "add-many-unknown-cube": (lambda m, s: m.add_many(["fine"], cube="nope"), CubeNotFound),
    # chat messages
    "message-missing-role": (lambda m, s: m.add([{"content": "hi"}], cube=s.cube), InvalidInput),
    "message-empty-role": (
        lambda m, s: m.add([{"role": "", "content": "hi"}], cube=s.cube),
        InvalidInput,
    ),
    "message-non-str-role": (
        lambda m, s: m.add([{"role": 1, "content": "hi"}], cube=s.cube),
        InvalidInput,
    ),
    "message-unknown-field": (
        lambda m, s: m.add([{"role": "user", "content": "hi", "mood": "ok"}], cube=s.cube),
        InvalidInput,
    ),
    "message-missing-content": (lambda m, s: m.add([{"role": "user"}], cube=s.cube), InvalidInput),
    "message-empty-content": (
        lambda m, s: m.add([{"role": "user", "content": " "}], cube=s.cube),
        InvalidInput,
    ),
    "message-bad-timestamp": (
        lambda m, s: m.add([{"role": "user", "content": "hi", "timestamp": "?"}], cube=s.cube),
        InvalidInput,
    ),
    "messages-one-bad-of-two": (
        lambda m, s: m.add(
            [{"role": "user", "content": "fine"}, {"role": "assistant"}], cube=s.cube
        ),
        InvalidInput,
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_gets_a_typed_error_and_changes_nothing(
    mos: MemOS, seeded: Seeded, case: str
) -> None:
    call, expected = CASES[case]
    before = _state(mos)
    with pytest.raises(MemosError) as caught:
        call(mos, seeded)
    error = caught.value
    assert type(error) is expected, f"{type(error).__name__}: {error}"
    assert error.status == expected.status
    assert isinstance(error.status, int)
    assert error.message
    assert str(error) == error.message
    assert error.to_dict()["error"]["code"] == expected.code
    assert _state(mos) == before
    # The store still works and still verifies after the refused call.
    assert all(report.ok for report in mos.verify_all())


def test_statuses_of_the_common_failures() -> None:
    assert InvalidInput.status == 422
    assert TextTooLong.status == 413
    assert CubeNotFound.status == ItemNotFound.status == VersionNotFound.status == 404
    assert Conflict.status == CubeExists.status == VersionConflict.status == 409
    assert DataDirError.status == 503
    assert issubclass(TextTooLong, InvalidInput)
    assert issubclass(VersionConflict, Conflict)


def test_error_messages_name_the_problem(mos: MemOS, seeded: Seeded) -> None:
    with pytest.raises(TextTooLong) as too_long:
        mos.add(LONG, cube=seeded.cube)
    assert too_long.value.details["limit"] == 32_000
    assert too_long.value.details["length"] == len(LONG)
    with pytest.raises(InvalidInput) as bad_record:
        mos.add_many(["fine", "fine", " "], cube=seeded.cube)
    assert "record 2" in bad_record.value.message
    with pytest.raises(VersionNotFound) as missing:
        mos.rollback(seeded.item, to_version=99)
    assert missing.value.details == {"item_id": seeded.item, "version": 99}
    with pytest.raises(CubeNotFound) as no_cube:
        mos.add("hi", cube="nope")
    assert "nope" in no_cube.value.message


# --- data directories -------------------------------------------------------------------------


def _open(path: Path, *, create: bool = True) -> MemOS:
    return MemOS.open(path, create=create, embedder=HashEmbedder(64))


def _assert_data_dir_error(path: Path, *, create: bool = True) -> DataDirError:
    with pytest.raises(DataDirError) as caught:
        _open(path, create=create).close()
    assert caught.value.status == 503
    assert caught.value.code == "data_dir_error"
    return caught.value


def test_missing_data_dir_without_create(tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    _assert_data_dir_error(missing, create=False)
    assert not missing.exists()
    # An existing directory that holds no database is not a data dir either.
    empty = tmp_path / "empty"
    empty.mkdir()
    _assert_data_dir_error(empty, create=False)
    assert list(empty.iterdir()) == []


def test_garbage_database_is_a_data_dir_error(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    garbage = b"this is not a database, just garbage bytes\x00\xff" * 200
    (data_dir / "memos.db").write_bytes(garbage)
    for create in (True, False):
        error = _assert_data_dir_error(data_dir, create=create)
        assert "corrupt" in error.message
        assert (data_dir / "memos.db").read_bytes() == garbage
        assert [p.name for p in data_dir.iterdir()] == ["memos.db"]


def test_database_that_is_a_directory_is_a_data_dir_error(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    (data_dir / "memos.db").mkdir(parents=True)
    _assert_data_dir_error(data_dir)
    assert list((data_dir / "memos.db").iterdir()) == []


def test_data_dir_that_is_a_file(tmp_path: Path) -> None:
    path = tmp_path / "a-file"
    path.write_text("not a directory", encoding="utf-8")
    for create in (True, False):
        error = _assert_data_dir_error(path, create=create)
        assert "not a directory" in error.message
    assert path.read_text(encoding="utf-8") == "not a directory"


def test_data_dir_from_a_future_format(data_dir: Path) -> None:
    with _open(data_dir) as mos:
        mos.create_cube("notes")
    with sqlite3.connect(data_dir / "memos.db") as conn:
        conn.execute("UPDATE meta SET value = '99' WHERE key = 'format_version'")
    conn.close()
    error = _assert_data_dir_error(data_dir)
    assert "99" in error.message


# --- the error tree ---------------------------------------------------------------------------


def _public_error_classes() -> list[type[BaseException]]:
    return [
        cls
        for _, cls in inspect.getmembers(errors_module, inspect.isclass)
        if issubclass(cls, BaseException) and cls.__module__ == errors_module.__name__
    ]


def test_every_error_has_one_root_a_status_and_a_code() -> None:
    classes = _public_error_classes()
    assert len(classes) >= 15
    assert sorted(cls.__name__ for cls in classes) == sorted(errors_module.__all__)
    codes = set()
    for cls in classes:
        assert issubclass(cls, MemosError), cls
        assert isinstance(cls.status, int), cls
        assert not isinstance(cls.status, bool), cls
        assert 400 <= cls.status <= 599, cls
        assert isinstance(cls.code, str), cls
        assert cls.code, cls
        codes.add(cls.code)
    assert len(codes) == len(classes), "error codes must be unique"


@pytest.mark.parametrize("cls", _public_error_classes(), ids=lambda cls: cls.__name__)
def test_to_dict_is_the_error_envelope(cls: type[MemosError]) -> None:
    error = cls("something went wrong", seq=3, field="text")
    assert error.to_dict() == {
        "error": {
            "code": cls.code,
            "message": "something went wrong",
            "details": {"seq": 3, "field": "text"},
        }
    }
    assert cls("bare").to_dict() == {"error": {"code": cls.code, "message": "bare", "details": {}}}
    assert isinstance(error, Exception)
