"""`jaxformer reproduce experiments/<paper> [--scale=cpu|paper] [--launcher=...] ...`.

Runs the experiment's sweep (one point per row of the paper's table) at the chosen scale,
then prints the reproduced table beside the paper's numbers and writes it to
`experiments/results/<paper>.md`. `--dry_run` prints the rows' commands and their parameter
counts beside the paper's, and trains nothing. Launcher flags are those of `jaxformer sweep`.
"""

from __future__ import annotations

import os
import shlex

from jaxformer.commands import sweep as sweep_command

HELP = "reproduce a paper's table from experiments/<paper>"
TAKES_OVERRIDES = True


def add_arguments(parser) -> None:
    parser.add_argument("experiment", help="an experiments/<paper> directory")
    parser.add_argument("--scale", choices=("cpu", "paper"), default="cpu")
    parser.add_argument("--workdir", default=None,
                        help="root of the rows' workdirs (default runs/<paper>-<scale>)")
    sweep_command.add_arguments(parser, config_and_workdir=False)


def run(args, overrides: list[str]) -> int:
    from launch import launcher_class, reproduce
    from launch import sweep as sweep_lib

    launcher = launcher_class(args.launcher).from_args(args)
    experiment = reproduce.load(args.experiment)
    root = os.path.abspath(args.workdir or os.path.join(
        "runs", f"{experiment.name}-{args.scale}"))
    sweep = sweep_lib.plan(experiment.config_spec(args.scale), root, overrides)
    params = reproduce.parameter_counts(sweep)
    code = sweep_command.run_sweep(sweep, launcher, args)
    if args.dry_run:
        state = {"points": [dict(name=p.name, status="dry run", metrics={})
                            for p in sweep.points]}
        print(reproduce.table(experiment, state, params, args.scale))
        return code
    state = sweep_lib.read_state(root)
    command = shlex.join(["jaxformer", "reproduce", args.experiment,
                          f"--scale={args.scale}", *[f"--config.{o}" for o in overrides]])
    text = reproduce.report(experiment, state, params, args.scale, command)
    path = experiment.results_path(args.scale)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    print(text)
    print(f"written to {path}")
    return code
