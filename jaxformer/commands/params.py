"""`jaxformer params --config=FILE[:ARGS] [--config.a.b=V ...] [--json] [--depth=N]`.

Parameter counts per module, FLOPs per example and the train state's memory, all from
`jax.eval_shape`: nothing is allocated, so full-size variants print in seconds. The task is
built from the data's `spec`, so no data set needs to be prepared and no tokenizer trained.
"""

from __future__ import annotations

import json
import re

from jaxformer.commands import common

HELP = "print a config's parameter tree, counts, FLOPs per example and train-state memory"
TAKES_OVERRIDES = True


def add_arguments(parser) -> None:
    parser.add_argument("--config", required=True)
    parser.add_argument("--json", action="store_true", help="one JSON object instead of a table")
    parser.add_argument("--depth", type=int, default=2,
                        help="module levels shown (default 2; 0: the totals only)")


def module_counts(params, depth: int) -> dict:
    """`{name: {"count": N, "children": {...}}}` down to `depth` levels (0: none)."""
    import numpy as np

    def count(tree) -> int:
        if isinstance(tree, dict):
            return sum(count(v) for v in tree.values())
        return int(np.prod(tree.shape))

    def walk(tree, level: int) -> dict:
        out = {}
        for name in sorted(tree, key=_natural):
            value = tree[name]
            entry = {"count": count(value)}
            if isinstance(value, dict) and level < depth:
                entry["children"] = walk(value, level + 1)
            out[name] = entry
        return out

    return walk(params, 1) if depth else {}


def _natural(name: str) -> list:
    """Sort key that puts block_2 before block_10."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def _table(tree: dict, indent: int = 0) -> list[str]:
    lines = []
    for name, entry in tree.items():
        lines.append(f"{'  ' * indent}{name:<{40 - 2 * indent}} {entry['count']:>15,}")
        lines.extend(_table(entry.get("children", {}), indent + 1))
    return lines


def summary(config, depth: int = 2) -> dict:
    """Counts per module (to `depth`), trainable and frozen totals, FLOPs per example and
    train-state bytes of `config`, from shapes alone."""
    import jax

    from jaxformer import registry
    from jaxformer.errors import as_user_error
    from jaxformer.train import parallel, transfer
    from jaxformer.train.optimizer import make_optimizer
    from jaxformer.train.state import create_state

    freeze = tuple(config.get("freeze", ()))
    with as_user_error("config"):
        spec = registry.lookup("data", config.data.name).spec(config.data)
        task = registry.lookup("tasks", config.task.name).build(config, spec)
        state = jax.eval_shape(lambda: create_state(task, make_optimizer(config.optim, freeze),
                                                    config.seed))
    params = jax.tree.map(lambda x: x, state.params)
    trained, frozen = transfer.count_frozen(params, freeze)
    nbytes = lambda tree: sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(tree))  # noqa: E731
    fsdp = config.train.fsdp
    split = lambda x: 1 if parallel.fsdp_axis(x.shape, fsdp) is None else fsdp  # noqa: E731
    return {
        "modules": module_counts(params, depth),
        "trainable": trained,
        "frozen": frozen,
        "flops_per_example": task.flops_per_example(params),
        "param_bytes": nbytes(state.params),
        "optimizer_state_bytes": nbytes(state.opt_state),
        # What each device holds of params and optimizer state (less with train.fsdp > 1).
        "state_bytes_per_device": sum(x.size * x.dtype.itemsize // split(x)
                                      for x in jax.tree.leaves((state.params, state.opt_state))),
        "total": trained + frozen,
    }


def run(args, overrides: list[str]) -> int:
    from jaxformer.errors import UserError

    if args.depth < 0:
        raise UserError(f"--depth must be >= 0, got {args.depth}")
    config = common.load_config(args.config, overrides)
    common.check_overrides(config, overrides)
    result = summary(config, args.depth)
    trained, frozen = result["trainable"], result["frozen"]
    if args.json:
        print(json.dumps(result))
        return 0
    print("\n".join(_table(result["modules"])))
    flops = result["flops_per_example"]
    print(f"trainable {trained:,}, frozen {frozen:,}")
    print(f"FLOPs per example (train) {flops:.4g}" if flops else "FLOPs per example: unknown")
    print(f"train state {(result['param_bytes'] + result['optimizer_state_bytes']) / 2**20:,.1f}"
          f" MiB (params {result['param_bytes'] / 2**20:,.1f}, optimizer "
          f"{result['optimizer_state_bytes'] / 2**20:,.1f})")
    if config.train.fsdp > 1:
        print(f"train state per device with train.fsdp={config.train.fsdp}: "
              f"{result['state_bytes_per_device'] / 2**20:,.1f} MiB")
    print(f"total {result['total']}")
    return 0
