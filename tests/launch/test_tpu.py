"""The TPU launcher's gcloud commands: code copy, install, then every point on all workers."""

import shlex
import subprocess

import pytest

from jaxformer.cli import main
from jaxformer.errors import UserError
from launch import sweep as sweep_lib
from launch.tpu import TpuLauncher

CONFIG = "configs/vit/imagenet.py"


@pytest.fixture
def checkout(tmp_path, monkeypatch):
    """A git checkout with the config committed, as the one the launcher ships; the tests
    run from elsewhere."""
    code = tmp_path / "code"
    (code / "configs" / "vit").mkdir(parents=True)
    (code / CONFIG).write_text("# a config\n")
    (code / "README.md").write_text("x\n")
    git = ["git", "-C", str(code), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(["git", "init", "-q", str(code)], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "x"], check=True)
    monkeypatch.setattr("launch.tpu.CHECKOUT", str(code))
    monkeypatch.chdir(tmp_path)
    return code


def make_sweep(root, names, config=f"code/{CONFIG}:variant=B/16"):
    return sweep_lib.Sweep(config=config, root=str(root),
                           points=[sweep_lib.Point(n, {"optim.lr": i + 1.0})
                                   for i, n in enumerate(names)])


def test_points_are_dealt_over_slices_and_run_on_all_workers(tmp_path, checkout):
    sweep = make_sweep(tmp_path, ["p0", "p1", "p2"])
    launcher = TpuLauncher(["pod-a", "pod-b"], "us-central2-b", project="proj")
    lines = launcher.script(sweep, sweep.points).splitlines()
    archive = f"{tmp_path}/logs/code.tar.gz"
    assert lines[0] == f"git -C {checkout} archive --format=tar.gz -o {archive} HEAD"
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


def test_a_failed_set_up_fails_the_slices_points(tmp_path, checkout, monkeypatch):
    """Without gcloud here, the copy fails: the slice's points are recorded as failed."""
    sweep = make_sweep(tmp_path, ["p0", "p1"])
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


def test_a_point_whose_dependency_failed_is_not_started(tmp_path, checkout, monkeypatch):
    sweep = make_sweep(tmp_path, ["pre", "tune"])
    sweep.points[1].after = ["pre"]
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


def test_the_workers_get_the_configs_path_in_the_archive(tmp_path, checkout):
    """An absolute path, or one relative to another directory, becomes the path inside the
    checkout; the archive is the checkout's whatever the working directory."""
    sweep = make_sweep(tmp_path, ["p0"], config=f"{checkout}/{CONFIG}:variant=B/16")
    script = TpuLauncher(["pod-a"], "z").script(sweep, sweep.points)
    assert f"--config={CONFIG}:variant=B/16 " in script and str(checkout / CONFIG) not in script
    archive = tmp_path / "logs" / "code.tar.gz"
    archive.parent.mkdir()
    subprocess.run(shlex.split(script.splitlines()[0]), check=True)
    assert CONFIG in subprocess.run(["tar", "-tzf", archive], capture_output=True,
                                    text=True).stdout.split()


@pytest.mark.parametrize("change, message", [
    ("outside", "is outside the checkout"),
    ("untracked", "is not committed"),
    ("modified", "has changes since the last commit"),
])
def test_a_config_the_workers_would_not_get_is_refused(tmp_path, checkout, change, message):
    config = f"code/{CONFIG}"
    if change == "outside":
        (tmp_path / "mine.py").write_text("# mine\n")
        config = "mine.py"
    elif change == "untracked":
        (checkout / "configs" / "new.py").write_text("# new\n")
        config = "code/configs/new.py"
    else:
        (checkout / CONFIG).write_text("# edited\n")
    sweep = make_sweep(tmp_path, ["p0"], config=config)
    with pytest.raises(UserError, match=message):
        TpuLauncher(["pod-a"], "z").script(sweep, sweep.points)
    with pytest.raises(UserError, match=message):
        TpuLauncher(["pod-a"], "z").launch(sweep, sweep.points)
    assert sweep.exit_code(sweep.points[0]) is None  # Nothing ran.


def test_other_uncommitted_changes_are_named(tmp_path, checkout, caplog):
    (checkout / "README.md").write_text("edited\n")
    sweep = make_sweep(tmp_path, ["p0"])
    with caplog.at_level("WARNING"):
        TpuLauncher(["pod-a"], "z").script(sweep, sweep.points)
    assert "without the uncommitted changes to README.md" in caplog.text
