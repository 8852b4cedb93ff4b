"""The one base class of every user-facing failure. The CLI (jobs/cli.py) catches ``LakedlError`` alone and
prints ``error: <message>`` (one line that says what to do) with the class's exit code; anything else is
a bug in lakedl and surfaces as a traceback."""

from __future__ import annotations


class LakedlError(Exception):
    """A failure the user can act on; the message says what happened and what to do."""

    exit_code = 1


class InputError(LakedlError, ValueError):
    """An input (a file's content, a setting, an argument) the job cannot use."""


class MissingInput(LakedlError, FileNotFoundError):
    """A file or directory the job needs is not there (usually: run an earlier command first)."""
