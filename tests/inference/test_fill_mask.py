"""fill-mask: the top tokens of a BERT pretraining run's masked-LM head at each [MASK], checked
against a softmax of `task.predict` computed here, and its errors (one line, exit code 2)."""

import jax
import numpy as np
import pytest

from jaxformer import cli
from jaxformer import config as config_lib
from jaxformer.errors import UserError
from jaxformer.inference import fill_mask
from jaxformer.inference import workdir as workdir_lib
from jaxformer.inference.workdir import load_run
from tests.helpers import ROOT, without_evaluations_flags
from tests.test_cli import assert_user_error, run_cli

pytestmark = pytest.mark.slow  # Trains or launches runs.

BERT = "configs/bert/books_pretraining.py:runlocal"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """The runlocal BERT (4 steps), trained once through the command line."""
    workdir = tmp_path_factory.mktemp("bert") / "run"
    result = run_cli("train", f"--config={BERT}", f"--workdir={workdir}",
                     *without_evaluations_flags(BERT))
    assert result.returncode == 0, result.stderr
    return workdir


@pytest.fixture(scope="module")
def run(workdir):
    return load_run(str(workdir))


def expected(run, pieces):
    """Token ids by logit and float32 probabilities `[masks, vocab]` of `[MASK]`s between
    `pieces`, straight from `task.predict`."""
    tokenizer = run.data.tokenizer
    ids, positions = [tokenizer.cls_id], []
    for i, piece in enumerate(pieces):
        if i:
            positions.append(len(ids))
            ids.append(tokenizer.mask_id)
        ids += tokenizer.encode(piece)
    ids.append(tokenizer.sep_id)
    input_ids = np.zeros((1, run.config.data.seq_length), np.int32)
    input_ids[0, :len(ids)] = ids
    batch = {"input_ids": input_ids, "segment_ids": np.zeros_like(input_ids),
             "mlm_positions": np.array([positions], np.int32)}
    logits = np.asarray(run.task.predict(run.params, batch))[0]
    order = np.argsort(-logits, axis=-1, kind="stable")
    return ids, positions, order, np.asarray(jax.nn.softmax(logits, axis=-1))


def parse(line):
    """`[MASK] n: tok p | tok p | ...` -> n, tokens, probabilities."""
    head, rest = line.split(": ", 1)
    assert head.startswith("[MASK] ")
    pairs = [choice.rsplit(" ", 1) for choice in rest.split(" | ")]
    return int(head.split()[1]), [t for t, _ in pairs], [float(p) for _, p in pairs]


def test_command_prints_the_top_k_of_each_mask(workdir, run):
    result = run_cli("fill-mask", f"--workdir={workdir}", "--text=the [MASK] of the king",
                     "--top_k=4")
    assert result.returncode == 0, result.stderr
    assert "step 4" in result.stderr
    *lines, filled = result.stdout.splitlines()
    assert len(lines) == 1
    number, tokens, probabilities = parse(lines[0])
    assert number == 1 and len(tokens) == 4
    assert all(0 < p <= 1 for p in probabilities)
    assert probabilities == sorted(probabilities, reverse=True) and sum(probabilities) <= 1
    ids, [position], order, probs = expected(run, ["the ", " of the king"])
    top = order[0, :4]
    assert tokens == [run.data.tokenizer.token(i) for i in top]
    np.testing.assert_allclose(probabilities, probs[0, top], atol=5e-4 + 1e-7)
    ids[position] = top[0]
    assert filled == run.data.tokenizer.decode(ids[1:-1])


def test_structured_result_is_the_softmax_of_predict(run):
    result = fill_mask.fill_mask(run, "The [MASK] said to [MASK]s, unbelievable!", top_k=3)
    ids, positions, order, probs = expected(run, ["The ", " said to ", "s, unbelievable!"])
    assert result.input_ids == tuple(ids)
    assert [p.position for p in result.predictions] == positions
    for m, prediction in enumerate(result.predictions):
        top = order[m, :3]
        assert prediction.ids == tuple(top)
        assert prediction.tokens == tuple(run.data.tokenizer.token(i) for i in top)
        np.testing.assert_allclose(prediction.probabilities, probs[m, top], rtol=1e-5)
    for m, position in enumerate(positions):
        ids[position] = order[m, 0]
    assert result.filled_text == run.data.tokenizer.decode(ids[1:-1])


def test_mask_is_one_token_however_written(run):
    tokenizer = run.data.tokenizer
    ids, positions = fill_mask.encode(tokenizer, "King[MASK]of [MASK]", 32)
    king, of = tokenizer.encode("king"), tokenizer.encode("of")
    assert ids == [tokenizer.cls_id, *king, tokenizer.mask_id, *of, tokenizer.mask_id,
                   tokenizer.sep_id]
    assert positions == [1 + len(king), 2 + len(king) + len(of)]
    assert fill_mask.encode(tokenizer, "[MASK]", 3) == ([2, 4, 3], [1])


def cli_with_loaded_run(monkeypatch, capsys, run, *args):
    """`jaxformer fill-mask` in this process, on the loaded `run` (no second load)."""
    monkeypatch.setattr(workdir_lib, "load_run", lambda *a, **k: run)
    code = cli.main(["fill-mask", f"--workdir={run.workdir}", *args])
    out, err = capsys.readouterr()
    return code, out.splitlines(), err.strip().splitlines()


def test_two_masks_give_two_lines(monkeypatch, capsys, run):
    code, lines, _ = cli_with_loaded_run(monkeypatch, capsys, run,
                                         "--text=[MASK] said the [MASK].")
    assert code == 0 and len(lines) == 3
    assert [parse(line)[0] for line in lines[:2]] == [1, 2]
    assert all(len(parse(line)[1]) == 5 for line in lines[:2])
    assert lines[2].endswith(".")


def test_text_longer_than_the_model(monkeypatch, capsys, run):
    code, lines, err = cli_with_loaded_run(monkeypatch, capsys, run,
                                           "--text=the [MASK]" + " king" * 40)
    assert code == 2 and not lines and len(err) == 1
    assert "44 tokens" in err[0] and "data.seq_length 32" in err[0]
    with pytest.raises(UserError, match="top_k"):
        fill_mask.fill_mask(run, "the [MASK]", top_k=0)


def config_only_workdir(path, spec):
    """A workdir holding only the config.json of `spec` (what fill-mask reads first)."""
    path.mkdir()
    config = config_lib.load_config(f"{ROOT}/{spec}")
    (path / "config.json").write_text(config_lib.to_json(config), encoding="utf-8")
    return path


NOT_FILL_MASK = [
    ("configs/gpt/shakespeare_char.py:runlocal", ["'lm' run", "bert_pretraining"]),
    ("configs/bert/tweet_sentiment.py:runlocal", ["run;", "bert_pretraining"]),
    (f"{BERT},objective=ltr", ["left-to-right", "ltr"]),
]


@pytest.mark.parametrize("spec,words", NOT_FILL_MASK, ids=["gpt", "classifier", "ltr"])
def test_workdir_that_does_not_fill_masks(tmp_path, spec, words):
    workdir = config_only_workdir(tmp_path / "run", spec)
    result = run_cli("fill-mask", f"--workdir={workdir}", "--text=the [MASK]")
    assert_user_error(result, str(workdir), *words)


@pytest.mark.parametrize("args,words", [
    (["--text=the king"], ["no [MASK]"]),
    (["--text=the [mask] king"], ["no [MASK]", "capitals"]),
    (["--text=the [MASK]", "--top_k=0"], ["--top_k", "0"]),
], ids=["no-mask", "lowercase-mask", "top-k"])
def test_user_errors(workdir, args, words):
    result = run_cli("fill-mask", f"--workdir={workdir}", *args)
    assert_user_error(result, *words)


@pytest.mark.parametrize("name,words", [("none", ["none", "no such directory"]),
                                        (".", ["no config.json"])], ids=["missing", "empty"])
def test_workdir_without_a_run(tmp_path, name, words):
    result = run_cli("fill-mask", f"--workdir={tmp_path / name}", "--text=the [MASK]")
    assert_user_error(result, *words)
