import collections

import numpy as np
import pytest

from jaxformer.data import wordpiece
from jaxformer.data.wordpiece import WordPiece

TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "Unbelievable! The dogs were jumping over the foxes, quickly and lazily.",
    "Café owners sell coffee; the coffee is brown and hot.",
    "She said: \"I will not jump,\" and the fox laughed.",
] * 20


@pytest.fixture(scope="module")
def tokenizer():
    return wordpiece.train(TEXTS, 200)


def test_special_token_ids(tokenizer):
    assert [tokenizer.id(t) for t in wordpiece.SPECIAL_TOKENS] == [0, 1, 2, 3, 4]
    assert (tokenizer.pad_id, tokenizer.unk_id, tokenizer.cls_id, tokenizer.sep_id,
            tokenizer.mask_id) == (0, 1, 2, 3, 4)
    assert [tokenizer.token(i) for i in range(5)] == list(wordpiece.SPECIAL_TOKENS)


def test_round_trip_lowercases_and_strips_accents(tokenizer):
    ids = tokenizer.encode("The Café owners JUMPED over foxes.")
    assert all(5 <= i < tokenizer.vocab_size for i in ids)
    assert tokenizer.decode(ids) == "the cafe owners jumped over foxes."
    assert 1 < tokenizer.vocab_size <= 200


def test_text_never_encodes_to_special_ids(tokenizer):
    ids = tokenizer.encode("[MASK] [CLS] [SEP] [PAD]")
    assert not {0, 2, 3, 4} & set(ids)
    assert tokenizer.encode("zzzz qqqq") and tokenizer.unk_id in tokenizer.encode("€")


def test_word_starts(tokenizer):
    ids = tokenizer.encode("unbelievably dogged")
    tokens = [tokenizer.token(i) for i in ids]
    np.testing.assert_array_equal(tokenizer.word_starts(ids),
                                  [not t.startswith("##") for t in tokens])
    assert tokenizer.word_starts(ids)[0] and not tokenizer.word_starts(ids).all()
    assert tokenizer.word_starts([0, 2, 3, 4]).all()


def test_training_is_deterministic(tmp_path, tokenizer):
    again = wordpiece.train(TEXTS, 200)
    tokenizer.save(tmp_path / "a.json")
    again.save(tmp_path / "b.json")
    assert (tmp_path / "a.json").read_bytes() == (tmp_path / "b.json").read_bytes()


def test_save_and_load(tmp_path, tokenizer):
    tokenizer.save(tmp_path / "w.json")
    loaded = WordPiece.load(tmp_path / "w.json")
    assert loaded.vocab_size == tokenizer.vocab_size
    assert loaded.encode(TEXTS[1]) == tokenizer.encode(TEXTS[1])
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="cannot read WordPiece model"):
        WordPiece.load(tmp_path / "bad.json")


def test_for_workdir_trains_once_then_loads(tmp_path):
    calls = []

    def texts():
        calls.append(1)
        return TEXTS

    first = wordpiece.for_workdir(str(tmp_path), texts, 150)
    assert (tmp_path / wordpiece.ASSET_NAME).is_file() and len(calls) == 1
    second = wordpiece.for_workdir(str(tmp_path), texts, 150)
    assert len(calls) == 1 and second.encode(TEXTS[0]) == first.encode(TEXTS[0])
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_cache_keeps_vocabularies_by_texts_and_size(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    first = wordpiece.for_workdir(str(tmp_path / "a"), lambda: TEXTS, 150, cache_dir=cache)
    (cached,) = cache.iterdir()
    assert cached.name.startswith("wordpiece-150-")
    assert cached.read_text() == (tmp_path / "a" / wordpiece.ASSET_NAME).read_text()

    trained = []
    monkeypatch.setattr(wordpiece, "train", lambda texts, size: trained.append(size) or
                        WordPiece.from_tokens(wordpiece.SPECIAL_TOKENS + tuple("abc")))
    second = wordpiece.for_workdir(str(tmp_path / "b"), lambda: TEXTS, 150, cache_dir=cache)
    assert trained == [] and second.tokens == first.tokens
    wordpiece.for_workdir(str(tmp_path / "c"), lambda: TEXTS, 160, cache_dir=cache)
    wordpiece.for_workdir(str(tmp_path / "d"), lambda: TEXTS[:-1], 150, cache_dir=cache)
    assert trained == [160, 150] and len(list(cache.iterdir())) == 3

    cached.write_text("{not json")
    with pytest.raises(ValueError, match="cannot read WordPiece model .*delete it to rebuild"):
        wordpiece.for_workdir(str(tmp_path / "e"), lambda: TEXTS, 150, cache_dir=cache)
    assert not (tmp_path / "e").exists()


def test_rejects_too_small_or_empty():
    with pytest.raises(ValueError, match="vocab_size must exceed 5"):
        wordpiece.train(TEXTS, 5)
    with pytest.raises(ValueError, match="empty text"):
        wordpiece.train([], 100)


def test_word_counts_are_the_words_of_the_tokenizers_own_steps():
    texts = [
        "Plain ASCII, with punctuation_marks & symbols: $5 + 3% (ok?) [MASK] #tag ~x^y`z.",
        "Control\x00chars\x0bgone\ttab\nnewline\rreturn\x7fdel",
        "Accents: Café naïve résumé ÉCOLE İstanbul ΣΟΦΊΑ σοφός",
        "Chinese 中文字符 mixed中文text; Japanese カタカナ, emoji 😀👍 and dashes — – ‑",
        "Quotes «guillemets» „low“ ¿qué? ¡sí! zero\u200bwidth non\u00a0breaking",
        "x" * 101 + " " + "y" * 100 + " short",
        "",
    ] * 3
    bert = wordpiece._bert_tokenizer()
    expected = collections.Counter()
    for text in texts:
        words = bert.pre_tokenizer.pre_tokenize_str(bert.normalizer.normalize_str(text))
        expected.update(w for w, _ in words if len(w) <= 100)
    assert "y" * 100 in expected and "x" * 101 not in expected
    for chunk_chars in (1, 50, 1 << 20):  # One text per chunk, a few, all.
        assert wordpiece._word_counts(texts, chunk_chars) == expected


def naive_merges(counts, size):
    """The vocabulary `wordpiece._learn` should make, by recounting every pair per merge."""
    words = {w: [w[0]] + ["##" + c for c in w[1:]] for w in counts}
    alphabet = collections.Counter()
    for w, symbols in words.items():
        for s in set(symbols):  # A character counts the words it is in.
            alphabet[s] += counts[w]
    vocab = sorted(alphabet, key=lambda s: (-alphabet[s], s))[:size]
    while len(vocab) < size:
        pairs = collections.Counter()
        for w, symbols in words.items():
            for pair in zip(symbols, symbols[1:]):
                pairs[pair] += counts[w]
        if not pairs:
            break
        pair = min(pairs, key=lambda p: (-pairs[p], p))
        if pairs[pair] < 2:
            break
        merged = pair[0] + pair[1][2:]
        if merged not in vocab:
            vocab.append(merged)
        for w, symbols in words.items():
            out, i = [], 0
            while i < len(symbols):
                if tuple(symbols[i:i + 2]) == pair:
                    out.append(merged)
                    i += 2
                else:
                    out.append(symbols[i])
                    i += 1
            words[w] = out
    return vocab


@pytest.mark.parametrize("seed", range(4))
def test_merges_equal_a_recount_of_every_pair(seed):
    rng = np.random.default_rng(seed)
    words = {"".join(rng.choice(list("aab" if seed % 2 else "abcd"), rng.integers(1, 8)))
             for _ in range(120)}
    counts = collections.Counter({w: int(rng.integers(1, 6)) for w in words})
    for size in (3, 20, 60):
        assert wordpiece._learn(counts, size) == naive_merges(counts, size)
    text_counts = wordpiece._word_counts(TEXTS)
    assert wordpiece._learn(text_counts, 150) == naive_merges(text_counts, 150)
