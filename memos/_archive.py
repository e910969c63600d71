"""A cube export as one tar stream (what the server sends and receives), unpacked safely.

An export is a directory (see :mod:`memos._export`); over HTTP it travels as an uncompressed
tar of exactly that directory's files. Unpacking trusts nothing: only regular files with the
names an export has, no links, devices, absolute paths or ``..``, within a size budget; anything
else is a :class:`TamperedExport` before a byte is written outside the target directory.
"""

from __future__ import annotations

import io
import re
import tarfile
from pathlib import Path

from memos.errors import TamperedExport

_NAME = re.compile(r"(?:[a-z_]+\.(?:json|jsonl|safetensors)|derived/[0-9a-f]{64}\.safetensors)")
MAX_FILES = 10_000


def pack(directory: Path) -> bytes:
    """The export in ``directory`` as tar bytes (files in name order, no owners or times)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        names = (p.relative_to(directory).as_posix() for p in directory.rglob("*") if p.is_file())
        for name in sorted(n for n in names if _NAME.fullmatch(n)):  # an export's files only
            path = directory / name
            data = path.read_bytes()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def unpack(data: bytes, directory: Path) -> Path:
    """Write the export in tar ``data`` into the new ``directory``."""
    directory.mkdir(parents=True)
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
            members = tar.getmembers()
            if len(members) > MAX_FILES:
                raise TamperedExport(f"an export has at most {MAX_FILES} files")
            for member in members:
                _extract(tar, member, directory)
    except (tarfile.TarError, EOFError) as error:
        raise TamperedExport(f"not a tar archive of an export: {error}") from None
    return directory


def _extract(tar: tarfile.TarFile, member: tarfile.TarInfo, directory: Path) -> None:
    if member.isdir() and member.name.rstrip("/") == "derived":
        return
    if not member.isreg() or not _NAME.fullmatch(member.name):
        raise TamperedExport(f"unexpected entry {member.name!r} in an export archive")
    source = tar.extractfile(member)
    if source is None:  # pragma: no cover - isreg() members always have data
        raise TamperedExport(f"entry {member.name!r} has no data")
    target = directory / member.name
    if target.exists():
        raise TamperedExport(f"entry {member.name!r} appears twice")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(source.read())
