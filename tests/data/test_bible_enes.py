import collections
import hashlib
import importlib.util
import lzma
import pathlib
import re
import shutil
import sys

import ml_collections
import pytest
import tensorflow_datasets as tfds

from jaxformer.data import bible_enes

SWORD_ROOT = pathlib.Path("/usr/share/sword")
MODULES_INSTALLED = all(
    (SWORD_ROOT / "modules" / "texts" / "ztext" / name).is_dir()
    for name in ("engKJV2006eb", "spaRV1909eb"))


def make_config(data_dir, **overrides) -> ml_collections.ConfigDict:
    config = {"name": "bible_enes", "source": "en", "target": "es", "vocab_size": 500,
              "max_source_length": 64, "max_target_length": 64, "tokenizer_sentences": 2000,
              "data_dir": str(data_dir)}
    return ml_collections.ConfigDict(config | overrides)


@pytest.fixture(scope="module")
def verses() -> list[bible_enes.Verse]:
    return bible_enes.read_corpus()


@pytest.fixture(scope="module")
def by_id(verses) -> dict[str, bible_enes.Verse]:
    return {verse.id: verse for verse in verses}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tfds")
    bible_enes.prepare(str(path))
    return path


# The corpus.

def test_corpus_has_every_book_in_canon_order(verses):
    assert len(verses) == 31_084
    assert [v.index for v in verses] == list(range(31_084))
    books = list(dict.fromkeys(v.book for v in verses))
    assert len(books) == 66
    assert books[:5] == ["Gen", "Exod", "Lev", "Num", "Deut"]
    assert books[38:41] == ["Mal", "Matt", "Mark"] and books[-1] == "Rev"
    assert verses[-1].id == "Rev.22.21"
    chapters = {(v.book, v.chapter) for v in verses}
    assert len(chapters) == 1_189
    assert collections.Counter(v.book for v in verses)["Ps"] == 2_461


def test_hand_checked_verses(by_id):
    genesis = by_id["Gen.1.1"]
    assert genesis.index == 0
    assert genesis.en == "In the beginning God created the heaven and the earth."
    assert genesis.es == "EN el principio crió Dios los cielos y la tierra."
    john = by_id["John.3.16"]
    assert john.en == ("For God so loved the world, that he gave his only begotten Son, that "
                       "whosoever believeth in him should not perish, but have everlasting "
                       "life.")  # Its pilcrow removed.
    assert john.es == ("Porque de tal manera amó Dios al mundo, que ha dado á su Hijo "
                       "unigénito, para que todo aquel que en él cree, no se pierda, mas tenga "
                       "vida eterna.")
    # The psalm's title stays, in both languages; the KJV's footnotes go.
    assert by_id["Ps.3.1"].en.startswith("A Psalm of David, when he fled from Absalom his son. "
                                         "LORD, how are they")
    assert by_id["Ps.3.1"].es.startswith("Salmo de David, cuando huía de delante de Absalom")
    assert by_id["Gen.1.4"].en == ("And God saw the light, that it was good: and God divided "
                                   "the light from the darkness.")
    # Words in adjacent elements stay apart; stray USFM markers are gone.
    assert by_id["Gen.2.12"].es == ("Y el oro de aquella tierra es bueno: hay allí también "
                                    "bdelio y piedra cornerina.")
    assert "by my name JEHOVAH was I not known" in by_id["Exod.6.3"].en


def test_verses_empty_in_spanish_are_left_out(by_id):
    missing = ["Num.12.16", "Num.29.40", "1Sam.23.29", "2Sam.20.26", "2Chr.33.25", "Job.35.16",
               "Job.38.39", "Job.38.40", "Job.38.41", "Job.40.20", "Job.40.21", "Job.40.22",
               "Job.40.23", "Job.40.24", "Hos.11.12", "Jonah.1.17", "Acts.19.41", "2Cor.13.14"]
    assert not set(missing) & set(by_id)
    assert len(by_id) + len(missing) == 31_102  # The verses of the KJV versification.


def test_text_is_clean(verses):
    for verse in verses:
        for text in (verse.en, verse.es):
            assert text and text == " ".join(text.split()), verse
            assert not re.search(r"[<>&¶\\\t\n]", text), verse


def test_corpus_file_is_checked(monkeypatch, tmp_path):
    data = lzma.decompress(bible_enes.CORPUS_PATH.read_bytes())
    assert hashlib.sha256(data).hexdigest() == bible_enes.CORPUS_SHA256
    assert bible_enes.CORPUS_PATH.stat().st_size < 2_100_000
    tampered = tmp_path / "bible_enes.tsv.xz"
    changed = data[:2000].replace(b"heaven and the earth", b"heavens and the earth")
    tampered.write_bytes(lzma.compress(changed + data[2000:], preset=0))
    monkeypatch.setattr(bible_enes, "CORPUS_PATH", tampered)
    with pytest.raises(ValueError, match="sha256"):
        bible_enes.read_corpus()


@pytest.mark.skipif(not MODULES_INSTALLED, reason="sword-text-kjv / sword-text-sparv missing")
def test_corpus_rebuilds_from_the_installed_modules(monkeypatch):
    monkeypatch.setattr(sys, "dont_write_bytecode", True)  # Keep the assets folder clean.
    path = bible_enes.CORPUS_PATH.parent / "make_corpus.py"
    spec = importlib.util.spec_from_file_location("make_corpus", path)
    make_corpus = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_corpus)
    text = make_corpus.build_corpus(SWORD_ROOT)
    assert text.encode("utf-8") == lzma.decompress(bible_enes.CORPUS_PATH.read_bytes())
    counts = [len(c.split()) for _, _, c in make_corpus.BOOKS]
    assert len(counts) == 66 and sum(counts) == 1_189
    assert sum(int(n) for _, _, c in make_corpus.BOOKS for n in c.split()) == 31_102


# Splits.

def test_splits_hold_out_whole_books(verses):
    splits = bible_enes.split_verses(verses)
    assert {name: len(split) for name, split in splits.items()} == {
        "train": 27_521, "validation": 1_336, "test": 2_227} == bible_enes.SPLIT_SIZES
    books = {name: collections.Counter(v.book for v in split) for name, split in splits.items()}
    assert books["validation"] == {"Acts": 1_006, "Eccl": 222, "Jas": 108}
    assert books["test"] == {"John": 879, "Prov": 915, "Rom": 433}
    assert len(books["train"]) == 60
    assert not set(books["train"]) & (set(books["validation"]) | set(books["test"]))
    ids = [{v.id for v in split} for split in splits.values()]
    assert sum(map(len, ids)) == len(set().union(*ids)) == 31_084
    for split in splits.values():
        assert [v.index for v in split] == sorted(v.index for v in split)


# The tfds builder.

@pytest.mark.slow
def test_builder_stores_the_splits(data_dir, verses):
    builder = bible_enes.BibleEnes(data_dir=str(data_dir), file_format="array_record")
    assert builder.is_prepared()
    assert sorted(p.name for p in builder.data_path.glob("*.array_record*")) == [
        f"bible_enes-{name}.array_record-00000-of-00001"
        for name in ("test", "train", "validation")]
    assert bible_enes.read_splits(builder) == bible_enes.split_verses(verses)
    assert builder.info.splits["validation"].num_examples == 1_336


def test_tfds_data_source_reads_the_prepared_data(data_dir):
    source = tfds.data_source("bible_enes", split="test", data_dir=str(data_dir),
                              download=False)
    records = sorted((source[i] for i in range(len(source))), key=lambda r: int(r["index"]))
    assert len(records) == 2_227
    assert records[0]["verse"] == b"Prov.1.1"
    assert records[0]["en"] == b"The proverbs of Solomon the son of David, king of Israel;"
    assert records[0]["es"].decode().startswith("LOS proverbios de Salomón, hijo de David")


def test_damaged_records_are_a_value_error(data_dir, tmp_path):
    shutil.copytree(data_dir / "bible_enes", tmp_path / "bible_enes")
    records = tmp_path / "bible_enes" / "1.0.0" / "bible_enes-test.array_record-00000-of-00001"
    data = records.read_bytes()
    records.write_bytes(data[:5000] + bytes([data[5000] ^ 0xFF]) + data[5001:])
    with pytest.raises(ValueError, match="bible_enes data"):
        bible_enes.build(make_config(tmp_path), workdir=None)


def test_missing_data_dir_is_a_value_error(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        bible_enes.build(make_config(tmp_path / "nowhere"), workdir=None)


# Translation data.

@pytest.mark.slow
def test_build_gives_pairs_in_either_direction(data_dir, verses):
    en_es = bible_enes.build(make_config(data_dir), workdir=None)
    splits = bible_enes.split_verses(verses)
    assert en_es.pairs["validation"][0] == (  # Ecclesiastes 1:1; Acts comes later.
        "The words of the Preacher, the son of David, king in Jerusalem.",
        "PALABRAS del Predicador, hijo de David, rey en Jerusalem.")
    assert en_es.pairs["train"] == [(v.en, v.es) for v in splits["train"]]
    assert en_es.references("test") == [v.es for v in splits["test"]]
    es_en = bible_enes.build(make_config(data_dir, source="es", target="en"), workdir=None)
    assert es_en.pairs["test"] == [(v.es, v.en) for v in splits["test"]]
    assert es_en.cache_dir.name == "es-en"
    assert es_en.max_source_length == 64 and es_en.vocab_size == 500
