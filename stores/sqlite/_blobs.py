"""Immutable, content-addressed blobs: files ``blobs/<sha256>.safetensors`` beside the
database, each written atomically (a temporary file, fsynced, renamed, its directory fsynced)
before any commit that names it."""

from __future__ import annotations

import hashlib
import os
import re
import threading
import time
from collections.abc import Collection
from pathlib import Path

from memos.errors import IntegrityError, InvalidInput, StorageError

from ._db import Connected

BLOB_DIR = "blobs"
_DIGEST = re.compile(r"[0-9a-f]{64}")
_SUFFIX = ".safetensors"


class BlobFiles(Connected):
    """The blob files of the data directory."""

    def put_blob(self, data: bytes) -> str:
        return write_blob(self.data_dir, data)

    def get_blob(self, digest: str) -> bytes | None:
        path = blob_path(self.data_dir, digest)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StorageError(f"cannot read blob {digest}: {exc}") from exc
        if hashlib.sha256(data).hexdigest() != digest:
            raise IntegrityError(f"blob {digest} does not match its digest", blob=digest)
        return data

    def blob_ages(self) -> dict[str, float]:
        folder, now = self.data_dir / BLOB_DIR, time.time()
        try:
            paths = list(folder.iterdir())
            return {
                path.name.removesuffix(_SUFFIX): max(now - path.stat().st_mtime, 0.0)
                for path in sorted(paths)
                if _DIGEST.fullmatch(path.name.removesuffix(_SUFFIX))
                and path.name.endswith(_SUFFIX)
            }
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise StorageError(f"cannot list the blobs: {exc}") from exc

    def delete_blobs(self, digests: Collection[str]) -> int:
        deleted = 0
        for digest in digests:
            try:
                blob_path(self.data_dir, digest).unlink()
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise StorageError(f"cannot delete blob {digest}: {exc}") from exc
            deleted += 1
        if deleted:
            _fsync_dir(self.data_dir / BLOB_DIR)
        return deleted


def blob_path(data_dir: Path, digest: str) -> Path:
    if not isinstance(digest, str) or not _DIGEST.fullmatch(digest):
        raise InvalidInput(f"not a blob digest: {digest!r}")
    return data_dir / BLOB_DIR / f"{digest}{_SUFFIX}"


def write_blob(data_dir: Path, data: bytes) -> str:
    """Store ``data`` (idempotent) and return its sha256 hex digest."""
    digest = hashlib.sha256(data).hexdigest()
    path = blob_path(data_dir, digest)
    try:
        if path.is_file() and hashlib.sha256(path.read_bytes()).hexdigest() == digest:
            return digest
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{digest}.{os.getpid()}.{threading.get_ident()}.tmp")
        with tmp.open("wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except OSError as exc:
        raise StorageError(f"cannot write blob {digest}: {exc}") from exc
    return digest


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
