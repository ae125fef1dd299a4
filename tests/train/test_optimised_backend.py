"""The suite compiles for speed of compilation (tests/helpers.py: XLA's backend optimisation
off, element-wise emitters); users' runs compile with XLA's defaults. The same run gives the
same numbers under both, so what the suite checks of a run holds for the code users run."""

import os
import subprocess
import sys

import numpy as np
import pytest

from tests.helpers import ROOT, xla_flags
from tests.test_cli import records as read_metrics
from tests.test_cli import train_args

pytestmark = pytest.mark.slow  # Trains twice.


def test_the_optimised_backend_trains_as_the_tests_backend(tmp_path):
    data_dir = tmp_path / "tfds"
    data_dir.mkdir()
    records = {}
    for name, flags in (("tests", xla_flags(2)),
                        ("users", "--xla_force_host_platform_device_count=2")):
        workdir = tmp_path / name
        result = subprocess.run(
            [sys.executable, "-m", "jaxformer", *train_args(workdir, data_dir)],
            capture_output=True, text=True, timeout=300, cwd=ROOT, check=False,
            env=dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=flags))
        assert result.returncode == 0, result.stderr
        records[name] = {(r["step"], key): value for r in read_metrics(workdir)
                         for key, value in r.items()
                         if key == "train/loss" or key.startswith("eval/")}
    assert records["tests"].keys() == records["users"].keys()
    assert len(records["tests"]) >= 4
    for key, value in records["tests"].items():
        np.testing.assert_allclose(records["users"][key], value, rtol=2e-5, err_msg=str(key))
