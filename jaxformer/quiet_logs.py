"""Dropping a library's known log lines where jaxformer does what they warn about."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator


class _DropPrefix(logging.Filter):
    def __init__(self, prefix: str):
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefix)


@contextlib.contextmanager
def dropped_log_lines(prefix: str, logger: str = "absl") -> Iterator[None]:
    """Inside the block, `logger` drops the records whose message (its format string) starts
    with `prefix`."""
    target, quiet = logging.getLogger(logger), _DropPrefix(prefix)
    target.addFilter(quiet)
    try:
        yield
    finally:
        target.removeFilter(quiet)
