"""The translation task end to end on the embedded Bible pair: train, resume, BLEU, translate."""

import io
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
import sacrebleu

from jaxformer import config as config_lib
from jaxformer.commands import translate as translate_command
from jaxformer.inference import seq2seq
from jaxformer.inference.workdir import load_run
from jaxformer.registry import build_data_and_task
from jaxformer.train import trainer
from tests.helpers import xla_flags

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))
BIBLE = os.path.join(ROOT, "configs/translation/bible_enes.py")
GPT = os.path.join(ROOT, "configs/gpt/shakespeare_char.py")


def bible_config(*overrides, data_dir):
    config = config_lib.load_config(BIBLE + ":runlocal")
    config_lib.apply_overrides(config, [f"data.data_dir={data_dir}", *overrides])
    return config


def run_cli(*args, stdin=None):
    env = dict(os.environ, XLA_FLAGS=xla_flags(),
               JAX_PLATFORMS="cpu")
    return subprocess.run([sys.executable, "-m", "jaxformer", *args], input=stdin,
                          capture_output=True, text=True, timeout=300, cwd=ROOT, env=env)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("tfds"))


@pytest.fixture(scope="module")
def trained(tmp_path_factory, data_dir):
    """A tiny Bible model trained for 2 steps, with BLEU evaluated at step 2."""
    workdir = str(tmp_path_factory.mktemp("bible"))
    trainer.train(bible_config(data_dir=data_dir), workdir)
    return workdir


def _metrics(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


BLEU = "eval/val_bleu/bleu"


def test_bleu_is_logged_and_equals_sacrebleu_of_the_translations(trained, data_dir):
    bleu_rows = [m for m in _metrics(trained) if BLEU in m]
    assert [m["step"] for m in bleu_rows] == [2]
    # The final evaluation used the average of the last 2 checkpoints.
    run = load_run(trained, average_last=2)
    cfg = run.config.evals.val_bleu
    sources = run.data.sources("validation")[:cfg.max_examples]
    references = run.data.references("validation")[:cfg.max_examples]
    hypotheses = seq2seq.translate_texts(
        run.task, run.params, sources, beam_size=cfg.beam_size,
        length_penalty=cfg.length_penalty, extra_length=cfg.extra_decode_length,
        batch_size=cfg.decode_batch_size)
    expected = sacrebleu.corpus_bleu(hypotheses, [references]).score
    assert bleu_rows[0][BLEU] == pytest.approx(expected)


@pytest.mark.slow
def test_resumed_run_reuses_the_saved_tokenizer(trained, data_dir, tmp_path):
    import shutil

    workdir = str(tmp_path / "resumed")
    shutil.copytree(trained, workdir)
    tokenizer_path = os.path.join(workdir, "assets", "tokenizer.model")
    with open(tokenizer_path, "rb") as f:
        saved = f.read()
    # Another tokenizer setting would train a different vocabulary if the run retrained it.
    config = bible_config("train.num_steps=4", "data.tokenizer_sentences=300",
                          data_dir=data_dir)
    last = trainer.train(config, workdir)
    with open(tokenizer_path, "rb") as f:
        assert f.read() == saved
    assert np.isfinite(last[BLEU]) and [m["step"] for m in _metrics(workdir)
                                        if BLEU in m] == [2, 4]
    data, task = build_data_and_task(config, workdir)
    assert task.tokenizer.model_proto == saved


def split_config(strategy, accum_steps, data_dir):
    return bible_config("train.num_steps=2", "evals.val_bleu.at_end=False",
                        "evals.val_bleu.every_steps=0", "train.average_last=0",
                        "train.batch_size=16", f"train.strategy={strategy}",
                        f"train.grad_accum_steps={accum_steps}", "evals.val.num_batches=-1",
                        data_dir=data_dir)


@pytest.fixture(scope="module")
def one_pass(tmp_path_factory, data_dir):
    """The last metrics of 2 steps on one data-parallel pass over each batch."""
    return trainer.train(split_config("sharded", 1, data_dir),
                         str(tmp_path_factory.mktemp("one_pass")))


@pytest.mark.slow
@pytest.mark.parametrize("strategy, accum", [("pmap", 1), ("sharded", 2), ("pmap", 2)])
def test_steps_and_evaluations_weight_tokens_exactly(strategy, accum, one_pass, tmp_path,
                                                     data_dir):
    """Devices and micro-batches hold different numbers of target tokens; weighting them by
    their counts makes every split of the batch train and evaluate as one pass over it."""
    split = trainer.train(split_config(strategy, accum, data_dir), str(tmp_path / "run"))
    for key in ("train/loss", "eval/val/loss", "eval/val/nll", "eval/val/accuracy"):
        assert split[key] == pytest.approx(one_pass[key], rel=1e-4), key


@pytest.mark.parametrize("data", [b"one\r\ntwo\r\n\r\nthree", b"one\ntwo\n\nthree\n"])
def test_source_lines_from_stdin_or_a_file_end_the_same(data, tmp_path, monkeypatch):
    path = tmp_path / "in.txt"
    path.write_bytes(data)
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))
    assert translate_command.read_lines("-") == ["one", "two", "", "three"]
    assert translate_command.read_lines(str(path)) == ["one", "two", "", "three"]


@pytest.mark.slow
def test_translate_command_keeps_input_order_and_equals_the_models_decode(trained):
    # Lines of different lengths: the command sorts them by length to batch them.
    lines = ["And God said, Let there be light: and there was light.", "", "Jesus wept.",
             "In the beginning was the Word, and the Word was with God."]
    result = run_cli("translate", f"--workdir={trained}", "--beam_size=2",
                     stdin="\n".join(lines) + "\n")
    assert result.returncode == 0, result.stderr
    assert "step 2" in result.stderr  # It says which checkpoint it used.
    outputs = result.stdout.split("\n")[:-1]
    run = load_run(trained)
    task = run.task
    expected = []
    for line in lines:  # One at a time: no batching, no reordering.
        if not line:
            expected.append("")
            continue
        ids = seq2seq.translate_ids(
            task.model, run.params, [task.encode_source(line)], beam_size=2, length_penalty=0.6,
            extra_length=50, max_length=task.max_decode_length, batch_size=1,
            bos_id=task.bos_id, eos_id=task.eos_id)[0]
        expected.append(task.tokenizer.decode(ids))
    assert outputs == expected
    averaged = run_cli("translate", f"--workdir={trained}", "--average_last=2",
                       "--beam_size=1", stdin="\n".join(lines) + "\n")
    assert averaged.returncode == 0, averaged.stderr
    assert len(averaged.stdout.split("\n")[:-1]) == 4


@pytest.mark.slow
def test_evaluate_command_appends_final_metrics(trained, tmp_path):
    import shutil

    workdir = str(tmp_path / "copy")
    shutil.copytree(trained, workdir)
    before = _metrics(workdir)
    result = run_cli("evaluate", f"--workdir={workdir}", "--average_last=2")
    assert result.returncode == 0, result.stderr
    assert "mean of the checkpoints at steps [1, 2]" in result.stdout
    after = _metrics(workdir)
    assert after[:len(before)] == before and len(after) == len(before) + 1
    # The same averaged parameters as the end of training: the same metrics.
    final = [m for m in before if BLEU in m][-1]
    for key in ("eval/val/loss", "eval/val/accuracy", BLEU):
        assert after[-1][key] == pytest.approx(final[key], rel=1e-5, abs=1e-6), key
    # Both rows say they scored the mean of two checkpoints; a plain evaluate says one.
    assert final["averaged_checkpoints"] == after[-1]["averaged_checkpoints"] == 2
    assert run_cli("evaluate", f"--workdir={workdir}").returncode == 0
    assert _metrics(workdir)[-1]["averaged_checkpoints"] == 1
    three = run_cli("evaluate", f"--workdir={workdir}", "--average_last=3")
    assert three.returncode == 0 and "only 2 readable checkpoints" in three.stderr
    empty = run_cli("evaluate", f"--workdir={tmp_path / 'none'}")
    assert empty.returncode == 2 and "no such directory" in empty.stderr


def test_translate_refuses_bad_input(trained, tmp_path):
    missing = run_cli("translate", f"--workdir={tmp_path / 'none'}", stdin="x\n")
    assert missing.returncode == 2 and "no such directory" in missing.stderr
    no_file = run_cli("translate", f"--workdir={trained}", f"--input={tmp_path / 'no.txt'}")
    assert no_file.returncode == 2 and "no such file" in no_file.stderr


def test_strip_eos():
    assert seq2seq.strip_eos(np.array([5, 6, 1, 7, 0]), eos_id=1) == [5, 6]
    assert seq2seq.strip_eos(np.array([5, 6]), eos_id=1) == [5, 6]


@pytest.mark.slow
def test_average_command_writes_a_workdir_of_the_mean_parameters(trained, tmp_path):
    out = tmp_path / "averaged"
    result = run_cli("average", f"--workdir={trained}", "--last=2", f"--out={out}")
    assert result.returncode == 0, result.stderr
    averaged, direct = load_run(str(out)), load_run(trained, average_last=2)
    assert averaged.step == 2
    assert averaged.averaged_steps == direct.averaged_steps == (1, 2)
    assert averaged.describe() == f"the mean of the checkpoints at steps [1, 2] of {trained}"
    for a, b in zip(jax.tree.leaves(averaged.params), jax.tree.leaves(direct.params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    again = run_cli("average", f"--workdir={trained}", "--last=2", f"--out={out}")
    assert again.returncode == 2 and "exists" in again.stderr
