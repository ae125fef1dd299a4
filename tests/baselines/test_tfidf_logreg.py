"""The TF-IDF + logistic regression baseline and `jaxformer baseline`."""

import json
import os

import numpy as np
import pytest

from jaxformer.baselines import tfidf_logreg
from jaxformer.cli import main
from jaxformer.data.text_classification_pipeline import Texts
from jaxformer.evaluators.classification import macro_f1
from tests.helpers import ROOT

TWEETS = os.path.join(ROOT, "configs", "bert", "tweet_sentiment.py")
WORDS = {0: ["awful", "bad", "sad", "terrible"], 1: ["table", "chair", "today", "blue"],
         2: ["great", "happy", "lovely", "good"]}


def corpus(seed: int, count: int, noise: float = 0.0) -> Texts:
    """Texts of three words of their class, a share `noise` of labels drawn at random."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, count)
    texts = [" ".join(rng.choice(WORDS[int(y)], 3)) + " the a" for y in labels]
    flip = rng.random(count) < noise
    labels[flip] = rng.integers(0, 3, int(flip.sum()))
    return Texts(texts, None, labels.tolist())


def test_separable_texts_are_classified_exactly():
    chosen, scores = tfidf_logreg.fit_and_score(
        corpus(0, 120), {"validation": corpus(1, 60), "test": corpus(2, 60)}, "validation")
    assert chosen in tfidf_logreg.C_GRID
    assert scores == {"validation": {"top1": 1.0, "macro_f1": 1.0},
                      "test": {"top1": 1.0, "macro_f1": 1.0}}


def test_scores_agree_with_the_evaluators_macro_f1():
    test = corpus(4, 200, noise=0.3)
    _, scores = tfidf_logreg.fit_and_score(corpus(3, 300, noise=0.3),
                                           {"validation": corpus(5, 100), "test": test},
                                           "validation")
    # The predictions of the chosen model, and their confusion matrix counted by hand.
    assert 0.5 < scores["test"]["top1"] < 1.0
    predictions = _predictions(corpus(3, 300, noise=0.3), test)
    confusion = np.zeros((3, 3))
    np.add.at(confusion, (np.asarray(test.labels), predictions), 1)
    assert scores["test"]["top1"] == pytest.approx(np.trace(confusion) / 200)
    assert scores["test"]["macro_f1"] == pytest.approx(macro_f1(confusion))


def _predictions(train: Texts, test: Texts) -> np.ndarray:
    """The test predictions of the model `fit_and_score` keeps, whichever C it chose."""
    chosen, _ = tfidf_logreg.fit_and_score(train, {"validation": corpus(5, 100)}, "validation")
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    vectorizer = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True)
    model = LogisticRegression(C=chosen, max_iter=2000).fit(
        vectorizer.fit_transform(train.first), train.labels)
    return model.predict(vectorizer.transform(test.first))


def test_command_scores_the_configs_evaluator_splits(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    workdir = tmp_path / "tfidf"
    assert main(["baseline", f"--config={TWEETS}:train_examples=600,runlocal",
                 f"--workdir={workdir}"]) == 0
    (record,) = [json.loads(line) for line in (workdir / "metrics.jsonl").open()]
    assert set(record) == {"step", "baseline/C", "eval/validation/top1",
                           "eval/validation/macro_f1", "eval/test/top1", "eval/test/macro_f1"}
    assert record["baseline/C"] in tfidf_logreg.C_GRID
    # Three classes of about a third each: a bag of words does better than chance.
    assert 0.45 < record["eval/test/top1"] < 1.0
    assert 0.0 < record["eval/test/macro_f1"] <= record["eval/test/top1"] + 0.1
    assert json.loads((workdir / "config.json").read_text())["data"]["train_examples"] == 600
    assert "eval/test/top1" in capsys.readouterr().out


@pytest.mark.parametrize("args,message", [
    ([f"--config={os.path.join(ROOT, 'configs/gpt/shakespeare_char.py')}:runlocal"],
     "task 'lm' is not text_classification"),
    ([f"--config={TWEETS}:runlocal,train_examples=300", "--select_on=dev"],
     "no split dev; available: validation, test"),
    ([f"--config={TWEETS}:runlocal,train_examples=0"], "train_examples"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, monkeypatch, capsys, args, message):
    monkeypatch.chdir(ROOT)
    assert main(["baseline", *args, f"--workdir={tmp_path / 'w'}"]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err
    assert not (tmp_path / "w").exists()  # Nothing made before the config is known good.


def test_a_workdir_of_another_run_is_refused_and_a_refit_replaces_its_figures(
        tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    workdir = tmp_path / "tfidf"
    args = ["baseline", f"--config={TWEETS}:train_examples=300,runlocal", f"--workdir={workdir}"]
    assert main(args) == 0
    first = (workdir / "metrics.jsonl").read_text()
    assert main(args) == 0  # The same config again: one record, the same figures.
    assert (workdir / "metrics.jsonl").read_text().count("\n") == 1
    assert json.loads((workdir / "metrics.jsonl").read_text())["eval/test/top1"] == (
        json.loads(first)["eval/test/top1"])
    config = (workdir / "config.json").read_text()
    capsys.readouterr()
    assert main([*args[:1], f"--config={TWEETS}:train_examples=400,runlocal", args[2]]) == 2
    assert "holds another run" in capsys.readouterr().err
    assert (workdir / "config.json").read_text() == config
    assert (workdir / "metrics.jsonl").read_text().count("\n") == 1
