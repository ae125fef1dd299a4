"""`jaxformer results ROOT`: a sweep read where it is now (copied or moved), bad roots, and
failed points kept out of the metric-against-hyperparameter plot."""

import json
import os
import shutil

import pytest

from jaxformer.cli import main
from launch import results
from launch import sweep as sweep_lib
from tests.helpers import ROOT
from tests.launch.test_sweep import write_config

POINTS = ('[{"name": "pretrain", "config.optim.lr": 1e-3}, '
          '{"name": "bad", "config.optim.lr": 1e6}, '
          '{"name": "tune", "config.optim.lr": 3e-4, '
          '"config.init_from.workdir": hyper.workdir_of("pretrain")}]')


@pytest.fixture(autouse=True)
def _in_repo(monkeypatch):
    monkeypatch.chdir(ROOT)


def finished_sweep(tmp_path, root) -> sweep_lib.Sweep:
    """A sweep whose points have ended (exit 0, 3, 0) with a few metrics, as if trained."""
    sweep = sweep_lib.plan(write_config(tmp_path, POINTS), str(root))
    os.makedirs(os.path.join(sweep.root, "logs"))
    for point, code, loss in zip(sweep.points, (0, 3, 0), (1.5, 1e13, 1.2)):
        os.makedirs(sweep.workdir(point))
        with open(os.path.join(sweep.workdir(point), "metrics.jsonl"), "w") as f:
            for step in (1, 2):
                f.write(json.dumps({"step": step, "train/loss": loss + 2 - step,
                                    "eval/val/loss": loss}) + "\n")
        sweep.record_exit(point, code)
    sweep_lib.refresh(sweep, launcher="local")
    return sweep


def test_a_moved_sweep_is_read_where_it_is_and_nothing_is_written_at_the_old_place(
        tmp_path, capsys):
    old = tmp_path / "sweep A"
    finished_sweep(tmp_path, old)
    moved = tmp_path / "moved"
    shutil.copytree(old, moved)
    shutil.rmtree(old)
    assert main(["results", str(moved), "--metric=eval/val/loss"]) == 0
    out = capsys.readouterr().out
    assert not old.exists()
    lines = {line.split(" | ")[0].strip("| "): line for line in out.splitlines()}
    assert "| done | 2 |" in lines["pretrain"] and "| failed | 2 |" in lines["bad"]
    state = json.loads((moved / "sweep.json").read_text())
    assert state["root"] == str(moved)
    tune = state["points"][2]
    assert tune["workdir"] == str(moved / "tune") and tune["status"] == "done"
    assert tune["overrides"]["init_from.workdir"] == str(moved / "pretrain")
    assert all(str(old) not in line for line in tune["command"])


def test_a_read_only_copy_reports_without_writing(tmp_path, capsys):
    root = tmp_path / "ro"
    finished_sweep(tmp_path, root)
    os.chmod(root, 0o555)
    try:
        if os.access(root, os.W_OK):
            pytest.skip("running as root: permissions do not stop writes")
        assert main(["results", str(root), f"--plot={tmp_path / 'plot.png'}"]) == 0
        assert "warning: cannot update" in capsys.readouterr().err
    finally:
        os.chmod(root, 0o755)


@pytest.mark.parametrize("make", ["file", "missing"])
def test_results_of_a_file_or_missing_path_is_one_line(tmp_path, capsys, make):
    path = tmp_path / "afile"
    if make == "file":
        path.write_text("")
    assert main(["results", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("jaxformer results: error:") and "\n" not in err


def test_failed_points_are_not_plotted_against_the_hyperparameter(tmp_path, monkeypatch):
    sweep = finished_sweep(tmp_path, tmp_path / "root")
    state = sweep_lib.read_state(sweep.root)
    plotted = []
    import matplotlib.axes

    real = matplotlib.axes.Axes.plot

    def spy(self, *args, **kwargs):
        plotted.append((args, kwargs))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(matplotlib.axes.Axes, "plot", spy)
    results.plot(state, "eval/val/loss", str(tmp_path / "p.png"))
    metric_lines = [args for args, _ in plotted if args[2:] == ("o-",)]
    assert sorted(x for xs, _, _ in metric_lines for x in xs) == [3e-4, 1e-3]  # Not lr=1e6.
    labels = [kwargs["label"] for args, kwargs in plotted if args[2:] != ("o-",)]
    assert labels == ["pretrain", "bad (failed)", "tune"]
    assert (tmp_path / "p.png").stat().st_size > 0


@pytest.mark.parametrize("flag,words", [
    ("--metric=eval/val/los", ["--metric eval/val/los: no point has it",
                               "eval/val/loss, train/loss"]),
    ("--metric=eval/val/loss,train/loss", ["repeat --metric for several"]),
    ("--plot=PLOTS/p.txt", ["--plot", ".txt is no format", ".png"]),
])
def test_a_bad_metric_or_plot_format_is_one_line_before_any_output(tmp_path, capsys, flag,
                                                                   words):
    sweep = finished_sweep(tmp_path, tmp_path / "root")
    (tmp_path / "plots").mkdir()
    assert main(["results", sweep.root, flag.replace("PLOTS", str(tmp_path / "plots"))]) == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.strip().splitlines()) == 1
    assert all(word in err for word in words), err
    assert os.listdir(tmp_path / "plots") == []
    assert not os.path.exists(os.path.join(sweep.root, "results.png"))
