"""The embedded default store: one SQLite database in WAL mode inside the data directory.

The store is one class, :class:`SQLiteStore` (``_store``), composed of a part per concern of
:class:`memos.Store`, all over one shared connection (``_db``) to the database whose schema and
format ``_schema`` keeps: the cubes and their event logs with the one write path (``_log``), the
item rows and vectors (``_items``), the keyword index (``_keywords``), the import of a whole
cube (``_import``), the derived artifacts (``_derived``), the access log (``_access``), the API
keys (``_keys``), the job queue (``_jobs``) and the blob files (``_blobs``).
"""

from ._blobs import BLOB_DIR
from ._db import sortable_time
from ._schema import DB_FILE, FORMAT_VERSION
from ._store import SQLiteStore

__all__ = ["BLOB_DIR", "DB_FILE", "FORMAT_VERSION", "SQLiteStore", "sortable_time"]
