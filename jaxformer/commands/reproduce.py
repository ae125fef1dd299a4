"""`jaxformer reproduce experiments/<paper> [--scale=cpu|paper] [--launcher=...] ...`.

Runs the experiment's sweep (one point per row of the paper's table) at the chosen scale,
then prints the reproduced table beside the paper's numbers and writes it to
`experiments/results/<paper>.md`, with each row's record in `<paper>.json` beside it (rows
trained in separate runs, `--rows=base,A1`, accumulate there) and the plot of this run's rows
in `<paper>.png`. A row chosen among several points (a learning-rate grid) reports the best on
the experiment's validation metric. `--dry_run` prints the rows'
commands and their parameter counts beside the paper's, and trains nothing. Launcher flags are
those of `jaxformer sweep`.
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
    parser.add_argument("--rows", default="", help="only these rows (comma-separated names)")
    sweep_command.add_arguments(parser, config_and_workdir=False)


def run(args, overrides: list[str]) -> int:
    from jaxformer.errors import UserError
    from launch import launcher_class, reproduce, results
    from launch import sweep as sweep_lib

    launcher = launcher_class(args.launcher).from_args(args)
    experiment = reproduce.load(args.experiment)
    root = os.path.abspath(args.workdir or os.path.join(
        "runs", f"{experiment.name}-{args.scale}"))
    sweep = sweep_lib.plan(experiment.config_spec(args.scale), root, overrides)
    table_rows = reproduce.table_rows(sweep.points)
    order = list(table_rows)
    if args.rows:
        chosen = [name.strip() for name in args.rows.split(",") if name.strip()]
        known = set(order) | {p.name for p in sweep.points}
        unknown = [name for name in chosen if name not in known]
        if unknown:
            raise UserError(f"--rows: no row {', '.join(unknown)} at scale {args.scale}; rows: "
                            f"{', '.join(order)}")
        sweep.points = [p for p in sweep.points if p.name in chosen or p.table_row in chosen]
    params = reproduce.parameter_counts(sweep)
    code = sweep_command.run_sweep(sweep, launcher, args)
    if args.dry_run:
        rows = {p.table_row: dict(status="dry run", params=params.get(p.name))
                for p in sweep.points}
        print(reproduce.table(experiment, rows, list(rows), args.scale))
        return code
    command = shlex.join(["jaxformer", "reproduce", args.experiment, f"--scale={args.scale}",
                          *([f"--rows={args.rows}"] if args.rows else []),
                          *[f"--config.{o}" for o in overrides]])
    state = sweep_lib.read_state(root)
    records = reproduce.records(state, params, command)
    records = reproduce.merge_results(experiment.results_path(args.scale, "json"), args.scale,
                                      records)
    rows = reproduce.choose(experiment, table_rows, records)
    plot = experiment.results_path(args.scale, "png")
    results.plot(state, experiment.expected["metric"]["key"], plot)
    text = reproduce.report(experiment, rows, order, args.scale, plot)
    path = experiment.results_path(args.scale)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    print(text)
    print(f"written to {path}")
    return code
