"""Errors that carry a message meant for the user (what is wrong and how to fix it)."""

from __future__ import annotations

import re


class MarrowscopeError(Exception):
    """Base class. The CLI prints ``str(error)`` on one line and exits non-zero."""

    exit_code = 2


class InputError(MarrowscopeError):
    """Bad input: a file that is missing, corrupt, of the wrong kind or inconsistent."""

    def __init__(self, path: object, problem: str) -> None:
        self.path = str(path)
        # one line, always: causes quoted from other libraries (pandas, pyarrow) may hold line breaks
        self.problem = re.sub(r"\s*[\r\n]+\s*", " ", str(problem)).strip()
        super().__init__(f"{self.path}: {self.problem}")


class MissingDependencyError(MarrowscopeError):
    """An optional package is not installed."""


class NetworkUnavailableError(MarrowscopeError):
    """A step that needs the internet found none."""
