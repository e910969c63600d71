"""The public surface is pinned: adding or removing a name is a deliberate change."""

from __future__ import annotations

import memos
import memos.errors

EXPECTED = {
    "Access",
    "ApiKey",
    "Budgets",
    "AccessStats",
    "Change",
    "ChatReply",
    "CubeAnchor",
    "CubeImport",
    "CubeInfo",
    "CubeStats",
    "DerivedEntry",
    "Embedder",
    "AuditReport",
    "BlobCollection",
    "CubeErasure",
    "CubePolicies",
    "CustomPattern",
    "LegalHold",
    "Quotas",
    "RedactionPolicy",
    "RetentionRule",
    "ErasureReceipt",
    "ErasureRecord",
    "Event",
    "EventOp",
    "FieldChange",
    "Handle",
    "HashEmbedder",
    "HistoryEntry",
    "ItemDiff",
    "ItemFilter",
    "ItemStatus",
    "Job",
    "JobFailure",
    "JobKind",
    "JobState",
    "Limits",
    "MemOS",
    "MemoryItem",
    "MiniLMEmbedder",
    "SchedulerConfig",
    "SearchHit",
    "SourceRef",
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


def test_schedulers_pin_their_surface() -> None:
    import memos.schedulers

    assert set(memos.schedulers.__all__) == {"HANDLERS", "Ticker", "Worker", "run_job"}


def test_subpackages_pin_their_surface() -> None:
    import memos.activation
    import memos.llm
    import memos.parametric

    assert set(memos.activation.__all__) == {
        "BLOCK_TEMPLATE",
        "KV_DTYPES",
        "KVEntry",
        "KVManifest",
        "KVMemory",
        "cache_from_bytes",
        "cache_to_bytes",
        "render_block",
    }
    assert set(memos.parametric.__all__) == {
        "AdapterEntry",
        "AdapterManifest",
        "LoraMemory",
        "LoraSettings",
        "compress",
        "decompress",
    }
    assert set(memos.llm.__all__) == {
        "KV",
        "LLMBackend",
        "LocalModel",
        "ModelFingerprint",
        "ModelShape",
        "ModelUnavailable",
        "OpenAICompatible",
        "ResidentPrefix",
        "SplitPrompt",
        "TextChatModel",
        "TokenUsage",
        "bundled_gguf",
        "fingerprint",
        "materialized_gguf",
    }


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


def test_every_subpackage_is_installed() -> None:
    """A non-editable install ships only the packages pyproject names."""
    import tomllib
    from pathlib import Path

    root = Path(__file__).parents[1]
    config = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))
    listed = set(config["tool"]["setuptools"]["packages"])
    # stores/, api/ and schedulers/ are top-level folders mapped into the package (DESIGN.md)
    mapped = config["tool"]["setuptools"]["package-dir"]
    assert mapped == {
        "memos.stores": "stores",
        "memos.api": "api",
        "memos.schedulers": "schedulers",
    }
    found = set()
    for package, folder in {"memos": "memos", **mapped}.items():
        for init in (root / folder).rglob("__init__.py"):
            found.add(".".join([package, *init.parent.relative_to(root / folder).parts]))
    assert found == listed


def test_api_all() -> None:
    import memos.api

    assert set(memos.api.__all__) == {"ServerSettings", "create_app", "open_memos"}


def test_both_faces_are_handles() -> None:
    """Code typed against ``memos.Handle`` runs on an embedded store or over HTTP."""
    from memos.engine._remote import RemoteMemOS

    assert issubclass(memos.MemOS, memos.Handle)
    assert issubclass(RemoteMemOS, memos.Handle)
