"""The COCO caption evaluation's CIDEr-D and BLEU-4, computed as its reference implementation
(pycocoevalcap) computes them, on captions already tokenised (words split on spaces).

CIDEr-D (Vedantam et al., 2015): each caption is a vector of its 1- to 4-gram counts weighted
by tf-idf, the document frequencies taken from the references of the evaluated images; a
hypothesis scores, per n, the mean over its references of the cosine similarity with its
counts clipped by the reference's, times a Gaussian penalty (sigma 6) on the length
difference; the mean over n, times 10. As the reference implementation, the length compared
is the number of bigrams.

BLEU-4: corpus BLEU over all images, n-gram counts clipped by the most of any reference, the
brevity penalty on the sum of each hypothesis' closest reference length (the shorter on a
tie), with the reference implementation's smoothing constants.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

import numpy as np

MAX_N = 4
SIGMA = 6.0
# The reference implementation's constants: a 0 count gives a ~0 precision, never 0 / 0.
TINY, SMALL = 1e-15, 1e-9


def ngram_counts(sentence: str, max_n: int = MAX_N) -> Counter:
    """Counts of the sentence's 1- to `max_n`-grams (tuples of words)."""
    words = sentence.split()
    return Counter(tuple(words[i:i + k]) for k in range(1, max_n + 1)
                   for i in range(len(words) - k + 1))


def bleu4(hypotheses: Sequence[str], references: Sequence[Sequence[str]]) -> float:
    """Corpus BLEU-4 of one hypothesis per image against its references, 0 to 1."""
    correct, guess = [0] * MAX_N, [0] * MAX_N
    hyp_length = ref_length = 0
    for hypothesis, refs in zip(hypotheses, references, strict=True):
        length = len(hypothesis.split())
        most: dict[tuple, int] = {}
        for ref in refs:
            for gram, count in ngram_counts(ref).items():
                most[gram] = max(most.get(gram, 0), count)
        for gram, count in ngram_counts(hypothesis).items():
            correct[len(gram) - 1] += min(most.get(gram, 0), count)
        for k in range(MAX_N):
            guess[k] += max(0, length - k)
        hyp_length += length
        ref_length += min((abs(len(r.split()) - length), len(r.split())) for r in refs)[1]
    precision = math.prod((c + TINY) / (g + SMALL) for c, g in zip(correct, guess, strict=True))
    score = precision ** (1 / MAX_N)
    ratio = (hyp_length + TINY) / (ref_length + SMALL)
    return score * math.exp(1 - 1 / ratio) if ratio < 1 else score


def cider_d(hypotheses: Sequence[str], references: Sequence[Sequence[str]]) -> float:
    """Mean CIDEr-D of one hypothesis per image against its references (0 to 10 x n)."""
    ref_counts = [[ngram_counts(r) for r in refs] for refs in references]
    document_frequency: Counter = Counter()
    for counts in ref_counts:
        document_frequency.update({gram for c in counts for gram in c})
    log_images = math.log(len(references))

    def vector(counts: Counter) -> tuple[list[dict], np.ndarray, int]:
        """tf-idf weights per n, their norms, and the length (bigrams)."""
        weights: list[dict] = [{} for _ in range(MAX_N)]
        for gram, count in counts.items():
            idf = log_images - math.log(max(1.0, document_frequency[gram]))
            weights[len(gram) - 1][gram] = count * idf
        norms = np.array([math.sqrt(sum(w * w for w in n.values())) for n in weights])
        return weights, norms, sum(c for gram, c in counts.items() if len(gram) == 2)

    scores = []
    for hypothesis, refs in zip(hypotheses, ref_counts, strict=True):
        hyp, hyp_norms, hyp_length = vector(ngram_counts(hypothesis))
        total = np.zeros(MAX_N)
        for counts in refs:
            ref, ref_norms, ref_length = vector(counts)
            penalty = math.exp(-((hyp_length - ref_length) ** 2) / (2 * SIGMA ** 2))
            for n in range(MAX_N):
                value = sum(min(w, ref[n].get(g, 0.0)) * ref[n].get(g, 0.0)
                            for g, w in hyp[n].items())
                if hyp_norms[n] and ref_norms[n]:
                    value /= hyp_norms[n] * ref_norms[n]
                total[n] += value * penalty
        scores.append(10.0 * total.mean() / len(refs))
    return float(np.mean(scores))
