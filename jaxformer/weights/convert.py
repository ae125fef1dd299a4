"""`import_weights`: a Hugging Face directory -> a jaxformer workdir; `export_weights` back.

An import builds the jaxformer config of the checkpoint (the family's base config with the
model fields of `config.json`), the model's parameter shapes (`jax.eval_shape`, nothing
allocated), maps every tensor by the family's rules, checks that every tensor and every
parameter is used exactly once with the right shape, and writes the workdir: `config.json`,
the tokenizer in `assets/` and a checkpoint at step 0 (fresh optimizer state). A failed import
leaves nothing behind.

A family's `OPTIONAL` parts (heads, a pooler) may be absent from a checkpoint, as they are
from a base model such as `ViTModel` or `BertModel`: a part none of whose tensors is there
starts from the model's own initialisation, and the import says so. A part with some of its
tensors but not all is an error, like any other missing tensor.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import ml_collections
import numpy as np

from jaxformer import config as config_lib
from jaxformer.errors import UserError, as_user_error
from jaxformer.weights import data_spec, family_module, family_of_model, hf_files
from jaxformer.weights.rules import Rule

_PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict):
        out = {}
        for key, value in tree.items():
            out.update(_flatten(value, f"{prefix}{key}/"))
        return out
    return {prefix[:-1]: tree}


def _unflatten(flat: dict[str, Any]) -> dict:
    tree: dict = {}
    for path, value in flat.items():
        node = tree
        *parents, leaf = path.split("/")
        for name in parents:
            node = node.setdefault(name, {})
        node[leaf] = value
    return tree


def _check_covered(rules: Sequence[Rule], params: Iterable[str],
                   tensors: Iterable[str], ignored: Sequence[str]) -> None:
    """Every parameter and every tensor (but the ignored ones) is named by exactly one rule."""
    counts: dict[str, int] = {}
    for rule in rules:
        for name in rule.params:
            counts[name] = counts.get(name, 0) + 1
    params = set(params)
    twice = sorted(n for n, c in counts.items() if c > 1)
    unknown = sorted(set(counts) - params)
    missing = sorted(params - set(counts))
    if twice or unknown or missing:
        raise RuntimeError(f"the mapping is wrong: parameters mapped twice {twice[:5]}, "
                           f"not in the model {unknown[:5]}, not mapped {missing[:5]}")
    wanted = [name for rule in rules for name in rule.hf]
    tensors = set(tensors)
    absent = [name for name in wanted if name not in tensors]
    if absent:
        raise UserError(f"the checkpoint lacks {len(absent)} tensor(s) the model needs: "
                        f"{', '.join(absent[:10])}")
    extra = sorted(n for n in tensors - set(wanted)
                   if not any(re.fullmatch(p, n) for p in ignored))
    if extra:
        raise UserError(f"the checkpoint has {len(extra)} tensor(s) this model has no place "
                        f"for: {', '.join(extra[:10])}")


def params_from_tensors(rules: Sequence[Rule], tensors: dict[str, np.ndarray],
                        shapes: dict[str, tuple[int, ...]], ignored: Sequence[str] = ()
                        ) -> dict[str, np.ndarray]:
    """Flat parameters (`path -> array`) of `tensors` by `rules`, shapes checked."""
    _check_covered(rules, shapes, tensors, ignored)
    params = {}
    for rule in rules:
        try:
            outputs = rule.to_params(*(tensors[name] for name in rule.hf))
        except ValueError as e:  # Tensors that cannot be combined (fused with other shapes).
            raise UserError(f"{', '.join(rule.hf)} of shapes "
                            f"{[tuple(tensors[h].shape) for h in rule.hf]} do not fit "
                            f"{', '.join(rule.params)}: {e}") from None
        for name, array in zip(rule.params, outputs, strict=True):
            if tuple(array.shape) != tuple(shapes[name]):
                raise UserError(f"{', '.join(rule.hf)} of shape "
                                f"{[tuple(tensors[h].shape) for h in rule.hf]} gives {name} a "
                                f"shape {tuple(array.shape)}; the model has "
                                f"{tuple(shapes[name])}")
            params[name] = np.asarray(array, np.float32)
    return params


def tensors_from_params(rules: Sequence[Rule], params: dict[str, np.ndarray]
                        ) -> dict[str, np.ndarray]:
    """The Hugging Face tensors of flat `params` by `rules` (the inverse of the import)."""
    _check_covered(rules, params, [name for rule in rules for name in rule.hf], ())
    tensors = {}
    for rule in rules:
        outputs = rule.to_hf(*(np.asarray(params[name], np.float32) for name in rule.params))
        tensors.update(zip(rule.hf, outputs, strict=True))
    return tensors


def _check_new(path: str, flag: str) -> None:
    if os.path.exists(path) and (not os.path.isdir(path) or os.listdir(path)):
        raise UserError(f"{flag} {path} exists and is not empty; give a new directory")


@contextlib.contextmanager
def _new_directory(path: str, flag: str) -> Iterator[str]:
    """A staging directory beside `path`, renamed to `path` when the block completes and
    removed if it fails, so that nothing half-written is left."""
    _check_new(path, flag)
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}-", dir=parent)
    try:
        yield staging
        _follow_umask(staging)
        if os.path.isdir(path):
            os.rmdir(path)
        os.rename(staging, path)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _follow_umask(directory: str) -> None:
    """The modes a plain `mkdir` and `open` give under the umask, for `directory` and what it
    holds (a temporary directory, and files some writers make, are private to their owner)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(directory, 0o777 & ~umask)
    for parent, directories, files in os.walk(directory):
        for name in directories:
            os.chmod(os.path.join(parent, name), 0o777 & ~umask)
        for name in files:
            os.chmod(os.path.join(parent, name), 0o666 & ~umask)


def resolve_config_spec(spec: str) -> str:
    """`FILE[:ARGS]` with FILE found relative to the working directory or the project root."""
    path, sep, arg = spec.partition(":")
    if not os.path.exists(path) and os.path.exists(os.path.join(_PROJECT_ROOT, path)):
        path = os.path.join(_PROJECT_ROOT, path)
    return f"{path}{sep}{arg}"


def import_config(hf_dir: str, family: str, *, config_spec: str | None = None,
                  overrides: Sequence[str] = ()) -> tuple[ml_collections.ConfigDict, dict]:
    """The jaxformer config of the checkpoint in `hf_dir`, and its `config.json`."""
    module = family_module(family)
    hf_config = hf_files.read_config(hf_dir)
    model_type = hf_config.get("model_type")
    if model_type not in module.MODEL_TYPES:
        raise UserError(f"{hf_dir} holds a {model_type!r} model; --family={family} reads "
                        f"{', '.join(module.MODEL_TYPES)}")
    config = config_lib.load_config(resolve_config_spec(config_spec
                                                        or module.base_config(hf_config)))
    with config.unlocked(), as_user_error(f"{hf_dir}/{hf_files.CONFIG_NAME}"):
        module.configure(config, hf_config)
    with config.unlocked(), as_user_error(hf_dir):
        module.configure_from_dir(config, hf_dir)
    # The imported model computes as the checkpoint does, whatever its base recipe trains in
    # (ViT's ImageNet recipe: bfloat16); `--config.train.compute_dtype` sets another.
    config.train.compute_dtype = "float32"
    config_lib.apply_overrides(config, overrides)
    return config, hf_config


def _task(config: ml_collections.ConfigDict):
    from jaxformer import registry

    with as_user_error("config"):
        return registry.lookup("tasks", config.task.name).build(config, data_spec(config))


def abstract_params(config: ml_collections.ConfigDict) -> dict[str, tuple[int, ...]]:
    """Flat parameter shapes of `config`'s model, from the data's spec (nothing read)."""
    import jax

    shapes = jax.eval_shape(_task(config).init, jax.random.key(config.seed))
    return {path: tuple(leaf.shape) for path, leaf in _flatten(shapes).items()}


def initial_params(config: ml_collections.ConfigDict, paths: Iterable[str]
                   ) -> dict[str, np.ndarray]:
    """The model's initial values (seed `config.seed`) of the flat parameters `paths`; only
    these are computed."""
    import jax

    paths = sorted(paths)
    task = _task(config)
    values = jax.jit(lambda key: [_flatten(task.init(key))[p] for p in paths])(
        jax.random.key(config.seed))
    return {p: np.asarray(v, np.float32) for p, v in zip(paths, values, strict=True)}


def absent_parts(optional: dict[str, str | tuple[str, ...]], tensors: Iterable[str]
                 ) -> list[str]:
    """The parameter prefixes of the `optional` parts (parameter prefix -> tensor name
    prefix, or a tuple of the prefixes it goes by) that have no tensor in `tensors`."""
    tensors = list(tensors)
    return [part for part, hf in optional.items()
            if not any(name.startswith(hf) for name in tensors)]


def in_parts(path: str, parts: Sequence[str]) -> bool:
    return any(path == part or path.startswith(part + "/") for part in parts)


def import_weights(hf_dir: str, family: str, workdir: str, *, config_spec: str | None = None,
                   overrides: Sequence[str] = (), dry_run: bool = False,
                   log: Callable[[str], None] = print) -> ml_collections.ConfigDict:
    """Writes `workdir` from the Hugging Face model in `hf_dir` (see the module docstring);
    with `dry_run`, only prints the mapping and checks it against the checkpoint."""
    module = family_module(family)
    if not dry_run:
        _check_new(workdir, "--workdir")
    config, _ = import_config(hf_dir, family, config_spec=config_spec, overrides=overrides)
    shapes = abstract_params(config)
    tensors = module.rename(hf_files.read_tensors(hf_dir))
    new_parts = [part for part in absent_parts(module.OPTIONAL, tensors)
                 if any(in_parts(path, [part]) for path in shapes)]  # The model's own.
    rules = [rule for rule in module.rules(config)
             if not all(in_parts(p, new_parts) for p in rule.params)]
    new = [path for path in shapes if in_parts(path, new_parts)]
    params = params_from_tensors(rules, tensors,
                                 {p: s for p, s in shapes.items() if p not in new},
                                 module.IGNORED)
    new_note = (f"; new (not in the checkpoint, initialised as the model does): "
                f"{', '.join(new_parts)}" if new_parts else "")
    if dry_run:
        for rule in rules:
            log(rule.describe())
        log(f"{len(tensors)} tensors -> {len(params)} parameters "
            f"({sum(int(np.prod(s)) for s in shapes.values()):,} values){new_note}; "
            "nothing written")
        return config
    params.update(initial_params(config, new))
    from jaxformer.train.workdir import save_config

    with _new_directory(workdir, "--workdir") as staging:
        assets = os.path.join(staging, "assets")
        os.makedirs(assets)
        carried = module.import_tokenizer(hf_dir, assets)
        if not carried:
            os.rmdir(assets)
        _write_checkpoint(config, _unflatten(params), staging)
        save_config(config, staging)
    log(f"wrote {workdir}: {len(params) - len(new)} parameters from {hf_dir}"
        + (f", tokenizer {', '.join(carried)}" if carried else "") + new_note)
    return config


def _write_checkpoint(config: ml_collections.ConfigDict, params: dict, workdir: str) -> None:
    """A step-0 checkpoint of `params` with a fresh optimizer state (no data position)."""
    import jax

    from jaxformer.train.checkpoint import Checkpointer
    from jaxformer.train.optimizer import make_optimizer
    from jaxformer.train.state import create_state

    task = _task(config)
    tx = make_optimizer(config.optim, tuple(config.get("freeze", ())))
    state = jax.jit(lambda p: create_state(task, tx, config.seed, p))(params)
    checkpointer = Checkpointer(workdir, keep=config.train.keep_checkpoints, async_save=False)
    try:
        checkpointer.save(0, state, None)
        checkpointer.wait()
    finally:
        checkpointer.close()


def export_weights(workdir: str, hf_dir: str, *, step: int = -1,
                   log: Callable[[str], None] = print) -> None:
    """Writes the parameters of `workdir` (newest checkpoint, or `step`) as a Hugging Face
    directory that `from_pretrained` loads, with the tokenizer; a failed export leaves
    nothing behind."""
    from jaxformer.train.checkpoint import Checkpointer

    config = config_lib.read_workdir_config(workdir)
    module = family_module(family_of_model(config.model.name))
    _check_new(hf_dir, "--to")
    params, step = Checkpointer.read_params(workdir, step)
    with as_user_error(f"{workdir}/config.json"):
        hf_config = module.hf_config(config)
    tensors = tensors_from_params(module.rules(config),
                                  module.export_params(workdir, _flatten(params)))
    with _new_directory(hf_dir, "--to") as staging:
        hf_files.write(staging, hf_config, tensors)
        carried = module.export_tokenizer(workdir, staging)
    log(f"wrote {hf_dir}: {len(tensors)} tensors from step {step} of {workdir}"
        + (f", tokenizer {', '.join(carried)}" if carried else ""))
