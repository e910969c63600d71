"""The operations on cubes that every handle has, declared once: create, read, list, grant,
log, anchor, verify, export and import, codecs, rollback. :class:`memos.Handle` has them with
the memory operations (see :mod:`memos.engine._handle`)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from memos.core import _validation as check
from memos.core._anchor import CubeAnchor
from memos.core._archive import CUBE_EXPORT
from memos.core._types import (
    Access,
    CubeInfo,
    Event,
    EventOp,
    MemoryItem,
    VerifyReport,
    utcnow,
)
from memos.engine._collect import DEFAULT_GRACE_S, BlobCollection
from memos.engine._cube_stats import CubeStats
from memos.engine._operations import Performs, operation
from memos.errors import AccessDenied, InvalidInput

if TYPE_CHECKING:
    from memos.engine._engine import Engine
    from memos.engine._scope import Scope

CUBES = "cubes"


class CubeOperations(Performs):
    """A handle's operations on whole cubes; see the module docstring."""

    # set on an embedded handle, whose operations run here; an HTTP handle sends them instead
    _engine: Engine
    _scope: Scope

    @operation("POST", "/v1/cubes", status=201, tag=CUBES)
    def create_cube(
        self,
        name: str,
        *,
        owner: str | None = None,
        embedder: str | None = None,
        codec: str | None = None,
        kv_dtype: str = "fp32",
        exist_ok: bool = False,
    ) -> CubeInfo:
        """Create a cube. ``codec`` (how its vectors are held in RAM) defaults to
        :func:`memos.codecs.default_codec` for the embedder's dimension; ``kv_dtype`` is how
        its KV caches are stored (``fp32``, ``bf16`` or ``int8``). ``owner`` defaults to the
        handle's principal (``local`` for the operator). A principal's cube is named
        ``principal:name`` (see :mod:`memos.engine._scope`); the reply carries the full name.
        With ``exist_ok``, a cube of that name with the owner and embedder asked for is
        returned as it stands (its codec and KV dtype may have changed since) rather than
        refused with :class:`memos.errors.CubeExists`, so a script may create its cube on
        every run."""
        from memos.engine import _cubes

        return _cubes.create_cube(
            self._engine, self._scope, name, owner=owner, embedder=embedder, codec=codec,
            kv_dtype=kv_dtype, exist_ok=exist_ok,
        )  # fmt: skip

    @operation("GET", "/v1/cubes/{cube}", tag=CUBES, wire={"name": "cube"})
    def get_cube(self, name: str) -> CubeInfo:
        """The cube ``name`` (its full name, or one of the caller's own)."""
        return self._scope.cube(name, Access.READ)

    @operation("GET", "/v1/cubes", tag=CUBES)
    def list_cubes(self) -> list[CubeInfo]:
        """The cubes this handle may read, by name."""
        return self._scope.visible(self._engine.store.list_cubes())

    @operation("POST", "/v1/cubes/{cube}/grants", tag=CUBES)
    def grant(
        self, cube: str, principal: str, access: str = "read", *, reason: str | None = None
    ) -> CubeInfo:
        """Let ``principal`` read (``access="read"``) or read and change (``"write"``) the
        cube; one ``grant`` event. Only the owner (or the operator) grants."""
        from memos.engine import _grants

        return _grants.grant(self._engine, self._scope, cube, principal, access, reason)

    @operation("DELETE", "/v1/cubes/{cube}/grants/{principal:path}", tag=CUBES)
    def revoke(self, cube: str, principal: str, *, reason: str | None = None) -> CubeInfo:
        """Take ``principal``'s grant on the cube away; one ``revoke`` event."""
        from memos.engine import _grants

        return _grants.revoke(self._engine, self._scope, cube, principal, reason)

    @operation("GET", "/v1/cubes/{cube}/stats", tag=CUBES)
    def cube_stats(self, cube: str) -> CubeStats:
        """Items, codec (version, fitted or not), dimensions, and the bytes per vector the
        index holds in RAM against the full-precision copy on disk."""
        from memos.engine._cube_stats import cube_stats

        info = self._scope.cube(cube)
        return cube_stats(self._engine.store, info, self._engine.indexes.current(info))

    @operation("GET", "/v1/cubes/{cube}/log", tag=CUBES)
    def log(self, cube: str, *, after_seq: int = 0, limit: int | None = None) -> list[Event]:
        """The cube's events in order, oldest first (``limit`` keeps the newest ones)."""
        info = self._scope.cube(cube)
        after_seq = check.count(after_seq, "after_seq")
        limit = None if limit is None else check.count(limit, "limit")
        events = self._engine.store.events(info.name, after_seq=after_seq)
        return events if limit is None else events[-limit:] if limit > 0 else []

    @operation("GET", "/v1/cubes/{cube}/anchor", tag=CUBES)
    def anchor(self, cube: str) -> CubeAnchor:
        """The cube's head now (seq and hash of its last event), to keep outside the data
        directory and pass to :meth:`verify` later."""
        info = self._scope.cube(cube)
        seq, digest = self._engine.store.head(info.name)
        return CubeAnchor(cube=info.name, seq=seq, hash=digest, at=utcnow())

    @operation("GET", "/v1/cubes/{cube}/verify", tag=CUBES)
    def verify(
        self, cube: str, *, anchor: CubeAnchor | None = None, receipt: str | None = None
    ) -> VerifyReport:
        """Recompute the cube's hash chain and check against it everything that decides an
        answer: items, vectors, configuration, derived artifacts, the keyword index, the codec's
        fitted state and the vector index snapshot; names the first bad seq. With ``anchor``
        (from :meth:`anchor`, kept outside the data directory) it also catches a log whose
        newest events were cut off or rewritten since. With ``receipt`` (the digest of a cube's
        part of an erasure receipt) it checks the log holds that erasure and nothing it erased
        is stored."""
        from memos.engine import _portability

        return _portability.verify(self._engine, self._scope, cube, anchor, receipt)

    @operation("GET", "/v1/cubes/{cube}/export", tag=CUBES, archive=CUBE_EXPORT)
    def export_cube(self, cube: str, directory: str | Path) -> Path:
        """Write a portable, checksummed copy of the cube (items, events, vectors, derived
        artifacts) into ``directory`` (new, or empty); refused while the cube does not verify.
        Over HTTP the export travels as a tar of that directory."""
        from memos.engine import _portability

        return _portability.export(self._engine, self._scope, cube, Path(directory))

    @operation("POST", "/v1/cubes/import", status=201, tag=CUBES, archive=CUBE_EXPORT)
    def import_cube(self, directory: str | Path) -> CubeInfo:
        """Import an export after checking its checksums, chain and items; the imported log is
        identical to the exported one, hashes included. A principal imports only an export of
        its own namespace. Over HTTP the export travels as a tar of the directory."""
        from memos.engine import _portability

        return _portability.import_(self._engine, self._scope, Path(directory))

    @operation("POST", "/v1/blobs/collect", tag="governance")
    def collect_blobs(self, *, grace_s: float = DEFAULT_GRACE_S) -> BlobCollection:
        """Delete the blobs nothing can read any more (the caches of dropped KV blocks, what a
        refused commit left) that are older than ``grace_s`` seconds; blobs of standing
        artifacts, of adapter versions and codec states the log recorded stay. The operator
        only: blobs are shared by the whole store."""
        if self._scope.principal is not None:
            raise AccessDenied("only the operator collects the store's blobs")
        if isinstance(grace_s, bool) or not isinstance(grace_s, int | float) or grace_s < 0:
            raise InvalidInput("grace_s is a number of seconds, 0 or more", field="grace_s")
        from memos.engine._collect import collect_blobs

        return collect_blobs(self._engine.store, float(grace_s))

    def verify_all(self) -> list[VerifyReport]:
        """:meth:`verify` of every cube this handle may read."""
        return [self.verify(info.name) for info in self.list_cubes()]

    @operation("POST", "/v1/cubes/{cube}/refit", tag=CUBES)
    def refit(self, cube: str, *, user: str | None = None, reason: str | None = None) -> CubeInfo:
        """Fit the cube's codec again to its current vectors and re-encode the index (one
        ``codec_fit`` event). Only for codecs that are fitted (``int8``, ``pca{k}+fp8``,
        ``ivf{nlist}+sq8``), and only once the cube holds the codec's ``fit_min`` active
        memories."""
        from memos.plaintext._encoding import fitted, reconfigure

        info = fitted(self._scope.cube(cube, Access.WRITE))
        return reconfigure(
            self._engine.store, self._engine.indexes, info, codec=info.codec,
            op=EventOp.CODEC_FIT, actor=self._scope.actor(user),
            reason=check.reason(reason, self._scope.limits), force_fit=True,
        )  # fmt: skip

    @operation("POST", "/v1/cubes/{cube}/reencode", tag=CUBES)
    def reencode(
        self, cube: str, *, codec: str, user: str | None = None, reason: str | None = None
    ) -> CubeInfo:
        """Switch the cube to another codec (one ``reencode`` event): the index is rebuilt
        from the full-precision vectors in the store and swapped in when complete. A codec
        that needs fitting is fitted at once when the cube holds enough memories."""
        from memos.plaintext._encoding import checked_codec, reconfigure

        info = self._scope.cube(cube, Access.WRITE)
        return reconfigure(
            self._engine.store, self._engine.indexes, info, codec=checked_codec(codec, info.dim),
            op=EventOp.REENCODE, actor=self._scope.actor(user),
            reason=check.reason(reason, self._scope.limits),
        )  # fmt: skip

    @operation("POST", "/v1/cubes/{cube}/rollback", tag=CUBES)
    def rollback_cube(
        self, cube: str, *, to_seq: int, user: str | None = None, reason: str | None = None
    ) -> list[MemoryItem]:
        """Bring every item of a cube back to its state right after event ``to_seq``.

        One ``rollback`` event per item that differs, all in one transaction; items created
        after ``to_seq`` are deleted. Nothing is erased: the undone events stay in the log.
        A concurrent writer's change is not overwritten: the rollback is recomputed on it.
        """
        from memos.engine import _memories

        return _memories.rollback_cube(
            self._engine, self._scope, cube, to_seq=to_seq, user=user, reason=reason
        )
