"""DETR train step and the share of it spent in Hungarian matching, beside
`experiments/bench/torch_detr_reference.py` (the same model in PyTorch).

The step is `jaxformer bench`'s (the trainer's jitted step of configs/detr/composed.py, one
real batch of composed canvases, one host device per core) with the `cpu` DETR's sizes and
`--queries` object queries and the `--matcher` solver (`jax` on the device, the config's
default, or `scipy` on the host). The matching is timed on its own at the step's shapes: the
cost matrices and the assignment (`losses.matching.hungarian_match`) of every decoder layer's
predictions (random) against the batch's targets, jitted. Prints one JSON line.

  python experiments/bench/detr_matching.py --batch 16 --queries 100 [--steps 20]
      [--matcher jax|scipy]
"""

import argparse
import functools
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--matcher", choices=("jax", "scipy"), default="jax")
    args = parser.parse_args()

    from jaxformer.commands import common

    common.host_devices_per_core(args.batch)
    import jax
    import jax.numpy as jnp
    import numpy as np

    from jaxformer import config as config_lib
    from jaxformer.losses.matching import hungarian_match
    from jaxformer.models import detr
    from jaxformer.registry import build_data_and_task
    from jaxformer.train import bench

    config = config_lib.load_config("configs/detr/composed.py")
    with config.unlocked():
        config.model.update(variant="", **{**detr.VARIANTS["cpu"], "num_queries": args.queries})
        config.train.batch_size = args.batch
        config.task.matcher = args.matcher
    step = bench.run(config, steps=args.steps, warmup=args.warmup)

    data, task = build_data_and_task(config, None)
    batch = next(data.train_iter(batch_size=args.batch, seed=0))
    layers, classes = task.model.num_decoder_layers, task.num_classes + 1
    rng = np.random.default_rng(0)
    logits = jnp.asarray(rng.normal(size=(layers, args.batch, args.queries, classes)),
                         jnp.float32)
    boxes = jax.nn.sigmoid(jnp.asarray(rng.normal(size=(layers, args.batch, args.queries, 4)),
                                       jnp.float32))
    match = jax.jit(functools.partial(hungarian_match, matcher=args.matcher))
    targets = (jnp.asarray(batch["labels"]), jnp.asarray(batch["boxes"]),
               jnp.asarray(batch["box_mask"]))
    for _ in range(args.warmup + 1):
        jax.block_until_ready(match(logits, boxes, *targets))
    times = []
    for _ in range(args.steps):
        start = time.perf_counter()
        jax.block_until_ready(match(logits, boxes, *targets))
        times.append(time.perf_counter() - start)
    matching = statistics.median(times)
    print(json.dumps({**step, "queries": args.queries, "matcher": args.matcher,
                      "matching_seconds_median": matching,
                      "matching_share": matching / step["step_seconds_median"]}), flush=True)


if __name__ == "__main__":
    from jaxformer.allocator import tune_malloc

    tune_malloc()  # glibc's malloc as the `jaxformer` executable tunes it.
    main()
