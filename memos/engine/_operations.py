"""Operations, each declared once.

An operation is an SDK method declared with :func:`operation`: its signature and docstring are
the request and its documentation, its return annotation the reply, and the declaration adds
how it travels over HTTP (method, path, status, and the wire name of a parameter where it
differs). From that one declaration follow the embedded call (the method's body, run by an
embedded handle), the HTTP client's call (:class:`memos.RemoteMemOS` sends the arguments
instead of running the body), the server's route and its OpenAPI schema
(:mod:`memos.api`), and any other face that lists :func:`operations_of` a handle class.

Path parameters travel in the path; the others in the JSON body, or in the query string for
``GET`` and ``DELETE``. On the wire an ``Iterable`` or ``Sequence`` is a list and a ``Mapping``
an object.
"""

from __future__ import annotations

import collections.abc as abc
import functools
import inspect
import re
import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import (
    Any,
    TypeVar,
    Union,
    cast,
    get_args,
    get_origin,
    get_type_hints,
)

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, create_model

F = TypeVar("F", bound=Callable[..., Any])

# a path template's parameters: "{name}" or "{name:converter}"
PATH_PARAMETER = re.compile(r"{(\w+)(?::\w+)?}")
_QUERY_METHODS = frozenset({"GET", "DELETE"})
_LISTS = (abc.Iterable, abc.Sequence, abc.Collection)


class Performs:
    """A handle whose declared methods go through :meth:`_perform` (the embedded handle runs
    the method's body; the HTTP client sends the call)."""

    def _perform(self, op: Operation, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        return op.function(self, *args, **kwargs)


@dataclass(frozen=True)
class Operation:
    """One declared operation; see the module docstring."""

    function: Callable[..., Any]
    method: str
    path: str
    status: int = 200
    tag: str = "memories"
    wire: Mapping[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.function.__name__

    @property
    def summary(self) -> str:
        return (inspect.getdoc(self.function) or self.name).split("\n\n")[0].replace("\n", " ")

    @functools.cached_property
    def signature(self) -> inspect.Signature:
        return inspect.signature(self.function)

    @functools.cached_property
    def parameters(self) -> dict[str, str]:
        """Each parameter's wire name, by its name in the SDK (``self`` left out)."""
        names = list(self.signature.parameters)[1:]
        return {name: self.wire.get(name, name) for name in names}

    @functools.cached_property
    def path_parameters(self) -> list[str]:
        """The wire names the path holds, in order."""
        return PATH_PARAMETER.findall(self.path)

    @property
    def in_query(self) -> bool:
        return self.method in _QUERY_METHODS

    @functools.cached_property
    def request(self) -> type[BaseModel]:
        """The parameters that are not in the path, as a model of their wire names."""
        hints = get_type_hints(self.function)
        fields: dict[str, Any] = {}
        for name, wire in self.parameters.items():
            if wire in self.path_parameters:
                continue
            default = self.signature.parameters[name].default
            required = default is inspect.Parameter.empty
            fields[wire] = (wire_type(hints[name]), Field(... if required else default))
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
        return {self.parameters[n]: v for n, v in list(bound.arguments.items())[1:]}

    @functools.cached_property
    def _names(self) -> dict[str, str]:
        """Each parameter's name in the SDK, by its wire name."""
        return {wire: name for name, wire in self.parameters.items()}

    def call(self, handle: Any, wire_values: Mapping[str, Any]) -> Any:
        """Run the operation's body on ``handle`` with arguments named as on the wire."""
        names = self._names
        return self.function(handle, **{names[w]: v for w, v in wire_values.items()})


def operation(
    method: str,
    path: str,
    *,
    status: int = 200,
    tag: str = "memories",
    wire: Mapping[str, str] | None = None,
) -> Callable[[F], F]:
    """Declare an SDK method an operation (see the module docstring)."""

    def declare(function: F) -> F:
        op = Operation(function, method, path, status, tag, dict(wire or {}))

        @functools.wraps(function)
        def perform(self: Performs, /, *args: Any, **kwargs: Any) -> Any:
            return self._perform(op, args, kwargs)

        perform.operation = op  # type: ignore[attr-defined]
        return cast(F, perform)

    return declare


def operations_of(cls: type) -> list[Operation]:
    """The operations a handle class declares, in the order they are defined."""
    found: dict[str, Operation] = {}
    for klass in reversed(cls.__mro__):
        for name, member in vars(klass).items():
            op = getattr(member, "operation", None)
            if isinstance(op, Operation):
                found[name] = op
    return list(found.values())


def wire_type(annotation: Any) -> Any:
    """``annotation`` as JSON carries it: iterables as lists, mappings as dicts."""
    origin, args = get_origin(annotation), get_args(annotation)
    if origin in (Union, types.UnionType):
        return Union[tuple(wire_type(arg) for arg in args)]  # noqa: UP007
    if origin in _LISTS:
        return list[wire_type(args[0])]  # type: ignore[misc]
    if origin is abc.Mapping:
        return dict[args[0], wire_type(args[1])]  # type: ignore[misc,valid-type]
    return annotation
