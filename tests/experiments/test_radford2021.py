"""experiments/radford2021 (CLIP): the rows at both scales, the keys the configs log for the
table's columns, and the OpenAI sizes' reference parameter counts."""

import json
import os

import pytest

from jaxformer import cli
from jaxformer import config as config_lib
from jaxformer.models import clip as clip_model
from launch import reproduce, sweep
from tests.helpers import ROOT

DIRECTORY = os.path.join(ROOT, "experiments", "radford2021")
CONFIG = os.path.join(DIRECTORY, "config.py")


def _points(arg):
    return sweep.plan(f"{CONFIG}:{arg}", "/nonexistent").points


def _expected():
    with open(os.path.join(DIRECTORY, "expected.json"), encoding="utf-8") as f:
        return json.load(f)


def test_rows_at_both_scales_are_the_expected_rows():
    rows = [*reproduce.table_rows(_points("scale=paper")),
            *reproduce.table_rows(_points("scale=cpu"))]
    assert rows == list(_expected()["rows"])


def test_every_column_is_logged_by_some_cpu_row():
    """Each metric key names an evaluator (`eval/<name>/<metric>`) of a row's config whose
    type reports that metric."""
    reports = {"zero_shot": {"top1", "top5"}, "linear_probe": {"top1"},
               "classification": {"top1", "top5"},
               "retrieval": {"image_to_text_r1", "text_to_image_r1"}}
    expected = _expected()
    configs = [config_lib.load_config(f"{CONFIG}:scale=cpu,{p.arg}")
               for p in _points("scale=cpu")]
    for column in [expected["metric"], *expected["also"]]:
        _, name, metric = column["key"].split("/")
        assert any(name in c.evals and metric in reports[c.evals[name].type]
                   for c in configs), column["key"]


def test_cpu_rows():
    configs = {p.name: config_lib.load_config(f"{CONFIG}:scale=cpu,{p.arg}")
               for p in _points("scale=cpu")}
    assert configs["clip"].task.loss == "softmax" and configs["siglip"].task.loss == "sigmoid"
    # The supervised ViT has the image tower's sizes.
    tower = clip_model.parse_variant(configs["clip"].model.variant)
    vit = configs["vit"].model
    assert (vit.d_model, vit.num_layers, vit.num_heads, vit.mlp_dim, vit.patch_size) == (
        tower["vision_width"], tower["vision_layers"], tower["vision_heads"],
        tower["vision_mlp_dim"], tower["patch_size"])
    assert configs["vit"].data.image_size == configs["clip"].data.image_size == 32


@pytest.mark.parametrize("row", ["B-32", "B-16", "L-14"])
def test_paper_rows_have_the_reference_counts(row, capsys):
    point = next(p for p in _points("scale=paper") if p.name == row)
    capsys.readouterr()
    assert cli.main(["params", f"--config={CONFIG}:scale=paper,{point.arg}", "--json"]) == 0
    total = json.loads(capsys.readouterr().out)["total"]
    assert total == _expected()["rows"][row]["reference_params"]
