"""Operations, each declared once.

An operation is an SDK method declared with :func:`operation`: its signature and docstring are
the request and its documentation, its return annotation the reply, and the declaration adds
how it travels over HTTP (method, path, status, and the wire name of a parameter where it
differs). From that one declaration follow the embedded call (the method's body, run by an
embedded handle), the HTTP client's call (:class:`memos.RemoteMemOS` sends the arguments
instead of running the body), the server's route and its OpenAPI schema
(:mod:`memos.api`), and any other face that lists :func:`operations_of` a handle class.

Operations can be grouped under an attribute of the handle (``mos.kv``, ``mos.lora``,
``mos.jobs``): a :class:`Namespace` class declares them, a :class:`namespace` attribute of the
handle class holds it, and its operations are performed through the handle, so they run or
travel exactly as the handle's own do.

Path parameters travel in the path; the others in the JSON body, or in the query string for
``GET`` and ``DELETE``, where a model (a :class:`pydantic.BaseModel`) travels as its JSON. On
the wire an ``Iterable`` or ``Sequence`` is a list and a ``Mapping`` an object. An operation
declared with an ``archive`` layout moves a directory (its ``directory`` parameter) as a tar
(see :mod:`memos.core._archive`): one that returns a ``Path`` is downloaded into it, any other
uploads it as the request's body, its other parameters in the query string.
"""

from __future__ import annotations

import collections.abc as abc
import functools
import inspect
import re
import types
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import (
    Any,
    Generic,
    Self,
    TypeVar,
    Union,
    cast,
    get_args,
    get_origin,
    get_type_hints,
    overload,
)

from pydantic import BaseModel, ConfigDict, Field, Json, TypeAdapter, create_model

from memos.core._archive import Layout

F = TypeVar("F", bound=Callable[..., Any])

# the parameter of an archive operation that names the directory it moves
DIRECTORY = "directory"
# a path template's parameters: "{name}" or "{name:converter}"
PATH_PARAMETER = re.compile(r"{(\w+)(?::\w+)?}")
_QUERY_METHODS = frozenset({"GET", "DELETE"})
_LISTS = (abc.Iterable, abc.Sequence, abc.Collection)


class Performs:
    """A handle whose declared methods go through :meth:`_perform` (the embedded handle runs
    the method's body; the HTTP client sends the call)."""

    def _perform(self, op: Operation, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        return self._perform_on(self, op, args, kwargs)

    def _perform_on(
        self, target: Performs, op: Operation, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        """Perform ``op``, declared on ``target`` (this handle, or one of its namespaces)."""
        return op.function(target, *args, **kwargs)


class Namespace(Performs):
    """A group of a handle's operations under one of its attributes; see the module
    docstring."""

    def __init__(self, handle: Performs) -> None:
        self._handle = handle

    def _perform(self, op: Operation, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        return self._handle._perform_on(self, op, args, kwargs)


N = TypeVar("N", bound=Namespace, covariant=True)


class namespace(Generic[N]):  # noqa: N801 (used as an attribute decorator would be)
    """A handle class's attribute that holds a :class:`Namespace` of its operations, made
    for each handle on first use."""

    def __init__(self, cls: type[N]) -> None:
        self.cls = cls
        self.name = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, instance: None, owner: type) -> Self: ...

    @overload
    def __get__(self, instance: Performs, owner: type) -> N: ...

    def __get__(self, instance: Performs | None, owner: type) -> Self | N:
        if instance is None:
            return self
        made = self.cls(instance)
        vars(instance)[self.name] = made  # later reads find it before this descriptor
        return made


@dataclass(frozen=True)
class Operation:
    """One declared operation; see the module docstring."""

    function: Callable[..., Any]
    method: str
    path: str
    status: int = 200
    tag: str = "memories"
    wire: Mapping[str, str] = field(default_factory=dict)
    local: frozenset[str] = frozenset()
    # the reply is a ReplyStream: text pieces as they are made, then the whole reply
    stream: bool = False
    archive: Layout | None = None
    # the handle attribute of the namespace that declares it ("" for the handle's own)
    namespace: str = ""

    @property
    def name(self) -> str:
        """Unique among a handle's operations: ``kv_build`` for ``mos.kv.build``."""
        own = self.function.__name__
        return f"{self.namespace}_{own}" if self.namespace else own

    @property
    def summary(self) -> str:
        return (inspect.getdoc(self.function) or self.name).split("\n\n")[0].replace("\n", " ")

    @functools.cached_property
    def signature(self) -> inspect.Signature:
        return inspect.signature(self.function)

    @functools.cached_property
    def parameters(self) -> dict[str, str]:
        """Each parameter's wire name, by its name in the SDK (``self`` and the parameters that
        stay in the caller's process left out)."""
        names = [n for n in list(self.signature.parameters)[1:] if n not in self._not_sent]
        return {name: self.wire.get(name, name) for name in names}

    @property
    def _not_sent(self) -> frozenset[str]:
        return self.local | {DIRECTORY} if self.archive is not None else self.local

    @functools.cached_property
    def path_parameters(self) -> list[str]:
        """The wire names the path holds, in order."""
        return PATH_PARAMETER.findall(self.path)

    @functools.cached_property
    def path_types(self) -> dict[str, type]:
        """Each path parameter's type by its wire name: ``int`` where the SDK takes a whole
        number (an event's seq), else ``str``."""
        hints = get_type_hints(self.function)
        wire = {w: n for n, w in self.parameters.items()}
        return {p: int if hints.get(wire.get(p, p)) is int else str for p in self.path_parameters}

    @property
    def in_query(self) -> bool:
        return self.method in _QUERY_METHODS or self.archive is not None

    @property
    def downloads(self) -> bool:
        """Whether the reply is a directory, sent as a tar (see the module docstring)."""
        return self.archive is not None and self.reply is Path

    @property
    def uploads(self) -> bool:
        """Whether the request's body is a directory, sent as a tar."""
        return self.archive is not None and not self.downloads

    @functools.cached_property
    def request(self) -> type[BaseModel]:
        """The parameters that are not in the path, as a model of their wire names."""
        hints = get_type_hints(self.function, include_extras=True)
        fields: dict[str, Any] = {}
        for name, wire in self.parameters.items():
            if wire in self.path_parameters:
                continue
            default = self.signature.parameters[name].default
            required = default is inspect.Parameter.empty
            annotation = wire_type(hints[name], in_query=self.in_query)
            fields[wire] = (annotation, Field(... if required else default))
        model_name = "".join(part.title() for part in self.name.split("_")) + "Request"
        config = ConfigDict(extra="forbid")
        return create_model(model_name, __config__=config, **fields)

    @functools.cached_property
    def reply(self) -> Any:
        return get_type_hints(self.function)["return"]

    @functools.cached_property
    def reply_adapter(self) -> TypeAdapter[Any]:
        return TypeAdapter(self.reply)

    def arguments(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        """A call's arguments by wire name, defaults filled in (``TypeError`` as a call)."""
        bound = self.signature.bind(None, *args, **kwargs)
        bound.apply_defaults()
        sent = list(bound.arguments.items())[1:]
        return {self.wire.get(n, n): v for n, v in sent if n not in self.local}

    @functools.cached_property
    def _names(self) -> dict[str, str]:
        """Each parameter's name in the SDK, by its wire name."""
        return {wire: name for name, wire in self.parameters.items()}

    def call(self, handle: Any, wire_values: Mapping[str, Any]) -> Any:
        """Run the operation's body on ``handle`` with arguments named as on the wire (and an
        archive operation's ``directory``)."""
        names = self._names
        target = getattr(handle, self.namespace) if self.namespace else handle
        # through the handle, as a call in its own process would go (see MemOS._perform_on)
        return target._perform(self, (), {names.get(w, w): v for w, v in wire_values.items()})


def operation(
    method: str,
    path: str,
    *,
    status: int = 200,
    tag: str = "memories",
    wire: Mapping[str, str] | None = None,
    local: Iterable[str] = (),
    stream: bool = False,
    archive: Layout | None = None,
) -> Callable[[F], F]:
    """Declare an SDK method an operation (see the module docstring). ``wire`` renames
    parameters on the wire; ``local`` names those that never leave the caller's process (a
    progress callback), which the HTTP client accepts and does not send."""

    def declare(function: F) -> F:
        op = Operation(
            function, method, path, status, tag, dict(wire or {}), frozenset(local), stream,
            archive,
        )  # fmt: skip

        @functools.wraps(function)
        def perform(self: Performs, /, *args: Any, **kwargs: Any) -> Any:
            return self._perform(op, args, kwargs)

        perform.operation = op  # type: ignore[attr-defined]
        return cast(F, perform)

    return declare


def operations_of(cls: type) -> list[Operation]:
    """The operations a handle class declares, its namespaces' included, in the order they
    are defined."""
    found: dict[str, Operation | namespace[Namespace]] = {}
    for klass in reversed(cls.__mro__):
        for name, member in vars(klass).items():
            op = getattr(member, "operation", None)
            if isinstance(op, Operation) or isinstance(member, namespace):
                found[name] = op if isinstance(op, Operation) else member
    ops: list[Operation] = []
    for name, member in found.items():
        if isinstance(member, Operation):
            ops.append(member)
        else:
            ops.extend(replace(op, namespace=name) for op in operations_of(member.cls))
    return ops


def wire_type(annotation: Any, *, in_query: bool = False) -> Any:
    """``annotation`` as JSON carries it: iterables as lists, mappings as dicts; in a query
    string, a model as a string of its JSON."""
    origin, args = get_origin(annotation), get_args(annotation)
    if origin in (Union, types.UnionType):
        return Union[tuple(wire_type(arg, in_query=in_query) for arg in args)]  # noqa: UP007
    if in_query and isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return Json[annotation]  # type: ignore[misc]
    if origin in _LISTS:
        return list[wire_type(args[0])]  # type: ignore[misc]
    if origin is abc.Mapping:
        return dict[args[0], wire_type(args[1])]  # type: ignore[misc,valid-type]
    return annotation
