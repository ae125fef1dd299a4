"""What freezing saves in the Flamingo-style model's train step: memory, FLOPs, time.

For `configs/flamingo/emoji.py` (default size, fresh towers: no runs needed) with
  frozen          both towers frozen (the config as it is),
  lm_trained      `frozen_lm=false` (the image tower frozen, the language model trained),
  nothing_frozen  `freeze` cleared,
prints per variant: the parameter counts (trained / frozen), the train state's bytes
(parameters + optimizer state), the compiled train step's `memory_analysis()` (arguments,
outputs, temporaries) and `cost_analysis()` FLOPs, and the median time of a step.

The step is built as `jaxformer bench` builds it (jaxformer/train/bench.py): the trainer's
strategy, optimizer with `freeze`, frozen mask and dtype, one host device per core, one real
batch of the config's pipeline reused for every step. Here it is lowered and compiled once
explicitly, so that the compiled executable's analyses are read and that same executable is
timed. With the default `sharded` strategy on N host devices the compiled program is the
per-device one: its memory and FLOPs are per device (each holds the replicated train state and
1/N of the batch).

  .venv/bin/python experiments/bench/flamingo_memory.py [--steps 5] [--warmup 1] [--runlocal]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = os.path.join(ROOT, "configs", "flamingo", "emoji.py")
VARIANTS = ("frozen", "lm_trained", "nothing_frozen")


def make_config(variant: str, runlocal: bool):
    from jaxformer import config as config_lib

    arg = ",".join(a for a in ("runlocal" if runlocal else "",
                               "frozen_lm=false" if variant == "lm_trained" else "") if a)
    config = config_lib.load_config(f"{CONFIG}:{arg}" if arg else CONFIG)
    if variant == "nothing_frozen":
        config_lib.apply_overrides(config, ["freeze=()"])
    return config


def state_bytes(tree) -> int:
    import jax

    return int(sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(tree)))


def measure(config, *, steps: int, warmup: int, workdir: str) -> dict:
    """As `jaxformer.train.bench.run`, with the compiled step's analyses."""
    import jax

    from jaxformer.registry import build_data_and_task
    from jaxformer.train import cpu_matmuls, parallel, transfer
    from jaxformer.train.optimizer import make_optimizer
    from jaxformer.train.state import create_state

    cfg = config.train
    freeze = tuple(config.get("freeze", ()))
    data, task = build_data_and_task(config, workdir)
    batch = next(data.train_iter(batch_size=parallel.local_batch_size(cfg.batch_size),
                                 seed=config.seed))
    strategy = parallel.make_strategy(cfg.strategy, cfg.fsdp, cpu_matmuls.chosen(cfg))
    tx = make_optimizer(config.optim, freeze)
    state = strategy.init_state(lambda: create_state(task, tx, config.seed))
    batch = strategy.place_batch(batch)
    params = strategy.host_state(state).params
    frozen = transfer.frozen_mask(params, freeze)
    train_step = strategy.train_step(task, tx, cfg.grad_accum_steps, frozen)

    start = time.perf_counter()
    compiled = train_step.lower(state, batch).compile()
    compile_seconds = time.perf_counter() - start
    memory = compiled.memory_analysis()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    trained, frozen_count = transfer.count_frozen(params, freeze)
    result = {
        "freeze": list(freeze),
        "devices": jax.device_count(),
        "global_batch": cfg.batch_size,
        "params_trained": trained,
        "params_frozen": frozen_count,
        "param_bytes": state_bytes(state.params),
        "opt_state_bytes": state_bytes(state.opt_state),
        "step_argument_bytes": memory.argument_size_in_bytes,
        "step_output_bytes": memory.output_size_in_bytes,
        "step_temp_bytes": memory.temp_size_in_bytes,
        "step_alias_bytes": memory.alias_size_in_bytes,
        "step_flops": float(cost.get("flops", float("nan"))),
        "compile_seconds": round(compile_seconds, 2),
    }
    result["train_state_bytes"] = result["param_bytes"] + result["opt_state_bytes"]
    result["step_memory_bytes"] = (memory.argument_size_in_bytes + memory.output_size_in_bytes
                                   + memory.temp_size_in_bytes)
    # The state is donated: aliased outputs reuse the arguments' buffers.
    result["step_live_bytes"] = result["step_memory_bytes"] - memory.alias_size_in_bytes
    for _ in range(warmup):
        state, metrics = compiled(state, batch)
    jax.block_until_ready(metrics if warmup else state)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        state, metrics = compiled(state, batch)
        jax.block_until_ready(metrics)
        times.append(time.perf_counter() - start)
    result["step_seconds_median"] = round(statistics.median(times), 4)
    result["step_seconds"] = [round(t, 4) for t in times]
    result["loss"] = float(metrics["loss"])
    return result


def table(results: dict[str, dict]) -> str:
    def megabytes(*keys):
        return lambda r: " + ".join(f"{r[k] / 1e6:.2f}" for k in keys)

    rows = [("params trained / frozen", lambda r: f"{r['params_trained']:,} / "
                                                  f"{r['params_frozen']:,}"),
            ("params (MB)", megabytes("param_bytes")),
            ("optimizer state (MB)", megabytes("opt_state_bytes")),
            ("train state: params + optimizer state (MB)", megabytes("train_state_bytes")),
            ("step arguments (MB)", lambda r: f"{r['step_argument_bytes'] / 1e6:.2f}"),
            ("step outputs (MB)", lambda r: f"{r['step_output_bytes'] / 1e6:.2f}"),
            ("step temporaries (MB)", lambda r: f"{r['step_temp_bytes'] / 1e6:.2f}"),
            ("step args + outputs + temps (MB)", lambda r: f"{r['step_memory_bytes'] / 1e6:.2f}"),
            ("the same less aliased outputs (MB)", lambda r: f"{r['step_live_bytes'] / 1e6:.2f}"),
            ("step FLOPs (cost_analysis, G)", lambda r: f"{r['step_flops'] / 1e9:.3f}"),
            ("median step time (s)", lambda r: f"{r['step_seconds_median']:.3f}"),
            ("compile time (s)", lambda r: f"{r['compile_seconds']:.1f}")]
    names = list(results)
    lines = ["| | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for label, show in rows:
        lines.append(f"| {label} | " + " | ".join(show(results[n]) for n in names) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=5, help="timed steps per variant")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--runlocal", action="store_true", help="the tiny smoke-test sizes")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    args = parser.parse_args(argv)
    sys.path.insert(0, ROOT)
    from jaxformer.commands import common

    variants = [v for v in args.variants.split(",") if v]
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        parser.error(f"unknown variants {unknown}; available: {', '.join(VARIANTS)}")
    configs = {v: make_config(v, args.runlocal) for v in variants}  # Before jax starts.
    common.host_devices_per_core(common.micro_batch(configs[variants[0]]))
    import flax
    import jax

    print(f"jax {jax.__version__}, flax {flax.__version__}, {jax.device_count()} "
          f"{jax.devices()[0].platform} devices", flush=True)
    results = {}
    with tempfile.TemporaryDirectory() as workdir:  # One tokenizer for every variant.
        for variant, config in configs.items():
            results[variant] = measure(config, steps=args.steps, warmup=args.warmup,
                                       workdir=workdir)
            print(json.dumps({"variant": variant, **results[variant]}), flush=True)
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, ROOT)
    from jaxformer.allocator import tune_malloc

    tune_malloc()  # glibc's malloc as the `jaxformer` executable tunes it.
    raise SystemExit(main())
