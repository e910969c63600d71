"""Tests read only what the repository carries.

A test that reads a file beside the repository (a sibling data folder) passes on the machines that
have that file and errors in anyone else's clone. ``install()`` adds an audit hook that refuses
an open, a listdir or a scandir of any path under the repository's parent folder but outside the
repository, and records it, so that a test which swallows the error still fails (conftest asks
``GUARD.take()`` after each test). What a Python process uses anyway stays open even where it
lies beside the repository: the interpreter's prefixes and site-packages, the temporary folder
(where the parent folder is the temporary folder itself: pytest's folder in it and what
``tempfile`` makes there), and the dotfiles of the home folder (caches, configuration).
"""

from __future__ import annotations

import getpass
import os
import site
import sys
import tempfile

import pytest

REPO = os.path.realpath(os.path.join(os.path.dirname(__file__), os.pardir))
PARENT = os.path.dirname(REPO)
_WATCHED = frozenset({"open", "os.listdir", "os.scandir"})
_TEMPORARY = frozenset({"tempfile.mkdtemp", "tempfile.mkstemp"})


def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(os.path.join(folder, ""))


class OutsideReads:
    """The audit hook, and the paths it refused since the last ``take()``."""

    def __init__(self) -> None:
        self.prefix = os.path.join(PARENT, "")
        self.refused: list[str] = []
        home = os.path.realpath(os.path.expanduser("~"))
        self.dotfiles = home == PARENT  # a clone straight in the home folder: ~/.cache etc.
        temp = os.path.realpath(tempfile.gettempdir())
        # entries of the parent folder that stay open (the repository's own name among them)
        self.names = {os.path.basename(REPO)}
        if temp == PARENT:
            try:
                user = getpass.getuser()
            except (ImportError, KeyError, OSError):
                user = "unknown"  # as pytest names its folder then
            self.names.add(f"pytest-of-{user}")
        system = [sys.prefix, sys.base_prefix, sys.exec_prefix, temp, *site.getsitepackages()]
        system.append(site.getusersitepackages())
        # folders inside the parent folder that stay open (those holding it would open it all)
        self.roots = tuple(
            root
            for root in dict.fromkeys(os.path.realpath(p) for p in system)
            if _inside(root, PARENT) and root != PARENT
        )

    def __call__(self, event: str, args: tuple[object, ...]) -> None:
        __tracebackhide__ = True
        if event in _WATCHED:
            self._check(args[0])
        elif event in _TEMPORARY and isinstance(args[0], str):
            folder, name = os.path.split(args[0])
            if os.path.realpath(folder) == PARENT:
                self.names.add(name)

    def _check(self, target: object) -> None:
        if target is None or isinstance(target, int):
            return  # the current folder, or a file descriptor opened before
        try:
            path = os.path.abspath(os.fsdecode(target))  # type: ignore[arg-type]
        except TypeError:
            return
        if not path.startswith(self.prefix):
            return
        name = path[len(self.prefix) :].split(os.sep, 1)[0]
        if name in self.names or (self.dotfiles and name.startswith(".")):
            return
        if any(_inside(path, root) for root in self.roots):
            return
        self.refused.append(path)
        __tracebackhide__ = True  # pytest shows the read, not this hook
        raise PermissionError(
            f"tests must not read outside the repository: {path} lies beside {REPO}, so a "
            "fresh clone does not have it; carry what the test needs in the repository "
            "(tests/data)"
        )

    def take(self) -> list[str]:
        refused, self.refused = self.refused, []
        return refused


GUARD = OutsideReads()
_installed: list[bool] = []


def install() -> None:
    if not _installed:
        sys.addaudithook(GUARD)  # for the rest of the process: a hook cannot be taken off
        _installed.append(True)


def check() -> None:
    """Fail where the hook refused a read since the last check, caught on the way or not."""
    refused = GUARD.take()
    if refused:
        pytest.fail(f"read outside the repository: {', '.join(refused)}", pytrace=False)
