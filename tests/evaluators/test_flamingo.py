"""The Flamingo-style model's evaluators: few-shot classification scores against the model's
full forward pass on each whole sequence, the shots and the padding, accuracy and baselines
under both strategies; CIDEr-D and BLEU-4 on captions worked out by hand."""


import jax
import ml_collections
import numpy as np
import pytest

from configs.flamingo import emoji as flamingo_config
from jaxformer.evaluators import captioning, few_shot
from jaxformer.evaluators.base import Context
from jaxformer.registry import build_data_and_task
from jaxformer.train.parallel import make_strategy
from tests.models.test_flamingo import open_gates

pytestmark = pytest.mark.slow  # Trains or launches runs.

SPLIT = "heldout_groups"


@pytest.fixture(scope="module")
def setup():
    """The runlocal data (a tokenizer trained here) and model, random, gates open (0.7)."""
    config = flamingo_config.get_config("runlocal")
    data, task = build_data_and_task(config, None)
    batch = task.dummy_batch(1)
    params = jax.jit(task.model.init)(jax.random.key(0), *task.model_inputs(batch))["params"]
    return data, task, jax.device_get(open_gates(params))


@pytest.fixture(scope="module")
def scores_fn(setup):
    _, task, _ = setup
    return jax.jit(lambda params, batch: few_shot.class_scores(task.model, params, batch))


@pytest.fixture(scope="module")
def forward(setup):
    """The model's full forward pass (images and tokens -> logits), jitted."""
    _, task, _ = setup
    return jax.jit(lambda params, images, tokens: task.model.apply({"params": params}, images,
                                                                    tokens))


def evaluator(setup, strategy="sharded", **options):
    data, task, _ = setup
    config = ml_collections.ConfigDict({"type": "few_shot", "split": SPLIT, "shots": (0, 1),
                                        **options})
    context = Context(task=task, data=data, strategy=make_strategy(strategy), batch_size=8)
    return few_shot.build("fs", config, context)


def brute_force_scores(setup, forward, query, k, seed=0):
    """Each class's score from `model.apply` on the whole sequence: shot chunks, then the query
    chunk with the class's caption; log-softmax summed after the query's <image>."""
    data, _, params = setup
    fs = data.few_shot(SPLIT)
    shots = fs.shots(query, k, seed)
    prefix = [t for i in shots for t in data.chunk_ids(fs.caption(int(fs.support[i]["label"])))]
    images = np.stack([data.eval_image(fs.support[i]) for i in shots]
                      + [data.eval_image(fs.queries[query])])[None]
    scores = []
    for c in range(len(fs.class_names)):
        ids = prefix + data.chunk_ids(fs.caption(c))
        logits = forward(params, images, np.asarray([ids], np.int32))[0]
        log_probs = jax.nn.log_softmax(np.asarray(logits, np.float64), axis=-1)
        scores.append(sum(float(log_probs[t - 1, ids[t]])
                          for t in range(len(prefix) + 1, len(ids))))
    return np.asarray(scores)


def batch_scores(setup, scores_fn, ev, k, queries, length=None):
    """`few_shot.class_scores` (jitted) of `ev`'s batch of `queries` with k shots."""
    return np.asarray(scores_fn(setup[2], ev.batch(k, queries, length)))


@pytest.mark.parametrize("k", [0, 1])
def test_scores_are_the_full_forward_pass_log_likelihoods(setup, scores_fn, forward, k):
    ev = evaluator(setup)
    queries = [0, 17, 101]
    got = batch_scores(setup, scores_fn, ev, k, queries)
    expected = np.stack([brute_force_scores(setup, forward, q, k) for q in queries])
    np.testing.assert_allclose(got, expected, atol=2e-4, rtol=1e-5)
    assert (expected < 0).all() and np.ptp(expected, axis=1).min() > 1e-3  # Classes differ.
    # The images matter (the gates are open): the same tokens, another query image.
    other = ev.batch(k, queries)
    other["images"][:, k] = other["images"][::-1, k]
    moved = np.asarray(scores_fn(setup[2], other))
    assert np.abs(moved - got).max() > 1e-4


def test_zero_shots_packs_the_query_chunks_alone(setup):
    data, _, _ = setup
    ev = evaluator(setup)
    fs = data.few_shot(SPLIT)
    batch = ev.batch(0, [5])
    assert batch["images"].shape == (1, 1, *data.image_shape)
    np.testing.assert_array_equal(batch["images"][0, 0], data.eval_image(fs.queries[5]))
    at = 0
    for c in range(len(fs.class_names)):
        ids = data.chunk_ids(fs.caption(c))
        assert ids[0] == data.media_id and ids[-1] == data.end_of_chunk_id
        # The row holds each chunk but its last token, in its own segment.
        np.testing.assert_array_equal(batch["inputs"][0, at:at + len(ids) - 1], ids[:-1])
        assert (batch["segments"][0, at:at + len(ids) - 1] == c + 1).all()
        # Every token after <image> is scored, <|endofchunk|> included, each from the logits
        # of the row index before it.
        np.testing.assert_array_equal(batch["targets"][0, c, :len(ids) - 1], ids[1:])
        np.testing.assert_array_equal(batch["logits_at"][0, c, :len(ids) - 1],
                                      at + np.arange(len(ids) - 1))
        np.testing.assert_array_equal(np.flatnonzero(batch["weights"][0, c]),
                                      np.arange(len(ids) - 1))
        at += len(ids) - 1
    assert (batch["inputs"][0, at:] == few_shot.PAD_ID).all()
    assert (batch["segments"][0, at:] == len(fs.class_names) + 1).all()
    assert batch["label"][0] == int(fs.queries[5]["label"])


def test_shots_are_other_examples_with_their_class_captions(setup):
    data, _, _ = setup
    fs = data.few_shot(SPLIT)
    assert fs.support is fs.queries  # The held-out groups draw shots from the queries.
    ev = evaluator(setup)
    for query in range(len(fs.queries)):
        shots, prefix = ev.sequences(4, query)
        assert query not in shots and len(set(shots)) == 4
        assert prefix == [t for i in shots
                          for t in data.chunk_ids(fs.caption(int(fs.support[i]["label"])))]
    shots, prefix = ev.sequences(1, 9)
    batch = ev.batch(1, [9])
    # The shot's chunk comes first, in segment 0, then the classes' chunks.
    np.testing.assert_array_equal(batch["inputs"][0, :len(prefix)], prefix)
    assert (batch["segments"][0, :len(prefix)] == 0).all()
    assert batch["segments"][0, len(prefix)] == 1
    np.testing.assert_array_equal(batch["images"][0, 0], data.eval_image(fs.support[shots[0]]))
    np.testing.assert_array_equal(batch["images"][0, 1], data.eval_image(fs.queries[9]))
    # Another seed, other shots.
    assert [evaluator(setup, seed=s).sequences(4, 9)[0] for s in (0, 1)] != [shots] * 2


def test_padding_changes_no_score(setup, scores_fn):
    ev = evaluator(setup)
    base = batch_scores(setup, scores_fn, ev, 1, [3, 4])
    longer = batch_scores(setup, scores_fn, ev, 1, [3, 4], length=ev.lengths[1] + 5)
    np.testing.assert_allclose(longer, base, atol=1e-5)
    # Padding rows and other companions in the batch change nothing either.
    mixed = batch_scores(setup, scores_fn, ev, 1, [-1, 3, 50, 4])
    np.testing.assert_allclose(mixed[[1, 3]], base, atol=1e-5)


@pytest.mark.parametrize("strategy", ["sharded", "pmap"])
def test_run_reports_the_accuracy_of_the_argmax_and_the_baselines(setup, scores_fn, strategy):
    data, _, params = setup
    ev = evaluator(setup, strategy, num_queries=20)
    # 20 queries drawn with the seed (the split is sorted by class: its first 20 are mammals).
    queries = [int(q) for q in ev.query_indices]
    assert len(set(queries)) == 20 and queries == sorted(queries) and queries[-1] >= 20
    metrics = ev.run(ev.context.strategy.place_state(params))
    labels = np.asarray([int(data.few_shot(SPLIT).queries[q]["label"]) for q in queries])
    assert len(set(labels)) > 1
    expected = {}
    for k in (0, 1):
        scores = batch_scores(setup, scores_fn, ev, k, queries)
        expected[f"top1_{k}shot"] = float((scores.argmax(1) == labels).mean())
        # Calibrated: less the scores after the same shots with a blank query image.
        blank = ev.batch(k, queries)
        blank["images"][:, k] = 0.0
        prior = np.asarray(scores_fn(params, blank))
        assert np.abs(prior - scores).max() > 1e-3  # The query image matters.
        expected[f"calibrated_top1_{k}shot"] = float(((scores - prior).argmax(1)
                                                      == labels).mean())
    assert metrics == pytest.approx({**expected, "chance": 0.2,
                                     "majority": np.bincount(labels).max() / 20})
    assert set(metrics) == {"top1_0shot", "top1_1shot", "calibrated_top1_0shot",
                            "calibrated_top1_1shot", "chance", "majority"}


def test_too_many_shots_for_the_block_and_bad_options_are_refused(setup):
    with pytest.raises(ValueError, match="block_size 32"):
        evaluator(setup, shots=(0, 8))
    with pytest.raises(ValueError, match="distinct counts"):
        evaluator(setup, shots=(1, 1))
    with pytest.raises(ValueError, match="unknown split"):
        evaluator(setup, split="nope")


# CIDEr-D and BLEU-4.


def test_caption_shots_are_other_examples():
    for index in range(10):
        shots = captioning.shot_indices(10, index, 4, seed=0)
        assert index not in shots and len(set(shots)) == 4 and max(shots) < 10
    assert captioning.shot_indices(10, 3, 4, 0) == captioning.shot_indices(10, 3, 4, 0)
    with pytest.raises(ValueError, match="9 other examples"):
        captioning.shot_indices(10, 0, 10, 0)
