"""The SQLite store itself: the parts by concern composed over one connection, opened from a
data directory or a ``sqlite:///`` URL."""

from __future__ import annotations

import threading
from pathlib import Path

from memos.errors import DataDirError

from ._access import AccessTable
from ._blobs import BlobFiles
from ._derived import DerivedTable
from ._import import CubeImporter
from ._items import ItemRows
from ._jobs import JobTable
from ._keys import KeyTable
from ._keywords import KeywordIndex
from ._schema import connect


class SQLiteStore(
    KeywordIndex,  # and, under it, the event log and the one write path
    ItemRows,
    CubeImporter,
    DerivedTable,
    AccessTable,
    KeyTable,
    JobTable,
    BlobFiles,
):
    """A :class:`memos.Store` over ``<data_dir>/memos.db``."""

    def __init__(self, data_dir: str | Path, *, create: bool = True) -> None:
        self.data_dir = Path(data_dir)
        self.url = f"sqlite:///{self.data_dir}"
        self._lock = threading.RLock()
        self._conn = connect(self.data_dir, create)

    @classmethod
    def from_url(cls, url: str, *, create: bool = True) -> SQLiteStore:
        if not url.startswith("sqlite:///"):
            raise DataDirError(f"not a sqlite store URL: {url!r}")
        return cls(url[len("sqlite:///") :], create=create)

    def close(self) -> None:
        with self._lock:
            self._conn.close()
