"""A store on Redis, for servers: several API processes and workers share one store by URL.

One module per concern, composed into :class:`RedisStore` (:mod:`._store`): the key layout
(:mod:`._layout`), the connection and its optimistic transactions (:mod:`._connection`), the
cube log (:mod:`._log`, written by :mod:`._batch` over :mod:`._view`; read by :mod:`._items`
and :mod:`._search`, whose keyword ranking is :mod:`._keywords`), derived artifacts
(:mod:`._derived`), the access log (:mod:`._access`), API keys (:mod:`._api_keys`), the job
queue (:mod:`._jobs`) and blobs (:mod:`._blobs`).
"""

from ._store import RedisStore  # relative: this package is installed as memos.stores.redis

__all__ = ["RedisStore"]
