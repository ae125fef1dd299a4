"""experiments/carion2020 (DETR): the rows at both scales, the chain from the backbone, the
keys the configs log for the table's columns, each ablation changing only its setting, and
the reference count of DETR-R50."""

import importlib.util
import json
import os

import pytest

from jaxformer import cli
from jaxformer import config as config_lib
from jaxformer.models import detr
from launch import reproduce, sweep
from tests.helpers import ROOT

DIRECTORY = os.path.join(ROOT, "experiments", "carion2020")
CONFIG = os.path.join(DIRECTORY, "config.py")
ROOT_DIR = "/nonexistent/carion2020-cpu"


def _points(arg="scale=cpu"):
    return sweep.plan(f"{CONFIG}:{arg}", ROOT_DIR).points


def _configs():
    return {p.name: config_lib.load_config(f"{CONFIG}:scale=cpu,{p.arg}") for p in _points()}


def _expected():
    with open(os.path.join(DIRECTORY, "expected.json"), encoding="utf-8") as f:
        return json.load(f)


def _reports(entry) -> set[str]:
    """The metric names an evaluator entry writes."""
    return {"coco_ap": {"AP", "AP50", "AP75", "APs", "APm", "APl"},
            "loss": {"loss", "class_error", "class_accuracy", "cardinality_error"},
            "classification": {"top1", "top5"}}[entry.type]


def test_rows_at_both_scales_are_the_expected_rows():
    rows = [*reproduce.table_rows(_points("scale=paper")), *reproduce.table_rows(_points())]
    assert rows == list(_expected()["rows"])


def test_every_column_is_logged_by_its_rows():
    expected = _expected()
    configs = _configs()
    for column in [expected["metric"], *expected["also"]]:
        _, evaluator, metric = column["key"].split("/")
        for name in column.get("rows", [n for n in configs if n != "backbone"]):
            entry = configs[name].evals.get(evaluator)
            assert entry is not None and metric in _reports(entry), (name, column["key"])


def test_detr_rows_load_the_backbone_of_the_chain():
    backbone = os.path.join(ROOT_DIR, "backbone")
    configs = _configs()
    assert configs["backbone"].model.name == "resnet"
    for name, config in configs.items():
        if name != "backbone":
            assert config.init_from.workdir == backbone
            assert tuple(config.init_from.mapping) == (("backbone", "backbone"),)
            assert tuple(config.freeze) == detr.FREEZE


def test_cpu_sizes_are_the_cpu_variant():
    spec = importlib.util.spec_from_file_location("carion2020_config", CONFIG)
    experiment = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(experiment)
    assert experiment.CPU_SIZES == detr.VARIANTS["cpu"]


@pytest.mark.parametrize("row, changed", [
    ("no-encoder", {"model.num_encoder_layers": 0}),
    ("encoder-4", {"model.num_encoder_layers": 4}),
    ("class+l1", {"task.giou_weight": 0.0}),
    ("class+giou", {"task.bbox_weight": 0.0}),
])
def test_each_ablation_changes_only_its_setting(row, changed):
    configs = _configs()
    base, ablation = configs["detr"].to_dict(), configs[row].to_dict()
    if "model" in {key.split(".")[0] for key in changed}:  # The sizes, written out.
        assert ablation["model"].pop("variant") == "" and base["model"].pop("variant") == "cpu"
        base["model"].update(detr.VARIANTS["cpu"])
    for key, value in changed.items():
        section, field = key.split(".")
        assert ablation[section][field] == value != base[section][field]
        ablation[section][field] = base[section][field]
    assert ablation == base


# Hugging Face's DetrForObjectDetection (ResNet backbone from config, 91 classes): the values
# of its state_dict (parameters and frozen BatchNorm buffers); DETR trains 41,302,368 of R50's.
@pytest.mark.slow
@pytest.mark.parametrize("row, total, trainable", [("r50", 41_631_008, 41_302_368),
                                                   ("r101", 60_675_360, 60_242_272)])
def test_paper_rows_have_the_reference_counts(row, total, trainable, capsys):
    point = next(p for p in _points("scale=paper") if p.name == row)
    capsys.readouterr()
    assert cli.main(["params", f"--config={CONFIG}:scale=paper,{point.arg}", "--json"]) == 0
    counts = json.loads(capsys.readouterr().out)
    assert counts["total"] == _expected()["rows"][row]["reference_params"] == total
    assert counts["trainable"] == trainable
