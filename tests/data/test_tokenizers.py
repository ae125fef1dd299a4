import json

import numpy as np
import pytest

from jaxformer.data import shakespeare
from jaxformer.data.tokenizers import (
    CharTokenizer,
    SentencePieceTokenizer,
    Tokenizer,
    load_tokenizer,
)

BPE_VOCAB = 400  # Small: 330 ids go to bytes, <unk>, newline and characters.


@pytest.fixture(scope="module")
def corpus() -> str:
    return shakespeare.read_corpus()


@pytest.fixture(scope="module")
def train_text(corpus) -> str:
    return corpus[: shakespeare.split_index(corpus)]


@pytest.fixture(scope="module")
def bpe(train_text) -> SentencePieceTokenizer:
    return SentencePieceTokenizer.train(train_text, BPE_VOCAB)


def test_char_vocab_is_the_sorted_characters_of_the_corpus(corpus):
    tokenizer = CharTokenizer.from_text(corpus)
    assert tokenizer.chars == sorted(set(corpus))
    assert tokenizer.vocab_size == 73
    assert isinstance(tokenizer, Tokenizer)


def test_char_round_trip(corpus):
    tokenizer = CharTokenizer.from_text(corpus)
    ids = tokenizer.encode(corpus)
    assert len(ids) == len(corpus)
    assert 0 <= min(ids) and max(ids) == tokenizer.vocab_size - 1
    assert tokenizer.decode(ids) == corpus
    assert tokenizer.encode("\n ") == [0, 1]  # Sorted: newline, then space.


def test_char_rejects_characters_outside_the_vocabulary():
    tokenizer = CharTokenizer.from_text("abc")
    with pytest.raises(ValueError, match="'xz'"):
        tokenizer.encode("abzcx")


def test_char_save_and_load(tmp_path, corpus):
    tokenizer = CharTokenizer.from_text(corpus)
    tokenizer.save(tmp_path / "tokenizer.json")
    for path in (tmp_path / "tokenizer.json", tmp_path):
        loaded = load_tokenizer(path)
        assert isinstance(loaded, CharTokenizer)
        assert loaded.chars == tokenizer.chars
    assert json.loads((tmp_path / "tokenizer.json").read_text())["type"] == "char"


def test_bpe_round_trips_unseen_text(bpe, corpus, train_text):
    validation = corpus[len(train_text):]
    ids = bpe.encode(validation)
    assert bpe.vocab_size == BPE_VOCAB
    assert max(ids) < BPE_VOCAB
    assert len(ids) < 0.8 * len(validation)  # Merges were learned.
    assert bpe.decode(ids) == validation
    odd = "  two spaces,\n\n\ttab, naïve ☃ and ünïcödé\n"
    assert bpe.decode(bpe.encode(odd)) == odd


def test_bpe_newline_is_a_piece_of_its_own(bpe):
    pieces = bpe.pieces("Now is the winter\nof our discontent\n")
    assert pieces.count("\n") == 2
    assert all("\n" not in piece for piece in pieces if piece != "\n")
    # So pieces of text that end in a newline can be encoded separately.
    text = "ROMEO:\nBut, soft! what light through yonder window breaks?\n\n"
    whole = bpe.encode(text * 3)
    assert whole == bpe.encode(text) * 3


def test_bpe_training_is_deterministic(bpe, train_text):
    again = SentencePieceTokenizer.train(train_text, BPE_VOCAB)
    assert again.model_proto == bpe.model_proto


def test_bpe_sampled_training_is_deterministic(train_text):
    first = SentencePieceTokenizer.train(train_text, BPE_VOCAB, max_sentences=2000, seed=1)
    second = SentencePieceTokenizer.train(train_text, BPE_VOCAB, max_sentences=2000, seed=1)
    other = SentencePieceTokenizer.train(train_text, BPE_VOCAB, max_sentences=2000, seed=2)
    assert first.model_proto == second.model_proto
    assert first.model_proto != other.model_proto


def test_bpe_save_and_load_gives_the_same_pieces(tmp_path, bpe, corpus):
    bpe.save(tmp_path / "tokenizer.model")
    loaded = load_tokenizer(tmp_path / "tokenizer.model")
    assert isinstance(loaded, SentencePieceTokenizer)
    sample = corpus[1000:3000]
    assert loaded.pieces(sample) == bpe.pieces(sample)
    assert loaded.encode(sample) == bpe.encode(sample)


def test_bpe_vocab_too_small_is_a_clear_error(train_text):
    with pytest.raises(ValueError, match="at least 330"):
        SentencePieceTokenizer.train(train_text, 300)


def test_load_tokenizer_rejects_bad_files(tmp_path):
    (tmp_path / "garbage.model").write_bytes(np.arange(50, dtype=np.uint8).tobytes())
    (tmp_path / "wrong.json").write_text('{"type": "wordpiece"}')
    for name in ("garbage.model", "wrong.json", "missing.json"):
        with pytest.raises(ValueError):
            load_tokenizer(tmp_path / name)
    with pytest.raises(ValueError, match="no tokenizer.model or tokenizer.json"):
        load_tokenizer(tmp_path)


def test_bpe_special_tokens_for_translation(tmp_path, train_text):
    bpe = SentencePieceTokenizer.train(train_text, BPE_VOCAB + 3, special_tokens=True)
    assert (bpe.pad_id, bpe.eos_id, bpe.bos_id) == (0, 1, 2)
    assert bpe.vocab_size == BPE_VOCAB + 3
    assert bpe.encode("\n") == [4]  # After <pad>, </s>, <s> and <unk>.
    assert bpe.decode([0, 1, 2]) == ""
    odd = "  two spaces,\n\n\ttab, naïve ☃ and ünïcödé\n"
    ids = bpe.encode(odd)
    assert min(ids) > 3 and bpe.decode(ids) == odd
    assert bpe.decode([2, *ids, 1, 0, 0]) == odd  # Special tokens decode to nothing.
    bpe.save(tmp_path / "tokenizer.model")
    loaded = load_tokenizer(tmp_path)
    assert (loaded.pad_id, loaded.eos_id, loaded.bos_id) == (0, 1, 2)
    assert loaded.encode(odd) == ids
    with pytest.raises(ValueError, match="at least 333 are needed .*<unk>, <pad>, </s>, <s>"):
        SentencePieceTokenizer.train(train_text, 332, special_tokens=True)


def test_bpe_without_special_tokens_has_none(bpe):
    assert (bpe.pad_id, bpe.eos_id, bpe.bos_id) == (None, None, None)


def test_bpe_trains_on_a_list_of_sentences_as_on_lines(train_text):
    lines = train_text.split("\n")[:3000]
    from_text = SentencePieceTokenizer.train("\n".join(lines), BPE_VOCAB)
    from_list = SentencePieceTokenizer.train(lines, BPE_VOCAB)
    assert from_list.model_proto == from_text.model_proto
