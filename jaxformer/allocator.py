"""TCMalloc for the `jaxformer` command on Linux, where the system has it.

XLA:CPU allocates and frees every intermediate buffer of every step, from the threads of
every host device at once. glibc's malloc serialises those threads on its arena locks and
hands large blocks back to the kernel, so that the next step faults them in again; with one
host device per core the step time then depends on how the threads happen to interleave
(nano GPT on a 2-core AMD EPYC: 22-50 ms from one process to the next). TCMalloc's
per-thread caches remove both costs (nano GPT 22-30 ms every time, CLIP tiny/4 0.64-0.76 s
instead of 1.02-1.15 s; experiments/results/cpu_train_step.md).

A library cannot swap the allocator of a running process, so `jaxformer` re-executes itself
once, before importing anything heavy, with the library in `LD_PRELOAD`. Nothing happens
when the library is absent (Debian/Ubuntu: `apt install libtcmalloc-minimal4`), when it is
already loaded, off Linux, or with `JAXFORMER_MALLOC=system`.
"""

from __future__ import annotations

import ctypes.util
import os
import sys

LIBRARIES = ("tcmalloc_minimal", "tcmalloc")
# Set across the re-execution only: the LD_PRELOAD to give back to child processes.
_RESTORE = "_JAXFORMER_LD_PRELOAD"


def find_tcmalloc() -> str | None:
    """The soname of the system's TCMalloc (for LD_PRELOAD), or None."""
    for name in LIBRARIES:
        path = ctypes.util.find_library(name)
        if path:
            return path
    return None


def loaded(name: str = "tcmalloc") -> bool:
    """Whether a library whose file name contains `name` is mapped into this process."""
    try:
        with open("/proc/self/maps") as maps:
            return any(name in line for line in maps)
    except OSError:
        return False


def preload_tcmalloc() -> None:
    """Re-executes the current command with TCMalloc preloaded, where that applies.

    Call it first thing in a command-line entry point: it does not return when it
    re-executes. After the re-execution the environment is as it was, so that processes
    this one starts make their own choice.
    """
    if _RESTORE in os.environ:
        previous = os.environ.pop(_RESTORE)
        if previous:
            os.environ["LD_PRELOAD"] = previous
        else:
            os.environ.pop("LD_PRELOAD", None)
        return
    if (not sys.platform.startswith("linux") or os.environ.get("JAXFORMER_MALLOC") == "system"
            or loaded()):
        return
    library = find_tcmalloc()
    if library is None:
        return
    previous = os.environ.get("LD_PRELOAD", "")
    env = dict(os.environ, LD_PRELOAD=f"{library} {previous}".strip(), **{_RESTORE: previous})
    # TCMalloc reports allocations above 1 GiB on stderr; a model's buffers often are.
    env.setdefault("TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD", str(1 << 40))
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)
