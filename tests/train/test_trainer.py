"""The generic trainer on the tiny GPT: strategies agree, resume is exact, failures are safe."""

import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds

from jaxformer import config as config_lib
from jaxformer import registry
from jaxformer.inference.workdir import load_run
from jaxformer.registry import build_data_and_task
from jaxformer.train import parallel, trainer
from jaxformer.train.optimizer import make_optimizer
from jaxformer.train.state import create_state
from tests.data.test_coco_captions import write_metadata as write_coco_metadata
from tests.data.test_coco_detection import mocked_coco
from tests.data.test_conll2003 import write_files as write_conll_files
from tests.data.test_squad import write_files as write_squad_files
from tests.helpers import CONFIGS, xla_flags

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))
CHAR = os.path.join(ROOT, "configs/gpt/shakespeare_char.py")


def tiny_config(*overrides, data_dir):
    config = config_lib.load_config(CHAR + ":runlocal")
    config_lib.apply_overrides(config, [f"data.data_dir={data_dir}", *overrides])
    return config


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("tfds"))


def run_cli(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "jaxformer", *args], capture_output=True,
                          text=True, timeout=timeout, cwd=ROOT, env=_env())


def _env():
    env = dict(os.environ)
    env["XLA_FLAGS"] = xla_flags()
    env["JAX_PLATFORMS"] = "cpu"
    return env


def losses_and_state(config, strategy, steps, tmp_path):
    """The losses of `steps` train steps of `config` under `strategy`, and the state after."""
    data, task = build_data_and_task(config, str(tmp_path))
    tx = make_optimizer(config.optim)
    batch_size = config.train.batch_size
    batches = data.train_iter(batch_size=batch_size, seed=config.seed)
    state = strategy.init_state(lambda: create_state(task, tx, config.seed))
    step = strategy.train_step(task, tx, config.train.grad_accum_steps)
    losses = []
    for _ in range(steps):
        state, metrics = step(state, strategy.place_batch(next(batches)))
        losses.append(float(metrics["loss"]))
    return np.array(losses), state


def losses_and_params(config, strategy, steps, tmp_path):
    losses, state = losses_and_state(config, strategy, steps, tmp_path)
    return losses, jax.device_get(strategy.host_state(state).params)


@pytest.mark.slow
def test_sharded_pmap_and_single_device_agree(tmp_path, data_dir):
    assert jax.device_count() == 8
    config = tiny_config("train.batch_size=16", data_dir=data_dir)
    single, single_params = losses_and_params(
        config, parallel.Sharded(devices=jax.devices()[:1]), 6, tmp_path)
    sharded, sharded_params = losses_and_params(
        config, parallel.Sharded(per_device_step=False), 6, tmp_path)
    per_device, per_device_params = losses_and_params(
        config, parallel.Sharded(per_device_step=True), 6, tmp_path)
    pmapped, pmap_params = losses_and_params(config, parallel.Pmap(), 6, tmp_path)
    assert single[-1] < single[0]  # It learns.
    for losses in (sharded, per_device, pmapped):
        np.testing.assert_allclose(losses, single, rtol=1e-5)
    for other in (sharded_params, per_device_params, pmap_params):
        for a, b in zip(jax.tree.leaves(single_params), jax.tree.leaves(other)):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


@pytest.mark.slow
def test_gradient_accumulation_matches_full_batch(tmp_path, data_dir):
    full = tiny_config("train.batch_size=16", data_dir=data_dir)
    accumulated = tiny_config("train.batch_size=16", "train.grad_accum_steps=2",
                              data_dir=data_dir)
    losses_full, params_full = losses_and_params(full, parallel.Sharded(), 3, tmp_path)
    losses_acc, params_acc = losses_and_params(accumulated, parallel.Sharded(), 3, tmp_path)
    np.testing.assert_allclose(losses_acc, losses_full, rtol=1e-5)
    for a, b in zip(jax.tree.leaves(params_full), jax.tree.leaves(params_acc)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


@pytest.mark.slow
def test_train_writes_metrics_config_and_checkpoints(tmp_path, data_dir):
    workdir = tmp_path / "run"
    config = tiny_config("train.num_steps=4", data_dir=data_dir)
    last = trainer.train(config, str(workdir))
    assert np.isfinite(last["eval/val/loss"])
    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "train/loss" in r] == [1, 2, 3, 4]
    assert any("eval/val/loss" in r and "eval/val/perplexity" in r for r in records)
    assert json.loads((workdir / "config.json").read_text())["train"]["num_steps"] == 4
    assert sorted(os.listdir(workdir / "checkpoints")) == ["2", "4"]
    assert any(f.startswith("events") for f in os.listdir(workdir / "tensorboard"))


def final_params(workdir, config=None):
    run = load_run(str(workdir))
    return run.step, jax.device_get(run.params)


def assert_close_params(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-6)


def assert_same_params(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(x, y)


@pytest.mark.slow
def test_exact_resume_after_sigkill(tmp_path, data_dir):
    steps, half = 40, 20
    args = ["train", f"--config={CHAR}:runlocal", f"--config.data.data_dir={data_dir}",
            f"--config.train.num_steps={steps}", f"--config.train.checkpoint_every={half}",
            "--config.evals.val.every_steps=0", "--config.train.log_every=1",
            "--config.train.batch_size=64", "--config.data.block_size=128",
            "--config.optim.decay_steps=40"]
    reference = tmp_path / "straight"
    result = run_cli(*args, f"--workdir={reference}")
    assert result.returncode == 0, result.stderr

    killed = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "jaxformer", *args, f"--workdir={killed}"],
                            cwd=ROOT, env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while not (killed / "checkpoints" / str(half)).exists() and time.time() < deadline:
        assert proc.poll() is None, "run ended before it could be killed"
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    result = run_cli(*args, f"--workdir={killed}")
    assert result.returncode == 0, result.stderr
    assert f"resuming from step {half}" in result.stdout

    config = tiny_config(f"train.num_steps={steps}", "train.batch_size=64",
                         "data.block_size=128", data_dir=data_dir)
    step_a, params_a = final_params(reference, config)
    step_b, params_b = final_params(killed, config)
    assert step_a == step_b == steps
    assert_same_params(params_a, params_b)


@pytest.mark.slow
def test_corrupt_latest_checkpoint_falls_back(tmp_path, data_dir):
    config = tiny_config("train.num_steps=6", "evals.val.every_steps=0", data_dir=data_dir)
    straight = tmp_path / "straight"
    trainer.train(config, str(straight))

    broken = tmp_path / "broken"
    trainer.train(tiny_config("train.num_steps=4", "evals.val.every_steps=0", data_dir=data_dir),
                  str(broken))
    for root, _, files in os.walk(broken / "checkpoints" / "4" / "state"):
        for name in files:
            with open(os.path.join(root, name), "r+b") as f:
                f.truncate(max(os.path.getsize(os.path.join(root, name)) // 3, 1))
    trainer.train(config, str(broken))  # Warns, falls back to step 2, trains to 6.
    assert (broken / "checkpoints_corrupt" / "4").is_dir()
    assert_same_params(final_params(straight, config)[1], final_params(broken, config)[1])


@pytest.mark.slow
def test_nonfinite_loss_stops_and_keeps_last_good_checkpoint(tmp_path, data_dir):
    workdir = tmp_path / "nan"
    result = run_cli("train", f"--config={CHAR}:runlocal", f"--workdir={workdir}",
                     f"--config.data.data_dir={data_dir}", "--config.train.num_steps=6",
                     "--config.train.checkpoint_every=1", "--config.optim.lr=1e38",
                     "--config.optim.grad_clip=0.0", "--config.optim.warmup_steps=0")
    assert result.returncode == 3, result.stderr
    assert "loss is nan at step" in result.stderr or "loss is inf at step" in result.stderr
    bad_step = int(result.stderr.split(" at step ")[1].split(";")[0])
    saved = sorted(int(s) for s in os.listdir(workdir / "checkpoints") if s.isdigit())
    assert saved and saved[-1] == bad_step - 1


@pytest.mark.slow
def test_sigterm_saves_and_exits(tmp_path, data_dir):
    workdir = tmp_path / "term"
    proc = subprocess.Popen(
        [sys.executable, "-m", "jaxformer", "train", f"--config={CHAR}:runlocal",
         f"--workdir={workdir}", f"--config.data.data_dir={data_dir}",
         "--config.train.num_steps=100000", "--config.train.checkpoint_every=100000",
         "--config.evals.val.every_steps=0"],
        cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in proc.stdout:
        if line.startswith("step 5/"):
            break
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, stderr
    assert "stopped by SIGTERM at step" in stderr
    step = int(stderr.split(" at step ")[1].split(";")[0])
    assert os.listdir(workdir / "checkpoints") == [str(step)]


@pytest.mark.parametrize("override,message", [
    ("--config.train.num_step=3", "did you mean 'train.num_steps'"),
    ("--config.optim.lr=fast", "expected a number"),
])
def test_bad_override_exits_2_and_leaves_workdir_alone(tmp_path, override, message):
    workdir = tmp_path / "existing"
    workdir.mkdir()
    (workdir / "notes.txt").write_text("keep me")
    result = run_cli("train", f"--config={CHAR}:runlocal", f"--workdir={workdir}", override)
    assert result.returncode == 2
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert os.listdir(workdir) == ["notes.txt"]


def test_the_assets_staging_directory_is_gone_once_training_starts(tmp_path, data_dir,
                                                                    monkeypatch):
    """New assets are built in a temporary directory and moved into the workdir once the run
    is valid; that directory is removed then, not at the end, so a run killed while it trains
    leaves nothing in the temporary directory."""
    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setattr("tempfile.tempdir", str(temp))
    seen = {}

    def train_loop(config, workdir, parts):
        seen["temp"] = [name for name in os.listdir(temp) if name.startswith("jaxformer")]
        seen["assets"] = os.listdir(os.path.join(workdir, "assets"))
        return {}

    monkeypatch.setattr(trainer, "_train", train_loop)
    trainer.train(tiny_config(data_dir=data_dir), str(tmp_path / "run"))
    assert seen == {"temp": [], "assets": ["tokenizer.json"]}


def test_unknown_model_name_lists_models(tmp_path):
    result = run_cli("train", f"--config={CHAR}:runlocal", f"--workdir={tmp_path / 'w'}",
                     "--config.model.name=gtp")
    assert result.returncode == 2
    models = ", ".join(registry.available("models"))
    assert "gpt" in models and "transformer" in models
    assert f"unknown model 'gtp'; available: {models}\n" in result.stderr


# Datasets that users prepare themselves (not embedded) train on tfds's mock records.
MOCKED_DATASETS = ("wmt14_ende", "imagenet2012", "cifar10", "glue")


@pytest.mark.slow
@pytest.mark.parametrize("path", CONFIGS)
def test_every_config_trains_one_step(path, tmp_path, data_dir, monkeypatch):
    """With the train state split in two (`train.fsdp=2`, over 4 x 2 devices; small leaves
    too, at these tiny sizes), so that every family's step and evaluators also run with FSDP."""
    monkeypatch.setattr(parallel, "MIN_SHARDED_SIZE", 2)
    config = config_lib.load_config(os.path.join(ROOT, path) + ":runlocal")
    config_lib.apply_overrides(config, ["train.num_steps=1", "train.fsdp=2"] + (
        [f"data.data_dir={data_dir}"] if "data_dir" in config.data else []))
    if config.data.name in MOCKED_DATASETS:
        with tfds.testing.mock_data(num_examples=64):
            last = trainer.train(config, str(tmp_path / "run"))
    elif config.data.name == "coco_captions":  # Mock records beside the data set's metadata.
        write_coco_metadata(tmp_path / "tfds")
        config.data.data_dir = str(tmp_path / "tfds")
        with tfds.testing.mock_data(num_examples=8, num_sub_examples=3,
                                    data_dir=str(tmp_path / "tfds"),
                                    policy=tfds.testing.MockPolicy.USE_FILES):
            last = trainer.train(config, str(tmp_path / "run"))
    elif config.data.name == "conll2003":  # Hand-written CoNLL files.
        config.data.path = str(write_conll_files(tmp_path / "conll"))
        last = trainer.train(config, str(tmp_path / "run"))
    elif config.data.name == "squad":  # Hand-written SQuAD files.
        config.data.path = str(write_squad_files(tmp_path / "squad", config.data.version))
        last = trainer.train(config, str(tmp_path / "run"))
    elif config.data.name == "coco_detection":  # Hand-written records as every split.
        with mocked_coco(tmp_path / "tfds") as coco_dir:
            config.data.data_dir = str(coco_dir)
            last = trainer.train(config, str(tmp_path / "run"))
    else:
        last = trainer.train(config, str(tmp_path / "run"))
    assert np.isfinite(last["train/loss"])
    assert last.keys() >= {f"eval/{name}/{metric}" for name, entry in config.evals.items()
                           for metric in {"loss": ["loss"], "classification": ["top1"],
                                          "bleu": ["bleu"], "zero_shot": ["top1"],
                                          "retrieval": ["image_to_text_r1"],
                                          "linear_probe": ["top1"],
                                          "few_shot": ["top1_0shot"],
                                          "captioning": ["cider"],
                                          "coco_ap": ["AP", "AP50"],
                                          "entity_f1": ["f1", "precision"],
                                          "squad": ["exact", "f1"]}[entry.type]}


@pytest.mark.slow
def test_resume_with_another_model_is_refused_and_keeps_checkpoints(tmp_path, data_dir):
    workdir = tmp_path / "run"
    trainer.train(tiny_config("train.num_steps=2", data_dir=data_dir), str(workdir))
    result = run_cli("train", f"--config={CHAR}:runlocal", f"--workdir={workdir}",
                     f"--config.data.data_dir={data_dir}", "--config.model.variant=nano",
                     "--config.train.num_steps=4")
    assert result.returncode == 2
    assert "holds a different model than this config builds" in result.stderr
    assert sorted(os.listdir(workdir / "checkpoints")) == ["2"]
    assert not (workdir / "checkpoints_corrupt").exists()


@pytest.mark.slow
def test_cli_uses_one_host_device_per_core(tmp_path, data_dir):
    env = dict(_env(), XLA_FLAGS=xla_flags(None))
    result = subprocess.run(
        [sys.executable, "-m", "jaxformer", "train", f"--config={CHAR}:runlocal",
         f"--workdir={tmp_path / 'w'}", f"--config.data.data_dir={data_dir}",
         "--config.train.num_steps=1", "--config.train.batch_size=6"],
        capture_output=True, text=True, timeout=300, cwd=ROOT, env=env)
    assert result.returncode == 0, result.stderr
    cores = len(os.sched_getaffinity(0))
    expected = max(d for d in range(1, cores + 1) if 6 % d == 0)
    assert f"{expected} devices (sharded)" in result.stdout
