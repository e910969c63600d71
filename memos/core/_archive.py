"""Exports as one tar stream (what the server sends and receives), unpacked safely.

An export is a directory: a cube's (see :mod:`memos.engine._export`) or an adapter's (the peft
directory ``mos.lora.export`` writes). Over HTTP it travels as an uncompressed tar of exactly
that directory's files, as its :class:`Layout` names them. Unpacking trusts nothing: only
regular files with the names the layout allows, no links, devices, sparse files, absolute paths
or ``..``; anything else is a :class:`TamperedExport` before a byte is written outside the
target directory. An uncompressed, non-sparse tar holds no more bytes than it is, so the limit
on the request body bounds what unpacking writes.
"""

from __future__ import annotations

import io
import re
import shutil
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from memos.errors import InvalidInput, TamperedExport

MAX_FILES = 10_000


@dataclass(frozen=True)
class Layout:
    """The files an archive of one kind of export may hold (names matched whole, relative to
    the export directory) and the folders those files sit in; ``kind`` names the directory,
    which holds at least ``required``, and ``refused`` says why a file is not accepted in its
    place."""

    kind: str
    files: re.Pattern[str]
    required: str
    folders: frozenset[str] = field(default_factory=frozenset)
    refused: tuple[tuple[str, str], ...] = ()

    def check(self, directory: Path) -> None:
        """Refuse (:class:`InvalidInput`) a directory that is not this kind of export, before
        anything in it is read."""
        if not directory.is_dir():
            raise InvalidInput(f"{directory} is not {self.kind}")
        if not (directory / self.required).is_file():
            for name, why in self.refused:
                if (directory / name).exists():
                    raise InvalidInput(why)
            raise InvalidInput(f"{directory} is not {self.kind} (no {self.required})")


CUBE_EXPORT = Layout(
    "a MemOS export",
    re.compile(r"(?:[a-z_]+\.(?:json|jsonl|safetensors)|derived/[0-9a-f]{64}\.safetensors)"),
    "manifest.json",
    frozenset({"derived"}),
)
# the files of memos.parametric._peftdir (spelled out here: that module loads torch); pickled
# adapter_model.bin weights are not among them
ADAPTER_EXPORT = Layout(
    "an adapter directory",
    re.compile(r"adapter_config\.json|adapter_model\.safetensors|memos_manifest\.json"),
    "adapter_model.safetensors",
    refused=(
        ("adapter_model.bin", "pickled adapter_model.bin weights are refused; use safetensors"),
    ),
)


def pack(directory: Path, layout: Layout = CUBE_EXPORT) -> bytes:
    """The export in ``directory`` as tar bytes (files in name order, no owners or times);
    files the layout does not name are left out."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        names = (p.relative_to(directory).as_posix() for p in directory.rglob("*") if p.is_file())
        for name in sorted(n for n in names if layout.files.fullmatch(n)):
            path = directory / name
            data = path.read_bytes()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def unpack(data: bytes, directory: Path, layout: Layout = CUBE_EXPORT) -> Path:
    """Write the export in tar ``data`` into the new ``directory``."""
    return unpack_file(io.BytesIO(data), directory, layout)


def unpack_file(file: IO[bytes], directory: Path, layout: Layout = CUBE_EXPORT) -> Path:
    """Write the export in the tar ``file`` (seekable, read from its position) into the new
    ``directory``, one member at a time: no more than a buffer of it is held in memory."""
    directory.mkdir(parents=True)
    try:
        with tarfile.open(fileobj=file, mode="r:") as tar:
            # counted as they are read: a tar of tiny entries would hold millions of headers
            for count, member in enumerate(tar, start=1):
                if count > MAX_FILES:
                    raise TamperedExport(f"an export has at most {MAX_FILES} files")
                _extract(tar, member, directory, layout)
    except (tarfile.TarError, EOFError) as error:
        raise TamperedExport(f"not a tar archive of an export: {error}") from None
    return directory


def _extract(
    tar: tarfile.TarFile, member: tarfile.TarInfo, directory: Path, layout: Layout
) -> None:
    if member.isdir() and member.name.rstrip("/") in layout.folders:
        return
    # a sparse entry is "regular" to tarfile, yet reads back as far more bytes than it holds
    allowed = member.isreg() and not member.issparse()
    if not allowed or not layout.files.fullmatch(member.name):
        raise TamperedExport(f"unexpected entry {member.name!r} in an export archive")
    source = tar.extractfile(member)
    if source is None:  # pragma: no cover - isreg() members always have data
        raise TamperedExport(f"entry {member.name!r} has no data")
    target = directory / member.name
    if target.exists():
        raise TamperedExport(f"entry {member.name!r} appears twice")
    target.parent.mkdir(parents=True, exist_ok=True)
    with target.open("wb") as sink:
        shutil.copyfileobj(source, sink)
