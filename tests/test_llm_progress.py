"""The first use of a GGUF model says what it converts and why, once, and the conversion's
tensors go through a rich progress bar instead of transformers' bare tqdm one."""

from __future__ import annotations

from pathlib import Path

import pytest
from transformers import modeling_gguf_pytorch_utils as gguf_loader

from memos.llm._progress import conversion_progress


def test_the_conversion_is_announced_once_and_tracked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bare = vars(gguf_loader)["tqdm"]
    with conversion_progress(tmp_path / "SmolLM2.gguf", tmp_path / "models"):
        tracked = vars(gguf_loader)["tqdm"]
        assert tracked is not bare
        seen = list(tracked(range(5), desc="Converting and de-quantizing GGUF tensors..."))
    assert seen == [0, 1, 2, 3, 4]
    assert vars(gguf_loader)["tqdm"] is bare
    err = " ".join(capsys.readouterr().err.split())
    assert err.count("Converting the model SmolLM2.gguf from GGUF to safetensors") == 1
    assert "This happens once" in err
    assert "de-quantizing" not in err


def test_the_loader_gets_its_bar_back_when_the_conversion_fails(tmp_path: Path) -> None:
    bare = vars(gguf_loader)["tqdm"]
    with (
        pytest.raises(ValueError, match="bad tensor"),
        conversion_progress(tmp_path / "m.gguf", tmp_path),
    ):
        raise ValueError("bad tensor")
    assert vars(gguf_loader)["tqdm"] is bare
