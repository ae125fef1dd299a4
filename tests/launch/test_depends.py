"""Points that use an earlier point's workdir (`hyper.workdir_of`): planned with `after`, and
started by the local launcher only once that point has succeeded; a sweep stopped by SIGTERM.
The points run stand-in commands (shell snippets) instead of training."""

import json
import os
import signal
import sys
import threading
import time

import pytest

from jaxformer.cli import main
from launch import depends
from launch import sweep as sweep_lib
from launch.local import LocalLauncher
from launch.sweep import Point
from tests.helpers import ROOT
from tests.launch.test_sweep import write_config

DEPENDENT = ('[{"name": "pretrain", "config.seed": 1}, '
             '{"name": "finetune", "config.init_from.workdir": hyper.workdir_of("pretrain")}, '
             '{"name": "probe", "arg": "x=" + hyper.workdir_of("pretrain"), "config.seed": 3}, '
             '{"name": "other", "config.seed": 2}]')


@pytest.fixture(autouse=True)
def _in_repo(monkeypatch):
    monkeypatch.chdir(ROOT)


def fake_commands(monkeypatch, snippets: dict[str, str]) -> None:
    """Makes the local launcher run `sh -c SNIPPET` for each point (`$W`: its workdir)."""
    def command(self, sweep, point):
        return ["sh", "-c", snippets.get(point.name, "exit 0"), "sh", sweep.workdir(point)]
    monkeypatch.setattr(LocalLauncher, "command", command)


# A point that works 1 s and marks its workdir finished; one that needs that mark at its start.
WORK = 'W="$1"; mkdir -p "$W"; sleep 1; touch "$W/finished"'
NEEDS_PRETRAIN = 'test -f "$(dirname "$1")/pretrain/finished"'


def test_plan_records_the_points_a_point_depends_on(tmp_path):
    sweep = sweep_lib.plan(write_config(tmp_path, DEPENDENT), str(tmp_path / "root"))
    assert [p.after for p in sweep.points] == [[], ["pretrain"], ["pretrain"], []]
    state = sweep_lib.refresh(sweep, launcher="local")
    assert sweep_lib.sweep_from_state(state).points == sweep.points


def test_waves_and_chains():
    a, b, c = Point("a", {}), Point("b", {}, after=["a"]), Point("c", {})
    d = Point("d", {}, after=["b", "c"])
    assert depends.levels([a, b, c, d]) == [[a, c], [b], [d]]
    assert depends.levels([b, c]) == [[b, c]]  # `a` is not launched: finished already.
    assert depends.chains([a, b, c, d]) == [[a, b, c, d]]
    assert depends.chains([a, b, c]) == [[a, b], [c]]


def test_parallel_sweep_starts_a_dependent_point_after_its_dependency(tmp_path, monkeypatch,
                                                                     capsys):
    fake_commands(monkeypatch, {"pretrain": WORK, "finetune": NEEDS_PRETRAIN,
                                "probe": NEEDS_PRETRAIN})
    path, root = write_config(tmp_path, DEPENDENT), tmp_path / "root"
    assert main(["sweep", f"--config={path}", f"--workdir={root}", "--parallel=3"]) == 0
    state = json.loads((root / "sweep.json").read_text())
    assert [p["status"] for p in state["points"]] == ["done"] * 4
    started = {p["name"]: p["started"] for p in state["points"]}
    assert started["other"] < started["finetune"]  # A free point does not wait.


def test_a_failed_dependency_is_retried_first_on_a_rerun(tmp_path, monkeypatch, capsys):
    path, root = write_config(tmp_path, DEPENDENT), tmp_path / "root"
    fake_commands(monkeypatch, {"pretrain": "sleep 0.5; exit 3"})
    assert main(["sweep", f"--config={path}", f"--workdir={root}", "--parallel=2"]) == 1
    out = capsys.readouterr().out
    state = {p["name"]: p for p in json.loads((root / "sweep.json").read_text())["points"]}
    assert {n: p["exit_code"] for n, p in state.items()} == {
        "pretrain": 3, "finetune": depends.NOT_STARTED, "probe": depends.NOT_STARTED,
        "other": 0}
    assert "started" not in state["finetune"]  # Never started.
    assert "point pretrain failed (exit 3): finetune not started" in out
    # The rerun retries the pretraining, and the fine-tunings once it has succeeded.
    fake_commands(monkeypatch, {"pretrain": WORK, "finetune": NEEDS_PRETRAIN,
                                "probe": NEEDS_PRETRAIN, "other": "exit 9"})
    assert main(["sweep", f"--config={path}", f"--workdir={root}", "--parallel=3"]) == 0
    state = json.loads((root / "sweep.json").read_text())
    assert [p["exit_code"] for p in state["points"]] == [0, 0, 0, 0]


def test_a_dependency_finished_earlier_does_not_hold_back(tmp_path, monkeypatch):
    sweep = sweep_lib.plan(write_config(tmp_path, DEPENDENT), str(tmp_path / "root"))
    os.makedirs(os.path.join(sweep.root, "logs"))
    sweep.record_exit(sweep.points[0], 0)
    fake_commands(monkeypatch, {})
    LocalLauncher(parallel=2).launch(sweep, sweep.points[1:])
    assert [sweep.exit_code(p) for p in sweep.points] == [0, 0, 0, 0]


def test_sigterm_stops_the_sweep_with_143_and_leaves_its_points_pending(tmp_path, monkeypatch,
                                                                       capsys):
    # Each point saves (a file) on SIGTERM and exits 143, as the trainer does.
    fake_commands(monkeypatch, {
        name: 'trap \'touch "$1.saved"; exit 143\' TERM; sleep 30 & wait'
        for name in ("pretrain", "other")})
    path, root = write_config(tmp_path, DEPENDENT), tmp_path / "root"
    threading.Timer(2.0, os.kill, (os.getpid(), signal.SIGTERM)).start()
    start = time.monotonic()
    code = main(["sweep", f"--config={path}", f"--workdir={root}", "--parallel=2"])
    assert code == 128 + signal.SIGTERM
    assert time.monotonic() - start < 20
    assert "stopped by SIGTERM" in capsys.readouterr().err
    assert (root / "pretrain.saved").exists() and (root / "other.saved").exists()
    state = json.loads((root / "sweep.json").read_text())
    assert {p["status"] for p in state["points"]} == {"pending"}


def test_a_bad_common_override_is_not_blamed_on_a_point(tmp_path, capsys):
    path = write_config(tmp_path, DEPENDENT)
    assert main(["sweep", f"--config={path}", f"--workdir={tmp_path / 'r'}",
                 "--config.nosuch.key=1"]) == 2
    err = capsys.readouterr().err
    assert "unknown config key --config.nosuch.key" in err and "sweep point" not in err


def test_pod_log_dir_is_the_workdir_or_a_temporary_directory(tmp_path, monkeypatch):
    from launch.local import pod_log_dir

    work, temp = tmp_path / "work", tmp_path / "tmp"
    work.mkdir(), temp.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setattr("tempfile.tempdir", str(temp))
    assert pod_log_dir(None, ["train", f"--workdir={work}/w"]) == f"{work}/w"
    assert pod_log_dir(None, ["train", "--workdir", "v"]) == "v" and os.path.isdir("v")
    temporary = pod_log_dir(None, ["params", "--config=x.py"])
    assert os.path.isdir(temporary) and os.path.dirname(temporary) == str(temp)


def test_exit_status_of_a_signalled_process():
    from launch.local import exit_status

    assert [exit_status(c) for c in (0, 3, -9, -15)] == [0, 3, 137, 143]


def test_local_help_shows_the_whole_description(capsys):
    from launch import local

    with pytest.raises(SystemExit):
        local.main(["--help"])
    assert " ".join(capsys.readouterr().out.split()).count(" ".join(local.DESCRIPTION.split()))


POD = '''
import sys, time
from launch.local import Pod
pod = Pod()
child = ('trap "echo stopped > $0; exit 143" TERM; echo up > $0; '
         'sleep 60 & wait')
with pod.forwarding_signals():
    for i in range(2):
        pod.start(["sh", "-c", child if i < int(sys.argv[2]) else "sleep 1; exit 3",
                   f"{sys.argv[1]}/{i}"], None, None)
    sys.exit(pod.wait(grace_seconds=5))
'''


def run_pod(tmp_path, healthy: int, stop: bool):
    import subprocess

    process = subprocess.Popen([sys.executable, "-c", POD, str(tmp_path), str(healthy)],
                               cwd=ROOT)
    if stop:
        while not all((tmp_path / str(i)).exists() for i in range(healthy)):
            time.sleep(0.1)
        process.send_signal(signal.SIGTERM)
    return process.wait(timeout=30)


def test_pod_passes_sigterm_on_to_its_processes(tmp_path):
    assert run_pod(tmp_path, healthy=2, stop=True) == 143
    assert [(tmp_path / str(i)).read_text() for i in range(2)] == ["stopped\n"] * 2


def test_pod_stops_the_others_when_one_fails(tmp_path):
    start = time.monotonic()
    assert run_pod(tmp_path, healthy=1, stop=False) == 3  # The first failure, not 143.
    assert (tmp_path / "0").read_text() == "stopped\n"
    assert time.monotonic() - start < 20
