"""Every sweep the repository ships plans: each point applies to its config, on the arg
strings the README and the configs' docstrings use."""

import pytest

from launch import sweep as sweep_lib
from tests.helpers import ROOT

SWEEPS = [  # (config with its arg string, number of points)
    ("configs/gpt/shakespeare_char.py:cpu", 3),
    ("configs/gpt/shakespeare_char.py:runlocal", 3),
    ("configs/vit/imagenet.py:variant=B/16", 4),
    ("configs/bert/tweet_sentiment.py", 3),
]


@pytest.mark.parametrize("spec,count", SWEEPS, ids=[spec for spec, _ in SWEEPS])
def test_shipped_sweeps_plan(spec, count, tmp_path):
    sweep = sweep_lib.plan(f"{ROOT}/{spec}", str(tmp_path / "root"))
    assert len(sweep.points) == count
    assert len({point.name for point in sweep.points}) == count
    assert not (tmp_path / "root").exists()  # Planning writes nothing.
