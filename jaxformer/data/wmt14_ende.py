"""WMT'14 English-German (tfds `wmt14_translate/de-en`), the paper's benchmark.

tfds cannot download WMT here; where it can, prepare it once as array_record:

    tfds build wmt14_translate/de-en --data_dir=DIR --file_format=array_record

Splits: train (~4.5M pairs: Europarl, Common Crawl, News Commentary), validation
(newstest2013, 3,000) and test (newstest2014, 3,003). The direction is English to
German unless the config says `source="de", target="en"`. The pairs are read from
the tfds data source when needed rather than copied, the tokenizer is trained on
`tokenizer_sentences` sentences drawn from train, and token ids are cached under
`<data_dir>/wmt14_translate/de-en/<version>/tokens` where that is writable.
"""

from __future__ import annotations

from collections.abc import Sequence

import ml_collections
import tensorflow_datasets as tfds
from etils import epath

from jaxformer.data import common, translation_pairs, translation_pipeline
from jaxformer.data.common import DataSpec
from jaxformer.data.translation_pipeline import TranslationData

TFDS_NAME = "wmt14_translate/de-en"
LANGUAGES = ("en", "de")
SPLITS = translation_pipeline.SPLITS


def open_splits(data_dir: str) -> tuple[tfds.core.DatasetBuilder, dict[str, Sequence[dict]]]:
    """The builder and the data source of each split, or a ValueError saying how to prepare."""
    import tensorflow_datasets.translate.wmt14  # noqa: F401  (registers the builder)

    how = (f"prepare it once with `tfds build {TFDS_NAME} --data_dir={data_dir} "
           "--file_format=array_record`")
    try:
        with common.tfds_scratch():
            builder = tfds.builder(TFDS_NAME, data_dir=data_dir)
            prepared = builder.is_prepared()
    except Exception as e:  # A damaged dataset_info.json, say.
        raise ValueError(f"cannot open {TFDS_NAME} in {data_dir!r} ({e}); {how}") from e
    try:
        sources = {name: builder.as_data_source(split=name) for name in SPLITS}
        for name, source in sources.items():
            if not len(source):
                raise ValueError(f"the {name} split is empty")
    except Exception as e:  # tfds raises many kinds of errors for missing or other formats.
        if not prepared:
            raise ValueError(f"{TFDS_NAME} is not prepared in {data_dir!r}; {how}") from e
        raise ValueError(f"{TFDS_NAME} in {builder.data_dir} cannot be read as array_record "
                         f"({e}); {how}") from e
    return builder, sources


def check_config(config: ml_collections.ConfigDict) -> None:
    """Raises ValueError for settings `build` would reject, before anything is read or
    written (whether the data is prepared, `build` finds out from tfds)."""
    translation_pipeline.check_translation_config(config, LANGUAGES, data_dir_must_exist=True)


def spec(config: ml_collections.ConfigDict) -> DataSpec:
    """The tokenizer's size and special ids, without reading the pairs."""
    check_config(config)
    return translation_pipeline.data_spec(config)


def build(config: ml_collections.ConfigDict, *, workdir: str | None) -> TranslationData:
    """WMT'14 as translation data, in the direction and sizes `config` says.

    Args:
        config: the `data` part of the experiment config: `source` and `target` ("en"
            and "de", either way round), `vocab_size`, `max_source_length`,
            `max_target_length`, `tokenizer_sentences` and `data_dir` (the tfds data
            dir that holds the prepared data; "" means $TFDS_DATA_DIR or
            ~/tensorflow_datasets).
        workdir: the experiment's directory; the tokenizer is kept in its `assets/`
            and reused from there. None builds the tokenizer afresh in memory.
    """
    check_config(config)
    source, target = translation_pipeline.direction(config, LANGUAGES)
    data_dir = common.resolve_data_dir(config.get("data_dir", ""), create=False)
    builder, sources = open_splits(data_dir)
    pairs = {name: translation_pairs.lazy_pairs(records, source, target)
             for name, records in sources.items()}
    token_dir = epath.Path(data_dir) / builder.info.full_name / "tokens"
    return translation_pipeline.make_data(pairs, config, workdir=workdir, token_dir=token_dir)
