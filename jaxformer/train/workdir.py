"""The workdir of a run: its path checked, an exclusive lock for the run that writes it, and
its config.json (an earlier, different one kept beside it).

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
from typing import Any

import ml_collections

from jaxformer import config as config_lib
from jaxformer.console import log
from jaxformer.errors import UserError

LOCK_NAME = ".lock"

# Config fields that may change between a run and its resume without a warning: the step
# budget, how the state is split over devices (a checkpoint restores into any split), the
# library of the CPU matmuls and the profiler window.
RESUMABLE_CHANGES = ("train.num_steps", "train.fsdp", "train.cpu_matmuls",
                     "train.profile_steps", "train.profile_start")


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


def save_config(config: ml_collections.ConfigDict, workdir: str) -> None:
    """Writes config.json; an earlier run's different config is kept beside it, and any
    difference beyond the step budget is reported."""
    path = os.path.join(workdir, "config.json")
    text = config_lib.to_json(config)
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            old = f.read()
        if old == text:
            return
        kept = os.path.join(workdir, time.strftime("config.%Y%m%d-%H%M%S.json"))
        kept = _unused_name(kept)
        os.replace(path, kept)
        changed = [k for k in _diff(json.loads(old), json.loads(text))
                   if k not in RESUMABLE_CHANGES]
        if changed:
            log(f"WARNING: this config differs from the workdir's previous one in "
                f"{', '.join(changed[:6])}{' ...' if len(changed) > 6 else ''}; the previous "
                f"config is kept as {os.path.basename(kept)}")
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def _unused_name(path: str) -> str:
    """`path`, or `path` with `.1`, `.2`, ... before its extension when it exists."""
    stem, ext = os.path.splitext(path)
    candidate, n = path, 0
    while os.path.exists(candidate):
        n += 1
        candidate = f"{stem}.{n}{ext}"
    return candidate


def _diff(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two JSON configs."""
    if isinstance(old, dict) and isinstance(new, dict):
        keys = sorted(old.keys() | new.keys())
        return [k for key in keys
                for k in _diff(old.get(key), new.get(key), f"{prefix}{key}.")]
    return [] if old == new else [prefix.rstrip(".")]
