"""Test set-up, before jax is imported: eight simulated CPU devices; XLA compiling for speed
of compilation (helpers.FAST_COMPILE_FLAGS), as the suite spends most of its time compiling
programs it then runs for a few steps; the malloc settings of the `jaxformer` executable
(allocator.py); one persistent compilation cache shared by the worker processes
(pytest-xdist) and the runs they start, created empty for each session, so a program that
several tests compile (a config's train step, the resumed run's) is compiled once; and, unless
TFDS_DATA_DIR names one, a tfds data dir of the session's own, so that the data sets the tests
prepare stay out of ~/tensorflow_datasets."""
import os
import shutil
import tempfile

from jaxformer.allocator import tuned_environment
from tests.helpers import FAST_COMPILE_FLAGS

_flags = os.environ.get("XLA_FLAGS", "")
if "--xla_backend_optimization_level" not in _flags:
    _flags += " " + FAST_COMPILE_FLAGS
os.environ["XLA_FLAGS"] = (_flags + " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.update(tuned_environment(dict(os.environ)) or {})
_OWN_DIRS = []
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:  # the controller; workers inherit its dirs
    os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="jaxformer-xla-cache-")
    os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    _OWN_DIRS.append(os.environ["JAX_COMPILATION_CACHE_DIR"])
    if not os.environ.get("TFDS_DATA_DIR"):
        os.environ["TFDS_DATA_DIR"] = tempfile.mkdtemp(prefix="jaxformer-tfds-")
        _OWN_DIRS.append(os.environ["TFDS_DATA_DIR"])


def pytest_unconfigure(config):
    if not hasattr(config, "workerinput"):
        for path in _OWN_DIRS:
            shutil.rmtree(path, ignore_errors=True)
