"""Experiment configs: loading `path.py[:arg]`, arg strings, locked overrides.

A config file is a Python module with `get_config(arg: str | None) -> ConfigDict`. The
optional arg string selects a variant, big_vision style: `:cpu` or
`:variant=B/16,runlocal=True` (parsed by `parse_arg`). Overrides `--config.a.b=v` are applied
to the locked config: an unknown key or a value of the wrong type is a `ConfigError`.
"""

from __future__ import annotations

import ast
import contextlib
import difflib
import importlib.util
import json
import os
import sys
from collections.abc import Iterator, Sequence
from typing import Any

import ml_collections

from jaxformer.errors import UserError


class ConfigError(UserError):
    """A config file, arg string or override that cannot be applied."""


def parse_arg(arg: str | None, **defaults: Any) -> ml_collections.ConfigDict:
    """Parses an arg string `a=1,b=x,flag` into a ConfigDict typed like `defaults`.

    A bare name sets a boolean flag to True. Only names given in `defaults` are accepted.
    """
    result = ml_collections.ConfigDict(dict(defaults))
    if not arg:
        return result
    for item in arg.split(","):
        item = item.strip()
        if not item:
            continue
        name, has_value, raw = item.partition("=")
        if name not in defaults:
            raise ConfigError(
                f"unknown config arg {name!r}; known: {', '.join(sorted(defaults)) or 'none'}"
            )
        if not has_value:
            raw = "True"
        result[name] = _parse_value(raw, defaults[name], f"arg {name}")
    return result


def load_config(spec: str) -> ml_collections.ConfigDict:
    """Loads `path/to/config.py[:arg]` and returns the locked config.

    A config in the project tree (under `configs/` or `experiments/`) may import shared blocks
    and other configs as `from configs import common`: the project root is importable meanwhile.
    """
    with config_module(spec) as (module, path, arg):
        if not hasattr(module, "get_config"):
            raise ConfigError(f"{path} defines no get_config()")
        try:
            config = module.get_config(arg)
        except ValueError as e:
            raise ConfigError(f"{spec}: {e}") from e
    if not isinstance(config, ml_collections.ConfigDict):
        raise ConfigError(f"{path}: get_config() must return an ml_collections.ConfigDict")
    config.lock()
    return config


@contextlib.contextmanager
def config_module(spec: str) -> Iterator[tuple[Any, str, str | None]]:
    """(module, path, arg or None) of `path/to/config.py[:arg]`, executed with the project root
    importable (for the duration of the block, in which its functions are called)."""
    path, has_arg, arg = spec.partition(":")
    if has_arg and not arg:
        raise ConfigError(f"--config={spec}: empty arg string after ':' (drop the ':' for the "
                          "default recipe)")
    if not os.path.isfile(path):
        raise ConfigError(f"config file not found: {path}")
    module_spec = importlib.util.spec_from_file_location("jaxformer_user_config", path)
    module = importlib.util.module_from_spec(module_spec)
    with _importable_configs(path):
        try:
            module_spec.loader.exec_module(module)
        except Exception as e:  # A broken config file: report it, don't dump a traceback.
            raise ConfigError(f"cannot load {path}: {type(e).__name__}: {e}") from e
        yield module, path, arg or None


@contextlib.contextmanager
def _importable_configs(path: str) -> Iterator[None]:
    """Puts the nearest directory above `path` that holds `configs/common.py` (else the
    working directory, if it holds one) on sys.path, so that configs can import `configs.*`."""
    directory = os.path.dirname(os.path.abspath(path))
    while not os.path.isfile(os.path.join(directory, "configs", "common.py")):
        if os.path.dirname(directory) == directory:  # Outside the project: try the cwd.
            directory = os.getcwd()
            if not os.path.isfile(os.path.join(directory, "configs", "common.py")):
                yield
                return
            break
        directory = os.path.dirname(directory)
    if directory in sys.path:
        yield
        return
    sys.path.insert(0, directory)
    try:
        yield
    finally:
        sys.path.remove(directory)


def apply_overrides(config: ml_collections.ConfigDict, overrides: Sequence[str]) -> None:
    """Applies `a.b=v` overrides in place, with the type of the existing value."""
    for override in overrides:
        key, has_value, raw = override.partition("=")
        if not has_value:
            raise ConfigError(f"override --config.{key} needs a value: --config.{key}=VALUE")
        parent, leaf = _resolve(config, key)
        current = parent[leaf]
        if isinstance(current, ml_collections.ConfigDict):
            raise ConfigError(f"--config.{key} is a group; set one of its fields instead")
        field_type = parent.get_type(leaf) if hasattr(parent, "get_type") else type(current)
        value = _parse_value(raw, current, f"--config.{key}", field_type)
        try:
            parent[leaf] = value
        except (TypeError, ValueError) as e:
            raise ConfigError(f"--config.{key}={raw}: {e}") from e


def _resolve(config: ml_collections.ConfigDict, key: str) -> tuple[Any, str]:
    node = config
    parts = key.split(".")
    for depth, part in enumerate(parts):
        if not isinstance(node, ml_collections.ConfigDict) or part not in node:
            prefix = ".".join(parts[:depth])
            known = sorted(node.keys()) if isinstance(node, ml_collections.ConfigDict) else []
            hint = difflib.get_close_matches(part, known, n=1)
            where = f"config.{prefix}" if prefix else "config"
            msg = f"unknown config key --config.{key}: {where} has no field {part!r}"
            if hint:
                msg += f" (did you mean {'.'.join(parts[:depth] + hint)!r}?)"
            raise ConfigError(msg)
        if depth < len(parts) - 1:
            node = node[part]
    return node, parts[-1]


def _parse_value(raw: str, current: Any, where: str, field_type: type | None = None) -> Any:
    """Parses `raw` as a value of the type of `current`."""
    kind = field_type if field_type is not None else type(current)
    if current is None and field_type in (None, type(None)):
        return _literal(raw)
    if kind is bool:
        lowered = raw.strip().lower()
        if lowered in ("true", "1", "yes"):
            return True
        if lowered in ("false", "0", "no"):
            return False
        raise ConfigError(f"{where}={raw}: expected a boolean (true/false)")
    if kind is int:
        try:
            return int(raw)
        except ValueError:
            raise ConfigError(f"{where}={raw}: expected an integer") from None
    if kind is float:
        try:
            return float(raw)
        except ValueError:
            raise ConfigError(f"{where}={raw}: expected a number") from None
    if kind is str:
        return raw
    if kind in (tuple, list):
        value = _literal(raw)
        if not isinstance(value, (tuple, list)):
            raise ConfigError(f"{where}={raw}: expected a {kind.__name__}, e.g. (1, 2)")
        return kind(value)
    value = _literal(raw)
    if not isinstance(value, kind):
        raise ConfigError(f"{where}={raw}: expected {kind.__name__}")
    return value


def _literal(raw: str) -> Any:
    try:
        return ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        return raw


def to_json(config: ml_collections.ConfigDict) -> str:
    """The config as indented JSON (for printing and saving in the workdir)."""
    return json.dumps(config.to_dict(), indent=2, sort_keys=True, default=str)


def read_workdir_config(workdir: str) -> ml_collections.ConfigDict:
    """The config a workdir was trained with (its config.json), without importing jax."""
    path = os.path.join(workdir, "config.json")
    if not os.path.isdir(workdir):
        raise UserError(f"--workdir {workdir}: no such directory")
    if not os.path.isfile(path):
        raise UserError(f"{workdir} is not a training workdir: no config.json")
    try:
        with open(path, encoding="utf-8") as f:
            return ml_collections.ConfigDict(json.load(f))
    except (OSError, ValueError) as e:
        raise UserError(f"cannot read {path}: {e}") from e


def runs_at_end(evaluator: ml_collections.ConfigDict) -> bool:
    """Whether an entry of `config.evals` runs after the last step (`at_end`, default true)."""
    return evaluator.get("at_end", True)
