"""Name -> module lookup, by convention: models.<name>, tasks.<name>, data.<name>,
evaluators.<type>.

Each module is imported lazily, only when a config names it. An unknown name is an error that
lists the names that exist. `build_data_and_task` builds the two a config names.
"""

from __future__ import annotations

import importlib
import importlib.util
import pkgutil
from types import ModuleType

import ml_collections

from jaxformer.errors import UserError

KINDS = ("models", "tasks", "data", "evaluators")


class UnknownNameError(UserError):
    """A config names a model, task or dataset that does not exist."""


def available(kind: str) -> list[str]:
    """The names registered under `kind` (one module each)."""
    package = importlib.import_module(f"jaxformer.{kind}")
    return sorted(
        info.name
        for info in pkgutil.iter_modules(package.__path__)
        if not info.name.startswith("_") and _is_entry(kind, info.name)
    )


def lookup(kind: str, name: str) -> ModuleType:
    """Imports `jaxformer.<kind>.<name>`; unknown names list what exists."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    names = available(kind)
    if name not in names:
        singular = {"models": "model", "tasks": "task", "data": "dataset",
                    "evaluators": "evaluator type"}[kind]
        raise UnknownNameError(
            f"unknown {singular} {name!r}; available: {', '.join(names) or 'none'}"
        )
    return importlib.import_module(f"jaxformer.{kind}.{name}")


def _is_entry(kind: str, name: str) -> bool:
    """Modules that can be named in a config (they define `build`); others are internals."""
    spec = importlib.util.find_spec(f"jaxformer.{kind}.{name}")
    if spec is None or spec.origin is None:
        return False
    with open(spec.origin, encoding="utf-8") as f:
        return "\ndef build(" in f.read()


def build_data_and_task(config: ml_collections.ConfigDict, workdir: str | None):
    """(data, task) of a config, the tokenizer read from (or kept in) `workdir/assets`."""
    data = lookup("data", config.data.name).build(config.data, workdir=workdir)
    task = lookup("tasks", config.task.name).build(config, data)
    return data, task


def check_variant_overrides(config: ml_collections.ConfigDict, override_keys) -> None:
    """Refuses an override of a model size field that `model.variant` sets (it would do
    nothing): `override_keys` are the overridden keys, `model.num_layers`..."""
    from jaxformer.models import variants

    size_keys = getattr(lookup("models", config.model.name), "SIZE_KEYS", ())
    shadowed = variants.shadowed_overrides(config.model, override_keys, size_keys)
    if shadowed:
        raise UserError(f"--config.{shadowed[0]} has no effect: model.variant="
                        f"{config.model.variant!r} sets the model's sizes "
                        f"({', '.join(size_keys)}); add --config.model.variant= to use the "
                        "explicit fields")
