"""A server's error answers, read back into the typed errors of :mod:`memos.errors`.

An answer in the JSON error envelope is raised as the :class:`MemosError` subclass with the same
``code``, message and details; any other failure answer keeps its HTTP status.
"""

from __future__ import annotations

import functools
from typing import Any, cast

from memos import errors
from memos.core._http import Response
from memos.errors import MemosError

_ERRORS: dict[str, type[MemosError]] = {
    cls.code: cls
    for cls in (getattr(errors, name) for name in errors.__all__)
    if isinstance(cls, type) and issubclass(cls, MemosError)
}


@functools.cache
def _unknown_error(code: str, status: int) -> type[MemosError]:
    """A ``MemosError`` class for a code this client does not know (a newer server, a proxy)."""
    attributes = {"code": code, "status": status, "__module__": __name__}
    return cast(type[MemosError], type("ServerError", (MemosError,), attributes))


def _envelope(response: Response) -> tuple[str, str, dict[str, Any]]:
    """The code, message and details of an error answer; a body that is not the envelope
    (a proxy's page) is reported with the HTTP status."""
    try:
        error = response.json().get("error")
        code, message, details = error["code"], error["message"], error.get("details") or {}
    except (ValueError, AttributeError, TypeError, KeyError):
        code = message = details = None
    if isinstance(code, str) and isinstance(message, str) and isinstance(details, dict):
        return code, message, details
    snippet = response.text[:200]
    message = f"the server answered {response.status} {response.reason}: {snippet}"
    return "http_error", message, {"status": response.status}


def error_from(response: Response) -> MemosError:
    """The typed error an error answer stands for: the class whose ``code`` it names."""
    code, message, details = _envelope(response)
    return error_named(code, message, details, response.status)


def error_named(code: str, message: str, details: dict[str, Any], status: int) -> MemosError:
    """The typed error of an envelope's fields; ``status`` is kept for a code this client
    does not know."""
    cls = _ERRORS.get(code) or _unknown_error(code, status)
    error = cls(message)
    error.details = details  # set, not passed: a detail may be named like a parameter
    return error
