"""What the first use of a GGUF model shows while it is converted: one line saying what is
happening and why it happens only once, then a rich progress bar over the tensors.

transformers dequantises GGUF tensors under a bare ``tqdm`` bar (``tqdm.auto``, which its
own progress-bar switch does not reach) that says neither what is converted nor why; for the
conversion's duration its loader iterates through a rich bar instead.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

_Item = TypeVar("_Item")


@contextmanager
def conversion_progress(gguf: Path, cache_dir: Path) -> Iterator[None]:
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )
    from transformers import modeling_gguf_pytorch_utils as gguf_loader

    console = Console(stderr=True)
    console.print(
        f"Converting the model {gguf.name} from GGUF to safetensors in {cache_dir}. "
        "This happens once; later runs load the converted copy in about a second.",
        highlight=False,
    )
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
    with Progress(*columns, TimeElapsedColumn(), console=console, transient=True) as progress:

        def tracked(tensors: Iterable[_Item], *args: Any, **kwargs: Any) -> Iterable[_Item]:
            return progress.track(tensors, description="dequantizing tensors")

        bare = vars(gguf_loader)["tqdm"]
        setattr(gguf_loader, "tqdm", tracked)  # noqa: B010 (a module attribute, on purpose)
        try:
            yield
        finally:
            setattr(gguf_loader, "tqdm", bare)  # noqa: B010
