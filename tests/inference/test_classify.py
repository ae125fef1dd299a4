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


@pytest.mark.slow
def test_texts_classified_in_batches_equal_each_classified_alone(workdir):
    run = load_run(str(workdir))
    texts = ["what a lovely day", "so tired", "rain " * 80, "meh", "great game tonight"]
    pairs = ["of this rain", "again", "x", "ok", "yes"]
    for second in (None, pairs):
        batched = classify.classify_texts(run, texts, second, batch_size=2)  # Last one padded.
        for i, result in enumerate(batched):
            alone = classify.classify(run, texts[i], None if second is None else second[i])
            assert result.labels == alone.labels and result.truncated == alone.truncated
            np.testing.assert_allclose(result.probabilities, alone.probabilities, atol=1e-6)
    assert [r.truncated for r in classify.classify_texts(run, texts)] == [
        False, False, True, False, False]


@pytest.mark.slow
def test_command_classifies_every_line_of_a_file(workdir, tmp_path):
    run = load_run(str(workdir))
    texts = ["what a lovely day", "so tired", "great game tonight"]
    (tmp_path / "tweets.txt").write_text("\n".join(texts) + "\n")
    result = run_cli("classify", f"--workdir={workdir}", f"--input={tmp_path / 'tweets.txt'}")
    assert result.returncode == 0, result.stderr
    rows = [line.split("\t") for line in result.stdout.splitlines()]
    expected = [classify.classify(run, text) for text in texts]
    assert [label for label, _ in rows] == [e.labels[0] for e in expected]
    assert [float(p) for _, p in rows] == pytest.approx(
        [e.probabilities[0] for e in expected], abs=1e-3)
    assert "classified 3 texts with the checkpoint at step 4" in result.stderr


def test_bad_input_files_are_one_line(tmp_path, capsys):
    from jaxformer import cli

    files = {"blank.txt": "a tweet\n\nanother\n", "tabs.txt": "one\ttwo\nthree\n",
             "three.txt": "a\tb\tc\n", "empty.txt": ""}
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    workdir = f"--workdir={tmp_path / 'run'}"  # Never read: the file is checked first.
    for args, words in [
        ((f"--input={tmp_path / 'none.txt'}",), "none.txt: no such file"),
        ((f"--input={tmp_path / 'blank.txt'}",), "blank.txt: line 2 is empty"),
        ((f"--input={tmp_path / 'tabs.txt'}",), "two sentences separated by one tab"),
        ((f"--input={tmp_path / 'three.txt'}",), "two sentences separated by one tab"),
        ((f"--input={tmp_path / 'empty.txt'}",), "empty.txt has no lines"),
        ((f"--input={tmp_path / 'tabs.txt'}", "--pair=x"), "--pair goes with --text"),
    ]:
        assert cli.main(["classify", workdir, *args]) == 2
        out, err = capsys.readouterr()
        lines = err.strip().splitlines()
        assert not out and len(lines) == 1 and words in lines[0], err
