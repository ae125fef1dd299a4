import ml_collections
import numpy as np
import pytest
import tensorflow_datasets as tfds

from jaxformer.data import books, wordpiece
from jaxformer.data.bert_pretraining_pipeline import EncodedDocuments, PretrainingData

# A synthetic corpus whose token ids say where they come from: token `FIRST + d * SPAN + k` is
# the k-th token of document d. Every third token is a "##" piece.
FIRST, SPAN, NUM_DOCS = 5, 400, 12


def synthetic_tokenizer() -> wordpiece.WordPiece:
    pieces = [("##" if i % 3 == 1 else "") + f"w{i}" for i in range(SPAN * NUM_DOCS)]
    tokens = list(wordpiece.SPECIAL_TOKENS) + pieces
    return wordpiece.WordPiece(wordpiece._bert_tokenizer({t: i for i, t in enumerate(tokens)}))


def synthetic_documents(seed=0) -> tuple[EncodedDocuments, set[tuple[int, int]]]:
    """The documents and the (document, token index) where each sentence starts."""
    rng = np.random.default_rng(seed)
    documents, starts = [], set()
    for d in range(NUM_DOCS):
        lengths, k = [], 0
        while k < SPAN - 30:
            lengths.append(int(rng.integers(3, 30)))
            starts.add((d, k))
            k += lengths[-1]
        ids = FIRST + d * SPAN + np.arange(k)
        documents.append(np.split(ids, np.cumsum(lengths)[:-1]))
    return EncodedDocuments.from_ids([[s.tolist() for s in doc] for doc in documents]), starts


def synthetic_data(**overrides) -> PretrainingData:
    documents, _ = synthetic_documents()
    kwargs = dict(tokenizer=synthetic_tokenizer(), train_documents=documents,
                  eval_documents=synthetic_documents(1)[0], vocab_size=FIRST + SPAN * NUM_DOCS,
                  seq_length=64, max_predictions=12, eval_examples=50)
    return PretrainingData(**(kwargs | overrides))


def unmasked(batch, row):
    """The row's tokens before masking."""
    ids = batch["input_ids"][row].copy()
    real = batch["mlm_weights"][row] > 0
    ids[batch["mlm_positions"][row][real]] = batch["mlm_ids"][row][real]
    return ids


def segments(batch, row):
    ids = unmasked(batch, row)
    seps = np.flatnonzero(ids == wordpiece.WordPiece.sep_id)
    return ids[1:seps[0]], ids[seps[0] + 1:seps[1]], seps


@pytest.fixture(scope="module")
def sample():
    return [next(iter(synthetic_data().train_iter(batch_size=400, seed=3)))]


@pytest.mark.parametrize("paragraph,expected", [
    ("Mr. Darcy came. Mrs. Bennet and St. Paul met Dr. J. Smith.",
     ["Mr. Darcy came.", "Mrs. Bennet and St. Paul met Dr. J. Smith."]),
    ('"I am sure," said she, "that he will come." She smiled.',
     ['"I am sure," said she, "that he will come."', "She smiled."]),
    ("Help! help! What, ho! Who's there? 'Tis I.",
     ["Help! help!", "What, ho!", "Who's there?", "'Tis I."]),
    ("This old moon wanes! she lingers my desires.",
     ["This old moon wanes! she lingers my desires."]),
    ("And God said, Let there be light: and there was light.",
     ["And God said, Let there be light: and there was light."]),
    ("It was 1818. 42 guests came (all of them.) Then what?",
     ["It was 1818.", "42 guests came (all of them.)", "Then what?"]),
    ("  ", []),
])
def test_split_sentences(paragraph, expected):
    assert books.split_sentences(paragraph) == expected


def test_embedded_documents_and_held_out_split():
    documents = books.embedded_documents()
    assert len(documents) == 38 + 269 + 1189
    assert documents[0].title == "A Midsummer Night's Dream"
    assert documents[0].paragraphs[0].startswith("Now, fair Hippolyta, our nuptial hour")
    assert documents[38].title == "Sense and Sensibility 1" and documents[-1].title == "Rev 22"
    splits = books.split_documents(documents)
    assert len(splits["validation"]) == 23 and len(splits["train"]) == len(documents) - 23
    assert not {d.title for d in splits["train"]} & {d.title for d in splits["validation"]}


def test_batch_format(sample):
    batch = sample[0]
    assert {k: (v.dtype, v.shape) for k, v in batch.items()} == {
        "input_ids": (np.int32, (400, 64)), "segment_ids": (np.int32, (400, 64)),
        "mlm_positions": (np.int32, (400, 12)), "mlm_ids": (np.int32, (400, 12)),
        "mlm_weights": (np.float32, (400, 12)), "next_sentence": (np.int32, (400,))}


def test_segment_layout(sample):
    batch = sample[0]
    for row in range(len(batch["input_ids"])):
        a, b, seps = segments(batch, row)
        ids, seg = batch["input_ids"][row], batch["segment_ids"][row]
        assert ids[0] == wordpiece.WordPiece.cls_id and len(seps) == 2 and len(a) and len(b)
        n = seps[1] + 1
        np.testing.assert_array_equal(seg[:n], [0] * (seps[0] + 1) + [1] * (n - seps[0] - 1))
        assert not ids[n:].any() and not seg[n:].any()


def test_next_sentence_pairs(sample):
    batch = sample[0]
    labels = batch["next_sentence"]
    assert 0.42 < labels.mean() < 0.58
    for row, label in enumerate(labels):
        a, b, _ = segments(batch, row)
        doc_a, pos_a = divmod(a - FIRST, SPAN)
        doc_b, pos_b = divmod(b - FIRST, SPAN)
        # Each segment is a run of consecutive tokens of one document.
        assert len(set(doc_a)) == 1 and np.all(np.diff(pos_a) == 1)
        assert len(set(doc_b)) == 1 and np.all(np.diff(pos_b) == 1)
        if label == 0:
            assert doc_a[0] == doc_b[0] and pos_b[0] > pos_a[-1]
        else:
            assert doc_a[0] != doc_b[0]


def test_without_next_sentence_every_pair_is_consecutive(sample):
    batch = next(iter(synthetic_data(next_sentence=False).train_iter(batch_size=200, seed=3)))
    assert not batch["next_sentence"].any()
    for row in range(200):
        a, b, _ = segments(batch, row)
        doc_a, pos_a = divmod(a - FIRST, SPAN)
        doc_b, pos_b = divmod(b - FIRST, SPAN)
        assert len(set(doc_a) | set(doc_b)) == 1 and pos_b[0] > pos_a[-1]
    # The same draws: the rows that were IsNext pairs are unchanged.
    with_pairs = sample[0]
    same = np.flatnonzero(with_pairs["next_sentence"][:200] == 0)
    assert len(same) > 50
    np.testing.assert_array_equal(batch["mlm_positions"][same],
                                  with_pairs["mlm_positions"][same])


def test_untruncated_pairs_split_at_sentences(sample):
    batch, (_, starts) = sample[0], synthetic_documents()
    checked = 0
    for row in np.flatnonzero(sample[0]["next_sentence"] == 0):
        a, b, _ = segments(batch, row)
        doc, pos_b = divmod(b[0] - FIRST, SPAN)
        if pos_b == divmod(a[-1] - FIRST, SPAN)[1] + 1:
            assert (doc, pos_b) in starts  # B follows A at a sentence boundary.
            checked += 1
    assert checked > 20


def test_masking_statistics(sample):
    batch = sample[0]
    selected = masked = kept = 0
    for row in range(len(batch["input_ids"])):
        original, ids = unmasked(batch, row), batch["input_ids"][row]
        n = int(np.count_nonzero(original))
        weights = batch["mlm_weights"][row]
        count = int(weights.sum())
        assert count == min(12, max(1, round(0.15 * n)))
        assert np.all(weights[:count] == 1) and not weights[count:].any()
        positions = batch["mlm_positions"][row][:count]
        assert np.all(np.diff(positions) > 0) and not batch["mlm_positions"][row][count:].any()
        assert np.all(original[positions] >= FIRST)  # Never [CLS], [SEP] or padding.
        np.testing.assert_array_equal(batch["mlm_ids"][row][:count], original[positions])
        selected += count
        masked += int(np.count_nonzero(ids[positions] == wordpiece.WordPiece.mask_id))
        kept += int(np.count_nonzero(ids[positions] == original[positions]))
    assert 0.78 < masked / selected < 0.82
    assert 0.08 < kept / selected < 0.12  # The rest, ~10%, are random tokens.


def test_whole_word_masking():
    data = synthetic_data(whole_word_masking=True)
    batch = next(iter(data.train_iter(batch_size=200, seed=0)))
    tokenizer = data.tokenizer
    for row in range(200):
        ids, count = unmasked(batch, row), int(batch["mlm_weights"][row].sum())
        chosen = np.zeros(len(ids), bool)
        chosen[batch["mlm_positions"][row][:count]] = True
        starts = tokenizer.word_starts(ids) | (np.roll(ids, 1) <= wordpiece.WordPiece.mask_id)
        word = np.cumsum(starts)
        for w in np.unique(word[chosen]):
            assert chosen[word == w].all()  # A chosen word is chosen whole.


def test_determinism_and_resume():
    data = synthetic_data()
    first = data.train_iter(batch_size=4, seed=7)
    batches = [next(first) for _ in range(5)]
    again = data.train_iter(batch_size=4, seed=7)
    for _ in range(3):
        next(again)
    state = again.get_state()
    resumed = synthetic_data().train_iter(batch_size=4, seed=7)
    resumed.set_state(state)
    for expected in batches[3:]:
        got = next(resumed)
        for key in expected:
            np.testing.assert_array_equal(got[key], expected[key])
    other = next(data.train_iter(batch_size=4, seed=8))
    assert not np.array_equal(other["input_ids"], batches[0]["input_ids"])


def test_processes_share_global_batches():
    data = synthetic_data()
    whole = next(data.train_iter(batch_size=6, seed=1))
    halves = [next(data.train_iter(batch_size=3, seed=1, process_index=p, process_count=2))
              for p in range(2)]
    for key in whole:
        np.testing.assert_array_equal(np.concatenate([h[key] for h in halves]), whole[key])


def test_eval_batches_are_fixed_and_padded():
    data = synthetic_data()
    first = list(data.eval_iter(batch_size=16, num_batches=-1))
    second = list(data.eval_iter(batch_size=16, num_batches=-1, split="validation"))
    assert len(first) == 4
    for a, b in zip(first, second, strict=True):
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])
    last = first[-1]
    assert np.all(last["next_sentence"][2:] == -1) and not last["mlm_weights"][2:].any()
    assert np.all(last["next_sentence"][:2] >= 0)
    with pytest.raises(ValueError, match="unknown split"):
        data.eval_iter(batch_size=16, num_batches=1, split="test")


def test_spec_and_check_config():
    config = ml_collections.ConfigDict({"vocab_size": 8000})
    spec = books.spec(config)
    assert spec.vocab_size == 8000 and spec.tokenizer.pad_id == 0
    for key, value, message in [("seq_length", 513, "at most 512"),
                                ("vocab_size", 3, "vocab_size must be an integer"),
                                ("whole_word_masking", 1, "true or false")]:
        with pytest.raises(ValueError, match=message):
            books.check_config(ml_collections.ConfigDict({"vocab_size": 8000, key: value}))


WIKIPEDIA = [{"title": f"t{i}".encode(),
              "text": (f"Article {i} begins here. It has a second sentence.\n"
                       f"Another paragraph of article {i}. It ends now.").encode()}
             for i in range(130)]


def test_tfds_source(tmp_path):
    config = ml_collections.ConfigDict({"vocab_size": 120, "source": "wikipedia/20230601.en",
                                        "seq_length": 32, "max_predictions": 5,
                                        "data_dir": str(tmp_path), "eval_examples": 8})
    with tfds.testing.mock_data(as_data_source_fn=lambda *args, **kwargs: WIKIPEDIA):
        data = books.build(config, workdir=str(tmp_path / "work"))
    assert data.train_documents.num_documents == 128 and data.eval_documents.num_documents == 2
    assert (tmp_path / "work" / "assets" / wordpiece.ASSET_NAME).is_file()
    batch = next(data.train_iter(batch_size=4, seed=0))
    assert batch["input_ids"].shape == (4, 32) and batch["mlm_ids"].shape == (4, 5)
    assert data.tokenizer.decode(batch["input_ids"][0]).startswith("[CLS]")


def test_encoded_documents_save_and_load(tmp_path):
    documents, _ = synthetic_documents()
    path = tmp_path / "documents.npz"
    documents.save(path)
    loaded = EncodedDocuments.load(path, vocab_size=FIRST + SPAN * NUM_DOCS)
    for field in ("tokens", "sentence_starts", "document_starts"):
        np.testing.assert_array_equal(getattr(loaded, field), getattr(documents, field))
    with pytest.raises(ValueError, match="malformed token cache"):
        EncodedDocuments.load(path, vocab_size=FIRST + SPAN)
    shuffled = EncodedDocuments(documents.tokens, documents.sentence_starts[::-1],
                                documents.document_starts)
    shuffled.save(path)
    with pytest.raises(ValueError, match="malformed token cache"):
        EncodedDocuments.load(path, vocab_size=FIRST + SPAN * NUM_DOCS)
    path.write_bytes(b"not numpy")
    with pytest.raises(ValueError, match="unreadable cache file"):
        EncodedDocuments.load(path, vocab_size=FIRST + SPAN * NUM_DOCS)


def test_second_build_reads_the_cache(tmp_path, monkeypatch):
    config = ml_collections.ConfigDict({"vocab_size": 120, "source": "wikipedia/20230601.en",
                                        "seq_length": 32, "data_dir": str(tmp_path)})

    def build(workdir):
        with tfds.testing.mock_data(as_data_source_fn=lambda *args, **kwargs: WIKIPEDIA):
            data = books.build(config, workdir=str(tmp_path / workdir))
        return data, data.train_documents.tokens, data.eval_documents.tokens

    first, train, held_out = build("first")
    assert len(list((tmp_path / books.CACHE_FOLDER / "encoded").glob("*/*.npz"))) == 2
    monkeypatch.setattr(wordpiece, "train", None)  # Not called again.
    monkeypatch.setattr(wordpiece.WordPiece, "encode_batch", None)
    monkeypatch.setattr(books, "split_sentences", None)  # Nor is the text split again.
    second, train_again, held_out_again = build("second")
    assert second.tokenizer.tokens == first.tokenizer.tokens
    np.testing.assert_array_equal(train_again, train)
    np.testing.assert_array_equal(held_out_again, held_out)
    assert (tmp_path / "second" / "assets" / wordpiece.ASSET_NAME).is_file()


@pytest.mark.slow
def test_build_embedded(tmp_path):
    config = ml_collections.ConfigDict({"vocab_size": 1000, "seq_length": 48,
                                        "max_predictions": 7, "eval_examples": 10})
    data = books.build(config, workdir=str(tmp_path))
    assert (tmp_path / "assets" / wordpiece.ASSET_NAME).is_file()
    assert data.vocab_size == 1000 and data.tokenizer.vocab_size <= 1000
    assert (data.seq_length, data.max_predictions) == (48, 7)
    assert data.train_documents.num_documents == 1473 and data.eval_splits == ("validation",)
    batch = next(data.train_iter(batch_size=8, seed=0))
    assert batch["input_ids"].shape == (8, 48) and batch["input_ids"].max() < 1000
    (evaluation,) = data.eval_iter(batch_size=10, num_batches=-1)
    assert np.all(evaluation["next_sentence"] >= 0)
