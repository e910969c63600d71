"""Who else may use a cube: grants and revocations, each one event in the cube's log."""

from __future__ import annotations

from memos.core import _validation as check
from memos.core._store import Change
from memos.core._types import Access, CubeInfo, EventOp, utcnow
from memos.engine._engine import Engine
from memos.engine._scope import Scope
from memos.errors import InvalidInput, NotFound, VersionConflict

_RETRIES = 20


def grant(
    engine: Engine, scope: Scope, cube: str, principal: str, access: str, reason: str | None
) -> CubeInfo:
    grantee = check.principal(principal, "principal", scope.limits)
    return _change(engine, scope, cube, grantee, _checked_access(access), EventOp.GRANT, reason)


def revoke(engine: Engine, scope: Scope, cube: str, principal: str, reason: str | None) -> CubeInfo:
    grantee = check.principal(principal, "principal", scope.limits)
    return _change(engine, scope, cube, grantee, None, EventOp.REVOKE, reason)


def _change(
    engine: Engine,
    scope: Scope,
    cube: str,
    grantee: str,
    level: Access | None,
    op: EventOp,
    reason: str | None,
) -> CubeInfo:
    reason = check.reason(reason, scope.limits)
    for _ in range(_RETRIES):
        info = scope.owned(cube)
        if grantee == info.owner:
            raise InvalidInput(f"{grantee!r} owns cube {info.name!r}", principal=grantee)
        grants = {p: a for p, a in info.grants.items() if p != grantee}
        if level is None and grantee not in info.grants:
            raise NotFound(f"{grantee!r} holds no grant on cube {info.name!r}")
        if level is not None:
            grants[grantee] = level
        new = info.model_copy(update={"grants": dict(sorted(grants.items()))})
        change = Change(
            op=op, cube=info.name, actor=scope.actor(None), ts=utcnow(), reason=reason,
            cube_info=new, extra={"principal": grantee, "access": level},
        )  # fmt: skip
        try:
            engine.store.commit([change])
        except VersionConflict:
            continue
        return new
    raise VersionConflict(f"cube {cube} kept changing; gave up after {_RETRIES} tries")


def _checked_access(access: object) -> Access:
    if access not in ("read", "write"):
        raise InvalidInput(f"access is 'read' or 'write', not {access!r}", field="access")
    return Access(access)
