"""CoNLL-2003 tagging data: the file format, tags on first word pieces, truncation, batches,
tfds records, and the settings that are rejected."""

import ml_collections
import numpy as np
import pytest

from jaxformer.data import conll2003
from jaxformer.data import token_classification_pipeline as pipeline
from jaxformer.data.token_classification_pipeline import Sentences
from jaxformer.data.wordpiece import WordPiece

TRAIN = """-DOCSTART- -X- -X- O

EU NNP B-NP B-ORG
rejects VBZ B-VP O
German JJ B-NP B-MISC
call NN I-NP O
. . O O

Peter NNP B-NP B-PER
Blackburn NNP I-NP I-PER


BRUSSELS\tNNP\tB-NP\tB-LOC
1996-08-22 CD I-NP O
"""
EVAL = "Peter NNP B-NP B-PER\nvisited VBD B-VP O\nGermany NNP B-NP B-LOC\n\n"


def write_files(folder, train=TRAIN, evaluation=EVAL):
    folder.mkdir(exist_ok=True)
    (folder / "train.txt").write_text(train)
    for name in ("valid.txt", "test.txt"):
        (folder / name).write_text(evaluation)
    return folder


def config(folder, **values):
    return ml_collections.ConfigDict({"name": "conll2003", "path": str(folder),
                                      "vocab_size": 120, "seq_length": 16, **values})


def test_parse_reads_sentences_and_skips_document_starts():
    sentences = conll2003.parse_conll(TRAIN.splitlines(), conll2003.TAGS, source="train.txt")
    assert [list(w) for w in sentences.words] == [
        ["EU", "rejects", "German", "call", "."], ["Peter", "Blackburn"],
        ["BRUSSELS", "1996-08-22"]]
    names = [[conll2003.TAGS[t] for t in tags] for tags in sentences.tags]
    assert names == [["B-ORG", "O", "B-MISC", "O", "O"], ["B-PER", "I-PER"], ["B-LOC", "O"]]


@pytest.mark.parametrize("line,message", [
    ("lonely", "train.txt:3: expected a word and its tag, got 'lonely'"),
    ("word NN B-XYZ", "train.txt:3: unknown tag 'B-XYZ'; data.tags: O, B-PER"),
])
def test_malformed_lines_name_the_file_and_line(line, message):
    with pytest.raises(ValueError, match=message):
        conll2003.parse_conll(["EU NNP B-NP B-ORG", "", line], conll2003.TAGS,
                              source="train.txt")


def test_tags_sit_on_the_first_piece_and_long_sentences_keep_whole_words():
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "bl", "##ack", "##burn", "peter"]
    tokenizer = WordPiece.from_tokens(vocab)
    sentences = Sentences([("Peter", "Blackburn"), ("Blackburn", "Peter", "Peter")],
                          [(1, 2), (1, 2, 2)])
    examples = pipeline.encode(tokenizer, sentences, seq_length=6)
    ids, labels = examples.row(0)
    assert ids.tolist() == [2, 8, 5, 6, 7, 3]  # [CLS] peter bl ##ack ##burn [SEP]
    assert labels.tolist() == [-1, 1, 2, -1, -1, -1]
    ids, labels = examples.row(1)  # Blackburn (3 pieces) + Peter fit in 6; the last Peter not.
    assert ids.tolist() == [2, 5, 6, 7, 8, 3] and labels.tolist() == [-1, 1, -1, -1, 2, -1]
    assert examples.dropped_tags == 1


def test_build_from_files_gives_tagged_batches(tmp_path):
    data = conll2003.build(config(write_files(tmp_path / "conll")), workdir=str(tmp_path / "w"))
    assert data.class_names == conll2003.TAGS and data.eval_splits == ("validation", "test")
    assert (tmp_path / "w" / "assets" / "wordpiece.json").is_file()
    batch = next(data.train_iter(batch_size=4, seed=0))
    assert batch["input_ids"].shape == batch["label"].shape == (4, 16)
    # Each row holds the tags of one sentence's first words, in order; the words that did not
    # fit in 16 pieces (the vocabulary is small) are counted as dropped.
    sentences = conll2003.read_conll(str(tmp_path / "conll" / "train.txt"), conll2003.TAGS)
    for row in batch["label"]:
        tags = tuple(row[row >= 0].tolist())
        assert any(tags == full[:len(tags)] for full in sentences.tags)
    assert (data.train.labels >= 0).sum() + data.train.dropped_tags == 9
    assert np.all(batch["label"][:, 0] == -1) and np.all(batch["segment_ids"] == 0)
    evaluation = list(data.eval_iter(batch_size=4, num_batches=-1, split="test"))
    assert len(evaluation) == 1
    assert (evaluation[0]["label"][0] >= 0).sum() == 3  # Peter visited Germany.
    assert np.all(evaluation[0]["label"][1:] == -1)  # Padding rows carry no tags.


def test_a_training_subset_is_seeded(tmp_path):
    folder = write_files(tmp_path / "conll")
    first = conll2003.build(config(folder, train_examples=2), workdir=None)
    again = conll2003.build(config(folder, train_examples=2), workdir=None)
    assert len(first.train) == 2
    np.testing.assert_array_equal(first.train.tokens, again.train.tokens)
    with pytest.raises(ValueError, match="data.train_examples is 9, the training set has only 3"):
        conll2003.build(config(folder, train_examples=9), workdir=None)


def test_tfds_records_are_read_by_tag_name():
    tfds_tags = ("O", "B-LOC", "I-LOC", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-MISC", "I-MISC")
    records = [{"tokens": np.array([b"Peter", b"in", b"Paris"]), "ner": np.array([3, 0, 1])}]
    sentences = conll2003.read_tfds_split(records, tfds_tags, conll2003.TAGS)
    assert sentences.words == [("Peter", "in", "Paris")]
    assert [conll2003.TAGS[t] for t in sentences.tags[0]] == ["B-PER", "O", "B-LOC"]
    with pytest.raises(ValueError, match=r"tags \['B-DATE'\] outside data.tags"):
        conll2003.read_tfds_split(records, ("O", "B-DATE"), conll2003.TAGS)


@pytest.mark.parametrize("values,message", [
    (dict(path="/nonexistent/conll"), "the train file /nonexistent/conll/train.txt does not"),
    (dict(files={"dev": "eng.testa"}), r"data.files has unknown splits \['dev'\]"),
    (dict(tags=("O", "PER")), "tag 'PER' is neither O nor"),
    (dict(tags="O"), "data.tags must be a sequence of tag names"),
    (dict(seq_length=2), "data.seq_length must be an integer >= 4"),
])
def test_bad_settings_are_clear_errors(tmp_path, values, message):
    folder = write_files(tmp_path / "conll")
    with pytest.raises(ValueError, match=message):
        conll2003.check_config(config(folder, **values))


def test_renamed_files_and_a_sentence_tag_mismatch(tmp_path):
    folder = tmp_path / "conll"
    folder.mkdir()
    for name in ("eng.train", "eng.testa", "eng.testb"):
        (folder / name).write_text(EVAL)
    files = {"train": "eng.train", "validation": "eng.testa", "test": "eng.testb"}
    data = conll2003.build(config(folder, files=files), workdir=None)
    assert len(data.train) == 1
    with pytest.raises(ValueError, match="sentence 0 has 2 words but 1 tags"):
        Sentences([("a", "b")], [(0,)])
