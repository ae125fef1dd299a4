"""The `jaxformer` executable tunes glibc's malloc for XLA:CPU (jaxformer/allocator.py)."""

import os
import re
import subprocess
import sys

import pytest

from jaxformer import allocator

needs_glibc = pytest.mark.skipif(allocator.glibc_version() is None, reason="not glibc")

# Tunes (re-executing this very code once), then asks malloc for 1 MiB and for 64 MiB, touches
# both, and reports: is the 1 MiB block mmapped (the IS_MMAPPED bit of its chunk header), the
# anonymous huge pages of the process (kB), GLIBC_TUNABLES.
PROBE = """
import ctypes, os, re
from jaxformer import allocator, cli
{entry}
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
small, large = libc.malloc(1 << 20), libc.malloc(64 << 20)
ctypes.memset(small, 1, 1 << 20)
ctypes.memset(large, 1, 64 << 20)
header = ctypes.c_size_t.from_address(small - ctypes.sizeof(ctypes.c_size_t)).value
huge = re.search(r"AnonHugePages:\\s+(\\d+)", open("/proc/self/smaps_rollup").read())
print(bool(header & 2), int(huge.group(1)), os.environ.get("GLIBC_TUNABLES", "-"))
"""


def probe(entry: str = "allocator.tune_malloc()", **env) -> tuple[bool, int, str]:
    environ = {k: v for k, v in os.environ.items()
               if k not in ("GLIBC_TUNABLES", "JAXFORMER_MALLOC")}
    environ.update(env)
    out = subprocess.run([sys.executable, "-c", PROBE.format(entry=entry)], env=environ,
                         capture_output=True, text=True, timeout=120, check=True).stdout
    mmapped, huge, tunables = out.split()
    return mmapped == "True", int(huge), tunables


def transparent_huge_pages() -> str | None:
    """The kernel's mode: "always", "madvise" (pages on request) or "never"."""
    try:
        with open("/sys/kernel/mm/transparent_hugepage/enabled") as f:
            return re.search(r"\[(\w+)\]", f.read()).group(1)
    except (OSError, AttributeError):
        return None


@needs_glibc
def test_untuned_malloc_maps_a_mebibyte_block():
    # The reference behaviour: glibc's default mmap threshold is 128 KiB.
    mmapped, _, tunables = probe(entry="", JAXFORMER_MALLOC="system")
    assert mmapped and tunables == "-"


@needs_glibc
def test_tuned_malloc_keeps_blocks_below_32_mib_in_its_heap():
    mmapped, _, tunables = probe()
    assert not mmapped
    assert allocator.parse_tunables(tunables) == allocator.TUNABLES


@needs_glibc
@pytest.mark.skipif(transparent_huge_pages() != "madvise",
                    reason="transparent huge pages are not given on request (madvise) here")
def test_tuned_malloc_asks_for_huge_pages():
    assert probe(entry="", JAXFORMER_MALLOC="system")[1] == 0
    assert probe()[1] >= 2048  # At least one 2 MiB page backs the 64 MiB block.


@needs_glibc
def test_the_command_line_entry_point_tunes():
    entry = "cli.main = lambda: 0; cli.run()"
    assert not probe(entry=entry)[0]


@needs_glibc
def test_a_users_own_tunables_win_and_are_kept():
    _, _, tunables = probe(
        GLIBC_TUNABLES="glibc.malloc.mmap_threshold=65536:glibc.malloc.tcache_count=0")
    assert allocator.parse_tunables(tunables) == {
        **allocator.TUNABLES, "glibc.malloc.mmap_threshold": "65536",
        "glibc.malloc.tcache_count": "0"}


def test_nothing_to_do_once_tuned_or_when_asked():
    tuned = allocator.tuned_environment({"PATH": "/bin"})
    assert allocator.tuned_environment(tuned) is None  # So it re-executes at most once.
    assert allocator.tuned_environment({"JAXFORMER_MALLOC": "system"}) is None
    assert re.fullmatch(r"[a-z._]+=\d+(:[a-z._]+=\d+)*", tuned["GLIBC_TUNABLES"])
