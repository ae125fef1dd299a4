"""TF-IDF features and logistic regression (scikit-learn): the bag-of-words baseline of a
text classification table.

Word unigrams and bigrams (lowercased, seen in at least 2 training texts; log-scaled term
frequencies), a pair's two texts joined; a multinomial logistic regression whose inverse
regularisation `C` is chosen from `C_GRID` by accuracy on the selection split.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from jaxformer.data.text_classification_pipeline import Texts

C_GRID = (0.25, 1.0, 4.0, 16.0)


def joined(texts: Texts) -> list[str]:
    if texts.second is None:
        return list(texts.first)
    return [f"{a} {b}" for a, b in zip(texts.first, texts.second, strict=True)]


def fit_and_score(train: Texts, evals: Mapping[str, Texts], select_on: str
                  ) -> tuple[float, dict[str, dict[str, float]]]:
    """(the chosen C, split -> {"top1", "macro_f1"}) of the model fitted on `train`."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, f1_score

    vectorizer = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True)
    features = vectorizer.fit_transform(joined(train))
    eval_features = {name: vectorizer.transform(joined(texts)) for name, texts in evals.items()}
    labels = np.asarray(train.labels)

    models = {c: LogisticRegression(C=c, max_iter=2000).fit(features, labels) for c in C_GRID}
    selection = evals[select_on]
    best = max(C_GRID, key=lambda c: accuracy_score(
        selection.labels, models[c].predict(eval_features[select_on])))
    model = models[best]
    scores = {}
    for name, texts in evals.items():
        predicted = model.predict(eval_features[name])
        scores[name] = {"top1": float(accuracy_score(texts.labels, predicted)),
                        "macro_f1": float(f1_score(texts.labels, predicted, average="macro"))}
    return best, scores
