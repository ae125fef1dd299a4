"""Command line: `jaxformer train|evaluate|sample|translate|attention-map|bench ...`.

  jaxformer train  --config=configs/gpt/shakespeare_char.py:cpu --workdir=DIR [--config.a.b=v ...]
  jaxformer evaluate --workdir=DIR [--average_last=K]
  jaxformer sample --workdir=DIR --prompt=TEXT --max_new_tokens=N [--temperature --top_k ...]
  jaxformer bench  --config=configs/gpt/shakespeare_char.py:cpu [--steps=N] [--config.a.b=v ...]
  jaxformer translate --workdir=DIR [--input=FILE] [--beam_size=N] [--average_last=K]
  jaxformer attention-map --workdir=DIR --image=PATH --out=PNG

Also `python -m jaxformer ...`. Exit codes: 0 done, 1 no readable checkpoint, 2 bad input
(config, flags, paths, data), 3 non-finite loss, 128+N stopped by signal N after saving a
checkpoint.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

EXIT_BAD_INPUT = 2


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message}\n")


def _add_distributed(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("multi-host (jax.distributed)")
    group.add_argument("--coordinator_address", help="host:port of process 0")
    group.add_argument("--num_processes", type=int)
    group.add_argument("--process_id", type=int)
    group.add_argument("--distributed", action="store_true",
                       help="initialise from the cluster environment (SLURM, TPU pod)")


def make_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="jaxformer", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    train = commands.add_parser("train", help="train (or resume) a config in a workdir")
    train.add_argument("--config", required=True, help="path/to/config.py[:arg-string]")
    train.add_argument("--workdir", required=True)
    _add_distributed(train)

    evaluate = commands.add_parser(
        "evaluate", help="evaluate a workdir's newest checkpoint as at the end of training")
    evaluate.add_argument("--workdir", required=True)
    evaluate.add_argument("--average_last", type=int, default=0,
                          help="evaluate the mean parameters of the last K checkpoints")

    sample = commands.add_parser("sample", help="generate text from a trained LM workdir")
    sample.add_argument("--workdir", required=True)
    sample.add_argument("--prompt", default=None, help="text to continue (default: config)")
    sample.add_argument("--max_new_tokens", type=int, default=None)
    sample.add_argument("--temperature", type=float, default=None)
    sample.add_argument("--top_k", type=int, default=None)
    sample.add_argument("--top_p", type=float, default=None)
    sample.add_argument("--num_samples", type=int, default=1)
    sample.add_argument("--greedy", action="store_true")
    sample.add_argument("--seed", type=int, default=0)

    translate = commands.add_parser(
        "translate", help="translate lines with a trained translation workdir")
    translate.add_argument("--workdir", required=True)
    translate.add_argument("--input", default="-", help="file of source lines (default: stdin)")
    translate.add_argument("--beam_size", type=int, default=None, help="default: config")
    translate.add_argument("--length_penalty", type=float, default=None, help="default: config")
    translate.add_argument("--average_last", type=int, default=0,
                           help="average the parameters of the last K checkpoints")

    attention = commands.add_parser(
        "attention-map", help="overlay a trained ViT's [class]-token attention on an image")
    attention.add_argument("--workdir", required=True)
    attention.add_argument("--image", required=True, help="an image file (PNG, JPEG, ...)")
    attention.add_argument("--out", required=True, help="the PNG to write")

    bench = commands.add_parser("bench", help="time the jitted train step of a config")
    bench.add_argument("--config", required=True)
    bench.add_argument("--steps", type=int, default=20, help="timed steps after warm-up")
    bench.add_argument("--warmup", type=int, default=3)
    bench.add_argument("--workdir", default=None, help="where tokenizer assets go (default: temp)")
    return parser


def _split_overrides(parser, rest: list[str]) -> list[str]:
    overrides, i = [], 0
    while i < len(rest):
        item = rest[i]
        if not item.startswith("--config."):
            parser.error(f"unrecognized argument: {item}")
        item = item[len("--config."):]
        if "=" not in item and i + 1 < len(rest) and not rest[i + 1].startswith("--"):
            item, i = f"{item}={rest[i + 1]}", i + 1
        overrides.append(item)
        i += 1
    return overrides


def _load(spec: str, overrides: list[str]):
    from jaxformer import config as config_lib

    config = config_lib.load_config(spec)
    config_lib.apply_overrides(config, overrides)
    return config


def _host_devices_per_core(batch_size: int) -> None:
    """Exposes the CPU cores as host devices, so data parallelism uses all of them.

    XLA's CPU backend runs each small matmul on one core; splitting the batch over one host
    device per core runs the per-device programs side by side (nano GPT on 2 cores: 43 ms ->
    34 ms per step). The count is the largest that divides the per-step batch. It only
    affects the CPU platform, and is left alone when XLA_FLAGS already sets it or jax is
    already imported.
    """
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_force_host_platform_device_count" in flags or "jax" in sys.modules:
        return
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    count = max(d for d in range(1, (cores or 1) + 1) if batch_size % d == 0)
    if count > 1:
        os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={count}".strip()


def _micro_batch(config) -> int:
    return config.train.batch_size // max(config.train.grad_accum_steps, 1)


def _init_distributed(args) -> None:
    import jax

    if args.coordinator_address or args.num_processes:
        jax.distributed.initialize(coordinator_address=args.coordinator_address,
                                   num_processes=args.num_processes, process_id=args.process_id)
    elif args.distributed:
        jax.distributed.initialize()


def _train(args, overrides) -> int:
    from jaxformer import config as config_lib

    config = _load(args.config, overrides)
    if not (args.coordinator_address or args.num_processes or args.distributed):
        _host_devices_per_core(_micro_batch(config))
    _init_distributed(args)
    from jaxformer.train import trainer

    trainer.log(config_lib.to_json(config))
    trainer.train(config, args.workdir)
    return 0


def _evaluate(args) -> int:
    from jaxformer import sampling

    config = sampling.load_config(args.workdir)
    _host_devices_per_core(_micro_batch(config))
    from jaxformer.train import trainer

    trainer.evaluate(config, args.workdir, average_last=args.average_last)
    return 0


def _sample(args) -> int:
    from jaxformer import sampling

    for text in sampling.sample_from_workdir(
            args.workdir, prompt=args.prompt, max_new_tokens=args.max_new_tokens,
            temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
            num_samples=args.num_samples, greedy=args.greedy, seed=args.seed):
        print(text)
        print("-" * 40)
    return 0


def _translate(args) -> int:
    if args.input != "-" and not os.path.isfile(args.input):
        raise FileNotFoundError(f"--input {args.input}: no such file")
    _host_devices_per_core(os.cpu_count() or 1)
    from jaxformer import translate

    with (sys.stdin if args.input == "-" else open(args.input, encoding="utf-8")) as f:
        lines = [line.rstrip("\n") for line in f]
    for text in translate.translate_from_workdir(
            args.workdir, lines, beam_size=args.beam_size, length_penalty=args.length_penalty,
            average_last=args.average_last):
        print(text, flush=False)
    return 0


def _attention_map(args) -> int:
    from jaxformer import attention_map

    maps = attention_map.write_attention_map(args.workdir, args.image, args.out)
    print(f"wrote {args.out}: predicted {maps.class_name} ({maps.probability:.1%})")
    return 0


def _bench(args, overrides) -> int:
    config = _load(args.config, overrides)
    _host_devices_per_core(_micro_batch(config))
    from jaxformer.train import bench

    print(json.dumps(bench.run(config, steps=args.steps, warmup=args.warmup,
                               workdir=args.workdir)), flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = make_parser()
    args, rest = parser.parse_known_args(argv)
    overrides = _split_overrides(parser, rest) if args.command in ("train", "bench") else []
    if rest and args.command not in ("train", "bench"):
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    from jaxformer.config import ConfigError

    try:
        if args.command == "train":
            return _train(args, overrides)
        if args.command == "evaluate":
            return _evaluate(args)
        if args.command == "sample":
            return _sample(args)
        if args.command == "translate":
            return _translate(args)
        if args.command == "attention-map":
            return _attention_map(args)
        return _bench(args, overrides)
    except ConfigError as e:
        print(f"jaxformer: config error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except (ValueError, FileNotFoundError) as e:
        print(f"jaxformer: error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except Exception as e:  # The trainer's own stops carry their exit code.
        if not hasattr(e, "exit_code"):
            raise
        print(f"jaxformer: {e}", file=sys.stderr)
        return e.exit_code


if __name__ == "__main__":
    sys.exit(main())
