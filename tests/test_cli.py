"""The command line's contract, through `python -m jaxformer` in subprocesses: user errors are
one line and exit code 2 and leave the workdir alone, resumes are safe, the commands work."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from jaxformer import cli
from jaxformer.commands import params as params_command
from jaxformer.errors import UserError
from tests import helpers

ROOT = Path(__file__).resolve().parent.parent
CHAR = "configs/gpt/shakespeare_char.py:runlocal"
SEPARATOR = "\n" + "-" * 40 + "\n"  # What `sample` prints after each sample.


def _env(xla_flags=True):
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env["XLA_FLAGS"] = helpers.xla_flags(8 if xla_flags else None)
    return env


def run_cli(*args, xla_flags=True, timeout=300):
    return subprocess.run([sys.executable, "-m", "jaxformer", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout, cwd=ROOT, check=False,
                          env=_env(xla_flags))


def popen_cli(*args, stderr=subprocess.DEVNULL):
    return subprocess.Popen([sys.executable, "-m", "jaxformer", *map(str, args)], cwd=ROOT,
                            env=_env(), stdout=subprocess.DEVNULL, stderr=stderr)


def train_args(workdir, data_dir, *overrides, config=CHAR):
    return ["train", f"--config={config}", f"--workdir={workdir}",
            f"--config.data.data_dir={data_dir}", *overrides]


def snapshot(path):
    """A file's bytes, or every path under a directory with its files' bytes."""
    path = Path(path)
    if path.is_file():
        return path.read_bytes()
    return {str(p.relative_to(path)): p.read_bytes() if p.is_file() else None
            for p in sorted(path.rglob("*"))}


def records(workdir):
    """The complete records of metrics.jsonl (a line cut short by a kill is left out)."""
    out = []
    for line in (Path(workdir) / "metrics.jsonl").read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            pass
    return out


def train_steps(workdir):
    return [r["step"] for r in records(workdir) if "train/loss" in r]


def assert_user_error(result, *words):
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert all(word in lines[0] for word in words), lines[0]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("tfds")


@pytest.fixture(scope="module")
def trained(tmp_path_factory, data_dir):
    """A finished runlocal run (4 steps, checkpoints 2 and 4): read, or copied before a change."""
    workdir = tmp_path_factory.mktemp("trained") / "run"
    result = run_cli(*train_args(workdir, data_dir))
    assert result.returncode == 0, result.stderr
    assert '"optim"' in result.stdout.split("starting:")[0]  # The config, before training.
    return workdir


@pytest.fixture
def copy(trained, tmp_path):
    """A copy of the trained workdir that a test may change."""
    return Path(shutil.copytree(trained, tmp_path / "copy"))


TRAIN_USER_ERRORS = [
    (["--config.train.num_steps=0"], ["train.num_steps", "0"]),
    (["--config.train.num_steps=-5"], ["train.num_steps", "-5"]),
    (["--config.train.num_steps=abc"], ["expected an integer"]),
    (["--config.train.checkpoint_every=0"], ["train.checkpoint_every"]),
    (["--config.train.batch_size=0"], ["train.batch_size"]),
    (["--config.train.cpu_matmuls=mkl"], ["train.cpu_matmuls", "mkl", "onednn"]),
    (["--config.data.block_size=0"], ["block_size"]),
    (["--config.data.tokenizer=nope"], ["nope"]),
    (["--config.model.variant=nope"], ["nope"]),
    (["--config.model.num_layers=3"], ["--config.model.num_layers", "no effect", "'tiny'"]),
    (["--config.model.variant=", "--config.model.num_layers=0"], ["model.num_layers", "0"]),
    (["--config.evals.val.type=nope"], ["nope"]),
    (["--config.freeze=('nomatch/.*',)"], ["nomatch"]),
    (["--config.train.num_steps=2"], ["num_steps 2", "(4)"]),  # Below the saved step 4.
    (["--config=configs/gpt/shakespeare_char.py:"], ["empty arg string"]),
    # Without ImageNet prepared, the data is what is reported; either way one line.
    (["--config=configs/vit/imagenet.py:variant=Z/99"], []),
]


@pytest.mark.parametrize("args,words", TRAIN_USER_ERRORS,
                         ids=[args[0] for args, _ in TRAIN_USER_ERRORS])
def test_train_user_error_leaves_workdir_alone(trained, data_dir, args, words):
    before = snapshot(trained)
    config = args[0].removeprefix("--config=") if args[0].startswith("--config=") else CHAR
    overrides = [] if args[0].startswith("--config=") else args
    result = run_cli(*train_args(trained, data_dir, *overrides, config=config))
    assert_user_error(result, *words)
    assert '"optim"' not in result.stdout  # The config is printed by a run that starts.
    assert snapshot(trained) == before


def test_workdir_that_is_a_file(tmp_path, data_dir):
    path = tmp_path / "notes.txt"
    path.write_text("keep me")
    assert_user_error(run_cli(*train_args(path, data_dir)), "not a directory")
    assert path.read_text() == "keep me"


COMMAND_USER_ERRORS = [
    (["train", f"--config={CHAR}"], ["--workdir"]),
    (["sample", "--workdir={missing}"], ["no such directory"]),
    (["evaluate", "--workdir={missing}"], ["no such directory"]),
    (["bench", f"--config={CHAR}", "--steps=0"], ["--steps"]),
    (["params", f"--config={CHAR}", "--depth=-1"], ["--depth"]),
    (["sample", "--workdir={trained}", "--max_new=5"], ["--max_new=5"]),  # No abbreviations.
    (["sample", "--workdir={trained}", "--num_samples=0"], ["--num_samples"]),
    (["sample", "--workdir={trained}", "--max_new_tokens=0"], ["--max_new_tokens"]),
    (["evaluate", "--workdir={trained}", "--average_last=-1"], ["--average_last"]),
    (["evaluate", "--workdir={trained}", "--eval=nope"], ["nope", "val"]),
    (["sample", "--workdir={trained}", "--temperature=-1"], ["--temperature"]),
    (["sample", "--workdir={trained}", "--prompt="], ["--prompt"]),
    (["sample", "--workdir={trained}", "--prompt=\u20ac"], ["--prompt", "\u20ac"]),
    (["train", f"--config={CHAR}", "--workdir={missing}", "--bogus"], ["--bogus"]),
    (["sample", "--workdir={trained}", "--bogus"], ["--bogus"]),
]


@pytest.mark.parametrize("args,words", COMMAND_USER_ERRORS,
                         ids=[" ".join(args[::len(args) - 1]) for args, _ in COMMAND_USER_ERRORS])
def test_command_user_errors(trained, tmp_path, args, words):
    missing = tmp_path / "missing"
    before = snapshot(trained)
    assert_user_error(run_cli(*[a.format(missing=missing, trained=trained) for a in args]),
                      *words)
    assert not missing.exists()
    assert snapshot(trained) == before


def test_malformed_config_json(copy):
    (copy / "config.json").write_text("not json")
    assert_user_error(run_cli("sample", f"--workdir={copy}"), "config.json")


def test_evaluate_with_no_end_of_run_evaluator_names_them(copy):
    config = json.loads((copy / "config.json").read_text())
    config["evals"]["val"]["at_end"] = False
    (copy / "config.json").write_text(json.dumps(config))
    before = snapshot(copy)
    assert_user_error(run_cli("evaluate", f"--workdir={copy}"), "--eval", "(val)")
    assert snapshot(copy) == before  # No empty record appended to metrics.jsonl.


def test_malformed_input_file(trained, tmp_path):
    path = tmp_path / "in.txt"
    path.write_bytes(b"\xff\xfe not utf-8\n")
    assert_user_error(run_cli("translate", f"--workdir={trained}", f"--input={path}"), "UTF-8")


def test_malformed_tokenizer_asset(copy):
    (copy / "assets" / "tokenizer.json").write_text('{"type": "char", "chars": 5}')
    assert_user_error(run_cli("sample", f"--workdir={copy}"), "tokenizer")


def test_malformed_metrics_file_on_resume(copy, data_dir):
    lines = (copy / "metrics.jsonl").read_text().splitlines()
    (copy / "metrics.jsonl").write_text("\n".join(["garbage{", *lines[1:]]) + "\n")
    before = snapshot(copy)
    assert_user_error(run_cli(*train_args(copy, data_dir)), "metrics.jsonl")
    assert snapshot(copy) == before


@pytest.mark.slow
def test_resume_with_another_model_keeps_config_and_sample_works(trained, data_dir):
    before = snapshot(trained)
    result = run_cli(*train_args(trained, data_dir, "--config.model.variant=nano"))
    assert_user_error(result, "different model")
    assert snapshot(trained) == before
    result = run_cli("sample", f"--workdir={trained}", "--max_new_tokens=5")
    assert result.returncode == 0, result.stderr


@pytest.mark.slow
def test_resume_with_changed_config_warns_and_keeps_previous(copy, data_dir):
    previous = (copy / "config.json").read_text()
    result = run_cli(*train_args(copy, data_dir, "--config.optim.lr=0.0005"))
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stdout.splitlines() if line.startswith("WARNING")]
    assert len(warnings) == 1 and "optim.lr" in warnings[0], result.stdout
    kept = list(copy.glob("config.*.json"))
    assert len(kept) == 1 and kept[0].name in warnings[0]
    assert kept[0].read_text() == previous
    assert json.loads((copy / "config.json").read_text())["optim"]["lr"] == 0.0005


@pytest.mark.slow
def test_resume_with_more_steps_or_the_state_split_does_not_warn(copy, data_dir):
    result = run_cli(*train_args(copy, data_dir, "--config.train.num_steps=5",
                                 "--config.train.fsdp=2"))
    assert result.returncode == 0, result.stderr
    assert "WARNING" not in result.stdout and "resuming from step 4" in result.stdout
    assert train_steps(copy) == [1, 2, 3, 4, 5]


@pytest.mark.slow
def test_second_run_on_a_busy_workdir_names_the_first(tmp_path, data_dir):
    workdir = tmp_path / "busy"
    err = open(tmp_path / "first.err", "w")  # noqa: SIM115 -- closed below.
    first = popen_cli(*train_args(workdir, data_dir, "--config.train.num_steps=100000",
                                  "--config.train.checkpoint_every=2",
                                  "--config.train.log_every=1000",
                                  "--config.evals.val.every_steps=0"), stderr=err)
    try:
        deadline = time.time() + 240
        while not (workdir / "checkpoints" / "2").is_dir():
            assert first.poll() is None and time.time() < deadline, "no first checkpoint"
            time.sleep(0.05)
        config = (workdir / "config.json").read_bytes()
        second = run_cli(*train_args(workdir, data_dir, "--config.train.num_steps=100000",
                                     "--config.train.checkpoint_every=2"))
        assert_user_error(second, "in use by", f"process {first.pid} ")
        assert (workdir / "config.json").read_bytes() == config
        assert first.poll() is None
        first.send_signal(signal.SIGTERM)
        assert first.wait(timeout=120) == 128 + signal.SIGTERM
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
        err.close()
    assert "stopped by SIGTERM at step" in (tmp_path / "first.err").read_text()


@pytest.mark.slow
def test_metrics_hold_each_step_once_after_kill_and_resume(tmp_path, data_dir):
    workdir, steps = tmp_path / "killed", 200
    args = train_args(workdir, data_dir, f"--config.train.num_steps={steps}",
                      "--config.train.checkpoint_every=10", "--config.train.log_every=1",
                      "--config.evals.val.every_steps=0")
    proc = popen_cli(*args)

    def saved():
        return [int(p.name) for p in (workdir / "checkpoints").glob("*") if p.name.isdigit()]

    def logged_past_checkpoint():  # Records the resumed run writes again.
        return saved() and (workdir / "metrics.jsonl").exists() and (
            max(train_steps(workdir)) >= max(saved()) + 3)

    deadline = time.time() + 240
    while not logged_past_checkpoint():
        assert proc.poll() is None and time.time() < deadline, "ended before it was killed"
        time.sleep(0.01)
    proc.kill()
    assert proc.wait() == -signal.SIGKILL
    assert max(saved()) < max(train_steps(workdir)) < steps
    result = run_cli(*args)
    assert result.returncode == 0, result.stderr
    assert "resuming from step" in result.stdout
    assert train_steps(workdir) == list(range(1, steps + 1))


@pytest.mark.slow
def test_final_evaluation_that_did_not_complete_runs_on_resume(copy, data_dir):
    def final_evals():
        return [r for r in records(copy)
                if r["step"] == 4 and any(k.startswith("eval/") for k in r)]

    evals = final_evals()
    assert evals
    kept = [r for r in records(copy) if r not in evals]
    (copy / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in kept))
    checkpoints = snapshot(copy / "checkpoints")
    result = run_cli(*train_args(copy, data_dir))
    assert result.returncode == 0, result.stderr
    assert "running the final evaluation" in result.stdout
    assert [r.keys() for r in final_evals()] == [r.keys() for r in evals]
    assert snapshot(copy / "checkpoints") == checkpoints


@pytest.mark.slow
def test_finished_run_rerun_changes_nothing(copy, data_dir):
    before = snapshot(copy)
    result = run_cli(*train_args(copy, data_dir))
    assert result.returncode == 0, result.stderr
    assert "running the final evaluation" not in result.stdout
    after = snapshot(copy)
    assert not {k for k in before.keys() | after.keys()
                if before.get(k) != after.get(k) and not k.startswith("tensorboard")}


@pytest.mark.slow
def test_sample_continues_the_prompt(trained):
    result = run_cli("sample", f"--workdir={trained}", "--prompt=ROMEO:", "--max_new_tokens=10")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ROMEO:")
    assert "the checkpoint at step 4" in result.stderr


@pytest.mark.slow
def test_sample_past_the_block_size(trained):
    block_size = json.loads((trained / "config.json").read_text())["data"]["block_size"]
    new = 3 * block_size + 5
    result = run_cli("sample", f"--workdir={trained}", "--prompt=ROMEO:", f"--max_new_tokens={new}",
                     "--num_samples=2")
    assert result.returncode == 0, result.stderr
    samples = result.stdout.split(SEPARATOR)
    assert len(samples) == 3 and samples[-1] == ""
    assert all(s.startswith("ROMEO:") and len(s) == len("ROMEO:") + new for s in samples[:2])


@pytest.mark.slow
def test_evaluate_uses_one_host_device_per_core(copy):
    """... and splits the parameters of a run that split its state (train.fsdp) over them."""
    config = json.loads((copy / "config.json").read_text())
    config["train"]["batch_size"] = 6
    config["train"]["fsdp"] = 2
    (copy / "config.json").write_text(json.dumps(config))
    result = run_cli("evaluate", f"--workdir={copy}", xla_flags=False)
    assert result.returncode == 0, result.stderr
    cores = len(os.sched_getaffinity(0))
    expected = max(d for d in range(1, cores + 1) if 6 % d == 0)
    split = " (parameters split 2 ways)" if expected % 2 == 0 else ""
    assert f"evaluating the checkpoint at step 4 on {expected} devices{split}\n" in result.stdout
    assert "eval/val/loss" in records(copy)[-1]


@pytest.mark.slow
def test_params_of_gpt2_xl():
    result = run_cli("params", "--config=configs/gpt/gpt2.py:variant=gpt2-xl")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "total 1557611200"
    result = run_cli("params", "--config=configs/gpt/gpt2.py:variant=gpt2-xl", "--json",
                     "--config.train.fsdp=8")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["total"] == 1557611200
    # Params and AdamW's two moments, float32: 18.7 GB, of which each of 8 devices holds an
    # eighth of every large leaf and whole copies of the small ones (biases, LayerNorms).
    state = summary["param_bytes"] + summary["optimizer_state_bytes"]
    assert 0 <= state - 3 * 4 * 1557611200 < 64  # And the optimizer's step counts.
    assert state / 8 < summary["state_bytes_per_device"] < 1.01 * state / 8


def test_params_counts_modules_to_the_depth_asked():
    params = {"block_10": {"dense": {"kernel": np.zeros((3, 4))}},
              "block_2": {"bias": np.zeros(5)}}
    counts = params_command.module_counts
    assert counts(params, 0) == {}
    assert counts(params, 1) == {"block_2": {"count": 5}, "block_10": {"count": 12}}
    assert counts(params, 2)["block_10"] == {"count": 12, "children": {"dense": {"count": 12}}}
    assert list(counts(params, 3)) == ["block_2", "block_10"]  # Natural order.


@pytest.mark.slow
def test_params_without_the_dataset(tmp_path):
    """ImageNet is not prepared here: the model's shapes come from the data module's spec.
    ViT-B/16 at 224 with 1000 classes has the reference implementation's 86,567,656."""
    result = run_cli("params", "--config=configs/vit/imagenet.py:variant=B/16",
                     "--config.model.representation_size=0",
                     f"--config.data.data_dir={tmp_path}")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "total 86567656"
    assert os.listdir(tmp_path) == []


@pytest.mark.slow
def test_params_of_detr_r50_on_coco(tmp_path):
    """COCO is not prepared here either. DETR-R50 with 91 classes: 41,631,008 values, of which
    DETR's freezing rule trains 41,302,368 (models/detr.py)."""
    result = run_cli("params", "--config=configs/detr/coco.py", "--json",
                     f"--config.data.data_dir={tmp_path}")
    assert result.returncode == 0, result.stderr
    counts = json.loads(result.stdout)
    assert (counts["total"], counts["trainable"]) == (41_631_008, 41_302_368)
    assert os.listdir(tmp_path) == []
    assert_user_error(run_cli("params", "--config=configs/detr/coco.py:variant=cpu"),
                      "unknown variant 'cpu'; available: r50, r101, r18, r34")
    assert_user_error(run_cli("params", "--config=configs/detr/coco.py",
                              "--config.data.max_boxes=-1"), "data.max_boxes")


@pytest.mark.slow
def test_train_into_a_closed_pipe(tmp_path, data_dir):
    workdir = tmp_path / "piped"
    command = " ".join([sys.executable, "-m", "jaxformer", *train_args(workdir, data_dir)])
    result = subprocess.run(f'{command} | head -3; echo "status ${{PIPESTATUS[0]}}" >&2',
                            shell=True, executable="/bin/bash", capture_output=True, text=True,
                            timeout=300, cwd=ROOT, env=_env(), check=False)
    assert len(result.stdout.splitlines()) == 3
    assert "BrokenPipeError" not in result.stderr and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == "status 0", result.stderr
    assert (workdir / "checkpoints" / "4").is_dir()  # Training went on without its reader.


def test_program_errors_keep_their_traceback(monkeypatch, capsys):
    def bug(args, overrides):
        raise RuntimeError("a bug")

    monkeypatch.setattr(params_command, "run", bug)
    with pytest.raises(RuntimeError, match="a bug"):
        cli.main(["params", "--config=any.py"])

    def mistake(args, overrides):
        raise UserError("a mistake")

    monkeypatch.setattr(params_command, "run", mistake)
    assert cli.main(["params", "--config=any.py"]) == 2
    assert capsys.readouterr().err == "jaxformer params: error: a mistake\n"

    def ctrl_c(args, overrides):
        raise KeyboardInterrupt

    monkeypatch.setattr(params_command, "run", ctrl_c)
    assert cli.main(["params", "--config=any.py"]) == 128 + signal.SIGINT
    assert capsys.readouterr().err == "jaxformer params: interrupted\n"
