"""Paths, files and trained workdirs the tests share."""

import fcntl
import glob
import os
import pathlib
import shutil

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The tests compile far more than they run: XLA's backend (LLVM) optimisation off, and its
# CPU code written by the element-wise emitters rather than the MLIR fusion emitters (a
# train step compiles in half the time).
FAST_COMPILE_FLAGS = "--xla_backend_optimization_level=0 --xla_cpu_use_fusion_emitters=false"


def xla_flags(devices: int | None = 8) -> str:
    """XLA_FLAGS for a process a test starts: compiled as the tests' own programs (so that
    they share the compilation cache) on `devices` host devices (None: the command's own
    choice)."""
    count = f" --xla_force_host_platform_device_count={devices}" if devices else ""
    return FAST_COMPILE_FLAGS + count


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


# Evaluator settings that run it neither during nor after training.
NO_EVALUATION = {"every_steps": 0, "at_end": False}


def without_evaluations(config):
    """`config` with its evaluators kept but run neither during nor after training, for runs
    that tests only read (the evaluators' own tests, and every config's one-step run, run
    them); it halves the time to train the Flamingo chain."""
    for entry in config.evals.values():
        entry.update(NO_EVALUATION)
    return config


def without_evaluations_flags(config_arg: str) -> list[str]:
    """The command-line overrides of `without_evaluations` for `--config=config_arg`."""
    from jaxformer import config as config_lib

    names = config_lib.load_config(os.path.join(ROOT, config_arg)).evals
    return [f"--config.evals.{name}.{key}={value}" for name in names
            for key, value in NO_EVALUATION.items()]


def flamingo_chain(tmp_path_factory) -> pathlib.Path:
    """A directory with the runlocal CLIP (`clip`), GPT (`lm`) and Flamingo (`flamingo`) runs,
    trained once per test session: the worker processes share it, one building it while the
    others wait on a lock. Tests read these workdirs and copy them to change them."""
    from jaxformer import config as config_lib
    from jaxformer.train import trainer

    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    chain = shared / "flamingo_chain"
    with open(shared / "flamingo_chain.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (chain / "complete").exists():
            shutil.rmtree(chain, ignore_errors=True)
            configs = os.path.join(ROOT, "configs")
            trainer.train(without_evaluations(config_lib.load_config(
                f"{configs}/clip/emoji.py:runlocal")), str(chain / "clip"))
            trainer.train(without_evaluations(config_lib.load_config(
                f"{configs}/flamingo/lm.py:runlocal")), str(chain / "lm"))
            trainer.train(without_evaluations(config_lib.load_config(
                f"{configs}/flamingo/emoji.py:runlocal,clip={chain / 'clip'},lm={chain / 'lm'}")),
                str(chain / "flamingo"))
            (chain / "complete").touch()
    return chain
