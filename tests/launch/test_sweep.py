"""Sweep planning (validation, names) and the local launcher end to end: run, skip finished
points, resume interrupted ones, report failed ones; `jaxformer results`."""

import json
import os
import subprocess
import sys

import pytest

from jaxformer.cli import main
from jaxformer.errors import UserError
from launch import sweep as sweep_lib
from tests.helpers import ROOT

SWEEP_CONFIG = '''
from configs.gpt import shakespeare_char


def get_config(arg=None):
    config = shakespeare_char.get_config("runlocal")
    config.train.num_steps = 2
    return config


def get_sweep(hyper, arg=None):
    return {points}
'''


def write_config(directory, points: str) -> str:
    path = os.path.join(directory, "sweep_config.py")
    with open(path, "w") as f:
        f.write(SWEEP_CONFIG.format(points=points))
    return path


@pytest.fixture(autouse=True)
def _in_repo(monkeypatch):
    monkeypatch.chdir(ROOT)  # Configs outside the project import `configs.*` from the cwd.


def test_points_are_named_from_their_overrides(tmp_path):
    path = write_config(tmp_path, 'hyper.product([hyper.sweep("config.optim.lr", [1e-3, 3e-4]), '
                                  'hyper.sweep("config.model.dropout_rate", [0.0, 0.1])]) + '
                                  '[{"name": "my run", "config.freeze": ("a", "b")}]')
    sweep = sweep_lib.plan(path, str(tmp_path / "root"))
    assert [p.name for p in sweep.points] == [
        "lr=0.001_dropout_rate=0.0", "lr=0.001_dropout_rate=0.1", "lr=0.0003_dropout_rate=0.0",
        "lr=0.0003_dropout_rate=0.1", "my_run"]
    assert sweep.train_args(sweep.points[4])[-1] == "--config.freeze=('a', 'b')"
    assert not (tmp_path / "root").exists()


def test_duplicate_names_get_a_suffix(tmp_path):
    path = write_config(tmp_path, '[{"config.seed": 1}, {"config.seed": 1}, {"name": "x"}, '
                                  '{"name": "x"}]')
    names = [p.name for p in sweep_lib.plan(path, str(tmp_path)).points]
    assert names == ["seed=1", "seed=1_1", "x", "x_1"]


@pytest.mark.parametrize("points, message", [
    ('[{"config.optim.lr": 1e-3}, {"config.optim.lrr": 1e-3}]',
     r"sweep point 1 \(optim.lrr=0.001\): unknown config key --config.optim.lrr.*optim.lr"),
    ('[{"config.train.num_steps": "many"}]', r"sweep point 0 .*expected an integer"),
    ('hyper.sweep("optim.lr", [1])', "must be 'name' or start with 'config.'"),
    ('[]', "returned no points"),
])
def test_a_bad_point_is_one_line_exit_2_and_nothing_is_written(tmp_path, capsys, points,
                                                               message):
    path = write_config(tmp_path, points)
    root = tmp_path / "root"
    with pytest.raises(UserError, match=message):
        sweep_lib.plan(path, str(root))
    assert main(["sweep", f"--config={path}", f"--workdir={root}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("jaxformer sweep: error:") and "\n" not in err
    assert not root.exists()


ROWS_CONFIG = '''
from configs.gpt import shakespeare_char
from configs.vit import fashion_mnist_transfer
from jaxformer.config import parse_arg


def get_config(arg=None):
    arg = parse_arg(arg, scale="cpu", run="lm", init_from="")
    if arg.run == "lm":
        return shakespeare_char.get_config("runlocal")
    return fashion_mnist_transfer.get_config(f"runlocal,init_from={arg.init_from}")


def get_sweep(hyper, arg=None):
    return [{"name": "first", "arg": "run=lm"},
            {"name": "second", "arg": f"run=probe,init_from={hyper.workdir_of('first')}",
             "config.freeze": (), "row": "probe"},
            {"name": "third", "command": "baseline",
             "config.data.block_size": 16, "config.model.patch_size": 7}][:COUNT]
'''


def test_points_with_their_own_arg_command_and_an_earlier_workdir(tmp_path):
    path = tmp_path / "rows.py"
    path.write_text(ROWS_CONFIG.replace("COUNT", "2"))
    root = str(tmp_path / "root")
    sweep = sweep_lib.plan(f"{path}:scale=cpu", root)
    first, second = sweep.points
    assert first.command == second.command == "train"
    assert (first.table_row, second.table_row) == ("first", "probe")
    state = sweep_lib.refresh(sweep, launcher="local")
    assert sweep_lib.sweep_from_state(state).points == sweep.points
    assert sweep.train_args(first)[:2] == ["train", f"--config={path}:scale=cpu,run=lm"]
    # The second row is another kind of config, made from its arg, with the first's workdir.
    assert sweep.train_args(second)[1] == (
        f"--config={path}:scale=cpu,run=probe,init_from={root}/first")
    base = sweep_lib.base_config(sweep.config_spec(second), [])
    config = sweep_lib.point_config(base, second)
    assert config.model.name == "vit" and config.init_from.workdir == f"{root}/first"
    # Overrides apply to the point's own config: a key only the other kind has is an error.
    path.write_text(ROWS_CONFIG.replace("COUNT", "3"))
    with pytest.raises(UserError, match=r"sweep point 2 \(third\): unknown config key "
                                        r"--config.model.patch_size"):
        sweep_lib.plan(str(path), root)


def test_workdir_of_a_later_or_unknown_point_is_an_error(tmp_path):
    path = write_config(tmp_path, '[{"name": "a", "config.init_from.workdir": '
                                  'hyper.workdir_of("b")}, {"name": "b"}]')
    with pytest.raises(UserError, match=r"workdir_of\('b'\): no earlier point is named 'b'"):
        sweep_lib.plan(path, str(tmp_path / "root"))


def test_a_config_without_get_sweep_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="defines no get_sweep"):
        sweep_lib.plan(os.path.join(ROOT, "configs/translation/bible_enes.py"), str(tmp_path))


def test_dry_run_prints_every_command_and_writes_nothing(tmp_path, capsys):
    path = write_config(tmp_path, 'hyper.sweep("config.optim.lr", [1e-3, 2e-3])')
    root = tmp_path / "root"
    assert main(["sweep", f"--config={path}", f"--workdir={root}", "--dry_run",
                 "--config.train.log_every=1"]) == 0
    out = capsys.readouterr().out
    for lr in ("0.001", "0.002"):
        assert (f"-m jaxformer train --config={path} --workdir={root}/lr={lr} "
                f"--config.train.log_every=1 --config.optim.lr={lr}") in out
    assert not root.exists()


@pytest.mark.slow
def test_local_sweep_runs_skips_resumes_and_reports(tmp_path, capsys):
    path = write_config(tmp_path, '[{"name": "good", "config.optim.lr": 1e-3}, '
                                  '{"name": "resumed", "config.optim.lr": 2e-3}, '
                                  '{"name": "bad", "config.data.block_size": 0}]')
    root = str(tmp_path / "root")
    # "resumed" was interrupted after one of its two steps: its workdir has a checkpoint.
    subprocess.run([sys.executable, "-m", "jaxformer", "train", f"--config={path}",
                    f"--workdir={root}/resumed", "--config.optim.lr=0.002",
                    "--config.train.num_steps=1"], check=True, capture_output=True, cwd=ROOT)
    assert main(["sweep", f"--config={path}", f"--workdir={root}", "--parallel=2"]) == 1
    out = capsys.readouterr().out
    assert "point bad failed (exit 2)" in out and "block" in out  # The log's tail.
    state = json.load(open(os.path.join(root, "sweep.json")))
    assert {p["name"]: p["status"] for p in state["points"]} == {
        "good": "done", "resumed": "done", "bad": "failed"}
    good = next(p for p in state["points"] if p["name"] == "good")
    assert good["metrics"]["step"] == 2 and "eval/val/loss" in good["metrics"]
    assert good["command"][-1] == "--config.optim.lr=0.001"
    assert "resuming from step 1" in open(os.path.join(root, "logs", "resumed.log")).read()

    # Rerun: only the failed point runs again.
    good_log = os.path.getsize(os.path.join(root, "logs", "good.log"))
    assert main(["sweep", f"--config={path}", f"--workdir={root}"]) == 1
    assert "2 point(s) already finished, 0 still running: 1 to run" in capsys.readouterr().out
    assert os.path.getsize(os.path.join(root, "logs", "good.log")) == good_log

    # Another sweep in the same root is refused.
    other = write_config(tmp_path, '[{"config.seed": 5}]')
    os.rename(other, other.replace("sweep_config", "other"))
    assert main(["sweep", f"--config={other.replace('sweep_config', 'other')}",
                 f"--workdir={root}"]) == 2
    assert "holds another sweep" in capsys.readouterr().err

    assert main(["results", root, "--format=csv", "--metric=eval/val/loss"]) == 0
    captured = capsys.readouterr()
    lines = captured.out.strip().splitlines()
    assert lines[0] == "point,optim.lr,data.block_size,status,step,time,eval/val/loss"
    assert lines[1].startswith("good,0.001,,done,2,")
    assert float(lines[1].split(",")[-1]) == pytest.approx(good["metrics"]["eval/val/loss"])
    assert lines[3].startswith("bad,,0,failed,")
    assert "2/3 done, 0 running, 1 failed" in captured.err
    assert os.path.getsize(os.path.join(root, "results.png")) > 10_000


def test_multi_process_points_run_as_local_pods(tmp_path, capsys):
    path = write_config(tmp_path, '[{"name": "pod"}]')
    root = tmp_path / "root"
    assert main(["sweep", f"--config={path}", f"--workdir={root}", "--dry_run",
                 "--processes=2", "--devices_per_process=4"]) == 0
    command = capsys.readouterr().out.splitlines()[-1]
    assert (f"-m launch.local --num_processes=2 --devices_per_process=4 --log_dir={root}/logs/pod "
            f"-- train --config={path} --workdir={root}/pod > {root}/logs/pod.log 2>&1"
            ) in command


def test_time_of_an_interrupted_attempt_counts_in_the_points_time(tmp_path):
    path = write_config(tmp_path, '[{"name": "p"}]')
    sweep = sweep_lib.plan(path, str(tmp_path / "root"))
    point = sweep.points[0]
    os.makedirs(os.path.join(sweep.root, "logs"))
    os.makedirs(sweep.workdir(point))
    metrics = os.path.join(sweep.workdir(point), "metrics.jsonl")
    open(metrics, "w").close()
    t0 = 1_700_000_000.0
    # First attempt: started at t0, last wrote metrics 100 s later, then was interrupted.
    sweep_lib.refresh(sweep, launcher="local", running={"p"}, extra={"p": {"started": t0}})
    os.utime(metrics, (t0 + 100, t0 + 100))
    state = sweep_lib.refresh(sweep, launcher="local")
    assert sweep_lib.run_seconds(state["points"][0]) is None  # Unfinished.
    # The rerun starts at t0 + 500 and fails at t0 + 800.
    extra = {"p": {"started": t0 + 500}}
    sweep_lib.refresh(sweep, launcher="local", running={"p"}, extra=extra)
    sweep_lib.refresh(sweep, launcher="local", running={"p"}, extra=extra)  # Counted once.
    sweep.record_exit(point, 1)
    os.utime(sweep.exit_path(point), (t0 + 800, t0 + 800))
    state = sweep_lib.refresh(sweep, launcher="local", extra=extra)
    assert sweep_lib.run_seconds(state["points"][0]) == pytest.approx(100 + 300)
    # Run again after the failure: only the new attempt counts.
    sweep_lib.refresh(sweep, launcher="local", running={"p"}, extra={"p": {"started": t0 + 900}})
    sweep.record_exit(point, 0)
    os.utime(sweep.exit_path(point), (t0 + 950, t0 + 950))
    state = sweep_lib.refresh(sweep, launcher="local")
    assert sweep_lib.run_seconds(state["points"][0]) == pytest.approx(50)
