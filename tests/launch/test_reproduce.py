"""`jaxformer reproduce`: an experiment's rows trained and tabled beside the paper's numbers."""

import json
import os

import pytest

from jaxformer.cli import main
from tests.helpers import ROOT

CONFIG = '''
from configs.gpt import shakespeare_char
from jaxformer.config import parse_arg


def get_config(arg=None):
    arg = parse_arg(arg, scale="cpu")
    config = shakespeare_char.get_config("runlocal")
    config.model.variant = ""
    config.model.update(num_layers=1, num_heads=2, d_model=16)
    config.train.num_steps = 2
    return config


def get_sweep(hyper, arg=None):
    return [{"name": "narrow"}, {"name": "wide", "config.model.d_model": 32}]
'''

EXPECTED = {
    "paper": "A paper", "url": "https://example.org", "table": "Table 9: widths",
    "metric": {"name": "val loss", "key": "eval/val/loss", "higher_is_better": False},
    "rows": {"narrow": {"label": "d=16", "metric": 1.5, "params": 1000000},
             "wide": {"label": "d=32", "metric": 1.25, "params": None}},
}


def closed_form_params(d: int, vocab: int, block: int) -> int:
    """Token and position tables, one pre-LN block (qkv, out, MLP x4, two LayerNorms), final
    LayerNorm; the head is tied."""
    block_params = 3 * d * d + 3 * d + d * d + d + 2 * (4 * d * d) + 4 * d + d + 2 * 2 * d
    return vocab * d + block * d + block_params + 2 * d


@pytest.fixture
def experiment(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    directory = tmp_path / "experiments" / "toy2024"
    directory.mkdir(parents=True)
    (directory / "config.py").write_text(CONFIG)
    (directory / "expected.json").write_text(json.dumps(EXPECTED))
    return directory


@pytest.mark.slow
def test_reproduce_trains_every_row_and_writes_the_table(experiment, tmp_path, capsys):
    root = tmp_path / "runs"
    assert main(["reproduce", str(experiment), f"--workdir={root}"]) == 0
    results = tmp_path / "experiments" / "results" / "toy2024.md"
    text = results.read_text()
    assert text.startswith("# A paper: Table 9: widths\n")
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in text.splitlines()
             if line.startswith("| narrow") or line.startswith("| wide")]
    rows = {row[0]: row for row in cells}
    sweep = json.load(open(root / "sweep.json"))
    vocab = 65 + 8  # Shakespeare's characters: the config's tokenizer sets the vocabulary.
    for point in sweep["points"]:
        name, label, params, paper_params, ours, paper, wall = rows[point["name"]]
        assert point["status"] == "done"
        assert float(ours) == pytest.approx(point["metrics"]["eval/val/loss"], abs=0.005)
        d = 16 if name == "narrow" else 32
        assert params == f"{closed_form_params(d, vocab, 32):,}"
        assert label == EXPECTED["rows"][name]["label"]
    assert rows["narrow"][3:6:2] == ["1M", "1.5"]
    assert "Scale `cpu`: 2/2 rows trained" in text
    assert "](toy2024.png)" in text and (results.parent / "toy2024.png").stat().st_size > 10_000
    assert capsys.readouterr().out.endswith(f"written to {results}\n")


@pytest.mark.slow
def test_rows_trained_in_separate_runs_accumulate(experiment, tmp_path, capsys):
    results = tmp_path / "experiments" / "results"
    assert main(["reproduce", str(experiment), f"--workdir={tmp_path}/a", "--rows=wide"]) == 0
    text = (results / "toy2024.md").read_text()
    assert "| narrow | d=16 |" in text and "not run" in text and "1/2 rows trained" in text
    first = json.loads((results / "toy2024.json").read_text())["rows"]
    assert list(first) == ["wide"] and first["wide"]["status"] == "done"
    # Another day, another machine (a fresh root): the other row joins the first.
    assert main(["reproduce", str(experiment), f"--workdir={tmp_path}/b", "--rows=narrow"]) == 0
    rows = json.loads((results / "toy2024.json").read_text())["rows"]
    assert rows["wide"] == first["wide"] and rows["narrow"]["status"] == "done"
    text = (results / "toy2024.md").read_text()
    assert "2/2 rows trained" in text and "not run" not in text
    assert "`jaxformer reproduce " in text and "--rows=narrow" in text
    assert main(["reproduce", str(experiment), "--rows=huge", "--dry_run"]) == 2
    assert "--rows: no row huge at scale cpu; rows: narrow, wide" in capsys.readouterr().err


def test_paper_scale_dry_run_prints_parameters_and_trains_nothing(experiment, tmp_path, capsys):
    root = tmp_path / "runs"
    assert main(["reproduce", str(experiment), "--scale=paper", f"--workdir={root}",
                 "--dry_run"]) == 0
    out = capsys.readouterr().out
    assert "| narrow | d=16 |" in out and "dry run" in out
    assert not root.exists()
    assert not (tmp_path / "experiments" / "results").exists()


@pytest.mark.parametrize("files, message", [
    ({}, "it has no config.py"),
    ({"config.py": CONFIG}, "it has no expected.json"),
    ({"config.py": CONFIG, "expected.json": "{"}, "not JSON"),
    ({"config.py": CONFIG, "expected.json": '{"paper": "x"}'}, "missing: table, metric, rows"),
])
def test_a_malformed_experiment_is_one_line(tmp_path, capsys, files, message):
    directory = tmp_path / "bad"
    directory.mkdir()
    for name, text in files.items():
        (directory / name).write_text(text)
    assert main(["reproduce", str(directory), f"--workdir={tmp_path}/runs"]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not os.path.exists(tmp_path / "runs")


@pytest.mark.slow
def test_gpt2_sizes_at_paper_scale_match_the_reference_counts(tmp_path, capsys):
    assert main(["reproduce", os.path.join(ROOT, "experiments", "radford2019"), "--scale=paper",
                 f"--workdir={tmp_path}/runs", "--dry_run"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| gpt2-")]
    assert len(rows) == 4 and all("| = (exact) |" in row for row in rows)
    assert "| 1,557,611,200 | 1542M |" in rows[3]


def test_table_columns_of_further_metrics_and_rows_without_the_metric():
    from launch import reproduce

    expected = dict(EXPECTED, metric={"name": "accuracy", "key": "eval/test/top1", "scale": 100},
                    also=[{"name": "macro-F1", "key": "eval/test/macro_f1", "scale": 100}])
    rows = {"narrow": {"status": "done", "params": 1234,
                       "metrics": {"eval/test/top1": 0.8125, "eval/test/macro_f1": 0.5}},
            "wide": {"status": "done", "params": None, "metrics": {"eval/val/loss": 2.0}}}
    lines = reproduce.table(reproduce.Experiment("toy2024", expected), rows,
                            ["narrow", "wide", "missing"], "cpu").splitlines()
    assert lines[0] == ("| row | setting | params | paper params | accuracy | paper accuracy "
                        "| macro-F1 | time |")
    assert lines[2] == "| narrow | d=16 | 1,234 | 1M | 81.25 | 1.5 | 50.00 |  |"
    assert lines[3] == "| wide | d=32 |  |  | - | 1.25 | - |  |"
    assert lines[4] == "| missing |  |  |  | not run |  | not run |  |"
    # A column for some rows only: the others show "-" even when they log that key.
    expected["also"][0]["rows"] = ["wide"]
    rows["narrow"]["metrics"]["eval/test/macro_f1"] = 0.5
    lines = reproduce.table(reproduce.Experiment("toy2024", expected), rows,
                            ["narrow", "wide"], "cpu").splitlines()
    assert lines[2] == "| narrow | d=16 | 1,234 | 1M | 81.25 | 1.5 | - |  |"
    # Without published values (a CPU-scale table of its own), no empty paper columns.
    own = dict(expected, rows={name: {"label": row["label"]}
                               for name, row in expected["rows"].items()})
    lines = reproduce.table(reproduce.Experiment("toy2024", own), rows, ["narrow"],
                            "cpu").splitlines()
    assert lines[0] == "| row | setting | params | accuracy | macro-F1 | time |"
    assert lines[2] == "| narrow | d=16 | 1,234 | 81.25 | - |  |"


def test_a_row_of_several_points_reports_the_best_on_validation_once_all_trained():
    from launch import reproduce
    from launch.sweep import Point

    expected = dict(EXPECTED, metric={"name": "accuracy", "key": "eval/test/top1", "scale": 100},
                    select_on={"name": "val accuracy", "key": "eval/val/top1"})
    experiment = reproduce.Experiment("toy2024", expected)
    points = [Point("narrow", {}), *[Point(f"wide-lr{lr}", {}, row="wide")
                                     for lr in ("1e-3", "1e-4", "1e-5")]]
    rows = reproduce.table_rows(points)
    assert rows == {"narrow": ["narrow"], "wide": ["wide-lr1e-3", "wide-lr1e-4", "wide-lr1e-5"]}

    def record(val, test, minutes=2.0):
        return {"status": "done", "params": 10, "minutes": minutes,
                "metrics": {"eval/val/top1": val, "eval/test/top1": test}}

    # The best on validation is chosen, not the best on test; time is the whole grid's.
    records = {"narrow": record(0.5, 0.5), "wide-lr1e-3": record(0.6, 0.9),
               "wide-lr1e-4": record(0.7, 0.6), "wide-lr1e-5": record(0.4, 0.4, minutes=1.5)}
    chosen = reproduce.choose(experiment, rows, records)
    assert chosen["narrow"] == records["narrow"]
    assert chosen["wide"]["metrics"]["eval/test/top1"] == 0.6
    assert chosen["wide"]["selected"] == "lr1e-4" and chosen["wide"]["minutes"] == 5.5
    lines = reproduce.table(experiment, chosen, list(rows), "cpu").splitlines()
    assert lines[0].endswith("| accuracy | paper accuracy | chosen on val accuracy | time |")
    assert lines[3] == "| wide | d=32 | 10 |  | 60.00 | 1.25 | lr1e-4 | 5.5 min |"

    # Lower is better: the smallest validation value wins.
    lower = dict(expected, select_on=dict(expected["select_on"], higher_is_better=False))
    assert reproduce.choose(reproduce.Experiment("t", lower), rows, records)["wide"][
        "selected"] == "lr1e-5"
    # Until every candidate has trained, the row has no value.
    del records["wide-lr1e-5"]
    partial = reproduce.choose(experiment, rows, records)["wide"]
    assert partial["status"] == "2/3 trained" and "metrics" not in partial
    # Several candidates but nothing to choose on is an error in expected.json.
    with pytest.raises(Exception, match="row wide has 3 points .* needs select_on"):
        reproduce.choose(reproduce.Experiment("t", EXPECTED), rows, records)
