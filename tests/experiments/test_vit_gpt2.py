"""experiments/dosovitskiy2020 (ViT, Table 1) and experiments/radford2019 (GPT-2, Table 2):
the sweeps at every scale, their expected tables, the metric keys the configs log, and the
paper-scale parameter counts against counts by hand."""

import json
import os
import re

import pytest

from jaxformer import cli
from jaxformer import config as config_lib
from launch import sweep
from tests.helpers import ROOT

EXPERIMENTS = ("dosovitskiy2020", "radford2019")
SCALES = ("scale=cpu", "scale=paper", "scale=cpu,runlocal", "scale=paper,runlocal")


def _config(experiment):
    return os.path.join(ROOT, "experiments", experiment, "config.py")


def _expected(experiment):
    with open(os.path.join(ROOT, "experiments", experiment, "expected.json"),
              encoding="utf-8") as f:
        return json.load(f)


def _points(experiment, arg):
    return sweep.plan(f"{_config(experiment)}:{arg}", "/nonexistent").points


def _vit(num_layers, d_model, mlp_dim, patch_size, image_size=224, classes=1000):
    """ViT classifier with the [class] token, a tanh pre-logits layer as wide as the model
    and a linear head: patch embedding (kernel, bias), class token, position embeddings; per
    block two LayerNorms, q/k/v/out projections and a two-layer MLP, all with biases; the
    final LayerNorm."""
    d = d_model
    tokens = (image_size // patch_size) ** 2 + 1
    block = 2 * 2 * d + 4 * (d * d + d) + (d * mlp_dim + mlp_dim) + (mlp_dim * d + d)
    return (patch_size ** 2 * 3 * d + d + d + tokens * d + num_layers * block + 2 * d
            + (d * d + d) + (d * classes + classes))


def _gpt2(num_layers, d_model, vocab=50257, context=1024):
    """GPT-2 with the output head tied to the token embedding: token and position tables; per
    block two LayerNorms, the fused qkv and output projections and a 4x MLP, with biases;
    the final LayerNorm."""
    d = d_model
    return vocab * d + context * d + num_layers * (12 * d * d + 13 * d) + 2 * d


# The paper tables' sizes (layers, width, MLP, patch) counted by hand.
CLOSED_FORM = {
    "dosovitskiy2020": {"B-16": _vit(12, 768, 3072, 16), "L-16": _vit(24, 1024, 4096, 16),
                        "H-14": _vit(32, 1280, 5120, 14)},
    "radford2019": {"gpt2-small": _gpt2(12, 768), "gpt2-medium": _gpt2(24, 1024),
                    "gpt2-large": _gpt2(36, 1280), "gpt2-xl": _gpt2(48, 1600)},
}


@pytest.mark.parametrize("experiment", EXPERIMENTS)
@pytest.mark.parametrize("arg", SCALES)
def test_sweep_plans_with_the_expected_rows(experiment, arg):
    names = [p.name for p in _points(experiment, arg)]
    rows = _expected(experiment)["rows"]
    assert names and len(set(names)) == len(names)
    assert all(re.fullmatch(r"[A-Za-z0-9_.+-]+", name) for name in names)
    assert set(names) <= set(rows)
    if "paper" in arg:
        assert set(names) == {name for name, row in rows.items() if row.get("reference_params")}


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_expected_json(experiment):
    expected = _expected(experiment)
    assert {"paper", "url", "table", "metric", "rows"} <= set(expected)
    paper = [p.name for p in _points(experiment, "scale=paper")]
    cpu = [p.name for p in _points(experiment, "scale=cpu")]
    assert list(expected["rows"]) == paper + cpu
    for name, row in expected["rows"].items():
        assert {"label", "metric", "params"} <= set(row)
        assert (row["params"] is not None) == (name in paper)


@pytest.mark.parametrize("experiment", EXPERIMENTS)
@pytest.mark.parametrize("scale", ["scale=cpu", "scale=paper"])
def test_metric_key_is_logged(experiment, scale):
    """`eval/<name>/<metric>`: the config has an evaluator `name` whose type reports
    `metric`."""
    _, name, metric = _expected(experiment)["metric"]["key"].split("/")
    config = config_lib.load_config(f"{_config(experiment)}:{scale}")
    assert config.evals[name].type == {"top1": "classification", "loss": "loss"}[metric]


@pytest.mark.parametrize("experiment,row", [(e, r) for e in EXPERIMENTS for r in CLOSED_FORM[e]])
def test_reference_params(experiment, row, capsys):
    point = next(p for p in _points(experiment, "scale=paper") if p.name == row)
    capsys.readouterr()
    assert cli.main(["params", f"--config={_config(experiment)}:scale=paper", "--json",
                     *point.override_flags()]) == 0
    total = json.loads(capsys.readouterr().out)["total"]
    assert total == CLOSED_FORM[experiment][row]
    assert total == _expected(experiment)["rows"][row]["reference_params"]
