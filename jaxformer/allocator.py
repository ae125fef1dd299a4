"""glibc's malloc, tuned for XLA:CPU: transparent huge pages and memory kept between steps.

XLA:CPU allocates and frees every intermediate buffer of every step. With glibc's defaults
the large ones are mmapped fresh each time and returned to the kernel when freed, so every
step faults its activations in again, 4 KiB page by page, from the threads of every host
device at once. The step time then depends on how those threads happen to interleave: nano
GPT on a 2-core AMD EPYC took 25-54 ms from one process to the next, and CLIP tiny/4 about
1.2 s. Keeping blocks below 32 MiB in malloc's heap, not giving freed memory back, and backing
the heap with transparent huge pages removes the faults: 22-26 ms and 0.57-0.80 s every time
(experiments/results/cpu_train_step.md).

glibc reads these settings (GLIBC_TUNABLES) only when a process starts, so the `jaxformer`
executable re-executes itself once, before importing anything heavy, with them added to the
environment; its child processes inherit them. A tunable the user already set is kept.
Nothing happens off glibc, or with `JAXFORMER_MALLOC=system`.
"""

from __future__ import annotations

import os
import sys

TUNABLES = {
    "glibc.malloc.hugetlb": "1",  # madvise(MADV_HUGEPAGE) on the memory malloc maps (2.35+).
    "glibc.malloc.mmap_threshold": str(32 << 20),  # Blocks below 32 MiB come from the heap,
    "glibc.malloc.trim_threshold": str(4 << 30),  # which keeps up to 4 GiB of freed memory.
}


def glibc_version() -> str | None:
    """This process's glibc version ("2.36"), or None on another C library."""
    try:
        name, _, version = os.confstr("CS_GNU_LIBC_VERSION").partition(" ")
    except (AttributeError, ValueError, OSError):
        return None
    return version if name == "glibc" else None


def parse_tunables(value: str) -> dict[str, str]:
    pairs = (item.partition("=") for item in value.split(":") if item)
    return {name: setting for name, _, setting in pairs}


def tuned_environment(environ: dict[str, str]) -> dict[str, str] | None:
    """`environ` with TUNABLES added to GLIBC_TUNABLES, or None when there is nothing to add
    (all set already, or `JAXFORMER_MALLOC=system`)."""
    if environ.get("JAXFORMER_MALLOC") == "system":
        return None
    current = parse_tunables(environ.get("GLIBC_TUNABLES", ""))
    if all(name in current for name in TUNABLES):
        return None
    merged = {**TUNABLES, **current}
    return dict(environ, GLIBC_TUNABLES=":".join(f"{k}={v}" for k, v in merged.items()))


def tune_malloc() -> None:
    """Re-executes the current command with TUNABLES in the environment, where that applies.

    Call it first thing in a command-line entry point: it does not return when it
    re-executes, and after that the tunables are set, so it never re-executes twice.
    """
    if glibc_version() is None:
        return
    env = tuned_environment(dict(os.environ))
    if env is None:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)
