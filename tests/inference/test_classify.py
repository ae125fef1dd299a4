"""classify: the class probabilities of a fine-tuned text classification run, checked against
a softmax of `task.predict` on the text encoded here, and its errors (one line, exit code 2)."""

import ml_collections
import numpy as np
import pytest

from jaxformer.errors import UserError
from jaxformer.inference import classify
from jaxformer.inference.workdir import load_run
from tests.test_cli import assert_user_error, run_cli

TWEETS = "configs/bert/tweet_sentiment.py:runlocal"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """The runlocal tweet-sentiment fine-tuning from scratch (4 steps), trained once through
    the command line."""
    workdir = tmp_path_factory.mktemp("tweets") / "run"
    result = run_cli("train", f"--config={TWEETS}", f"--workdir={workdir}")
    assert result.returncode == 0, result.stderr
    return workdir


def test_only_text_classification_runs_classify():
    config = ml_collections.ConfigDict({"task": {"name": "token_classification"}})
    with pytest.raises(UserError, match="needs a text classification"):
        classify.check_config(config, "runs/ner")


@pytest.mark.slow
def test_probabilities_are_the_softmax_of_the_logits(workdir):
    run = load_run(str(workdir))
    tokenizer, seq_length = run.data.tokenizer, run.task.seq_length
    for text, pair in [("what a lovely day", None), ("so tired", "of this rain")]:
        result = classify.classify(run, text, pair)
        ids = [tokenizer.cls_id, *tokenizer.encode(text), tokenizer.sep_id]
        second = [] if pair is None else [*tokenizer.encode(pair), tokenizer.sep_id]
        input_ids = np.zeros((1, seq_length), np.int32)
        input_ids[0, :len(ids) + len(second)] = ids + second
        segment_ids = np.zeros_like(input_ids)
        segment_ids[0, len(ids):len(ids) + len(second)] = 1
        logits = np.asarray(run.task.predict(run.params, {"input_ids": input_ids,
                                                          "segment_ids": segment_ids}),
                            np.float64)[0]
        want = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
        order = np.argsort(-want)
        assert result.labels == tuple(run.data.class_names[i] for i in order)
        np.testing.assert_allclose(result.probabilities, want[order], rtol=1e-6)
        assert not result.truncated
    assert classify.classify(run, "rain " * seq_length).truncated


@pytest.mark.slow
def test_command_prints_every_class(workdir):
    result = run_cli("classify", f"--workdir={workdir}", "--text=what a lovely day")
    assert result.returncode == 0, result.stderr
    rows = [line.split("\t") for line in result.stdout.splitlines()]
    assert sorted(label for label, _ in rows) == ["negative", "neutral", "positive"]
    probabilities = [float(p) for _, p in rows]
    assert probabilities == sorted(probabilities, reverse=True)
    assert sum(probabilities) == pytest.approx(1.0, abs=2e-3)
    assert "classified with the checkpoint at step 4" in result.stderr
    assert_user_error(run_cli("classify", f"--workdir={workdir}", "--text= "),
                      "the text to classify is empty")
