"""Sweep definitions: the `hyper` object a config's `get_sweep(hyper, arg)` builds points with.

A sweep is a list of points; a point is a dict of overrides, `{"config.optim.lr": 3e-4}`, as
given on the command line as `--config.optim.lr=3e-4`. The key `name` (no `config.` prefix)
names a point, e.g. the row of a paper's table; unnamed points are named from their overrides.
In the manner of big_vision's `get_hyper`:

    def get_sweep(hyper, arg=None):
        return hyper.product([
            hyper.sweep("config.optim.lr", [1e-3, 3e-4]),
            hyper.sweep("config.model.num_layers", [2, 4]),
        ])

    hyper.zipit([hyper.sweep("config.a", [1, 2]), hyper.sweep("config.b", [3, 4])])
    hyper.chainit([hyper.fixed("name", "base"), [{"name": "deep", "config.model.num_layers": 8}]])
    hyper.random(8, seed=0, space={"config.optim.lr": hyper.loguniform(1e-4, 1e-2),
                                   "config.model.dropout_rate": hyper.choice([0.0, 0.1])})

Rows of one table that are different kinds of run (pretraining, then fine-tuning from it) use
more keys: `arg`, appended to the config's arg string for that point; `command`, the
`jaxformer` command that runs it (default `train`; e.g. `baseline`); `row`, the table row the
point is a candidate for when a row picks the best of several points (a learning-rate grid;
default: the point's own name); and values `hyper.workdir_of("row")`, the workdir of an
earlier point of the sweep:

    [{"name": "pretrain", "arg": "row=pretrain"},
     {"name": "finetune", "arg": "row=finetune",
      "config.init_from.workdir": hyper.workdir_of("pretrain")}]
"""

from __future__ import annotations

import itertools
import math
import random as _random
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

Point = dict[str, Any]
NAME = "name"
ARG = "arg"
COMMAND = "command"
ROW = "row"
PREFIX = "config."
WORKDIR_OF = "workdir_of:"


def workdir_of(name: str) -> str:
    """A value that stands for the workdir of the sweep's point `name` (resolved by `plan`)."""
    return WORKDIR_OF + name


def sweep(key: str, values: Iterable[Any]) -> list[Point]:
    """One point per value of `key`."""
    _check_key(key)
    return [{key: value} for value in values]


def fixed(key: str, value: Any) -> list[Point]:
    """A single point setting `key` (to combine with `product`)."""
    return sweep(key, [value])


def product(sweeps: Sequence[Sequence[Point]]) -> list[Point]:
    """Every combination of one point from each sweep (the first varies slowest)."""
    return [_merge(combination) for combination in itertools.product(*sweeps)]


def zipit(sweeps: Sequence[Sequence[Point]]) -> list[Point]:
    """The i-th points of all sweeps merged; the sweeps must have the same length."""
    lengths = {len(s) for s in sweeps}
    if len(lengths) > 1:
        raise ValueError(f"zipit needs sweeps of one length, got {sorted(lengths)}")
    return [_merge(points) for points in zip(*sweeps)]


def chainit(sweeps: Sequence[Sequence[Point]]) -> list[Point]:
    """The points of all sweeps, one after the other."""
    return [dict(point) for s in sweeps for point in s]


Distribution = Callable[[_random.Random], Any]


def uniform(low: float, high: float) -> Distribution:
    return lambda rng: _round(rng.uniform(low, high))


def loguniform(low: float, high: float) -> Distribution:
    """Uniform in log space (learning rates, weight decays)."""
    if not 0 < low < high:
        raise ValueError(f"loguniform needs 0 < low < high, got ({low}, {high})")
    return lambda rng: _round(math.exp(rng.uniform(math.log(low), math.log(high))))


def randint(low: int, high: int) -> Distribution:
    """An integer in [low, high]."""
    return lambda rng: rng.randint(low, high)


def choice(values: Sequence[Any]) -> Distribution:
    values = list(values)
    return lambda rng: rng.choice(values)


def random(num: int, seed: int, space: Mapping[str, Distribution]) -> list[Point]:
    """`num` points drawn from `space` with `seed`: the same seed gives the same points.

    Floats are rounded to 3 significant digits, so that points have short, exact names.
    """
    for key in space:
        _check_key(key)
    rng = _random.Random(seed)
    return [{key: draw(rng) for key, draw in space.items()} for _ in range(num)]


def _round(value: float) -> float:
    return float(f"{value:.3g}")


def _merge(points: Iterable[Point]) -> Point:
    merged: Point = {}
    for point in points:
        for key, value in point.items():
            if key in merged and merged[key] != value:
                raise ValueError(f"sweep sets {key} twice ({merged[key]!r} and {value!r})")
            merged[key] = value
    return merged


def _check_key(key: str) -> None:
    if key != NAME and not key.startswith(PREFIX):
        raise ValueError(f"sweep key {key!r} must be 'name' or start with 'config.'")
