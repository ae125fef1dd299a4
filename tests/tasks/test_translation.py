"""The translation task end to end on the embedded Bible pair: train, resume, BLEU, translate."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import sacrebleu

from jaxformer import config as config_lib
from jaxformer import translate
from jaxformer.train import trainer

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))
BIBLE = os.path.join(ROOT, "configs/translation/bible_enes.py")
GPT = os.path.join(ROOT, "configs/gpt/shakespeare_char.py")


def bible_config(*overrides, data_dir):
    config = config_lib.load_config(BIBLE + ":runlocal")
    config_lib.apply_overrides(config, [f"data.data_dir={data_dir}", *overrides])
    return config


def run_cli(*args, stdin=None):
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8",
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


def test_bleu_is_logged_and_equals_sacrebleu_of_the_translations(trained, data_dir):
    bleu_rows = [m for m in _metrics(trained) if "eval/bleu" in m]
    assert [m["step"] for m in bleu_rows] == [2]
    config = bible_config(data_dir=data_dir)
    data, task = trainer.build(config, trained)
    from jaxformer.sampling import average_params

    # The final evaluation used the average of the last 2 checkpoints.
    params = average_params(trained, config, task, 2)
    sources = data.sources("validation")[:config.task.bleu_examples]
    references = data.references("validation")[:config.task.bleu_examples]
    hypotheses = task.translate(params, sources)
    expected = sacrebleu.corpus_bleu(hypotheses, [references]).score
    assert bleu_rows[0]["eval/bleu"] == pytest.approx(expected)


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
    assert np.isfinite(last["eval/bleu"]) and [m["step"] for m in _metrics(workdir)
                                               if "eval/bleu" in m] == [2, 4]
    data, task = trainer.build(config, workdir)
    assert task.tokenizer.model_proto == saved


@pytest.mark.parametrize("strategy, accum", [("pmap", 1), ("sharded", 2), ("pmap", 2)])
def test_steps_and_evaluations_weight_tokens_exactly(strategy, accum, tmp_path, data_dir):
    """Devices and micro-batches hold different numbers of target tokens; weighting them by
    their counts makes every split of the batch train and evaluate as one pass over it."""
    results = []
    for name, steps in (("sharded", 1), (strategy, accum)):
        config = bible_config("train.num_steps=2", "task.bleu_every=0", "train.average_last=0",
                              "train.batch_size=16", f"train.strategy={name}",
                              f"train.grad_accum_steps={steps}", "train.eval_batches=-1",
                              data_dir=data_dir)
        results.append(trainer.train(config, str(tmp_path / f"{name}{steps}")))
    for key in ("train/loss", "eval/loss", "eval/nll", "eval/accuracy"):
        assert results[0][key] == pytest.approx(results[1][key], rel=1e-4), key


def test_translate_command(trained):
    lines = "In the beginning was the Word.\n\nAnd God said, Let there be light.\n"
    result = run_cli("translate", f"--workdir={trained}", stdin=lines)
    assert result.returncode == 0, result.stderr
    outputs = result.stdout.split("\n")[:-1]
    assert len(outputs) == 3 and outputs[1] == ""
    averaged = run_cli("translate", f"--workdir={trained}", "--average_last=2",
                       "--beam_size=1", stdin=lines)
    assert averaged.returncode == 0, averaged.stderr
    assert len(averaged.stdout.split("\n")[:-1]) == 3


def test_evaluate_command_appends_final_metrics(trained, tmp_path):
    import shutil

    workdir = str(tmp_path / "copy")
    shutil.copytree(trained, workdir)
    before = _metrics(workdir)
    result = run_cli("evaluate", f"--workdir={workdir}", "--average_last=2")
    assert result.returncode == 0, result.stderr
    assert "average of the checkpoints at steps [1, 2]" in result.stdout
    after = _metrics(workdir)
    assert after[:len(before)] == before and len(after) == len(before) + 1
    # The same averaged parameters as the end of training: the same metrics.
    final = [m for m in before if "eval/bleu" in m][-1]
    for key in ("eval/loss", "eval/accuracy", "eval/bleu"):
        assert after[-1][key] == pytest.approx(final[key], rel=1e-5, abs=1e-6), key
    empty = run_cli("evaluate", f"--workdir={tmp_path / 'none'}")
    assert empty.returncode == 2 and "not a training workdir" in empty.stderr


def test_translate_refuses_bad_input(trained, tmp_path):
    missing = run_cli("translate", f"--workdir={tmp_path / 'none'}", stdin="x\n")
    assert missing.returncode == 2 and "not a training workdir" in missing.stderr
    no_file = run_cli("translate", f"--workdir={trained}", f"--input={tmp_path / 'no.txt'}")
    assert no_file.returncode == 2 and "no such file" in no_file.stderr


def test_strip_eos_and_bleu():
    assert translate.strip_eos(np.array([5, 6, 1, 7, 0]), eos_id=1) == [5, 6]
    assert translate.strip_eos(np.array([5, 6]), eos_id=1) == [5, 6]
    assert translate.bleu(["the cat sat on the mat"],
                          ["the cat sat on the mat"]) == pytest.approx(100.0)
    with pytest.raises(ValueError, match="1 hypotheses for 2 references"):
        translate.bleu(["a"], ["a", "b"])
