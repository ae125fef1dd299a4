"""experiments/alayrac2022 (Flamingo): the rows, the chain of runs they form, the keys the
configs log for the table's columns, and that each ablation changes only its own setting."""

import json
import os

import pytest

from jaxformer import config as config_lib
from launch import reproduce, sweep
from tests.helpers import ROOT

DIRECTORY = os.path.join(ROOT, "experiments", "alayrac2022")
CONFIG = os.path.join(DIRECTORY, "config.py")
ROOT_DIR = "/nonexistent/alayrac2022-cpu"


def _points():
    return sweep.plan(f"{CONFIG}:scale=cpu", ROOT_DIR).points


def _configs():
    return {p.name: config_lib.load_config(f"{CONFIG}:scale=cpu,{p.arg}") for p in _points()}


def _expected():
    with open(os.path.join(DIRECTORY, "expected.json"), encoding="utf-8") as f:
        return json.load(f)


def _reports(entry) -> set[str]:
    """The metric names an evaluator entry writes."""
    if entry.type == "few_shot":
        return ({f"{kind}top1_{k}shot" for k in entry.shots for kind in ("", "calibrated_")}
                | {"chance", "majority"})
    return {"loss": {"loss", "perplexity"}, "captioning": {"cider", "bleu4"}}[entry.type]


def test_rows_are_the_expected_rows():
    assert list(reproduce.table_rows(_points())) == list(_expected()["rows"])


def test_every_column_is_logged_by_every_flamingo_row():
    expected = _expected()
    for name, config in _configs().items():
        if name in ("clip", "lm"):
            continue
        for column in [expected["metric"], *expected["also"]]:
            _, evaluator, metric = column["key"].split("/")
            assert evaluator in config.evals, (name, column["key"])
            assert metric in _reports(config.evals[evaluator]), (name, column["key"])


def test_flamingo_rows_load_the_two_tower_runs_of_the_chain():
    workdirs = {p.name: os.path.join(ROOT_DIR, p.name) for p in _points()}
    for name, config in _configs().items():
        if name in ("clip", "lm"):
            continue
        assert config.init_from.vision.workdir == workdirs["clip"]
        assert config.init_from.lm.workdir == workdirs["lm"]
        assert config.data.tokenizer_workdir == workdirs["lm"]


@pytest.mark.parametrize("row, changed", [
    ("no-tanh-gating", {"model.gated": False}),
    ("mean-pool", {"model.connector": "mean"}),
    ("xattn-every-2", {"model.cross_attention_every": 2}),
])
def test_each_ablation_changes_only_its_setting(row, changed):
    configs = _configs()
    base, ablation = configs["flamingo"].to_dict(), configs[row].to_dict()
    for key, value in changed.items():
        section, field = key.split(".")
        assert ablation[section][field] == value != base[section][field]
        ablation[section][field] = base[section][field]
    assert ablation == base


def test_trainable_lm_row_freezes_only_the_image_tower():
    configs = _configs()
    assert len(configs["flamingo"].freeze) == 2
    assert list(configs["trainable-lm"].freeze) == [configs["flamingo"].freeze[0]]
    assert configs["trainable-lm"].freeze[0].startswith("vision_encoder")
