"""Bad input at every face: a typed 4xx error that changes nothing, never a crash.

Each test runs on the embedded SDK over SQLite and over Redis, and over HTTP to a real server
on each store. Text that is not valid Unicode (a lone surrogate: what ``"\\ud800"`` in JSON or
a non-UTF-8 command-line argument decodes to), times that leave the years 1-9999 once shifted
to UTC, and a batch with one such record must each be refused as a whole, and the cube must
read back exactly as before: the same items, the same log head, ``verify`` still passing.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from _backends import FACES, clients
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from memos import HashEmbedder, MemOS, open_store
from memos.errors import InvalidInput, ItemNotFound, MemosError

SURROGATE = "bad \ud800 text"
LOW = "0001-01-01T00:00:00+05:00"  # before year 1 in UTC
HIGH = "9999-12-31T23:59:59-05:00"  # after year 9999 in UTC


@dataclass
class Face:
    """Alice's client on one face, and the operator's view of the same store."""

    sdk: Any
    root: MemOS
    name: str
    cube: str  # the full name of Alice's ``notes``, as the operator and the store know it


@pytest.fixture(params=FACES)
def face(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Face]:
    with clients(request.param, tmp_path / "data", embedder=HashEmbedder(64)) as (root, connect):
        sdk = connect("alice")
        cube = sdk.create_cube("notes").name
        assert cube == "alice:notes"
        sdk.add("the first memory", cube="notes", tags=["kept"])
        yield Face(sdk=sdk, root=root, name=request.param, cube=cube)


def state(root: MemOS) -> dict[str, Any]:
    """Everything a refused call must leave as it was."""
    cubes = {}
    for info in root.list_cubes():
        items = sorted(
            (item.id, item.version, item.text, item.status.value, item.tags)
            for item in root.store.iter_items(info.name)
        )
        cubes[info.name] = (root.store.head(info.name), items, root.verify(info.name).ok)
    return cubes


def refused(face: Face, call: Callable[[], object]) -> MemosError:
    """The typed 4xx error ``call`` raises, having checked that it changed nothing."""
    before = state(face.root)
    with pytest.raises(MemosError) as caught:
        call()
    assert 400 <= type(caught.value).status < 500, caught.value.message
    assert state(face.root) == before
    return caught.value


def first_id(face: Face) -> str:
    return next(iter(face.root.store.iter_items(face.cube))).id


# invalid Unicode in every field ------------------------------------------------------------


def writes_with_a_surrogate(face: Face) -> dict[str, Callable[[], object]]:
    sdk, item_id = face.sdk, first_id(face)
    return {
        "text": lambda: sdk.add(SURROGATE, cube="notes"),
        "user": lambda: sdk.add("x", cube="notes", user=SURROGATE),
        "tag": lambda: sdk.add("x", cube="notes", tags=[SURROGATE]),
        "metadata value": lambda: sdk.add("x", cube="notes", metadata={"k": SURROGATE}),
        "metadata key": lambda: sdk.add("x", cube="notes", metadata={SURROGATE: 1}),
        "session": lambda: sdk.add("x", cube="notes", session=SURROGATE),
        "message role": lambda: sdk.add([{"role": SURROGATE, "content": "x"}], cube="notes"),
        "update text": lambda: sdk.update(item_id, SURROGATE),
        "update metadata": lambda: sdk.update(item_id, metadata={"k": SURROGATE}),
        "update reason": lambda: sdk.update(item_id, "new text", reason=SURROGATE),
        "delete reason": lambda: sdk.delete(item_id, reason=SURROGATE),
        "rollback reason": lambda: sdk.rollback(item_id, to_version=1, reason=SURROGATE),
        "grant": lambda: sdk.grant("notes", SURROGATE, "read"),
        "cube rollback reason": lambda: sdk.rollback_cube("notes", to_seq=1, reason=SURROGATE),
    }


def reads_with_a_surrogate(face: Face) -> dict[str, Callable[[], object]]:
    sdk = face.sdk
    return {
        "query": lambda: sdk.search(SURROGATE, cube="notes"),
        "keyword query": lambda: sdk.search(SURROGATE, cube="notes", mode="keyword"),
        "user filter": lambda: sdk.search("x", cube="notes", user=SURROGATE),
        "tag filter": lambda: sdk.search("x", cube="notes", tags=[SURROGATE]),
        "where filter": lambda: sdk.search("x", cube="notes", where={"k": SURROGATE}),
        "access stats": lambda: sdk.access_stats([SURROGATE]),
    }


def test_a_lone_surrogate_in_any_written_field_is_refused(face: Face) -> None:
    for name, call in writes_with_a_surrogate(face).items():
        error = refused(face, call)
        assert isinstance(error, InvalidInput), name


def test_a_lone_surrogate_in_any_read_is_a_typed_error(face: Face) -> None:
    for name, call in reads_with_a_surrogate(face).items():
        error = refused(face, call)
        assert isinstance(error, InvalidInput), name


def test_an_id_that_is_not_valid_unicode_is_not_found(face: Face) -> None:
    for call in (
        lambda: face.sdk.get(SURROGATE),
        lambda: face.sdk.history(SURROGATE),
        lambda: face.sdk.update(SURROGATE, "x"),
        lambda: face.sdk.delete(SURROGATE),
    ):
        assert isinstance(refused(face, call), ItemNotFound)


# times at the ends of the range ------------------------------------------------------------


@pytest.mark.parametrize("when", [LOW, HIGH])
def test_a_time_outside_the_range_once_in_utc_is_refused(face: Face, when: str) -> None:
    sdk = face.sdk
    calls = [
        lambda: sdk.add("x", cube="notes", occurred_at=when),
        lambda: sdk.add([{"role": "user", "content": "x", "timestamp": when}], cube="notes"),
        lambda: sdk.search("x", cube="notes", since=when),
        lambda: sdk.search("x", cube="notes", until=when),
    ]
    for call in calls:
        error = refused(face, call)
        assert isinstance(error, InvalidInput)
        assert "outside the years 1-9999" in error.message or "schema" in error.message


def test_the_ends_of_the_range_themselves_are_accepted(face: Face) -> None:
    sdk = face.sdk
    first = sdk.add("at the start", cube="notes", occurred_at="0001-01-01T00:00:00+00:00")
    last = sdk.add("at the end", cube="notes", occurred_at="9999-12-31T23:59:59.999999-00:00")
    assert first.occurred_at == datetime(1, 1, 1, tzinfo=UTC)
    assert last.occurred_at == datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)
    found = sdk.search("at", cube="notes", since="0001-01-01T00:00:00Z", mode="keyword", k=10)
    assert {hit.item.id for hit in found} >= {first.id, last.id}
    assert face.root.verify(face.cube).ok


# a batch is all or nothing -----------------------------------------------------------------


@pytest.mark.parametrize("bad", [{"text": SURROGATE}, {"text": "x", "occurred_at": HIGH}])
def test_a_batch_with_one_bad_record_writes_nothing(face: Face, bad: dict[str, Any]) -> None:
    # past the SDK's commit batch (256), so a half-written batch would show
    records: list[Any] = [f"memory {n}" for n in range(300)]
    records.append(bad)
    error = refused(face, lambda: face.sdk.add_many(records, cube="notes"))
    assert error.message.startswith("record 300")


# the command line --------------------------------------------------------------------------


def _memos(data_dir: Path, *args: bytes) -> subprocess.CompletedProcess[bytes]:
    memos = os.fsencode(Path(sys.executable).parent / "memos")
    command = [memos, b"-d", os.fsencode(data_dir), *args]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "200"}
    return subprocess.run(command, capture_output=True, env=env, timeout=120, check=False)


@pytest.mark.slow
def test_non_utf8_arguments_get_a_one_line_error(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    created = _memos(data_dir, b"cube", b"create", b"notes", b"--embedder", b"hash-64")
    assert created.returncode == 0, created.stderr
    head_before = _memos(data_dir, b"log", b"-c", b"notes", b"--json").stdout
    for args in (
        [b"add", b"-c", b"notes", b"caf\xe9"],
        [b"add", b"-c", b"notes", b"x", b"--user", b"\xff"],
        [b"add", b"-c", b"notes", b"x", b"--tag", b"\xfe"],
        [b"add", b"-c", b"notes", b"x", b"--meta", b"k=\xff"],
        [b"search", b"-c", b"notes", b"\xff"],
        [b"search", b"-c", b"notes", b"x", b"--since", HIGH.encode()],
        [b"cube", b"grant", b"notes", b"\xff"],
        [b"keys", b"create", b"-p", b"\xff"],
    ):
        result = _memos(data_dir, *args)
        stderr = result.stderr.decode("utf-8", "replace")
        assert result.returncode == 2, (args, stderr)
        assert stderr.startswith("error: "), (args, stderr)
        assert stderr.count("\n") == 1, (args, stderr)
    assert _memos(data_dir, b"log", b"-c", b"notes", b"--json").stdout == head_before


def test_a_store_url_that_is_not_valid_unicode_is_refused() -> None:
    with pytest.raises(InvalidInput):
        open_store("redis://127.0.0.1:6379/0?prefix=\udcff")


# any input: success or a typed 4xx ---------------------------------------------------------

# every code point, surrogates included (hypothesis leaves them out by default)
ANY_TEXT = st.text(st.characters(codec=None, exclude_categories=()), max_size=40)
JSON_SCALARS = st.none() | st.booleans() | st.integers() | st.floats() | ANY_TEXT
ANY_JSON = st.recursive(
    JSON_SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(ANY_TEXT, inner, max_size=3),
    max_leaves=6,
)
ANY_OFFSET = st.integers(-(24 * 60 - 1), 24 * 60 - 1).map(
    lambda minutes: timezone(timedelta(minutes=minutes))
)
ANY_TIME = st.builds(
    lambda naive, tz: naive.replace(tzinfo=tz).isoformat(),
    st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59, 59)),
    ANY_OFFSET,
)


def _typed_or_success(call: Callable[[], Any]) -> Any:
    """What ``call`` returns, or ``None`` when it raised a typed 4xx error."""
    try:
        return call()
    except MemosError as error:
        status = type(error).status
        message = error.message
    assert 400 <= status < 500, message
    return None


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(text=ANY_TEXT, value=ANY_JSON, when=ANY_TIME, tag=ANY_TEXT)
def test_any_input_is_a_success_or_a_typed_refusal(
    face: Face, text: str, value: Any, when: str, tag: str
) -> None:
    sdk = face.sdk
    before = state(face.root)
    added = _typed_or_success(
        lambda: sdk.add(text, cube="notes", metadata={"k": value}, occurred_at=when, tags=[tag])
    )
    if added is None:
        assert state(face.root) == before
    else:
        assert sdk.get(added.id) == added
        _typed_or_success(lambda: sdk.update(added.id, text + " again", metadata={"k": value}))
    for mode in ("dense", "keyword", "hybrid"):
        _typed_or_success(
            lambda mode=mode: sdk.search(
                text, cube="notes", mode=mode, where={"k": value}, since=when, until=when
            )
        )
    assert face.root.verify(face.cube).ok


@pytest.fixture
def source(tmp_path: Path) -> Iterator[MemOS]:
    """An embedded data directory the round trip exports from."""
    with MemOS.open(tmp_path / "source", embedder=HashEmbedder(64)) as mos:
        yield mos


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(text=ANY_TEXT, value=JSON_SCALARS, when=ANY_TIME)
def test_what_was_accepted_survives_export_and_import(
    face: Face, source: MemOS, tmp_path: Path, text: str, value: Any, when: str
) -> None:
    # a principal imports only its own namespace's cubes: the operator makes one there
    cube = source.create_cube(f"alice:trip{len(source.list_cubes())}", owner="alice").name
    added = _typed_or_success(
        lambda: source.add(text, cube=cube, metadata={"k": value}, occurred_at=when)
    )
    if added is None:
        return
    exported = source.export_cube(cube, tmp_path / f"export-{cube}")
    face.sdk.import_cube(exported)
    assert face.sdk.get(added.id) == added
    assert face.root.verify(cube).ok
