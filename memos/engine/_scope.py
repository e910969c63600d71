"""Who is acting, and what they may do with each cube (DESIGN invariant 7).

A :class:`Scope` answers every access question of one :class:`memos.MemOS` handle. The handle an
embedded data directory opens acts as the operator (``principal=None``): whoever can open the
files can read them, so it may do anything and names the acting user per call. A handle made by
``mos.as_principal(name)`` — what the server makes for each authenticated request — sees a cube
only as its owner or through a grant: a cube it may not read does not exist for it
(:class:`CubeNotFound`, and an item of such a cube is an :class:`ItemNotFound`), so ids and names
probed from another tenant reveal nothing; a cube it may read but not change answers a write with
:class:`AccessDenied`. Its actions are logged under its own name whatever ``user`` it passes.

Cube names are per owner. A principal's cubes live in its namespace: ``alice`` creating
``notes`` makes the cube ``alice:notes``, its full name, which a grantee uses. A name without a
namespace means the cube of that full name if the scope can see one (the operator's cubes have
no namespace), else the principal's own cube of that name. So creating or importing a cube
collides only with the principal's own names, and no answer depends on another tenant's.
"""

from __future__ import annotations

from collections.abc import Iterable

from memos.core import _validation as check
from memos.core._store import Store
from memos.core._types import Access, CubeInfo, MemoryItem
from memos.core._validation import Limits
from memos.errors import AccessDenied, CubeNotFound, InvalidInput, ItemNotFound

LOCAL_ACTOR = "local"


class Scope:
    """The access rules of one principal (``None``: the operator) over one store."""

    def __init__(self, store: Store, principal: str | None, limits: Limits) -> None:
        self._store = store
        self._limits = limits
        self.principal = (
            None
            if principal is None
            else check.namespace(check.principal(principal, "principal", limits))
        )

    @property
    def limits(self) -> Limits:
        """The input limits of the handle acting under these rules."""
        return self._limits

    def allows(self, info: CubeInfo, need: Access) -> bool:
        if self.principal is None or info.owner == self.principal:
            return True
        granted = info.grants.get(self.principal)
        return granted == Access.WRITE or (granted == Access.READ and need == Access.READ)

    def cube(self, name: str, need: Access = Access.READ) -> CubeInfo:
        """The cube ``name`` if this scope may ``need`` it, else a typed error."""
        info = self._named(check.cube_ref(name))
        if info is None or not self.allows(info, Access.READ):
            raise CubeNotFound(f"no cube named {name!r}", cube=name)
        return self._writable(info) if need == Access.WRITE else info

    def _named(self, name: str) -> CubeInfo | None:
        """The cube ``name`` means to this scope (see the module's docs): the one of that full
        name when the scope may see it, else the principal's own of that name."""
        info = self._store.get_cube(name)
        if self.principal is None or check.NAMESPACE_SEPARATOR in name:
            return info
        if info is not None and self.allows(info, Access.READ):
            return info
        return self._store.get_cube(f"{self.principal}{check.NAMESPACE_SEPARATOR}{name}")

    def _writable(self, info: CubeInfo) -> CubeInfo:
        """``info``, which this scope may read, if it may also change it."""
        if not self.allows(info, Access.WRITE):
            raise AccessDenied(
                f"{self.principal!r} may read cube {info.name!r} but not change it",
                cube=info.name,
            )
        return info

    def owned(self, name: str) -> CubeInfo:
        """The cube ``name`` if this scope may manage who can access it (its owner)."""
        info = self.cube(name)
        if self.principal is not None and info.owner != self.principal:
            raise AccessDenied(f"only the owner of cube {name!r} grants access", cube=name)
        return info

    def item(self, item_id: str, need: Access = Access.READ) -> MemoryItem:
        """The item ``item_id`` if this scope may ``need`` its cube."""
        item = self._store.get_item(item_id) if check.is_unicode(item_id) else None
        info = None if item is None else self._store.get_cube(item.cube)
        if item is None or info is None or not self.allows(info, Access.READ):
            raise ItemNotFound(f"no memory with id {item_id!r}", item_id=str(item_id))
        if need == Access.WRITE:
            self._writable(info)
        return item

    def can_read(self, cube: str) -> bool:
        """Whether the cube named ``cube`` exists and this scope may read it."""
        info = self._store.get_cube(cube)
        return info is not None and self.allows(info, Access.READ)

    def visible(self, cubes: Iterable[CubeInfo]) -> list[CubeInfo]:
        return [info for info in cubes if self.allows(info, Access.READ)]

    def new_cube(self, name: str, owner: str | None) -> tuple[str, str]:
        """The full name and the owner of a cube this scope creates as ``name``."""
        namespace, short = check.split_cube_ref(check.cube_ref(name))
        if self.principal is not None:
            if namespace not in (None, self.principal):
                raise AccessDenied(
                    f"{self.principal!r} creates cubes in its own namespace, not {namespace!r}"
                )
            owner = self.owner(owner)
            return f"{owner}{check.NAMESPACE_SEPARATOR}{short}", owner
        if namespace is None:
            return name, self.owner(owner)
        if owner not in (None, namespace):
            raise InvalidInput(f"cube {name!r} is in {namespace!r}'s namespace", field="owner")
        return name, self.owner(namespace)

    def importable(self, info: CubeInfo) -> None:
        """Refuse an export this scope may not bring in: a principal imports its own cubes
        into its own namespace, whatever exists elsewhere."""
        namespace, _ = check.split_cube_ref(info.name)
        if self.principal is None:
            return
        self.owner(info.owner)
        if namespace != self.principal:
            raise AccessDenied(
                f"{self.principal!r} imports cubes into its own namespace; this export holds "
                f"cube {info.name!r}, which only the operator may import"
            )

    def owner(self, requested: str | None) -> str:
        """The owner of a cube this scope creates: a principal creates cubes for itself."""
        if self.principal is None:
            owner = LOCAL_ACTOR if requested is None else requested
            return check.principal(owner, "owner", self._limits)
        if requested is not None and requested != self.principal:
            raise AccessDenied(f"{self.principal!r} cannot create a cube owned by {requested!r}")
        return self.principal

    def actor(self, user: str | None) -> str:
        """Whom the log names for an action: the principal, else the given user or ``local``."""
        named = check.optional_principal(user, "user", self._limits)
        return self.principal or named or LOCAL_ACTOR
