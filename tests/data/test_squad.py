"""SQuAD question answering data: the file format, windows over long contexts, answer tokens
and their characters, maximal-context marks, batches, tfds records, and rejected settings."""

import json

import ml_collections
import numpy as np
import pytest

from jaxformer.data import common, squad
from jaxformer.data import question_answering_pipeline as pipeline
from jaxformer.data.question_answering_pipeline import Questions
from jaxformer.data.wordpiece import WordPiece

# King James Version (public domain) paragraphs with hand-written questions.
GENESIS = ("In the beginning God created the heaven and the earth. And the earth was without "
           "form, and void; and darkness was upon the face of the deep. And the Spirit of God "
           "moved upon the face of the waters. And God said, Let there be light: and there was "
           "light.")
EXODUS = ("Now Moses kept the flock of Jethro his father in law, the priest of Midian: and he "
          "led the flock to the backside of the desert, and came to the mountain of God, even "
          "to Horeb.")
RUTH = ("Now it came to pass in the days when the judges ruled, that there was a famine in the "
        "land. And a certain man of Bethlehemjudah went to sojourn in the country of Moab, he, "
        "and his wife, and his two sons.")


def qa(id_, question, context, *answers, impossible=False):
    return {"id": id_, "question": question, "is_impossible": impossible,
            "answers": [{"text": a, "answer_start": context.index(a)} for a in answers]}


def document(version="1.1"):
    paragraphs = [
        {"context": GENESIS, "qas": [
            qa("g1", "What did God create in the beginning?", GENESIS, "the heaven and the earth"),
            qa("g2", "What was upon the face of the deep?", GENESIS, "darkness"),
            qa("g3", "What moved upon the face of the waters?", GENESIS, "the Spirit of God",
               "Spirit of God")]},
        {"context": EXODUS, "qas": [
            qa("e1", "Whose flock did Moses keep?", EXODUS, "Jethro his father in law"),
            qa("e2", "Which mountain did Moses come to?", EXODUS, "Horeb")]},
        {"context": RUTH, "qas": [
            qa("r1", "Where did the man go to sojourn?", RUTH, "the country of Moab")]}]
    if version == "2.0":
        paragraphs[2]["qas"].append(qa("r2", "Who ruled over Moab?", RUTH, impossible=True))
    return {"version": version, "data": [{"title": "KJV", "paragraphs": paragraphs}]}


def write_files(folder, version="1.1"):
    folder.mkdir(exist_ok=True)
    for name in (f"train-v{version}.json", f"dev-v{version}.json"):
        (folder / name).write_text(json.dumps(document(version)))
    return folder


def config(folder, **values):
    return ml_collections.ConfigDict({"name": "squad", "path": str(folder), "vocab_size": 200,
                                      "seq_length": 32, "doc_stride": 8,
                                      "max_query_length": 12, **values})


VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "who", "kept", "the", "flock", "of",
         "jethro", "his", "father", "in", "law", ",", "priest", "mid", "##ian", ":", "and", "he"]


def test_parse_reads_questions_and_marks_impossible_ones_unanswerable():
    questions = squad.parse_squad(document("2.0"), source="dev.json")
    assert list(questions.ids) == ["g1", "g2", "g3", "e1", "e2", "r1", "r2"]
    assert questions.contexts[0] == GENESIS and questions.contexts[3] == EXODUS
    assert questions.answers[2] == [(GENESIS.index("the Spirit"), "the Spirit of God"),
                                    (GENESIS.index("Spirit"), "Spirit of God")]
    assert questions.answers[6] == []


def test_a_file_without_squad_structure_is_one_error(tmp_path):
    path = tmp_path / "dev.json"
    path.write_text(json.dumps({"data": [{"paragraphs": [
        {"qas": [{"id": "a", "question": "Who?", "answers": []}]}]}]}))
    with pytest.raises(ValueError, match="is not a SQuAD file: an entry has no 'context'"):
        squad.read_squad(str(path))
    path.write_text("{not json")
    with pytest.raises(ValueError, match="is not a JSON file"):
        squad.read_squad(str(path))


def test_window_starts_cover_the_context_stride_apart():
    assert pipeline.window_starts(10, room=4, stride=3) == [0, 3, 6]  # Last ends at 10.
    assert pipeline.window_starts(4, room=4, stride=3) == [0]
    assert pipeline.window_starts(0, room=4, stride=3) == [0]
    for length, room, stride in [(37, 8, 3), (100, 16, 16), (9, 8, 1)]:
        starts = pipeline.window_starts(length, room, stride)
        assert starts[-1] + room >= length and starts[-2] + room < length
        assert all(b - a == stride for a, b in zip(starts, starts[1:], strict=False))


def test_max_context_picks_the_window_with_most_context_on_both_sides():
    # BERT's _check_is_max_context on windows [0, 4), [3, 7), [6, 10) of 10 tokens: token 3
    # has (3 left, 0 right) in window 0 and (0, 3) in window 1: a tie, the first window wins;
    # token 4 has (1, 2) in window 1 against none elsewhere.
    best = pipeline.max_context(10, [0, 3, 6], room=4)
    assert best.tolist() == [0, 0, 0, 0, 1, 1, 1, 2, 2, 2]


def test_answers_are_labelled_in_the_windows_that_hold_them_and_offsets_give_the_text():
    tokenizer = WordPiece.from_tokens(VOCAB)
    context = "Jethro his father in law, the priest of Midian: and he kept the flock"
    answer = "the priest of Midian"
    questions = Questions(["q"], ["Who kept the flock?"], [context],
                          [[(context.index(answer), answer)]])
    windows = pipeline.encode(tokenizer, questions, seq_length=16, doc_stride=4,
                              max_query_length=8, drop_unfound=True)
    # Question: who kept the flock [UNK] (5 pieces); 16 - 5 - 3 = 8 context pieces a window.
    # Context pieces: jethro his father in law , the priest of mid ##ian : and he kept the
    # flock (17): windows of 8 start at 0, 4, 8 and 12 (the first to reach the end).
    assert len(windows) == 4 and windows.question.tolist() == [0, 0, 0, 0]
    head = 1 + 5 + 1
    # The answer is pieces 6-10 (the priest of mid ##ian): whole in window 1 (4-11) only.
    assert windows.labels.tolist() == [[0, 0], [head + 2, head + 6], [0, 0], [0, 0]]
    first, last = windows.labels[1]
    offsets = windows.offsets[windows.span(1)]
    assert context[offsets[first, 0]:offsets[last, 1]] == answer
    ids = windows.tokens[windows.span(1)]
    assert [tokenizer.token(i) for i in ids[:head]] == [
        "[CLS]", "who", "kept", "the", "flock", "[UNK]", "[SEP]"]
    assert tokenizer.token(ids[-1]) == "[SEP]" and windows.first_lengths.tolist() == [head] * 4
    assert (offsets[:head] == -1).all() and (offsets[-1] == -1).all()
    # Every context piece is a maximal-context start in exactly one window.
    marks = [windows.context[windows.span(w)] for w in range(4)]
    assert sum(int((m == pipeline.MAX_CONTEXT).sum()) for m in marks) == 17
    assert all(((m > 0) == (windows.offsets[windows.span(w), 0] >= 0)).all()
               for w, m in enumerate(marks))


def test_training_drops_questions_whose_answer_is_not_in_the_context():
    tokenizer = WordPiece.from_tokens(VOCAB)
    context = "the flock of Jethro"
    questions = Questions(["a", "b", "c"], ["who?"] * 3, [context] * 3,
                          [[(4, "flock")], [(0, "flock")], []])
    kept = pipeline.encode(tokenizer, questions, seq_length=16, doc_stride=4,
                           max_query_length=8, drop_unfound=True)
    assert kept.question.tolist() == [0, 2] and kept.skipped == 1
    assert kept.labels.tolist() == [[5, 5], [0, 0]]  # [CLS] who [UNK] [SEP] the flock ...
    every = pipeline.encode(tokenizer, questions, seq_length=16, doc_stride=4,
                            max_query_length=8, drop_unfound=False)
    assert every.question.tolist() == [0, 1, 2] and every.labels[1].tolist() == [0, 0]


def test_training_windows_keep_no_offsets_and_are_otherwise_the_same():
    tokenizer = WordPiece.from_tokens(VOCAB)
    context = "Jethro his father in law, the priest of Midian: and he kept the flock"
    questions = Questions(["q"], ["Who kept the flock?"], [context],
                          [[(context.index("Midian"), "Midian")]])
    sizes = dict(seq_length=16, doc_stride=4, max_query_length=8, drop_unfound=True)
    full = pipeline.encode(tokenizer, questions, **sizes)
    lean = pipeline.encode(tokenizer, questions, keep_offsets=False, **sizes)
    assert full.offsets.shape == (len(full.tokens), 2) and lean.offsets is None
    for field in ("tokens", "starts", "first_lengths", "labels", "question", "context"):
        np.testing.assert_array_equal(getattr(lean, field), getattr(full, field))
    with pytest.raises(ValueError, match="keep no character offsets"):
        lean.characters(0, 0, 1)


def test_build_from_files_gives_span_batches(tmp_path):
    data = squad.build(config(write_files(tmp_path / "squad")), workdir=str(tmp_path / "w"))
    assert data.eval_splits == ("validation",) and len(data.questions["validation"]) == 6
    assert (tmp_path / "w" / "assets" / "wordpiece.json").is_file()
    windows = data.eval["validation"]
    assert data.train.offsets is None and windows.offsets.shape == (len(windows.tokens), 2)
    batches = list(data.eval_iter(batch_size=16, num_batches=-1))
    assert len(batches) == -(-len(windows) // 16) > 1
    batch = {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}
    assert batch["input_ids"].shape == (16 * len(batches), 32)
    assert batch["label"].shape == (16 * len(batches), 2)
    real = batch["window"] >= 0
    assert batch["window"][real].tolist() == list(range(len(windows)))
    assert (batch["label"][~real] == -1).all() and (batch["context"][~real] == 0).all()
    for row in np.flatnonzero(real):  # Each labelled answer reads back as the gold text.
        first, last = batch["label"][row]
        if first:
            question = windows.question[row]
            golds = [text for _, text in data.questions["validation"].answers[question]]
            assert data.answer_text("validation", row, first, last) == golds[0]
            assert batch["segment_ids"][row, first] == 1
    labelled = {int(windows.question[r]) for r in np.flatnonzero(real) if batch["label"][r, 0]}
    assert labelled == set(range(6))  # Every answer lies whole in one of its windows.


def test_build_reads_tfds_records(tmp_path, monkeypatch):
    records = {split: [
        {"id": b"x1", "question": b"Whose flock?", "context": EXODUS.encode(),
         "answers": {"text": [b"Jethro"], "answer_start": [EXODUS.index("Jethro")]},
         "is_impossible": False},
        {"id": b"x2", "question": b"Who ruled?", "context": RUTH.encode(),
         "answers": {"text": [], "answer_start": []}, "is_impossible": True}]
        for split in squad.SPLITS}
    opened = []

    def fake_sources(name, *, data_dir, splits):
        opened.append(name)
        return None, [records[split] for split in splits]

    import tensorflow_datasets as tfds
    import tensorflow_datasets.datasets.squad.squad_dataset_builder  # noqa: F401

    with common.tfds_scratch():
        features = tfds.builder("squad/v2.0", data_dir=str(tmp_path)).info.features
    for record in records["train"]:  # The records have the builder's features.
        assert set(record) <= set(features) and set(record["answers"]) == set(
            features["answers"].feature)
    monkeypatch.setattr(squad.image_pipeline, "tfds_sources", fake_sources)
    data = squad.build(ml_collections.ConfigDict({
        "name": "squad", "version": "2.0", "data_dir": str(tmp_path), "vocab_size": 200,
        "seq_length": 64, "doc_stride": 16, "max_query_length": 8}), workdir=None)
    assert opened == ["squad/v2.0"]
    questions = data.questions["validation"]
    assert list(questions.ids) == ["x1", "x2"]
    assert questions.answers == [[(EXODUS.index("Jethro"), "Jethro")], []]


@pytest.mark.parametrize("values,message", [
    ({"version": "3.0"}, "unknown data.version '3.0'; available: 1.1, 2.0"),
    ({"seq_length": 16, "max_query_length": 14}, "leaves no room for the context"),
    ({"doc_stride": 40}, "data.doc_stride 40 is more than the 17 context pieces"),
    ({"doc_stride": 0}, "data.doc_stride must be an integer >= 1"),
    ({"path": "/nonexistent/squad"}, "the train file /nonexistent/squad/train-v1.1.json"),
])
def test_bad_settings_are_rejected_before_reading(tmp_path, values, message):
    with pytest.raises(ValueError, match=message):
        squad.check_config(config(write_files(tmp_path / "squad"), **values))
