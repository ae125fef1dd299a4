"""The `squad` evaluator: exact match and F1 against torchmetrics' port of the official SQuAD
script, a hand-computed F1, the best span of each window against a brute-force search, the
best no-answer threshold against trying every threshold, and the whole evaluator over 8
devices (both strategies) against answers chosen on the host from the model's logits."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from torchmetrics.functional.text import squad as torchmetrics_squad

from jaxformer import config as config_lib
from jaxformer import registry
from jaxformer.data import question_answering_pipeline as pipeline
from jaxformer.evaluators.base import Context
from jaxformer.evaluators.squad import (
    SquadEvaluator,
    best_threshold,
    f1_score,
    normalize_answer,
    question_scores,
)
from jaxformer.inference.answer import choose
from jaxformer.tasks.question_answering import best_spans
from jaxformer.train import parallel
from tests.data.test_squad import write_files

PAIRS = [  # (prediction, gold answers)
    ("the heaven and the earth", ["the heaven and the earth"]),
    ("Heaven and Earth.", ["the heaven and the earth"]),
    ("darkness was upon", ["darkness"]),
    ("Spirit", ["the Spirit of God", "Spirit of God"]),
    ("an Israelite, of the tribe", ["a man of the tribe of Judah", "Israelite"]),
    ("Horeb", ["Sinai"]),
    ("", ["Moab"]),
    ("the the flock flock", ["flock of Jethro"]),
    ("1,000 (about)", ["about 1000"]),
]


def test_scores_match_the_official_script_port():
    for prediction, golds in PAIRS:
        reference = torchmetrics_squad(
            [{"prediction_text": prediction, "id": "q"}],
            [{"answers": {"text": golds, "answer_start": [0] * len(golds)}, "id": "q"}])
        exact, f1 = question_scores(prediction, golds)
        assert 100 * exact == pytest.approx(float(reference["exact_match"]), abs=1e-4)
        assert 100 * f1 == pytest.approx(float(reference["f1"]), abs=1e-4), prediction


def test_hand_computed_f1():
    # Normalised: "cat sat on mat" against "cat on mat": 3 shared of 4 and 3 words.
    assert normalize_answer("The cat sat on the mat!") == "cat sat on mat"
    assert f1_score("The cat sat on the mat!", "a cat on a mat") == pytest.approx(6 / 7)
    assert question_scores("", []) == (1.0, 1.0)  # No gold answer: answering nothing is right.
    assert question_scores("Moab", []) == (0.0, 0.0)


def brute_force_spans(logits, context, max_length):
    rows, length, _ = logits.shape
    found = {"first": [], "last": [], "score": [], "null": []}
    for r in range(rows):
        best = (-np.inf, 0, 0)
        for i in range(length):
            for j in range(i, min(i + max_length, length)):
                if context[r, i] == 2 and context[r, j] >= 1:
                    score = logits[r, i, 0] + logits[r, j, 1]
                    if score > best[0]:
                        best = (score, i, j)
        found["score"].append(best[0])
        found["first"].append(best[1])
        found["last"].append(best[2])
        found["null"].append(logits[r, 0, 0] + logits[r, 0, 1])
    return {k: np.asarray(v) for k, v in found.items()}


def test_best_spans_match_a_brute_force_search():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(6, 20, 2)).astype(np.float32)
    context = rng.integers(0, 3, (6, 20))
    context[:, 0] = 0
    context[5] = 0  # No context: no valid span.
    for max_length in (1, 3, 30):
        got = jax.device_get(best_spans(jnp.asarray(logits), jnp.asarray(context), max_length))
        expected = brute_force_spans(logits, context, max_length)
        np.testing.assert_allclose(got["score"], expected["score"], rtol=1e-6)
        np.testing.assert_allclose(got["null"], expected["null"], rtol=1e-6)
        valid = np.isfinite(expected["score"])
        for key in ("first", "last"):
            np.testing.assert_array_equal(got[key][valid], expected[key][valid])
        assert not np.isfinite(got["score"][5])


def test_best_threshold_matches_trying_every_threshold():
    rng = np.random.default_rng(1)
    for _ in range(20):
        n = rng.integers(1, 12)
        answered, abstained = rng.random(n), (rng.random(n) < 0.5).astype(float)
        margin = np.round(rng.normal(size=n), 1)  # Ties.
        margin[rng.random(n) < 0.2] = np.inf
        best, threshold = best_threshold(answered, abstained, margin)

        def mean_at(t):
            return np.where(margin <= t, answered, abstained).mean()

        candidates = [-np.inf, *margin[np.isfinite(margin)]]
        assert best == pytest.approx(max(mean_at(t) for t in candidates))
        assert mean_at(threshold) == pytest.approx(best) and np.isfinite(threshold)


@pytest.fixture(scope="module", params=["1.1", "2.0"])
def run(request, tmp_path_factory):
    """Data and a randomly initialised task of the runlocal SQuAD config on the hand-written
    files (windows of 32 tokens, many per context)."""
    folder = write_files(tmp_path_factory.mktemp("squad") / request.param, request.param)
    config = config_lib.load_config(f"configs/bert/squad.py:runlocal,path={folder},"
                                    f"version={request.param}")
    config.unlock()
    config.data.update(seq_length=32, doc_stride=8, max_query_length=12)
    data, task = registry.build_data_and_task(config, None)
    params = task.init(jax.random.key(0))
    if task.no_answer:  # A threshold that some questions' margins exceed and others not.
        answers, _ = host_metrics(data, task, params, no_answer=False)
        task.null_threshold = float(np.median([a.null_score - a.score for a in answers]))
    return data, task, params


def host_metrics(data, task, params, *, windows_seen=None, no_answer=None):
    """The answers and mean (exact, F1) from the model's logits of the first `windows_seen`
    windows (None: all), spans found by brute force."""
    windows = data.eval["validation"]
    rows = pipeline.SpanRows(windows, task.seq_length, (2, 3))
    batch = rows.make(range(windows_seen or len(windows)))
    logits = np.asarray(task.predict(params, batch))
    spans = brute_force_spans(logits, batch["context"], task.max_answer_length)
    questions = data.questions["validation"]
    answers = choose(data.eval["validation"], questions.contexts, spans,
                     no_answer=task.no_answer if no_answer is None else no_answer,
                     null_threshold=task.null_threshold)
    golds = [[t for _, t in g] for g in questions.answers[:len(answers)]]
    scores = np.asarray([question_scores(a.text, g) for a, g in zip(answers, golds, strict=True)])
    return answers, scores.mean(0)


@pytest.mark.parametrize("strategy", ["sharded", "pmap"])
def test_evaluator_over_eight_devices_matches_the_host(run, strategy):
    data, task, params = run
    windows = data.eval["validation"]
    assert len(jax.devices()) == 8 and len(windows) > 32  # Several batches of 16.
    placed = parallel.make_strategy(strategy)
    context = Context(task=task, data=data, strategy=placed, batch_size=16)
    placed_params = placed.place_state(params)
    for num_batches in (-1, 2):
        evaluator = SquadEvaluator("validation", ml_collections.ConfigDict(
            dict(type="squad", num_batches=num_batches)), context)
        got = evaluator.run(placed_params)
        seen = len(windows) if num_batches == -1 else int(np.searchsorted(
            windows.question, windows.question[32]))
        answers, (exact, f1) = host_metrics(data, task, params, windows_seen=seen)
        assert got["exact"] == pytest.approx(exact) and got["f1"] == pytest.approx(f1)
        if task.no_answer:
            assert {a.text == "" for a in answers} == {True, False}  # Both kinds occur.
            assert set(got) >= {"has_answer_f1", "no_answer_exact", "best_f1"}
            assert got["best_f1"] >= got["f1"]
        if num_batches == -1 and not task.no_answer:  # v1.1: the official scores too.
            questions = data.questions["validation"]
            reference = torchmetrics_squad(
                [{"prediction_text": a.text, "id": i} for a, i in zip(answers, questions.ids,
                                                                      strict=True)],
                [{"answers": {"text": [t for _, t in g], "answer_start": [s for s, _ in g]},
                  "id": i} for g, i in zip(questions.answers, questions.ids, strict=True)])
            assert 100 * got["f1"] == pytest.approx(float(reference["f1"]), abs=1e-3)
