"""The books-and-captions text of the Flamingo language model: its special symbols, the held-out
emoji kept out, the share of captions, config errors, and a deterministic, reused build."""

import os

import ml_collections
import numpy as np
import pytest

from jaxformer import registry
from jaxformer.data import books, books_captions, emoji
from jaxformer.data.books_captions import END_OF_CHUNK, MEDIA_TOKEN
from jaxformer.data.tokenizers import CharTokenizer, SentencePieceTokenizer

VOCAB = 512
# Held-out emoji (mammals) whose names the books never use either.
HELD_OUT_NAMES = ("dog face", "gorilla", "poodle", "orangutan", "raccoon")


def make_config(data_dir, overrides=None) -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict({
        "name": "books_captions", "tokenizer": "bpe", "vocab_size": VOCAB, "block_size": 32,
        "holdout_subcategories": emoji.HOLDOUT, "fashion_mnist": True, "caption_repeats": 8,
        "data_dir": str(data_dir), **(overrides or {})})


@pytest.fixture(scope="module")
def places(tmp_path_factory):
    root = tmp_path_factory.mktemp("books_captions")
    for name in ("tfds", "run"):
        (root / name).mkdir()
    return root


@pytest.fixture(scope="module")
def data(places):
    """The default text with a 512-piece vocabulary, the tokenizer kept in `run/assets`."""
    return books_captions.build(make_config(places / "tfds"), workdir=str(places / "run"))


@pytest.fixture(scope="module")
def texts():
    return books_captions.corpus()


def lines_of(text: str) -> list[str]:
    assert text.endswith("\n")
    return text[:-1].split("\n")


def test_registered_as_a_data_module():
    assert "books_captions" in registry.available("data")


def test_special_symbols_are_single_ids_that_round_trip(data):
    tokenizer = data.tokenizer
    media, end = books_captions.special_ids(tokenizer)
    assert media != end
    assert tokenizer.encode(MEDIA_TOKEN) == [media]
    assert tokenizer.encode(END_OF_CHUNK) == [end]
    text = f"{MEDIA_TOKEN}an emoji of a cat.{END_OF_CHUNK}{MEDIA_TOKEN}x{END_OF_CHUNK}"
    ids = tokenizer.encode(text)
    assert ids[0] == media and ids[-1] == end
    assert ids.count(media) == 2 and ids.count(end) == 2
    assert tokenizer.decode(ids) == text


def test_caption_lines_end_with_the_end_of_chunk_id(data, texts):
    tokenizer = data.tokenizer
    media, end = books_captions.special_ids(tokenizer)
    assert tokenizer.encode("an emoji of grinning face." + END_OF_CHUNK)[-1] == end
    newline = tokenizer.encode("\n")
    assert len(newline) == 1
    for tokens, name in ((data.train_tokens, "train"), (data.eval_tokens, "validation")):
        captions = [line for line in lines_of(texts[name]) if END_OF_CHUNK in line]
        assert captions and all(line.endswith(END_OF_CHUNK) for line in captions)
        assert MEDIA_TOKEN not in texts[name] and media not in tokens
        # Every end of chunk closes a caption line: it is followed by the newline.
        ends = np.flatnonzero(tokens == end)
        assert len(ends) == len(captions)
        assert (tokens[ends + 1] == newline[0]).all()


def test_special_ids_rejects_a_tokenizer_without_the_symbols(texts):
    plain = SentencePieceTokenizer.train(texts["validation"], VOCAB)
    with pytest.raises(ValueError, match="no id of its own for '<image>'"):
        books_captions.special_ids(plain)
    with pytest.raises(ValueError, match="no id of its own for '<image>'"):
        books_captions.special_ids(CharTokenizer.from_text("abc"))
    only_media = SentencePieceTokenizer.train(texts["validation"], VOCAB,
                                              extra_symbols=[MEDIA_TOKEN])
    with pytest.raises(ValueError, match=r"no id of its own for '<\|endofchunk\|>'"):
        books_captions.special_ids(only_media)


@pytest.mark.parametrize("symbols", ["<image>", ["<a>", "<a>"], [""], ["a\nb"], [None]])
def test_bad_extra_symbols_are_clear_errors(symbols):
    with pytest.raises(ValueError, match="extra_symbols must be a sequence of distinct"):
        SentencePieceTokenizer.train("some text\n", 300, extra_symbols=symbols)


def test_no_held_out_emoji_caption_is_in_the_text(texts):
    table = emoji.read_table()
    names = {e.name: e.subcategory for e in table}
    assert all(names[name] == "animal-mammal" for name in HELD_OUT_NAMES)
    held = [c for e in table if e.subcategory in emoji.HOLDOUT for c in e.captions]
    forms = {books_captions.chunk(c) for c in held}
    forms |= {books_captions.chunk(t.format(c)) for c in held for t in emoji.EMOJI_TEMPLATES}
    for name in books_captions.SPLITS:
        assert not forms & set(lines_of(texts[name]))
        for held_name in HELD_OUT_NAMES:
            assert held_name not in texts[name]
    # Those names are in the captions of the held-out emoji, which a build that ignored
    # `holdout_subcategories` would train on.
    other = books_captions.caption_lines(("face-smiling", "heart"), repeats=1)["train"]
    assert forms & set(other)


def test_train_stream_is_the_books_with_the_expected_share_of_captions(data, texts):
    splits = books.split_documents(books.embedded_documents())
    captions = books_captions.caption_lines()
    for name in books_captions.SPLITS:
        lines = lines_of(texts[name])
        book_lines = [line for line in lines if not line.endswith(END_OF_CHUNK)]
        assert book_lines == [p for d in splits[name] for p in d.paragraphs]
        caption_lines = [line for line in lines if line.endswith(END_OF_CHUNK)]
        assert sorted(caption_lines) == sorted(captions[name])
        # The captions come in runs between whole documents, in most of the gaps.
        boundaries = set(np.cumsum([0] + [len(d.paragraphs) for d in splits[name]]).tolist())
        book_count, runs = 0, 0
        for previous, line in zip([""] + lines, lines, strict=False):
            if line.endswith(END_OF_CHUNK):
                if not previous.endswith(END_OF_CHUNK):
                    assert book_count in boundaries
                    runs += 1
            else:
                book_count += 1
        assert runs > 0.8 * len(boundaries)
    # Each training caption as is and in a template, 8 times; a caption in 64 held out.
    train = [c for i, c in enumerate(books_captions.emoji_captions()) if i % 64 != 32]
    lines = lines_of(texts["train"])
    assert lines.count(books_captions.chunk(train[0])) == 8
    assert {books_captions.chunk(t.format(train[0])) for t in emoji.EMOJI_TEMPLATES} <= set(
        lines)
    assert len(captions["train"]) == 8 * (2 * len(train) + 89)  # 89 of 90 Fashion lines.
    assert "a photo of a sandal." + END_OF_CHUNK in captions["train"]
    # Captions are about a sixth of the train tokens, less of the validation tokens.
    share = {name: caption_share(data.tokenizer, tokens) for name, tokens in (
        ("train", data.train_tokens), ("validation", data.eval_tokens))}
    assert 0.12 < share["train"] < 0.22, share
    assert 0.05 < share["validation"] < 0.12, share


def caption_share(tokenizer, tokens: np.ndarray) -> float:
    """The share of `tokens` in lines (with their newline) that end with the end of chunk."""
    _, end = books_captions.special_ids(tokenizer)
    (newline,) = tokenizer.encode("\n")
    breaks = np.flatnonzero(tokens == newline)
    starts = np.concatenate([[0], breaks[:-1] + 1])
    is_caption = tokens[np.maximum(breaks - 1, 0)] == end
    return float((breaks - starts + 1)[is_caption].sum() / len(tokens))


def test_fewer_repeats_fewer_captions_and_no_fashion():
    lines = books_captions.caption_lines(repeats=2, fashion_mnist=False)
    eight = books_captions.caption_lines()
    assert len(lines["train"]) * 4 == len(eight["train"]) - 8 * 89
    assert not any("photo" in line for line in lines["train"] + lines["validation"])
    assert lines["validation"] == eight["validation"][:-1]  # Less the Fashion line.


BAD = [
    ({"vocab_size": 260}, "data.vocab_size must be an integer >= 261, got 260"),
    ({"block_size": 0}, "data.block_size must be an integer >= 1, got 0"),
    ({"caption_repeats": 0}, "data.caption_repeats must be an integer >= 1, got 0"),
    ({"caption_repeats": 1.5}, "data.caption_repeats must be an integer >= 1, got 1.5"),
    ({"tokenizer": "char"}, "unknown data.tokenizer 'char'; available: bpe"),
    ({"fashion_mnist": "yes"}, "data.fashion_mnist must be true or false, got 'yes'"),
    ({"holdout_subcategories": ("animal-dragon",)},
     r"unknown emoji subcategories \['animal-dragon'\] in data.holdout_subcategories"),
    ({"holdout_subcategories": "animal-mammal"},
     "data.holdout_subcategories must be a list of subcategory names"),
    ({"caption_repeat": 4}, r"unknown data keys \['caption_repeat'\] for books_captions"),
    ({"data_dir": "/nonexistent/tfds"}, "data_dir '/nonexistent/tfds' does not exist"),
]


@pytest.mark.parametrize("overrides,message", BAD)
def test_bad_settings_are_clear_errors_before_anything_is_written(overrides, message,
                                                                   tmp_path):
    (tmp_path / "tfds").mkdir()
    config = make_config(tmp_path / "tfds", overrides)
    with pytest.raises(ValueError, match=message):
        books_captions.check_config(config)
    with pytest.raises(ValueError, match=message):
        books_captions.spec(config)
    with pytest.raises(ValueError, match=message):
        books_captions.build(config, workdir=str(tmp_path / "run"))
    assert not (tmp_path / "run").exists() and not any((tmp_path / "tfds").iterdir())


def no_training(*_, **__):
    raise AssertionError("a tokenizer was trained")


def test_spec_gives_the_vocabulary_without_training(monkeypatch, places, data):
    monkeypatch.setattr(SentencePieceTokenizer, "train", no_training)
    spec = books_captions.spec(make_config(places / "tfds"))
    assert spec.vocab_size == data.vocab_size == VOCAB
    assert spec.tokenizer.pad_id is None and data.tokenizer.pad_id is None


@pytest.mark.slow
def test_build_is_deterministic_and_reuses_the_workdir_tokenizer(monkeypatch, places, data,
                                                                tmp_path):
    assert (places / "run" / "assets" / "tokenizer.model").is_file()
    cached = list((places / "tfds" / "books_captions" / "tokens").glob("*/*.npy"))
    assert len(cached) == 2
    # A fresh tokenizer, trained in memory, is the same model: the cached ids are read back.
    fresh = books_captions.build(make_config(places / "tfds"), workdir=None)
    assert fresh.tokenizer.model_proto == data.tokenizer.model_proto
    # The workdir's tokenizer is reused (nothing is trained), and the ids are made afresh in
    # an empty data dir: the same ones.
    monkeypatch.setattr(SentencePieceTokenizer, "train", no_training)
    (tmp_path / "tfds").mkdir()
    again = books_captions.build(make_config(tmp_path / "tfds"), workdir=str(places / "run"))
    assert again.tokenizer.model_proto == data.tokenizer.model_proto
    np.testing.assert_array_equal(again.train_tokens, data.train_tokens)
    np.testing.assert_array_equal(again.eval_tokens, data.eval_tokens)
    assert len(list((tmp_path / "tfds").glob("books_captions/tokens/*/*.npy"))) == 2
    # As the Flamingo data reads it: the tokenizer alone, from a config of its size only.
    alone = books_captions.tokenizer(ml_collections.ConfigDict({"vocab_size": VOCAB}),
                                     str(places / "run"))
    assert alone.model_proto == data.tokenizer.model_proto


def test_a_workdir_tokenizer_without_the_symbols_is_refused(tmp_path, texts):
    assets = tmp_path / "run" / "assets"
    assets.mkdir(parents=True)
    SentencePieceTokenizer.train(texts["validation"], VOCAB).save(assets / "tokenizer.model")
    (tmp_path / "tfds").mkdir()
    with pytest.raises(ValueError, match="no id of its own for '<image>'"):
        books_captions.build(make_config(tmp_path / "tfds"),
                             workdir=str(tmp_path / "run"))
    assert os.listdir(tmp_path / "tfds") == []
