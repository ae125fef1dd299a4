"""Zero-shot classification (prompt ensembling), retrieval recall and the linear probe, on
hand-made embeddings whose answers are worked out by hand."""

import jax
import ml_collections
import numpy as np
import pytest

from jaxformer.evaluators import linear_probe, retrieval, zero_shot
from jaxformer.evaluators.base import Context
from jaxformer.train.parallel import make_strategy

CLASSES = ("cat", "dog", "owl")
TEMPLATES = ("a {}.", "the {}!")
# Unnormalised prompt embeddings in 3-D: "a cat." points along x, "the cat!" along x+y, ...
PROMPTS = {"a cat.": [2, 0, 0], "the cat!": [1, 1, 0], "a dog.": [0, 3, 0],
           "the dog!": [0, 1, 1], "a owl.": [0, 0, 1], "the owl!": [1, 0, 1]}


def _normalise(x):
    x = np.asarray(x, np.float64)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


class FakeTask:
    """Towers that are look-ups: a text's embedding is its row of PROMPTS, an image is its
    own (normalised) embedding."""

    def encode_texts(self, params, tokens):
        return params["table"][tokens[:, 0]]

    def encode_images(self, params, images):
        x = images.reshape(images.shape[0], -1)
        return x / jax.numpy.linalg.norm(x, axis=-1, keepdims=True)


class FakeData:
    def __init__(self, images, labels):
        self.images, self.labels = np.asarray(images, np.float32), np.asarray(labels)
        self.texts = list(PROMPTS)

    def class_names(self, split=None):
        return CLASSES

    def templates(self, split=None):
        return TEMPLATES

    def tokenize(self, texts):
        return np.asarray([[self.texts.index(t), 0] for t in texts], np.int32)

    def eval_iter(self, *, batch_size, num_batches, split=None, process_index=0,
                  process_count=1):
        per_process = batch_size
        for start in range(0, len(self.images), per_process * process_count):
            rows = slice(start + process_index * per_process,
                         start + (process_index + 1) * per_process)
            image = np.zeros((per_process, 3), np.float32)
            label = np.full((per_process,), -1, np.int32)
            part = self.images[rows]
            image[:len(part)], label[:len(part)] = part, self.labels[rows]
            image[len(part):] = 1.0  # Padding rows: a real-looking image labelled -1.
            yield {"image": image, "label": label}


def _params():
    return {"table": np.asarray(_normalise(list(PROMPTS.values())), np.float32)}


def _context(strategy_name, images, labels, batch_size=8):
    strategy = make_strategy(strategy_name)
    return Context(task=FakeTask(), data=FakeData(images, labels), strategy=strategy,
                   batch_size=batch_size)


def test_class_embedding_is_the_normalised_mean_of_normalised_prompts():
    from jaxformer.evaluators import embeddings

    context = _context("sharded", [[1, 0, 0]], [0])
    got = embeddings.class_embeddings(context, _params(), CLASSES, TEMPLATES)
    # cat: mean of (1,0,0) and (1,1,0)/sqrt(2), normalised.
    cat = _normalise(np.add([1, 0, 0], _normalise([1, 1, 0])) / 2)
    np.testing.assert_allclose(got[0], cat, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-6)


@pytest.mark.parametrize("strategy", ["sharded", "pmap"])
def test_zero_shot_top1_with_an_ensemble_and_a_single_prompt(strategy):
    # Class embeddings (ensemble): cat ~ (0.92, 0.38, 0), dog ~ (0, 0.92, 0.38),
    # owl ~ (0.38, 0, 0.92). With the single template "a {}." they are the axes x, y, z.
    images = [[1, 0.1, 0], [0.6, 0.5, 0], [0, 1, 0.2], [0.5, 0, 1], [0.1, 0.1, 1]]
    labels = [0, 0, 1, 2, 2]
    context = _context(strategy, images, labels)
    params = context.strategy.place_state(_params())
    config = ml_collections.ConfigDict(dict(type="zero_shot", split="", num_batches=-1,
                                            top_k=(1, 5)))
    ensemble = zero_shot.build("zs", config, context).run(params)
    # By hand, every image is closest to its own class under the ensemble.
    assert ensemble == {"top1": 1.0, "top5": 1.0}
    # (0.45, 0.5, 0), a cat, is nearer the dog's single prompt (y) than the cat's (x), but
    # nearer the cat's ensemble (0.92 * 0.45 + 0.38 * 0.5 = 0.61) than the dog's (0.46).
    context = _context(strategy, [*images, [0.45, 0.5, 0]], [*labels, 0])
    config.templates = "single"
    single = zero_shot.build("zs", config, context).run(params)
    assert single["top1"] == pytest.approx(5 / 6) and single["top5"] == 1.0
    config.templates = "ensemble"
    assert zero_shot.build("zs", config, context).run(params)["top1"] == 1.0


def test_recall_at_k_on_a_known_similarity_matrix():
    # 3 images; captions 0, 1 describe image 0, caption 2 image 1, caption 3 image 2.
    similarity = np.array([[0.1, 0.9, 0.5, 0.2],
                           [0.8, 0.1, 0.3, 0.0],
                           [0.7, 0.2, 0.6, 0.4]])
    caption_image = np.array([0, 0, 1, 2])
    got = retrieval.recall_at_k(similarity, caption_image, ks=(1, 2, 3))
    # Image -> text ranks: image 0's best own caption (0.9) is first: rank 0; image 1's own
    # caption (0.3) has 0.8 above it: rank 1; image 2's (0.4) has 0.7 and 0.6 above: rank 2.
    assert [got[f"image_to_text_r{k}"] for k in (1, 2, 3)] == pytest.approx([1 / 3, 2 / 3, 1])
    # Text -> image ranks (columns): caption 0 -> image 0 scores 0.1, below 0.8 and 0.7:
    # rank 2; caption 1: 0.9 first: 0; caption 2 -> image 1 scores 0.3, below 0.5 and 0.6:
    # rank 2; caption 3 -> image 2 scores 0.4, above 0.2 and 0.0: rank 0.
    assert [got[f"text_to_image_r{k}"] for k in (1, 2, 3)] == pytest.approx([0.5, 0.5, 1.0])


def test_linear_probe_separates_separable_features_and_chooses_c_on_held_out_data():
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, size=120)
    features = np.eye(3)[labels] + rng.normal(size=(120, 3)) * 0.6  # Overlapping classes.
    cs = (1e-4, 1.0, 100.0)
    probe, c = linear_probe.fit_probe(features[:90], labels[:90], cs)
    # C = 1e-4 shrinks the weights to nothing: the probe must pick another. The choice is the
    # best on the held-out fifth of the training rows (the same seeded split).
    order = np.random.default_rng(0).permutation(90)
    fit, held = order[:72], order[72:]
    scores = [LogisticRegression(C=v, max_iter=1000).fit(features[fit], labels[fit]).score(
        features[held], labels[held]) for v in cs]
    assert c == cs[int(np.argmax(scores))] and c != 1e-4
    assert probe.score(features[90:], labels[90:]) > 0.7
