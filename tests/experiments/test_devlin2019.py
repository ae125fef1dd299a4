"""experiments/devlin2019 (BERT, Tables 1 and 5): the rows at both scales, the learning-rate
grids the fine-tuning rows choose from on validation, the keys the configs log, and BERT-base's
reference parameter count."""

import json
import os

import pytest

from jaxformer import cli
from jaxformer import config as config_lib
from launch import reproduce, sweep
from tests.helpers import ROOT

DIRECTORY = os.path.join(ROOT, "experiments", "devlin2019")
CONFIG = os.path.join(DIRECTORY, "config.py")


def _points(arg):
    return sweep.plan(f"{CONFIG}:{arg}", "/nonexistent").points


def _expected():
    with open(os.path.join(DIRECTORY, "expected.json"), encoding="utf-8") as f:
        return json.load(f)


def test_table_rows_at_both_scales_are_the_expected_rows():
    rows = [*reproduce.table_rows(_points("scale=paper")),
            *reproduce.table_rows(_points("scale=cpu"))]
    assert rows == list(_expected()["rows"])


@pytest.mark.parametrize("scale,row,learning_rates", [
    ("cpu", "bert-1k", [5e-4, 3e-4, 1e-4, 5e-5]),
    ("cpu", "scratch", [5e-4, 3e-4, 1e-4, 5e-5]),
    ("paper", "mnli", [5e-5, 3e-5, 2e-5]),
])
def test_fine_tuning_rows_sweep_a_learning_rate_grid(scale, row, learning_rates):
    points = [p for p in _points(f"scale={scale}") if p.table_row == row]
    configs = [config_lib.load_config(f"{CONFIG}:scale={scale},{p.arg}") for p in points]
    assert [c.optim.lr for c in configs] == learning_rates
    # Only the learning rate differs between a row's points.
    first = configs[0].to_dict()
    for config in configs[1:]:
        config.optim.lr = first["optim"]["lr"]
        assert config.to_dict() == first
    # They choose on a validation evaluator the fine-tuning config runs every epoch.
    _, name, _ = _expected()["select_on"]["key"].split("/")
    assert name.startswith("validation") and configs[0].evals[name].every_steps > 0


def test_pretrained_rows_start_from_their_pretraining_row():
    points = {p.name: p for p in _points("scale=cpu")}
    assert "init_from=/nonexistent/pretrain-mlm," in points["bert-mlm-1k-lr3e-4"].arg
    config = config_lib.load_config(f"{CONFIG}:scale=cpu,{points['bert-ltr-lr5e-5'].arg}")
    assert config.model.causal and config.init_from.workdir == "/nonexistent/pretrain-ltr"
    assert config_lib.load_config(
        f"{CONFIG}:scale=cpu,{points['pretrain-ltr'].arg}").task.objective == "ltr"


def test_paper_pretraining_has_bert_base_reference_count(capsys):
    point = next(p for p in _points("scale=paper") if p.name == "base-128")
    capsys.readouterr()
    assert cli.main(["params", f"--config={CONFIG}:scale=paper,{point.arg}", "--json"]) == 0
    total = json.loads(capsys.readouterr().out)["total"]
    assert total == _expected()["rows"]["base-128"]["reference_params"] == 110_106_428


def test_paper_counts_need_no_trained_row():
    """Every row's parameter count (what `reproduce --dry_run` prints) from the config alone,
    phase 2 and the fine-tunings included, though no pretraining has run."""
    counts = reproduce.parameter_counts(sweep.plan(f"{CONFIG}:scale=paper", "/nonexistent"))
    assert counts["base-128"] == counts["base-512"] == 110_106_428
    assert counts["sst2-lr5e-5"] == 109_483_778  # The pooler and a 2-way classifier, no MLM head.
