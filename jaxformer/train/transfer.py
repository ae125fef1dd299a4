"""Transfer learning: `config.init_from` (parameters from another workdir) and `config.freeze`.

    config.init_from = dict(workdir="runs/vit", step=-1, mapping=(("encoder", "encoder"),),
                            strict=True)
    config.freeze = ("encoder/.*",)

A model assembled from several runs names one source per part instead (a dict of such
dicts, without a top-level `workdir`):

    config.init_from = dict(vision=dict(workdir="runs/clip", mapping=(("vision", "image"),)),
                            lm=dict(workdir="runs/gpt", mapping=(("lm", ""),)))

`mapping` pairs a prefix of this model's parameter paths with a prefix in the source run's
(paths are "/"-joined, e.g. "encoder/pos_embedding"; ("", "") maps everything). Only the
parameters under a mapped prefix are loaded; the others keep their fresh initialisation
(a new head, say). With `strict`, every parameter under a mapped prefix must exist in the
source and every source parameter under the mapped source prefixes must be used. A shape that
differs is an error, except where the task can resize the parameter (position embeddings at
a new resolution: `Task.resize_param`).

`freeze` lists regular expressions matched against whole parameter paths: those parameters
get zero updates and no optimizer state.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import jax
import ml_collections
import numpy as np
import optax
from flax import traverse_util

from jaxformer.console import log
from jaxformer.tasks.base import Task
from jaxformer.train.checkpoint import Checkpointer


def flat_paths(params: Any) -> dict[str, Any]:
    """`{"a/b/c": leaf}` of a nested params dict."""
    return {"/".join(key): leaf for key, leaf in traverse_util.flatten_dict(params).items()}


def unflatten_paths(flat: dict[str, Any]) -> Any:
    return traverse_util.unflatten_dict({tuple(k.split("/")): v for k, v in flat.items()})


def frozen_labels(params: Any, patterns: Sequence[str]) -> Any:
    """A tree like `params` labelling each leaf "frozen" or "trained"."""
    compiled = [re.compile(p) for p in patterns]
    flat = {path: "frozen" if any(c.fullmatch(path) for c in compiled) else "trained"
            for path in flat_paths(params)}
    return unflatten_paths(flat)


def frozen_mask(params: Any, patterns: Sequence[str]) -> Any:
    """A tree of bools like `params`: True where frozen (None when nothing is)."""
    if not patterns:
        return None
    return jax.tree.map(lambda label: label == "frozen", frozen_labels(params, patterns))


def check_freeze(params: Any, patterns: Sequence[str]) -> None:
    """Every pattern must be a valid regular expression that matches some parameter."""
    paths = list(flat_paths(params))
    for pattern in patterns:
        try:
            compiled = re.compile(pattern)
        except re.error as e:
            raise ValueError(f"freeze pattern {pattern!r}: {e}") from None
        if not any(compiled.fullmatch(p) for p in paths):
            raise ValueError(f"freeze pattern {pattern!r} matches no parameter; parameters "
                             f"look like {paths[0]!r}")


def with_freeze(tx: optax.GradientTransformation, patterns: Sequence[str]
                ) -> optax.GradientTransformation:
    """`tx` for the trained parameters; zero updates and no state for the frozen ones."""
    if not patterns:
        return tx
    return optax.multi_transform({"trained": tx, "frozen": optax.set_to_zero()},
                                 lambda params: frozen_labels(params, patterns))


def count_frozen(params: Any, patterns: Sequence[str]) -> tuple[int, int]:
    """(trained, frozen) parameter counts."""
    labels = flat_paths(frozen_labels(params, patterns)) if patterns else {}
    trained = frozen = 0
    for path, leaf in flat_paths(params).items():
        if labels.get(path) == "frozen":
            frozen += int(np.prod(leaf.shape))
        else:
            trained += int(np.prod(leaf.shape))
    return trained, frozen


def _under(path: str, prefix: str) -> str | None:
    """The rest of `path` below `prefix`, or None when it is not under it."""
    if not prefix:
        return path
    if path == prefix:
        return ""
    return path[len(prefix) + 1:] if path.startswith(prefix + "/") else None


def _join(prefix: str, rest: str) -> str:
    return "/".join(p for p in (prefix, rest) if p)


def merge_params(target: Any, source: dict[str, np.ndarray], task: Task,
                 mapping: Sequence[Sequence[str]], *, strict: bool
                 ) -> tuple[dict[str, Any], list[str]]:
    """(the flat parameters to load into `target` (a params tree of arrays or shapes), the
    paths of `target` left at their initialisation)."""
    loaded, fresh, used = {}, [], set()
    for path, wanted in flat_paths(target).items():
        for target_prefix, source_prefix in mapping:
            rest = _under(path, target_prefix)
            if rest is not None:
                break
        else:
            fresh.append(path)
            continue
        source_path = _join(source_prefix, rest)
        if source_path not in source:
            if strict:
                raise ValueError(f"init_from: the source has no parameter {source_path!r} "
                                 f"(for {path!r}); use strict=False to keep it initialised")
            fresh.append(path)
            continue
        value = source[source_path]
        used.add(source_path)
        if tuple(value.shape) != tuple(wanted.shape):
            value = np.asarray(task.resize_param(path, value, tuple(wanted.shape)))
        loaded[path] = value.astype(wanted.dtype)
    if strict:
        unused = [p for p in source if p not in used
                  and any(_under(p, s) is not None for _, s in mapping)]
        if unused:
            raise ValueError(f"init_from: {len(unused)} source parameters are not used, e.g. "
                             f"{unused[0]!r}; map them or use strict=False")
    return loaded, fresh


def sources(config: ml_collections.ConfigDict) -> dict[str, ml_collections.ConfigDict]:
    """The sources `config.init_from` names, by name ("" for a single source), with a
    workdir; empty when there is nothing to load."""
    cfg = config.get("init_from", None)
    if not cfg:
        return {}
    named = {"": cfg} if "workdir" in cfg else dict(cfg.items())
    for name, source in named.items():
        if not isinstance(source, (dict, ml_collections.ConfigDict)) or "workdir" not in source:
            raise ValueError(f"init_from.{name} must be a dict with a workdir (and optionally "
                             "step, mapping, strict)")
    return {name: source for name, source in named.items() if source.workdir}


def init_from(config: ml_collections.ConfigDict, task: Task, target: Any
              ) -> dict[str, np.ndarray]:
    """The flat parameters `config.init_from` loads into a model whose parameters are (or have
    the shapes of) `target`; checked, so that a bad mapping fails before training starts."""
    loaded: dict[str, np.ndarray] = {}
    for name, cfg in sources(config).items():
        source, step = Checkpointer.read_params(cfg.workdir, cfg.get("step", -1))
        mapping = [tuple(pair) for pair in cfg.get("mapping", ())] or [("", "")]
        part, fresh = merge_params(target, flat_paths(source), task, mapping,
                                   strict=cfg.get("strict", True))
        twice = sorted(set(part) & set(loaded))
        if twice:
            raise ValueError(f"init_from: {twice[0]!r} is loaded by two sources")
        loaded.update(part)
        log(f"init_from{'.' + name if name else ''} {cfg.workdir} step {step}: {len(part)} "
            "parameter arrays loaded")
    fresh = [path for path in flat_paths(target) if path not in loaded]
    log(f"init_from: {len(loaded)} parameter arrays loaded, {len(fresh)} initialised afresh"
        + (f" ({', '.join(fresh[:4])}{', ...' if len(fresh) > 4 else ''})" if fresh else ""))
    return loaded


def with_loaded(params: Any, loaded: dict[str, np.ndarray]) -> Any:
    """`params` with the flat `loaded` arrays in place of theirs."""
    flat = flat_paths(params)
    flat.update(loaded)
    return unflatten_paths(flat)
