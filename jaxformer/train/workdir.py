"""The workdir of a run: its path checked, and an exclusive lock for the run that writes it.

Two runs writing one workdir would interleave checkpoints and metrics. The lock is
`fcntl.flock` on `<workdir>/.lock`, so the kernel releases it when its holder dies, even by
SIGKILL: a stale lock never needs removing by hand. The file records who holds it, so a second
run can say which process it is waiting for. flock is advisory and local to a host (on NFS it
may not exclude another host): take it on process 0 only.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import sys
import time
from collections.abc import Iterator

from jaxformer.errors import UserError

LOCK_NAME = ".lock"


class WorkdirBusyError(UserError):
    """Another live process holds the workdir's lock."""


def check_workdir_path(path: str) -> None:
    """Raises UserError if `path` exists and is not a directory (a workdir must be one), or
    if it cannot be written (a read-only file system, no permission): checked before a run
    builds anything."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise UserError(f"--workdir {path} exists and is not a directory; "
                         "choose a directory (new or existing)")
    existing = os.path.abspath(path)
    while not os.path.exists(existing):  # A new workdir is made in its nearest existing parent.
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise UserError(f"--workdir {path}: {existing} is not a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"--workdir {path}: {existing} is not writable (read-only file system "
                        "or no permission); choose another --workdir")


def _holder(handle: int) -> str:
    """The lock file's record of its holder, as words for an error message."""
    os.lseek(handle, 0, os.SEEK_SET)
    try:
        info = json.loads(os.read(handle, 65536).decode())
        return (f"process {info['pid']} on {info['host']} since {info['since']} "
                f"({info['command']})")
    except (ValueError, KeyError, TypeError):  # Just taken: nothing recorded yet.
        return "another process"


def _record_holder(handle: int) -> None:
    info = {"pid": os.getpid(), "host": socket.gethostname(),
            "since": time.strftime("%Y-%m-%d %H:%M:%S %z"), "command": " ".join(sys.argv)}
    os.ftruncate(handle, 0)
    os.pwrite(handle, (json.dumps(info) + "\n").encode(), 0)


@contextlib.contextmanager
def lock_workdir(workdir: str) -> Iterator[None]:
    """Holds `<workdir>/.lock` (creating the workdir) for the duration of the block.

    Raises WorkdirBusyError naming the holder if another process holds it.
    """
    check_workdir_path(workdir)
    path = os.path.join(workdir, LOCK_NAME)
    try:
        os.makedirs(workdir, exist_ok=True)
        # No O_TRUNC: the file holds the current holder's record until the lock is ours.
        handle = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise UserError(f"cannot write the workdir {workdir}: {e.strerror}") from None
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise WorkdirBusyError(
                f"workdir {workdir} is in use by {_holder(handle)}; wait for it to end or "
                "stop it, or use another --workdir") from None
        _record_holder(handle)
        try:
            yield
        finally:
            os.ftruncate(handle, 0)
            fcntl.flock(handle, fcntl.LOCK_UN)
    finally:
        os.close(handle)


def is_locked(workdir: str) -> bool:
    """Whether a live process holds `<workdir>/.lock` (False for a missing workdir)."""
    try:
        handle = os.open(os.path.join(workdir, LOCK_NAME), os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(handle)
    return False
