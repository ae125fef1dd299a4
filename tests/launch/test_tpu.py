"""The TPU launcher's gcloud commands: code copy, install, then every point on all workers."""

import shlex
import subprocess

import pytest

from jaxformer.cli import main
from jaxformer.errors import UserError
from launch import sweep as sweep_lib
from launch.tpu import TpuLauncher


def make_sweep(root, names):
    return sweep_lib.Sweep(config="configs/vit/imagenet.py:variant=B/16", root=str(root),
                           points=[sweep_lib.Point(n, {"optim.lr": i + 1.0})
                                   for i, n in enumerate(names)])


def test_points_are_dealt_over_slices_and_run_on_all_workers(tmp_path):
    sweep = make_sweep(tmp_path, ["p0", "p1", "p2"])
    launcher = TpuLauncher(["pod-a", "pod-b"], "us-central2-b", project="proj")
    lines = launcher.script(sweep, sweep.points).splitlines()
    archive = f"{tmp_path}/logs/code.tar.gz"
    assert lines[0] == f"git archive --format=tar.gz -o {archive} HEAD"
    assert lines[1] == "# slice pod-a: 2 point(s), one after another"
    gcloud = "gcloud compute tpus tpu-vm"
    flags = "--zone=us-central2-b --project=proj"
    assert lines[2] == f"{gcloud} scp {archive} pod-a:code.tar.gz --worker=all {flags}"
    setup = shlex.split(lines[3])
    assert setup[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "pod-a"]
    assert setup[6] == "--worker=all" and setup[-2:] == ["--zone=us-central2-b", "--project=proj"]
    assert setup[7] == ('--command=mkdir -p jaxformer && tar -xzf code.tar.gz -C jaxformer && '
                        'cd jaxformer && python3 -m pip install -q -U "jax[tpu]" && '
                        'python3 -m pip install -q -e .')
    train = shlex.split(lines[4])
    assert train[5:7] == ["pod-a", "--worker=all"]
    remote = train[7].removeprefix("--command=")
    assert shlex.split(remote) == [
        "cd", "jaxformer", "&&", "python3", "-m", "jaxformer", "train",
        "--config=configs/vit/imagenet.py:variant=B/16", f"--workdir={tmp_path}/p0",
        "--config.optim.lr=1.0", "--distributed"]
    assert "--workdir=" + f"{tmp_path}/p2" in lines[5]  # pod-a runs p0 then p2.
    assert lines[6] == "# slice pod-b: 1 point(s), one after another"
    assert "pod-b" in lines[8] and f"{tmp_path}/p1" in lines[9]
    assert len(lines) == 10


@pytest.mark.parametrize("flags, message", [
    (["--zone=z"], "needs --tpu"), (["--tpu=a"], "needs --zone")])
def test_missing_tpu_flags_are_one_line(tmp_path, capsys, flags, message):
    with pytest.raises(UserError, match=message):
        TpuLauncher.from_args(_args(flags))
    assert main(["sweep", "--config=configs/gpt/shakespeare_char.py",
                 f"--workdir={tmp_path}/r", "--launcher=tpu", "--dry_run", *flags]) == 2
    assert message in capsys.readouterr().err


def _args(flags):
    import argparse

    parser = argparse.ArgumentParser()
    TpuLauncher.add_arguments(parser)
    return parser.parse_args(flags)


def test_a_failed_set_up_fails_the_slices_points(tmp_path, monkeypatch):
    """Without gcloud here, the copy fails: the slice's points are recorded as failed."""
    sweep = make_sweep(tmp_path, ["p0", "p1"])
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    subprocess.run(["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t",
                    "commit", "-q", "--allow-empty", "-m", "x"], check=True)
    monkeypatch.chdir(tmp_path)
    launcher = TpuLauncher(["pod-a"], "z")
    monkeypatch.setattr("launch.tpu.subprocess.run", _fake_run(subprocess.run))
    launcher.launch(sweep, sweep.points)
    assert [sweep.exit_code(p) for p in sweep.points] == [127, 127]


def _fake_run(real):
    def run(command, **kwargs):
        if command[0] == "gcloud":
            return subprocess.CompletedProcess(command, 127)
        return real(command, **kwargs)
    return run


def test_a_dependent_point_runs_on_its_dependencys_slice_after_it(tmp_path):
    sweep = make_sweep(tmp_path, ["pre", "free", "tune", "tune2"])
    sweep.points[2].after = ["pre"]
    sweep.points[3].after = ["tune"]
    launcher = TpuLauncher(["pod-a", "pod-b"], "z")
    assignment = {tpu: [p.name for p in points]
                  for tpu, points in launcher.assignment(sweep.points).items()}
    assert assignment == {"pod-a": ["pre", "tune", "tune2"], "pod-b": ["free"]}


def test_a_point_whose_dependency_failed_is_not_started(tmp_path, monkeypatch):
    sweep = make_sweep(tmp_path, ["pre", "tune"])
    sweep.points[1].after = ["pre"]
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    subprocess.run(["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t",
                    "commit", "-q", "--allow-empty", "-m", "x"], check=True)
    monkeypatch.chdir(tmp_path)
    ran, real = [], subprocess.run

    def run(command, **kwargs):
        if command[0] != "gcloud":
            return real(command, **kwargs)
        remote = command[-2] if command[4] == "ssh" else ""
        ran.append(remote)
        return subprocess.CompletedProcess(command, 3 if "--workdir" in remote else 0)

    monkeypatch.setattr("launch.tpu.subprocess.run", run)
    TpuLauncher(["pod-a", "pod-b"], "z").launch(sweep, sweep.points)
    assert [sweep.exit_code(p) for p in sweep.points] == [3, 1]
    assert sum("--workdir" in r for r in ran) == 1  # Only "pre" was run.
    assert "point pre failed (exit 3): tune not started" in open(
        sweep.log_path(sweep.points[1])).read()
