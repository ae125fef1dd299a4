"""The `jaxformer` executable runs with TCMalloc where the system has it (allocator.py)."""

import os
import subprocess
import sys

import pytest

from jaxformer import allocator

needs_tcmalloc = pytest.mark.skipif(
    not sys.platform.startswith("linux") or allocator.find_tcmalloc() is None,
    reason="TCMalloc is not installed (Debian: libtcmalloc-minimal4, which .ci/system-packages "
           "installs)")

# Runs `preload_tcmalloc` (which re-executes this very code once), then reports.
PROBE = """
import os
from jaxformer import allocator
{patch}
allocator.preload_tcmalloc()
print(allocator.loaded(), repr(os.environ.get("LD_PRELOAD")), "_JAXFORMER_LD_PRELOAD" in os.environ)
"""


def probe(patch: str = "", **env) -> list[str]:
    environ = {k: v for k, v in os.environ.items()
               if k not in ("LD_PRELOAD", "JAXFORMER_MALLOC")}
    environ.update(env)
    result = subprocess.run([sys.executable, "-c", PROBE.format(patch=patch)], env=environ,
                            capture_output=True, text=True, timeout=120, check=True)
    return result.stdout.split()


@needs_tcmalloc
def test_reexecutes_with_tcmalloc_then_gives_back_the_environment():
    assert probe() == ["True", "None", "False"]


@needs_tcmalloc
def test_a_users_own_preload_is_kept():
    loaded, preload, marker = probe(LD_PRELOAD="libm.so.6")
    assert (loaded, preload, marker) == ("True", "'libm.so.6'", "False")


def test_system_allocator_on_request():
    assert probe(JAXFORMER_MALLOC="system") == ["False", "None", "False"]


def test_a_library_that_does_not_load_reexecutes_once():
    # The loader ignores a preload it cannot find; the child must not try again.
    patch = "allocator.find_tcmalloc = lambda: 'libjaxformer-no-such-malloc.so'"
    assert probe(patch) == ["False", "None", "False"]


@needs_tcmalloc
def test_the_command_line_entry_point_preloads():
    code = ("import sys\nfrom jaxformer import allocator, cli\n"
            "cli.main = lambda: print(allocator.loaded()) or 0\nsys.exit(cli.run())")
    environ = {k: v for k, v in os.environ.items() if k != "JAXFORMER_MALLOC"}
    out = subprocess.run([sys.executable, "-c", code], env=environ, capture_output=True,
                         text=True, timeout=120, check=True).stdout
    assert out.split() == ["True"]
