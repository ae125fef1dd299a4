"""The one error type the command line turns into a single line on stderr and exit code 2.

A `UserError` is a mistake in what the user gave: a config key, type or value, a path, a
workdir, an input file. Anything else is a bug and keeps its traceback (exit code 1).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

EXIT_USER_ERROR = 2


class UserError(ValueError):
    """Bad input from the user: reported as one line, exit code 2."""


@contextlib.contextmanager
def as_user_error(what: str) -> Iterator[None]:
    """Reports a `ValueError` raised inside the block as a `UserError` about `what`.

    For the phase that checks a config by building its parts (data, task, model shapes):
    there, a `ValueError` means the config asks for something impossible.
    """
    try:
        yield
    except UserError:
        raise
    except ValueError as e:
        raise UserError(f"{what}: {e}") from e
