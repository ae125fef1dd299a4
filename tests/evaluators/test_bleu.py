"""Corpus BLEU against scores computed by hand from the definition (Papineni et al. 2002)."""

import math

import pytest

from jaxformer.inference.seq2seq import bleu


def test_bleu_of_one_substitution_equals_the_hand_computed_score():
    # 6 words, the 5th differs: n-gram precisions 5/6, 3/5, 2/4, 1/3; equal lengths (BP 1).
    hypothesis = "the quick brown fox jumps high"
    reference = "the quick brown fox leaps high"
    expected = 100 * (5 / 6 * 3 / 5 * 2 / 4 * 1 / 3) ** 0.25
    assert bleu([hypothesis], [reference]) == pytest.approx(expected, abs=1e-4)


def test_brevity_penalty_and_corpus_level_counts():
    # A 4-word prefix of a 6-word reference: every precision 1, BP exp(1 - 6/4).
    assert bleu(["the quick brown fox"], ["the quick brown fox jumps high"]) == pytest.approx(
        100 * math.exp(1 - 6 / 4), abs=1e-4)
    # Counts add up over the corpus before the precisions are taken: the two sentences
    # above together have precisions (4+5)/(4+6), (3+3)/(3+5), (2+2)/(2+4), (1+1)/(1+3) and
    # lengths 10 vs 12.
    score = bleu(["the quick brown fox", "the quick brown fox jumps high"],
                 ["the quick brown fox jumps high", "the quick brown fox leaps high"])
    precisions = (9 / 10) * (6 / 8) * (4 / 6) * (2 / 4)
    assert score == pytest.approx(100 * math.exp(1 - 12 / 10) * precisions ** 0.25, abs=1e-4)


def test_identical_and_mismatched_lengths():
    assert bleu(["the cat sat on the mat"], ["the cat sat on the mat"]) == pytest.approx(100.0)
    with pytest.raises(ValueError, match="1 hypotheses for 2 references"):
        bleu(["a"], ["a", "b"])
