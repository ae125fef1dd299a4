"""`jaxformer sweep --config=FILE[:ARGS] --workdir=ROOT [--launcher=local|slurm|tpu] ...`.

Runs the points of the config's `get_sweep(hyper, arg)`, each in its own workdir under ROOT
(see launch/sweep.py). Every point is checked against the config before anything starts.
Rerunning skips finished points and resumes the others. `--dry_run` prints the points and
what the launcher would run, and writes nothing. `--config.*` overrides apply to every point.
"""

from __future__ import annotations

import os
import shlex

HELP = "run a config's hyperparameter sweep (local, SLURM, TPU pod slices)"
TAKES_OVERRIDES = True


def add_arguments(parser, config_and_workdir: bool = True) -> None:
    from launch import LAUNCHERS, launcher_class

    if config_and_workdir:
        parser.add_argument("--config", required=True, help="path/to/config.py[:arg-string]")
        parser.add_argument("--workdir", required=True, help="root of the sweep's workdirs")
    parser.add_argument("--launcher", choices=sorted(LAUNCHERS), default="local")
    parser.add_argument("--dry_run", action="store_true",
                        help="print the points and the launcher's commands; run nothing")
    parser.add_argument("--parallel", type=int, default=None,
                        help="points run at once (local: default 1; SLURM: array throttle, "
                             "default none)")
    parser.add_argument("--wait", action="store_true",
                        help="SLURM: wait for the job array to end (local and tpu always wait)")
    for name in sorted(LAUNCHERS):
        launcher_class(name).add_arguments(parser)


def run(args, overrides: list[str]) -> int:
    from launch import launcher_class
    from launch import sweep as sweep_lib

    launcher = launcher_class(args.launcher).from_args(args)
    sweep = sweep_lib.plan(args.config, os.path.abspath(args.workdir), overrides)
    return run_sweep(sweep, launcher, args)


def run_sweep(sweep, launcher, args) -> int:
    """Launches the unfinished points of `sweep` with `launcher`."""
    from jaxformer.train.workdir import check_workdir_path, lock_workdir
    from launch import sweep as sweep_lib

    if args.dry_run:
        print(f"{len(sweep.points)} points under {sweep.root}:")
        for point in sweep.points:
            described = [*([f"arg={point.arg}"] if point.arg else []), *point.override_flags()]
            print(f"  {point.name}: {shlex.join(described) or '(base config)'}")
        print(launcher.script(sweep, sweep.points))
        return 0
    check_workdir_path(sweep.root)
    with lock_workdir(sweep.root):
        previous = _previous_state(sweep)
        running = launcher.running(sweep, previous) if previous else set()
        todo = [p for p in sweep.points if p.name not in running
                and sweep_lib.status(sweep, p) != sweep_lib.DONE]
        done = len(sweep.points) - len(todo) - len(running)
        if done or running:
            print(f"{done} point(s) already finished, {len(running)} still running: "
                  f"{len(todo)} to run")
        sweep_lib.refresh(sweep, launcher=launcher.name, running=running)
        extra: dict[str, dict] = {}

        def on_change(now_running: set[str], new_extra: dict[str, dict]) -> None:
            extra.update(new_extra)
            state = sweep_lib.refresh(sweep, launcher=launcher.name,
                                      running=now_running | running, extra=extra)
            print(sweep_lib.progress_line(state, args.parallel or 1), flush=True)

        if todo:
            extra.update(launcher.launch(sweep, todo, wait=args.wait, on_change=on_change))
        # Launcher fields (job ids) are written first: they say which points are still on.
        state = sweep_lib.refresh(sweep, launcher=launcher.name, extra=extra)
        state = sweep_lib.refresh(sweep, launcher=launcher.name,
                                  running=launcher.running(sweep, state))
    print(sweep_lib.progress_line(state, args.parallel or 1))
    failed = [p for p in sweep.points if sweep_lib.status(sweep, p) == sweep_lib.FAILED]
    for point in failed:
        print(f"\npoint {point.name} failed (exit {sweep.exit_code(point)}); "
              f"the end of {sweep.log_path(point)}:\n{sweep_lib.log_tail(sweep, point)}")
    print(f"results: jaxformer results {shlex.quote(sweep.root)}")
    return 1 if failed else 0


def _previous_state(sweep) -> dict | None:
    """The sweep.json of an earlier run of this sweep; a different sweep there is an error."""
    from jaxformer.errors import UserError
    from launch import sweep as sweep_lib

    if not os.path.exists(os.path.join(sweep.root, sweep_lib.SWEEP_FILE)):
        return None
    state = sweep_lib.read_state(sweep.root)
    if state.get("config") != sweep.config or state.get("overrides") != sweep.overrides:
        raise UserError(f"{sweep.root} holds another sweep ({state.get('config')} with "
                        f"{state.get('overrides')}); use another --workdir")
    return state
