"""Errors a user can fix, told apart from bugs.

The CLI prints a :class:`UserError` as one line and exits 1; any other
exception is a bug and keeps its traceback. Library code raises a subclass
where the cause is input a person chose or can supply: a file, a setting, an
artifact an earlier stage was meant to write. Each subclass keeps the builtin
base its callers catch today (``ValueError``, ``FileNotFoundError``).
"""

from __future__ import annotations


class UserError(Exception):
    """Bad input a user can fix; the message names the file or setting and what is wrong."""


class InputError(UserError, ValueError):
    """A file, setting or request that cannot be used as given."""


class MissingArtifactError(UserError, FileNotFoundError):
    """An artifact an earlier stage writes (a training set, a model) is not there yet."""
