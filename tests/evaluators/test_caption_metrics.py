"""Caption metrics: CIDEr-D and BLEU-4 by hand, and equal to the COCO caption evaluation's
reference implementation (pycocoevalcap) on random corpora."""

import math

import numpy as np
import pytest
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider

from jaxformer.evaluators import caption_metrics, captioning

WORDS = "a the red blue cat dog on sits table car runs fast two of".split()


def _corpus(seed: int, images: int) -> tuple[list[str], list[list[str]]]:
    """1 to 5 random references of 0 to 9 words (repeats likely) per image; its hypothesis a
    random caption, or one of its references with a word changed (long matches)."""
    rng = np.random.default_rng(seed)

    def caption() -> list[str]:
        return list(rng.choice(WORDS, rng.integers(0, 10)))

    hypotheses, references = [], []
    for _ in range(images):
        refs = [caption() for _ in range(rng.integers(1, 6))]
        words = list(refs[0]) if rng.random() < 0.5 else caption()
        if words:
            words[rng.integers(len(words))] = str(rng.choice(WORDS))
        hypotheses.append(" ".join(words))
        references.append([" ".join(r) for r in refs])
    return hypotheses, references


@pytest.mark.parametrize("seed", range(6))
def test_equal_to_the_reference_implementation(seed):
    hypotheses, references = _corpus(seed, images=1 + 7 * seed)
    gts = dict(enumerate(references))
    res = {i: [h] for i, h in enumerate(hypotheses)}
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    cider, _ = Cider().compute_score(gts, res)
    assert caption_metrics.bleu4(hypotheses, references) == pytest.approx(bleu[3], rel=1e-9,
                                                                          abs=1e-15)
    assert caption_metrics.cider_d(hypotheses, references) == pytest.approx(cider, rel=1e-9,
                                                                            abs=1e-12)


def test_normalisation_lowercases_and_drops_punctuation():
    assert captioning.normalize("  A T-shirt, folded!  ") == "a t shirt folded"


def test_identical_captions_score_bleu_1_and_cider_10():
    refs = ["a red apple on a table", "the blue car drives fast", "two cats sleep on a sofa"]
    got = captioning.scores(refs, [[r] for r in refs])
    # Every n-gram order matches exactly (cosine 1, no length penalty), times 10.
    assert got == pytest.approx({"cider": 10.0, "bleu4": 1.0}, abs=1e-6)


def test_disjoint_captions_score_0():
    got = captioning.scores(["green frog jumps high", "x y z w"],
                            [["a red apple on a table"], ["the blue car drives fast"]])
    assert got == pytest.approx({"cider": 0.0, "bleu4": 0.0}, abs=1e-6)


def test_bleu4_by_hand():
    # Precisions 5/6, 3/5, 2/4, 1/3; same length, no brevity penalty.
    got = captioning.scores(["The cat sat on the mat."], [["the cat sat on a mat"]])
    assert got["bleu4"] == pytest.approx((5 / 6 * 3 / 5 * 2 / 4 * 1 / 3) ** 0.25, abs=1e-6)


def test_cider_d_by_hand():
    # Two images, so every n-gram (each in one image's references) has idf log 2.
    # Image 0, exact: cosine 1 for unigrams and bigrams, 0 for 3- and 4-grams -> 10 * 2 / 4.
    # Image 1, "blue" against "blue car": unigram cosine 1/sqrt(2), no bigram, and a length
    # penalty exp(-1 / (2 * 6^2)) (one bigram fewer) -> 10 * (1/sqrt(2)) * penalty / 4.
    got = captioning.scores(["Red apple.", "blue"], [["red apple"], ["blue car"]])
    image1 = 10 * math.exp(-1 / 72) / math.sqrt(2) / 4
    assert got["cider"] == pytest.approx((5.0 + image1) / 2, abs=1e-6)


def test_several_references_and_an_empty_hypothesis_by_hand():
    # "a" is in both images' references: idf 0. Image 1 matches one of its two references on
    # "dog" and "a dog" (cosine 1), the other on nothing: 10 * (1 + 1 + 0 + 0) / 4 / 2 = 2.5.
    # Image 0's empty caption scores 0.
    got = captioning.scores(["", "A dog"], [["a cat", "a kitten"], ["a dog", "a puppy"]])
    assert got["cider"] == pytest.approx(1.25, abs=1e-6)
    # BLEU: 1- and 2-gram precisions 1, no 3- or 4-grams at all (the scorer's smoothing makes
    # each 1e-15 / 1e-9), 2 words for the closest reference lengths' 4: brevity penalty e^-1.
    assert got["bleu4"] == pytest.approx(math.exp(-1) * (1e-6 * 1e-6) ** 0.25, rel=1e-6)
    with pytest.raises(ValueError, match="reference"):
        captioning.scores(["a"], [[]])
