"""Exporting and importing a cube: engine functions that the handle's declared ``export_cube``
and ``import_cube`` run (see :mod:`memos.engine._handle`); the export's format and its checks
are :mod:`memos.engine._export`'s."""

from __future__ import annotations

from pathlib import Path

from memos.core import _validation as check
from memos.core._anchor import CubeAnchor
from memos.core._types import Access, CubeInfo, VerifyReport
from memos.engine._engine import Engine
from memos.engine._export import export_cube, read_export
from memos.engine._scope import Scope
from memos.engine._verify import verify_cube
from memos.errors import IntegrityError, InvalidInput


def verify(
    engine: Engine,
    scope: Scope,
    cube: str,
    anchor: CubeAnchor | None,
    receipt: str | None = None,
) -> VerifyReport:
    """The cube's verify report (against ``anchor`` and an erasure ``receipt`` too, when
    given)."""
    info = scope.cube(cube, Access.READ)
    if anchor is not None and anchor.cube != info.name:
        raise InvalidInput(f"the anchor is of cube {anchor.cube!r}, not {info.name!r}")
    if receipt is not None:
        receipt = check.digest(receipt, "receipt")
    return verify_cube(engine.store, info, anchor=anchor, indexes=engine.indexes, receipt=receipt)


def export(engine: Engine, scope: Scope, cube: str, directory: Path) -> Path:
    """The cube's export in ``directory``; refused while the cube does not verify."""
    report = verify(engine, scope, cube, None)
    if not report.ok:
        raise IntegrityError(
            f"cube {report.cube!r} does not verify (seq {report.first_bad_seq}: "
            f"{report.problem}); refusing to export it",
            seq=report.first_bad_seq,
        )
    return export_cube(engine.store, scope.cube(cube, Access.READ), directory)


def import_(engine: Engine, scope: Scope, directory: Path) -> CubeInfo:
    """The cube of the export in ``directory``, checked and stored with its log."""
    data = read_export(directory)
    scope.importable(data.cube)
    # the blobs go in with the cube, in its transaction: a refused import leaves none
    engine.store.import_cube(data)
    engine.indexes.forget(data.cube.name)
    engine.indexes.current(data.cube)
    return data.cube
