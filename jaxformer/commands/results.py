"""`jaxformer results ROOT [--metric=eval/...] [--format=md|csv] [--plot=FILE]`.

The table of a sweep's points x final metrics, a progress line (done / running / failed, ETA),
and a PNG (`ROOT/results.png` unless `--plot` says otherwise) with the chosen metric against
the swept hyperparameter(s) and the loss curves of every point.
"""

from __future__ import annotations

import os

HELP = "a sweep's table of final metrics, progress and plots"
TAKES_OVERRIDES = False


def add_arguments(parser) -> None:
    parser.add_argument("root", help="the sweep's --workdir")
    parser.add_argument("--metric", action="append", default=[],
                        help="metric column (repeatable; default: every eval/ metric); the "
                             "first is plotted")
    parser.add_argument("--format", choices=("md", "csv"), default="md")
    parser.add_argument("--plot", default=None,
                        help="the plot's file, in the format its extension names (.png, .pdf, "
                             ".svg, ...; default ROOT/results.png)")


def run(args, overrides: list[str]) -> int:
    import sys

    from jaxformer.train.workdir import is_locked
    from launch import launcher_class, results
    from launch import sweep as sweep_lib

    if args.plot:
        results.check_plot_path(args.plot)
    previous = sweep_lib.read_state(args.root)
    sweep = sweep_lib.sweep_from_state(previous)
    if previous.get("launcher") == "slurm":  # The queue knows which tasks are still on.
        running = launcher_class("slurm").running(sweep, previous)
    elif is_locked(args.root):  # A live `jaxformer sweep` runs the points it last reported.
        running = {p["name"] for p in previous["points"] if p["status"] == sweep_lib.RUNNING}
    else:
        running = set()
    state = sweep_lib.refresh(sweep, launcher=previous.get("launcher", "local"), running=running)
    columns = results.metric_columns(state, args.metric)
    header, table = results.rows(state, columns)
    print(results.format_table(header, table, args.format))
    print(sweep_lib.progress_line(state), file=sys.stderr)
    if columns:
        path = args.plot or os.path.join(args.root, "results.png")
        results.plot(state, columns[0], path)
        print(f"plot of {columns[0]}: {path}", file=sys.stderr)
    return 0
