import gzip
import hashlib
import os

import ml_collections
import pytest

from jaxformer.data import ding_ende

DIGITS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
INSTALLED = all(os.path.isfile(os.path.join(ding_ende.DICTD_DIR, f"{ding_ende.DICTIONARY}{ext}"))
                for ext in (".index", ".dict.dz"))

# Entries in the layout of freedict-eng-deu: headword /pronunciation/, translations,
# then indented examples, synonyms and cross references. (index headwords, entry)
ENTRIES = [
    (["ive changed my mind", "changed my mind"],
     ("I've changed my mind. /aɪ vˈiː tʃˈeɪndʒd maɪ mˈaɪnd/\n"
      "Ich habe mich anders entschlossen., Ich habe es mir anders überlegt.\n")),
    (["acute"],
     ("acute /ɐkjˈuːt/ (´)\nAkut <masc>, Akut-Zeichen <neut> [print] ´\n"
      "      \"The word 'côte' has no acute on the 'e'.\"  - Das Wort 'côte' hat keinen Akut "
      "auf dem 'e'.\n   Synonym: {acute accent}\n\n")),
    (["it can be optimized"],
     ("It can be optimized. /ɪt kan biː ˈɒptɪmˌaɪzd/\n [eAm.] Es ist optimierbar.\n"
      "   Synonym: {It can be optimised.}\n\n")),
    (["its not for him to do sth"],
     ("It's not for him to do sth. /ɪts nˌɒt fɔː hˈɪm tə dˈuː ˌɛstˌiːˈeɪtʃ/\n"
      "Es steht ihm nicht an, etw. zu tun\n")),
    (["time flies fast"], "Time flies fast. /tˈaɪm flˈaɪz fˈɑːst/\nDie Zeit vergeht schnell.\n"),
    (["how much is it"], "How much is it?\nWie viel kostet das?\n"),
    (["its a case of hobsons choice"],
     ("It's a case of Hobson's choice. /ɪts ɐ kˈeɪs ɒv hˈɒbsənz tʃˈɔɪs/\n"
      "Es heißt: „Vogel friss oder stirb!“, Es heißt: „Das oder gar nichts.“\n")),
    (["i never saw his hamlet however i did see his othello"],
     ("I never saw his Hamlet. However, I did see his Othello. /aɪ nˈɛvə sˈɔː hɪz hˈamlɪt/\n"
      "Ich habe ihn nie als Hamlet gesehen, wohl aber als Othello.\n"
      " see: {however/but … do + verb}\n\n")),
    (["i changed my mind"],
     ("I've changed my mind. /aɪ vˈiː tʃˈeɪndʒd maɪ mˈaɪnd/\n"
      "Ich habe es mir anders überlegt.\n")),
    (["be a reminder of sth"],
     ("be a reminder of sth. /biː ɐ ɹɪmˈaɪndəɹ ɒv ˌɛstˌiːˈeɪtʃ/\n"
      "an etw. erinnern <v, intr>\n"
      "      \"The recipe is a blissful reminder of my grandmother's Sunday dinners.\"  - "
      "Das Rezept ist eine wunderbare Erinnerung an die Sonntagsessen meiner Großmutter.\n")),
]
EXPECTED = sorted([
    ("I've changed my mind.", "Ich habe mich anders entschlossen."),
    ("The word 'côte' has no acute on the 'e'.", "Das Wort 'côte' hat keinen Akut auf dem 'e'."),
    ("It can be optimized.", "Es ist optimierbar."),
    ("How much is it?", "Wie viel kostet das?"),
    ("It's a case of Hobson's choice.", "Es heißt: „Vogel friss oder stirb!“"),
    ("I never saw his Hamlet. However, I did see his Othello.",
     "Ich habe ihn nie als Hamlet gesehen, wohl aber als Othello."),
    ("I've changed my mind.", "Ich habe es mir anders überlegt."),
    ("The recipe is a blissful reminder of my grandmother's Sunday dinners.",
     "Das Rezept ist eine wunderbare Erinnerung an die Sonntagsessen meiner Großmutter."),
])


def encode_number(value: int) -> str:
    digits = ""
    while True:
        value, digit = divmod(value, 64)
        digits = DIGITS[digit] + digits
        if not value:
            return digits


def write_dictd(folder, entries=ENTRIES) -> str:
    """A freedict-eng-deu.index and .dict.dz in `folder`, in the real format."""
    folder.mkdir(parents=True, exist_ok=True)
    data, lines = b"", []
    for headwords, entry in entries:
        encoded = entry.encode("utf-8")
        for headword in headwords:
            lines.append(f"{headword}\t{encode_number(len(data))}\t{encode_number(len(encoded))}")
        data += encoded
    (folder / "freedict-eng-deu.index").write_text("\n".join(sorted(lines)) + "\n",
                                                   encoding="utf-8")
    (folder / "freedict-eng-deu.dict.dz").write_bytes(gzip.compress(data))
    return str(folder)


def make_config(data_dir, **overrides) -> ml_collections.ConfigDict:
    config = {"name": "ding_ende", "source": "en", "target": "de", "vocab_size": 320,
              "max_source_length": 32, "max_target_length": 32, "tokenizer_sentences": 1000,
              "data_dir": str(data_dir)}
    return ml_collections.ConfigDict(config | overrides)


def test_dictd_numbers_are_base_64():
    assert ding_ende.decode_number("A") == 0
    assert ding_ende.decode_number("/") == 63
    assert ding_ende.decode_number("BA") == 64
    assert ding_ende.decode_number("FVrr") == 5 * 64**3 + 21 * 64**2 + 43 * 64 + 43 == 1_399_531
    assert all(ding_ende.decode_number(encode_number(n)) == n for n in (0, 1, 63, 4095, 10**9))
    with pytest.raises(ValueError, match="not a dictd number"):
        ding_ende.decode_number("A!")


def test_sentence_pairs_are_parsed_from_entries(tmp_path):
    folder = write_dictd(tmp_path / "dictd")
    entries = list(ding_ende.read_entries(folder))
    assert entries == [entry for _, entry in ENTRIES]  # Each once, in file order.
    assert ding_ende.read_pairs(folder) == EXPECTED


def test_is_sentence():
    assert ding_ende.is_sentence("How much is it?")
    assert not ding_ende.is_sentence("Time flies fast.")  # Three words.
    assert not ding_ende.is_sentence("be a reminder of it.")  # Lower case.
    assert not ding_ende.is_sentence("I've changed my mind")  # No final stop.


def test_pairs_that_share_a_sentence_share_a_split():
    pairs = [(f"English sentence number {i}.", f"Deutscher Satz Nummer {i}.") for i in range(400)]
    pairs += [("English sentence number 7.", "Noch ein Satz."),  # Shares its English.
              ("Another English sentence.", "Deutscher Satz Nummer 9.")]  # Shares its German.
    splits = ding_ende.assign_splits(pairs)
    assert sum(map(len, splits.values())) == len(pairs)
    where = {pair: name for name, split in splits.items() for pair in split}
    assert where[pairs[-2]] == where[pairs[7]] and where[pairs[-1]] == where[pairs[9]]
    for side in range(2):
        sentences = [{pair[side] for pair in split} for split in splits.values()]
        assert sum(map(len, sentences)) == len(set().union(*sentences))
    for i, pair in enumerate(pairs[:400]):
        if i in (7, 9):
            continue
        digest = hashlib.sha256(pair[0].encode()).digest()
        fraction = int.from_bytes(digest[:8], "big") / 2**64
        expected = ("validation" if fraction < 0.05 else "test" if fraction < 0.1 else "train")
        assert where[pair] == expected
    assert 5 <= len(splits["validation"]) <= 40 and 5 <= len(splits["test"]) <= 40


def test_missing_package_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="apt-get install dict-freedict-eng-deu"):
        ding_ende.build(make_config(tmp_path), workdir=None, dictd_dir=str(tmp_path / "none"))


def test_malformed_dictionaries_are_value_errors(tmp_path):
    folder = tmp_path / "dictd"
    write_dictd(folder)
    index = folder / "freedict-eng-deu.index"
    lines = index.read_text().splitlines()
    index.write_text("\n".join([*lines, "headword\tBA"]) + "\n")
    with pytest.raises(ValueError, match="expected headword, offset and length"):
        list(ding_ende.read_entries(str(folder)))
    index.write_text("\n".join([*lines, "headword\tBAAA\tBA"]) + "\n")
    with pytest.raises(ValueError, match="past the end"):
        list(ding_ende.read_entries(str(folder)))
    write_dictd(folder)
    (folder / "freedict-eng-deu.dict.dz").write_bytes(b"not gzip")
    with pytest.raises(ValueError, match="cannot read"):
        list(ding_ende.read_entries(str(folder)))


def test_builder_and_build(tmp_path):
    # Enough pairs for a batch: the fixture's entries and numbered variants of them.
    entries = list(ENTRIES) + [
        ([f"sentence {i}"], f"This is example sentence {i}. /ðɪs/\nDas ist Beispielsatz {i}.\n")
        for i in range(60)]
    folder = write_dictd(tmp_path / "dictd", entries)
    pairs = ding_ende.read_pairs(folder)
    assert len(pairs) == len(EXPECTED) + 60
    builder = ding_ende.prepare(str(tmp_path / "tfds"), dictd_dir=folder)
    # Prepared data needs no dictionary.
    ding_ende.check_config(make_config(tmp_path / "tfds"), dictd_dir=str(tmp_path / "none"))
    splits = ding_ende.read_splits(builder)
    assert splits == ding_ende.assign_splits(pairs)
    data = ding_ende.build(make_config(tmp_path / "tfds"), workdir=str(tmp_path / "run"),
                           dictd_dir=folder)
    assert data.pairs["train"] == splits["train"]
    assert os.listdir(tmp_path / "run") == ["assets"]
    assert os.listdir(tmp_path / "run" / "assets") == ["tokenizer.model"]
    batch = next(data.train_iter(batch_size=8, seed=0))
    assert batch["inputs"].shape[0] == batch["targets"].shape[0] == 8
    for inputs, targets in zip(batch["inputs"], batch["targets"], strict=True):
        assert (data.detokenize(inputs), data.detokenize(targets)) in splits["train"]
    de_en = ding_ende.build(make_config(tmp_path / "tfds", source="de", target="en"),
                            workdir=None, dictd_dir=folder)
    assert de_en.pairs["train"] == [(de, en) for en, de in splits["train"]]
    with pytest.raises(ValueError, match="between 'en' and 'de'"):
        ding_ende.build(make_config(tmp_path / "tfds", target="es"), workdir=None)


@pytest.mark.skipif(not INSTALLED, reason="dict-freedict-eng-deu is not installed")
def test_the_installed_dictionary():
    pairs = ding_ende.read_pairs()
    assert 17_000 <= len(pairs) <= 19_000  # 17,992 in 2022.04.21-1.
    assert ("I've changed my mind.", "Ich habe mich anders entschlossen.") in pairs
    assert ("Like mother, like daughter.", "Wie die Mutter, so die Tochter.") in pairs
    assert ("It can be optimized.", "Es ist optimierbar.") in pairs
    assert all(ding_ende.is_sentence(en) and de for en, de in pairs)
    assert not any("[" in en + de or "<" in en + de for en, de in pairs)
    words = sum(len(en.split()) for en, _ in pairs) / len(pairs)
    assert 7 < words < 9
    splits = ding_ende.assign_splits(pairs)
    for name in ("validation", "test"):
        assert 0.045 < len(splits[name]) / len(pairs) < 0.06
    for side in range(2):
        sentences = [{pair[side] for pair in split} for split in splits.values()]
        assert sum(map(len, sentences)) == len(set().union(*sentences))
