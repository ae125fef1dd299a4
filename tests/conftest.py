"""Test set-up: eight simulated CPU devices, set before jax is imported; the worker processes
(pytest-xdist) run with the malloc settings of the `jaxformer` executable (allocator.py)."""
import os

from jaxformer.allocator import tuned_environment

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.update(tuned_environment(dict(os.environ)) or {})
