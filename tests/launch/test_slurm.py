"""The SLURM launcher: its job array script, and a sweep trained on a real one-node cluster."""

import argparse
import json
import os
import re
import shlex
import subprocess
import sys
import time

import pytest

from jaxformer.errors import UserError
from launch import sweep as sweep_lib
from launch.slurm import SlurmLauncher
from launch.sweep import Point, Sweep
from tests.helpers import ROOT
from tests.launch.slurm_cluster import slurm_cluster  # noqa: F401 (a fixture)

CHAR = os.path.join(ROOT, "configs/gpt/shakespeare_char.py")
TRICKY = "it's (a) \"b\" $HOME `c` \\d"  # An override value that needs quoting.


def make_sweep(root) -> Sweep:
    return Sweep(config="configs/gpt/shakespeare_char.py:runlocal", root=str(root),
                 points=[Point("lr=0.001", {"optim.lr": 0.001}),
                         Point("lr=0.0003", {"optim.lr": 0.0003}),
                         Point("odd name", {"data.tokenizer": TRICKY})],
                 overrides=["train.num_steps=4"])


def launcher(*flags: str) -> SlurmLauncher:
    parser = argparse.ArgumentParser()
    parser.add_argument("--parallel", type=int)  # The sweep command's: the array's throttle.
    SlurmLauncher.add_arguments(parser)
    return SlurmLauncher.from_args(parser.parse_args(flags))


def sbatch_options(script: str) -> dict[str, str]:
    return dict(shlex.split(line)[1].removeprefix("--").split("=", 1)
                for line in script.splitlines() if line.startswith("#SBATCH "))


def run_task(script: str, index: int, tmp_path) -> subprocess.CompletedProcess:
    """Runs the script as task `index` of the array would, without SLURM."""
    path = tmp_path / "task.sh"
    path.write_text(script)
    env = dict(os.environ, SLURM_ARRAY_TASK_ID=str(index), SLURM_ARRAY_JOB_ID="7")
    return subprocess.run(["bash", str(path)], env=env, capture_output=True, text=True,
                          timeout=60)


def test_script_runs_each_point_with_its_arguments(tmp_path):
    # A stand-in for python that prints its arguments and exits with code 3.
    fake = tmp_path / "fake python"
    fake.write_text("#!/bin/sh\nprintf '%s\\n' \"$@\"\necho cwd=$(pwd)\nexit 3\n")
    fake.chmod(0o755)
    sweep = make_sweep(tmp_path / "my sweep")
    script = launcher(f"--python={fake}").script(sweep, sweep.points)
    options = sbatch_options(script)
    assert options["array"] == "0-2"
    assert options["job-name"] == "my sweep"
    assert options["output"] == f"{tmp_path}/my sweep/logs/slurm-%A_%a.out"
    assert options["nodes"] == "1" and options["ntasks-per-node"] == "1"
    assert not {"partition", "time", "account", "gpus-per-node", "cpus-per-task"} & set(options)
    assert "srun" not in script and "--distributed" not in script

    os.makedirs(tmp_path / "my sweep" / "logs")
    for i, point in enumerate(sweep.points):
        result = run_task(script, i, tmp_path)
        assert result.returncode == 3, result.stderr
        assert sweep.exit_code(point) == 3
        log = open(sweep.log_path(point)).read()
        assert f"slurm job 7_{i} on " in log
        assert log.split("\n", 1)[1].splitlines() == [
            "-m", "jaxformer", *sweep.train_args(point), f"cwd={os.getcwd()}"]
    assert f"--config.data.tokenizer={TRICKY}" in open(sweep.log_path(sweep.points[2])).read()
    assert not list((tmp_path / "my sweep" / "logs").glob("*.tmp"))


def test_commands_in_order_and_srun_only_on_several_nodes(tmp_path):
    sweep = make_sweep(tmp_path / "lr")
    for nodes, distributed in [(1, False), (2, True)]:
        script = launcher(f"--nodes={nodes}").script(sweep, sweep.points[:2])
        commands = re.search(r"^commands=\(\n(.*?)\n\)", script, re.S | re.M).group(1)
        commands = [shlex.split(shlex.split(line)[0]) for line in commands.splitlines()]
        expected = [[sys.executable, "-m", "jaxformer", *sweep.train_args(p)]
                    for p in sweep.points[:2]]
        if distributed:
            expected = [["srun", "--kill-on-bad-exit=1", *c, "--distributed"] for c in expected]
        assert commands == expected
        assert sbatch_options(script)["array"] == "0-1"
        assert sbatch_options(script)["nodes"] == str(nodes)


def test_parallel_throttles_the_array(tmp_path):
    sweep = make_sweep(tmp_path / "lr")
    assert sbatch_options(launcher("--parallel=2").script(sweep, sweep.points))["array"] == "0-2%2"
    assert sbatch_options(launcher("--parallel=3").script(sweep, sweep.points))["array"] == "0-2"
    with pytest.raises(UserError, match="--parallel must be >= 1"):
        launcher("--parallel=0")


def test_resources_and_slurm_config(tmp_path):
    config = tmp_path / "cluster.json"
    config.write_text(json.dumps({"partition": "gpu", "account": "proj", "time": "01:00:00",
                                  "gpus_per_node": 8, "cpus_per_task": 16}))
    sweep = make_sweep(tmp_path / "lr")
    script = launcher(f"--slurm_config={config}", "--time=04:00:00", "--nodes=2").script(
        sweep, sweep.points)
    options = sbatch_options(script)
    assert options["partition"] == "gpu" and options["account"] == "proj"
    assert options["time"] == "04:00:00"  # The flag wins over the file.
    assert options["gpus-per-node"] == "8" and options["cpus-per-task"] == "16"
    assert options["nodes"] == "2"
    assert "srun --kill-on-bad-exit=1 --cpus-per-task=16 " in script


@pytest.mark.parametrize("content, message", [
    (None, "cannot read --slurm_config"),
    ("{", "not valid JSON"),
    ("[1]", "must hold a JSON object"),
    ('{"partitions": "gpu"}', "unknown key 'partitions'"),
    ('{"nodes": "2"}', "nodes must be a JSON integer"),
    ('{"time": 4}', "time must be a JSON string"),
    ('{"nodes": 0}', "--nodes must be >= 1"),
    ('{"partition": "a b"}', "--partition must be one word"),
])
def test_bad_slurm_config(tmp_path, content, message):
    config = tmp_path / "cluster.json"
    if content is not None:
        config.write_text(content)
    with pytest.raises(UserError, match=re.escape(message)) as error:
        launcher(f"--slurm_config={config}")
    assert "\n" not in str(error.value)


def test_bad_flags():
    with pytest.raises(UserError, match="--nodes must be >= 1"):
        launcher("--nodes=0")
    with pytest.raises(UserError, match="--gpus_per_node must be >= 0"):
        launcher("--gpus_per_node=-1")


def test_flags_do_not_collide_with_the_sweep_command():
    parser = argparse.ArgumentParser(allow_abbrev=False)
    for flag in ("--config", "--workdir", "--launcher", "--dry_run", "--parallel", "--wait",
                 "--tpu", "--zone", "--processes"):
        parser.add_argument(flag)
    SlurmLauncher.add_arguments(parser)  # argparse raises on a conflict.


def test_without_slurm_commands(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    sweep = make_sweep(tmp_path / "lr")
    with pytest.raises(UserError, match="sbatch not found"):
        launcher().launch(sweep, sweep.points, wait=False)
    state = {"points": [{"name": "lr=0.001", "job_id": "12_0"}]}
    assert launcher().running(sweep, state) == set()
    assert SlurmLauncher.running(sweep, state) == set()  # `jaxformer results` has no instance.


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> str:
    """The Shakespeare data, prepared once: tasks that start together would each prepare it."""
    from jaxformer.data import shakespeare

    path = str(tmp_path_factory.mktemp("tfds"))
    shakespeare.prepare(path)
    return path


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_sweep_on_a_slurm_cluster(slurm_cluster, data_dir, tmp_path):  # noqa: F811
    # The sweep's config file: shakespeare_char:runlocal, and two learning rates.
    config = tmp_path / "sweep_config.py"
    config.write_text(f"""
from jaxformer import config as config_lib


def get_config(arg=None):
    return config_lib.load_config({CHAR + ':runlocal'!r})


def get_sweep(hyper, arg=None):
    return hyper.sweep("config.optim.lr", [1e-3, 3e-4])
""")
    sweep = sweep_lib.plan(str(config), str(tmp_path / "lr sweep"),
                           [f"data.data_dir={data_dir}"])
    slurm = launcher(f"--partition={slurm_cluster.partition}", "--time=00:10:00")
    slurm.poll_seconds = 0.5
    names = {p.name for p in sweep.points}

    # Submitted without waiting: squeue knows the tasks until they end.
    start = time.monotonic()
    jobs = slurm.launch(sweep, sweep.points, wait=False)
    array_id = jobs[sweep.points[0].name]["job_id"].split("_")[0]
    assert jobs == {p.name: {"job_id": f"{array_id}_{i}"} for i, p in enumerate(sweep.points)}
    state = sweep_lib.refresh(sweep, launcher="slurm", extra=jobs)
    assert slurm.running(sweep, state) == SlurmLauncher.running(sweep, state) == names
    while slurm.running(sweep, state) and time.monotonic() - start < 300:
        time.sleep(1)
    print(f"the sweep took {time.monotonic() - start:.0f} s on SLURM")
    state = sweep_lib.refresh(sweep, launcher="slurm", running=slurm.running(sweep, state))
    logs = {p.name: open(sweep.log_path(p)).read() for p in sweep.points}
    for point, entry in zip(sweep.points, state["points"]):
        assert entry["status"] == sweep_lib.DONE, logs[point.name][-3000:]
        assert entry["job_id"] == jobs[point.name]["job_id"]
        workdir = sweep.workdir(point)
        assert os.path.isfile(os.path.join(workdir, "metrics.jsonl"))
        assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["2", "4"]
        assert "step 4/4" in logs[point.name] and "eval/val/loss" in logs[point.name]
        assert entry["metrics"]["step"] == 4
    assert os.path.isfile(os.path.join(sweep.root, "logs", "sweep.sbatch"))

    # Run again, waiting: the points resume at their last step, and their logs grow.
    changes = []
    jobs = slurm.launch(sweep, sweep.points, wait=True,
                        on_change=lambda running, extra: changes.append(running))
    assert changes[0] == names and changes[-1] == set()
    assert all("started" in fields for fields in jobs.values())
    assert slurm.running(sweep, sweep_lib.refresh(sweep, launcher="slurm", extra=jobs)) == set()
    for point in sweep.points:
        assert sweep.exit_code(point) == 0
        log = open(sweep.log_path(point)).read()
        assert log.startswith(logs[point.name]) and "resuming from step 4" in log


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_cancelled_point_saves_and_is_left_interrupted(slurm_cluster, data_dir, tmp_path):  # noqa: F811
    sweep = Sweep(config=f"{CHAR}:runlocal", root=str(tmp_path / "long"),
                  points=[Point("long", {"train.num_steps": 100000})],
                  overrides=[f"data.data_dir={data_dir}", "train.checkpoint_every=100000",
                             "optim.decay_steps=100000"])
    point = sweep.points[0]
    jobs = SlurmLauncher().launch(sweep, sweep.points, wait=False)
    state = {"points": [{"name": point.name, **jobs[point.name]}]}
    deadline = time.monotonic() + 120
    while "step 2/" not in (open(sweep.log_path(point)).read()
                            if os.path.exists(sweep.log_path(point)) else ""):
        assert time.monotonic() < deadline, "the point did not start training"
        time.sleep(0.5)

    subprocess.run(["scancel", jobs[point.name]["job_id"]], check=True)
    while SlurmLauncher.running(sweep, state):
        assert time.monotonic() < deadline + 60, "the cancelled point did not end"
        time.sleep(0.5)
    assert sweep.exit_code(point) is None  # Stopped by SIGTERM: interrupted, resumable.
    log = open(sweep.log_path(point)).read()
    assert "checkpoint saved" in log and "stopped by SIGTERM (exit 143)" in log
    assert os.listdir(os.path.join(sweep.workdir(point), "checkpoints"))


def dependent_sweep(root) -> Sweep:
    return Sweep(config="configs/gpt/shakespeare_char.py:runlocal", root=str(root),
                 points=[Point("pretrain", {}), Point("other", {}),
                         Point("tune", {"init_from.workdir": f"{root}/pretrain"},
                               after=["pretrain"])])


def fake_python(tmp_path, body: str) -> str:
    path = tmp_path / "python"
    path.write_text(f"#!/bin/sh\necho ran\n{body}\n")
    path.chmod(0o755)
    return str(path)


@pytest.mark.parametrize("pretrain_code, tune_code, tune_log", [
    (3, 1, "point pretrain failed (exit 3): tune not started"),
    (None, None, "point pretrain has not finished: tune not started"),
    (0, 0, "ran"),
])
def test_a_dependent_task_runs_only_after_its_dependency_succeeded(
        tmp_path, pretrain_code, tune_code, tune_log):
    sweep = dependent_sweep(tmp_path / "root")
    os.makedirs(tmp_path / "root" / "logs")
    if pretrain_code is not None:
        sweep.record_exit(sweep.points[0], pretrain_code)
    slurm = launcher(f"--python={fake_python(tmp_path, 'exit 0')}")
    script = slurm.script(sweep, sweep.points)
    first, second = script.split("\n# sweep-1.sbatch: ")
    assert sbatch_options(first)["array"] == "0-1" and "dependency" not in sbatch_options(first)
    assert sbatch_options(second)["array"] == "0-0"
    assert sbatch_options(second)["dependency"] == "afterany:<ID>"
    run_task(slurm.wave_script(sweep, sweep.points[2:], "afterany:7"), 0, tmp_path)
    assert sweep.exit_code(sweep.points[2]) == tune_code
    log = open(sweep.log_path(sweep.points[2])).read()
    assert tune_log in log and (tune_code == 0) == ("ran" in log)


def test_a_task_stopped_by_sigterm_leaves_its_point_interrupted(tmp_path):
    sweep = make_sweep(tmp_path / "root")
    os.makedirs(tmp_path / "root" / "logs")
    python = fake_python(tmp_path, "trap 'echo saved; exit 143' TERM; sleep 30 & wait")
    path = tmp_path / "task.sh"
    path.write_text(launcher(f"--python={python}").wave_script(sweep, sweep.points[:1]))
    task = subprocess.Popen(["bash", str(path)], start_new_session=True,
                            env=dict(os.environ, SLURM_ARRAY_TASK_ID="0", SLURM_ARRAY_JOB_ID="7"))
    log = sweep.log_path(sweep.points[0])
    deadline = time.monotonic() + 20
    while "ran" not in (open(log).read() if os.path.exists(log) else ""):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    os.killpg(task.pid, 15)  # As SLURM signals every process of the task.
    assert task.wait(timeout=20) == 143
    assert sweep.exit_code(sweep.points[0]) is None  # Pending: resumes on a rerun.
    text = open(log).read()
    assert "saved" in text and "stopped by SIGTERM (exit 143): resumes on a rerun" in text


def test_dependent_points_are_submitted_after_their_dependencies(tmp_path, monkeypatch, capsys):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    # sbatch: records each script and answers ids 100, 101, ...
    (bin_dir / "sbatch").write_text(
        '#!/bin/sh\nn=$(ls "$0.d" 2>/dev/null | wc -l)\nmkdir -p "$0.d"\n'
        'cp "$2" "$0.d/$n"\necho $((100 + n))\n')
    (bin_dir / "sbatch").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    sweep = dependent_sweep(tmp_path / "root")
    os.makedirs(tmp_path / "root" / "logs")
    sweep.record_exit(sweep.points[2], 3)  # An earlier attempt's code does not stay.
    jobs = launcher().launch(sweep, sweep.points)
    assert jobs == {"pretrain": {"job_id": "100_0"}, "other": {"job_id": "100_1"},
                    "tune": {"job_id": "101_0"}}
    scripts = [(bin_dir / "sbatch.d" / str(n)).read_text() for n in range(2)]
    assert "dependency" not in sbatch_options(scripts[0])
    assert sbatch_options(scripts[1])["dependency"] == "afterany:100"
    assert sweep.exit_code(sweep.points[2]) is None
    assert os.path.isfile(tmp_path / "root" / "logs" / "sweep-1.sbatch")
    # A later launch of the fine-tuning alone waits for the pretraining's job still on.
    sweep_lib.refresh(sweep, launcher="slurm", extra=jobs)
    jobs = launcher().launch(sweep, sweep.points[2:])
    assert sbatch_options((bin_dir / "sbatch.d" / "2").read_text())["dependency"] == (
        "afterany:100")
