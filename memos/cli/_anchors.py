"""Anchor files at the command line: ``memos log --anchor`` writes one, ``memos verify
--anchor`` checks the logs against it (see :mod:`memos.core._anchor`).

An anchor and its key are worth something only where whoever can change the data directory
cannot change them, so both are refused inside the data directory. The key is read here, at
the edge, from the file ``--anchor-key`` (or ``MEMOS_ANCHOR_KEY_FILE``) names.
"""

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from memos.cli._session import settings
from memos.errors import IntegrityError, InvalidInput

if TYPE_CHECKING:
    from memos import CubeAnchor, Handle, MemOS, VerifyReport
    from memos.core._anchor import AnchorFile

AnchorOption = Annotated[
    Path | None,
    typer.Option(
        "--anchor",
        metavar="FILE",
        dir_okay=False,
        help="Anchor file (kept outside the data dir) holding each cube's head.",
    ),
]
AnchorKeyOption = Annotated[
    Path | None,
    typer.Option(
        "--anchor-key",
        metavar="FILE",
        dir_okay=False,
        envvar="MEMOS_ANCHOR_KEY_FILE",
        help="Key file (kept outside the data dir) that signs the anchor (HMAC-SHA256).",
    ),
]


def read_key(ctx: typer.Context, path: Path | None) -> bytes | None:
    if path is None:
        return None
    _outside_data_dir(ctx, path, "the anchor key")
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise InvalidInput(f"no anchor key at {path}") from None


def read_anchors(ctx: typer.Context, path: Path, key: bytes | None) -> "AnchorFile":
    _outside_data_dir(ctx, path, "an anchor file")
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InvalidInput(f"no anchor file at {path}") from None
    except UnicodeDecodeError:
        raise InvalidInput(f"{path} is not a MemOS anchor file") from None
    from memos.core._anchor import read_anchor_file

    return read_anchor_file(text, key)


def write_anchors(
    ctx: typer.Context, mos: "MemOS", path: Path, cubes: list[str], key: bytes | None
) -> "AnchorFile":
    """Write the heads of ``cubes`` to ``path``, keeping the heads of other cubes it holds.
    A head it holds must still be in its cube's log: a log cut back since is refused, so the
    file cannot be moved forward onto a truncated log (it is left as it was)."""
    from memos.core._anchor import anchor_file, dump_anchor_file, held_problem

    _outside_data_dir(ctx, path, "an anchor file")
    kept = read_anchors(ctx, path, key).heads if path.exists() else ()
    for old in kept:
        problem = held_problem(mos.store, old)
        if problem is not None:
            seq, why = problem
            raise IntegrityError(
                f"cube {old.cube!r} no longer holds the head anchored in {path}: first bad seq "
                f"{seq} ({why}); the anchor file was left as it was",
                cube=old.cube,
                first_bad_seq=seq,
            )
    heads = {old.cube: old for old in kept} | {name: mos.anchor(name) for name in cubes}
    written = anchor_file(sorted(heads.values(), key=lambda head: head.cube), key)
    _replace(path, dump_anchor_file(written))
    return written


def verify_anchored(mos: "Handle", anchors: "AnchorFile", cube: str | None) -> list["VerifyReport"]:
    """Verify one cube or all, each against its anchored head when the file holds one; an
    anchored cube that is gone fails."""
    from memos.core._anchor import gone_report

    heads = {head.cube: head for head in anchors.heads}
    if cube is not None:
        return [mos.verify(cube, anchor=_head_of(heads, mos.get_cube(cube).name))]
    names = [info.name for info in mos.list_cubes()]
    reports = [mos.verify(name, anchor=heads.get(name)) for name in names]
    return reports + [gone_report(head) for name, head in heads.items() if name not in names]


def _head_of(heads: dict[str, "CubeAnchor"], cube: str) -> "CubeAnchor":
    if cube not in heads:
        raise InvalidInput(f"the anchor file holds no head of cube {cube!r}", cube=cube)
    return heads[cube]


def _outside_data_dir(ctx: typer.Context, path: Path, what: str) -> None:
    edge = settings(ctx)
    if edge.store is not None or edge.url is not None:
        return
    data_dir = edge.data_dir.expanduser().resolve()
    resolved = path.expanduser().resolve()
    if resolved == data_dir or data_dir in resolved.parents:
        raise InvalidInput(
            f"{what} {path} is inside the data dir {data_dir}: keep it elsewhere, where "
            "whoever can change the data cannot change it"
        )


def _replace(path: Path, text: str) -> None:
    """Write ``path`` whole or not at all."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with tmp.open("w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
