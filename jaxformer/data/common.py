"""What the data modules share: process shards of global batches, eval splits, grain read
options, tfds data directories, splits opened on first use, the workdir folder they write to,
config checks, and the `DataSpec` each module's `spec(config)` returns.

A global batch does not depend on how many processes share it: process `p` of `P` takes its
`p`-th block of `batch_size` rows, so resuming on another number of processes (with the same
global batch) sees the same examples.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import io
import logging
import numbers
import os
import sys
import tempfile
import threading
import uuid
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from typing import Any, TypeVar

import grain
import ml_collections
import numpy as np
from etils import epath

from jaxformer.quiet_logs import dropped_log_lines

Batch = dict[str, np.ndarray]

TFDS_DEFAULT_DIR = "~/tensorflow_datasets"


@dataclasses.dataclass(frozen=True)
class Shard:
    """This process's block of rows of each global batch of `batch_size * process_count`."""

    batch_size: int
    process_index: int = 0
    process_count: int = 1

    def __post_init__(self):
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {self.batch_size}")
        if not 0 <= self.process_index < self.process_count:
            raise ValueError(f"process_index {self.process_index} is not in "
                             f"[0, {self.process_count})")

    @property
    def global_batch(self) -> int:
        return self.batch_size * self.process_count

    @property
    def start(self) -> int:
        """This process's first row in a global batch."""
        return self.process_index * self.batch_size

    @property
    def rows(self) -> np.ndarray:
        """This process's rows of a global batch, `[start, start + batch_size)`."""
        return self.start + np.arange(self.batch_size)


@dataclasses.dataclass(frozen=True)
class TokenizerSpec:
    """A tokenizer's size and special ids (None: it has none), for building models without
    training or loading it."""

    vocab_size: int
    pad_id: int | None = None
    bos_id: int | None = None
    eos_id: int | None = None


@dataclasses.dataclass(frozen=True)
class DataSpec:
    """What tasks read of a data object, known from the config alone (None: not applicable).

    Attributes:
        vocab_size: the number of token ids.
        tokenizer: the data's tokenizer, or its `TokenizerSpec`.
        class_names: the name of each label.
        image_shape: `(height, width, channels)` of the model's input images.
    """

    vocab_size: int | None = None
    tokenizer: Any = None
    class_names: tuple[str, ...] | None = None
    image_shape: tuple[int, int, int] | None = None

    @property
    def num_classes(self) -> int | None:
        return None if self.class_names is None else len(self.class_names)


def read_options(threads: int = 0) -> grain.ReadOptions:
    """`threads` threads preparing batches ahead of the consumer, two each; 0 prepares them on
    demand in the consumer's thread, which suits batches gathered with numpy from memory
    (worker threads would only contend for the GIL)."""
    return grain.ReadOptions(num_threads=threads, prefetch_buffer_size=2 * threads)


def in_order_batches(num_examples: int, global_batch: int, num_batches: int) -> int:
    """How many global batches an in-order pass over `num_examples` examples makes: the first
    `num_batches` of them, or all (-1), never more than the examples fill."""
    if num_batches < -1:
        raise ValueError(f"num_batches must be -1 (all) or non-negative, got {num_batches}")
    total = -(-num_examples // global_batch)
    return total if num_batches == -1 else min(num_batches, total)


def choose_split(split: str | None, available: Sequence[str]) -> str:
    """`split`, or the first of `available` (the default) when None."""
    if split is None:
        return available[0]
    if split not in available:
        raise ValueError(f"unknown split {split!r}; available: {', '.join(available)}")
    return split


def assets_dir(workdir: str | None) -> str | None:
    """`<workdir>/assets`, the only place in an experiment's workdir a data module writes to
    (None without a workdir: keep everything in memory)."""
    return os.path.join(workdir, "assets") if workdir else None


def save_atomically(path: epath.Path, save: Callable[[epath.Path], None]) -> None:
    """Runs `save` on a temporary name next to `path`, then renames it to `path`, so that
    readers never see a partly written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.parent / f".{path.name}.{uuid.uuid4().hex}.tmp"
    try:
        save(partial)
        partial.rename(path)
    finally:
        if partial.exists():
            partial.unlink()


T = TypeVar("T")


def cached(path: epath.Path | None, make: Callable[[], T], *,
           load: Callable[[epath.Path], T], save: Callable[[T, epath.Path], None]) -> T:
    """`load(path)` where `path` exists, else `make()`, saved at `path` for the next run.

    `load` raises ValueError for a file it cannot use; the error says to delete it, which
    rebuilds it. Saving is atomic and best effort: where `path` is not writable the value is
    only returned, with one warning. None keeps the value in memory only.
    """
    if path is not None and path.exists():
        try:
            return load(path)
        except ValueError as e:
            raise ValueError(f"{e}; delete it to rebuild") from e
    value = make()
    if path is not None:
        try:
            save_atomically(path, lambda partial: save(value, partial))
        except OSError as e:
            logging.getLogger(__name__).warning("not caching %s: %s", path, e)
    return value


def save_arrays(value: Any, path: epath.Path) -> None:
    """Writes the array fields of dataclass `value` to `path`, one .npz file."""
    with path.open("wb") as f:
        np.savez(f, **dataclasses.asdict(value))


def load_arrays(cls: type[T], path: epath.Path) -> T:
    """The `cls` (a dataclass of arrays) that `save_arrays` wrote to `path`; a ValueError
    for a file that is not one."""
    try:
        with path.open("rb") as f, np.load(f, allow_pickle=False) as arrays:
            return cls(**{field.name: arrays[field.name] for field in dataclasses.fields(cls)})
    except (OSError, ValueError, EOFError, KeyError, TypeError) as e:
        raise ValueError(f"unreadable cache file {path} ({e})") from e


def digest(texts: Iterable[str]) -> str:
    """16 hex digits of the sha256 of `texts` (each ended by a NUL): a key for a cache of
    what is made from them."""
    sha = hashlib.sha256()
    for text in texts:
        sha.update(text.encode("utf-8"))
        sha.update(b"\0")
    return sha.hexdigest()[:16]


class LazySource:
    """The source `opener()` returns, called on first use (`len` or indexing): data whose
    files only training and evaluation read builds without them, so that a trained or
    imported model runs from the preprocessing alone. The source must not be empty."""

    def __init__(self, opener: Callable[[], Sequence], name: str):
        self._open, self.name, self._source = opener, name, None

    @property
    def opened(self) -> bool:
        return self._source is not None

    def source(self) -> Sequence:
        if self._source is None:
            source = self._open()
            if len(source) == 0:
                raise ValueError(f"the {self.name} split is empty")
            self._source = source
        return self._source

    def __len__(self) -> int:
        return len(self.source())

    def __getitem__(self, index: int):
        return self.source()[index]


def open_lazy_sources(data: Any) -> None:
    """Opens every `LazySource` among the fields of `data` (a dataclass; a mapping of splits
    included), so that a run finds an absent or damaged data set before it writes anything."""
    if not dataclasses.is_dataclass(data):
        return
    for field in dataclasses.fields(data):
        value = getattr(data, field.name)
        for source in value.values() if isinstance(value, Mapping) else (value,):
            if isinstance(source, LazySource):
                source.source()


@contextlib.contextmanager
def tfds_scratch():
    """Runs the block with `tempfile` pointed at a directory of its own, removed afterwards:
    tfds makes (and leaves) an empty temporary directory each time it opens a data set that
    is not prepared, to fetch metadata from GCS."""
    with tempfile.TemporaryDirectory(prefix="jaxformer-tfds-") as scratch:
        saved, tempfile.tempdir = tempfile.tempdir, scratch
        try:
            yield
        finally:
            tempfile.tempdir = saved


def default_data_dir(data_dir: str) -> str:
    """The tfds data dir `data_dir` names: itself, or $TFDS_DATA_DIR, or ~/tensorflow_datasets."""
    return os.path.expanduser(data_dir or os.environ.get("TFDS_DATA_DIR") or TFDS_DEFAULT_DIR)


def check_data_dir(data_dir: str, *, default_must_exist: bool) -> str:
    """`default_data_dir(data_dir)`, checked without writing to be a readable directory.

    Args:
        data_dir: the config's `data_dir`; "" for the default. A named directory must exist;
            remote paths (with `://`) are not checked.
        default_must_exist: whether the default must exist too (false where it is made).
    """
    path = default_data_dir(data_dir)
    if "://" in path:
        return path
    if not data_dir and not default_must_exist and not os.path.exists(path):
        return path  # The default, made by whoever prepares data in it.
    if not os.path.isdir(path):
        raise ValueError(f"data_dir {path!r} does not exist or is not a directory")
    if not os.access(path, os.R_OK | os.X_OK):
        raise ValueError(f"data_dir {path!r} is not readable")
    return path


def split_files(config: ml_collections.ConfigDict, default_files: Mapping[str, str]
                ) -> dict[str, str]:
    """Split -> the path of its file under `config.path`: `default_files` (split -> file
    name), renamed by `config.files`."""
    files = {**default_files, **dict(config.get("files", {}))}
    unknown = set(files) - set(default_files)
    if unknown:
        raise ValueError(f"data.files has unknown splits {sorted(unknown)}; available: "
                         f"{', '.join(default_files)}")
    return {split: os.path.join(os.path.expanduser(config.path), files[split])
            for split in default_files}


def check_files_or_data_dir(config: ml_collections.ConfigDict,
                            default_files: Mapping[str, str]) -> None:
    """With `config.path`, that each split's file (`split_files`) exists; without, that the
    tfds data dir does."""
    if config.get("path", ""):
        for split, path in split_files(config, default_files).items():
            if not os.path.isfile(path):
                raise ValueError(f"the {split} file {path} does not exist (data.path, "
                                 f"data.files)")
    else:
        check_data_dir(config.get("data_dir", ""), default_must_exist=True)


def resolve_data_dir(data_dir: str, *, create: bool) -> str:
    """`check_data_dir(data_dir)`, making the default directory first if `create`."""
    path = check_data_dir(data_dir, default_must_exist=not create)
    if create and not data_dir and "://" not in path:
        os.makedirs(path, exist_ok=True)
    return path


@contextlib.contextmanager
def _quiet_tfds():
    """Keeps tfds's preparation output off the console: its progress bars, its lines on
    stdout (sizes, unknown for data made from local files; stdout carries the commands'
    results) and its warnings about the half-written folder."""
    from tensorflow_datasets.core.utils import tqdm_utils

    bars = getattr(tqdm_utils, "_active", True)
    tqdm_utils.display_progress_bar(False)
    try:
        with dropped_log_lines("Variant folder"), contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        tqdm_utils.display_progress_bar(bars)


def prepare_builder(make: Callable[[], Any], name: str, data_dir: str,
                    check: Callable[[], None] | None = None) -> Any:
    """`make()`'s tfds builder, its data prepared in `data_dir` if it is not yet.

    Preparation holds `<data_dir>/<name>.prepare.lock` (flock), so that processes started
    together prepare it once: the others wait, then find it prepared. `check()` runs before
    a preparation (e.g. to say plainly that a source package is missing). A preparation
    prints one line on stderr, and nothing of tfds's own output.
    """
    try:
        with _quiet_tfds():
            builder = make()
            if builder.is_prepared():
                return builder
            remote = "://" in data_dir  # No flock on object stores: prepare those beforehand.
            if not remote:
                os.makedirs(data_dir, exist_ok=True)
            with contextlib.nullcontext() if remote else open(
                    os.path.join(data_dir, f"{name}.prepare.lock"), "a") as lock:
                if lock is not None:
                    fcntl.flock(lock, fcntl.LOCK_EX)
                builder = make()  # Another process may have prepared it meanwhile.
                if builder.is_prepared():
                    return builder
                if check is not None:
                    check()
                builder.download_and_prepare()
        print(f"prepared {name} in {builder.data_dir}", file=sys.stderr, flush=True)
        return builder
    except Exception as e:  # tfds raises many kinds of errors for unwritable or damaged files.
        raise ValueError(f"cannot prepare {name} in {data_dir!r}: {e}") from e


def require_int(config: ml_collections.ConfigDict, key: str, *, minimum: int,
                default: Any = None) -> int:
    """`config[key]` (or `default` when absent), which must be an integer >= `minimum`."""
    value = config.get(key, default)
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"data.{key} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def require_choice(config: ml_collections.ConfigDict, key: str, choices: Collection[str], *,
                   default: Any = None) -> str:
    """`config[key]` (or `default` when absent), which must be one of `choices`."""
    value = config.get(key, default)
    if value not in choices:
        raise ValueError(f"unknown data.{key} {value!r}; available: {', '.join(choices)}")
    return value


class EpochOrders:
    """Which example sits at each position of an endless stream of seeded epochs: epoch e
    visits the `size` examples in the permutation drawn from `(seed, e)`. The permutations of
    the last two epochs are kept (a batch may straddle an epoch boundary); thread-safe."""

    def __init__(self, size: int, seed: int):
        self.size, self.seed = size, seed
        self._orders: dict[int, np.ndarray] = {}
        self._lock = threading.Lock()

    def order(self, epoch: int) -> np.ndarray:
        """The permutation of the examples that epoch `epoch` visits them in."""
        with self._lock:
            if epoch not in self._orders:
                if len(self._orders) >= 2:
                    self._orders.pop(min(self._orders))
                rng = np.random.default_rng([self.seed, epoch])
                self._orders[epoch] = rng.permutation(self.size)
            return self._orders[epoch]

    def example(self, position: int) -> int:
        """The index of the example at `position` of the stream."""
        return int(self.order(position // self.size)[position % self.size])
