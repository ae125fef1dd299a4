"""Paths the tests share."""

import glob
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Every experiment config (configs/common.py holds shared blocks, not an experiment).
CONFIGS = sorted(os.path.relpath(p, ROOT) for p in glob.glob(
    os.path.join(ROOT, "configs", "**", "*.py"), recursive=True)
    if os.path.basename(p) != "common.py")


def write_tfds_metadata(data_dir, name: str, config: str, module: str, features,
                        splits, examples: int) -> None:
    """`{name}/{config}/1.1.0/{dataset_info,features}.json` in `data_dir`, as a data set
    prepared as array_record holds them: `features` (those tfds's builder declares; its code
    needs TensorFlow) and `splits` of `examples` each, so that tfds reads it without building
    it (mock records stand in for the files)."""
    import tensorflow_datasets as tfds

    folder = data_dir / name / config / "1.1.0"
    folder.mkdir(parents=True)
    identity = tfds.core.DatasetIdentity(
        name=name, version=tfds.core.Version("1.1.0"), config_name=config,
        data_dir=str(folder), module_name=f"tensorflow_datasets.{module}")
    info = tfds.core.DatasetInfo(builder=identity, features=features)
    info.set_file_format("array_record")
    info.set_splits(tfds.core.SplitDict([tfds.core.SplitInfo(
        name=split, shard_lengths=[examples], num_bytes=0,
        filename_template=tfds.core.ShardedFileTemplate(
            data_dir=str(folder), template="{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}",
            dataset_name=name, split=split, filetype_suffix="array_record"))
        for split in splits]))
    info.write_to_directory(str(folder))
