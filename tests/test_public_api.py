"""The public surface is pinned: adding or removing a name is a deliberate change."""

from __future__ import annotations

import memos
import memos.errors

EXPECTED = {
    "Change",
    "CubeImport",
    "CubeInfo",
    "CubeStats",
    "Embedder",
    "Event",
    "EventOp",
    "FieldChange",
    "HashEmbedder",
    "HistoryEntry",
    "ItemDiff",
    "ItemFilter",
    "ItemStatus",
    "Limits",
    "MemOS",
    "MemoryItem",
    "MiniLMEmbedder",
    "SearchHit",
    "Store",
    "Tier",
    "VerifyReport",
    "__version__",
    "open_store",
    "register_backend",
}


def test_all_is_pinned() -> None:
    assert set(memos.__all__) == EXPECTED
    for name in memos.__all__:
        assert hasattr(memos, name), name


def test_errors_all_lists_every_error_class() -> None:
    classes = {
        name
        for name, value in vars(memos.errors).items()
        if isinstance(value, type) and issubclass(value, memos.errors.MemosError)
    }
    assert classes == set(memos.errors.__all__)


def test_import_has_no_heavy_side_effects() -> None:
    import subprocess
    import sys

    code = (
        "import sys, memos; "
        "names = ('torch', 'sentence_transformers', 'transformers'); "
        "heavy = [m for m in names if m in sys.modules]; "
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
