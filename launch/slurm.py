"""Runs a sweep on SLURM: job arrays, one task per point.

  jaxformer sweep --launcher=slurm --config=configs/gpt/shakespeare_char.py:cpu \\
      --workdir=/scratch/sweeps/lr --partition=gpu --time=04:00:00 --gpus_per_node=1
  python -m launch.slurm --config=... --workdir=...     # the same

The array's script is written to ROOT/logs/sweep.sbatch (`--dry_run` prints it) and submitted
with `sbatch`. Points that use an earlier point's workdir (`hyper.workdir_of`) go into a
further array, ROOT/logs/sweep-1.sbatch (and so on), submitted with
`--dependency=afterany:<the arrays of those points>`; each such task first checks the exit
files of its points' dependencies: when one failed the point is recorded as failed without
running, when one did not finish (stopped) it is left pending for a rerun. A task stopped by
SIGTERM (scancel, preemption, time limit) records no exit code: the point is interrupted and
resumes from its checkpoint on a rerun.

Task i trains the i-th point with `<python> -m jaxformer train ...`, appending its output to
ROOT/logs/<name>.log and writing the command's exit code to ROOT/logs/<name>.exit;
SLURM's own output of the task goes to ROOT/logs/slurm-<job>_<task>.out. A point on several
nodes (`--nodes=N`) runs under `srun` with `--distributed`: one process per node, and
`jax.distributed.initialize()` reads the SLURM environment. Tasks run in the directory the
sweep was submitted from, with the submitting shell's environment (sbatch's `--export=ALL`).

The flags' values can be kept in a JSON file, `--slurm_config=cluster.json`, e.g.
`{"partition": "gpu", "account": "proj", "time": "12:00:00", "gpus_per_node": 8}`; flags given
on the command line win. Job ids are kept in ROOT/sweep.json: `running()` asks `squeue`
which points are still queued or running.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Sequence

from jaxformer.errors import UserError
from launch import depends
from launch.sweep import LOGS, Point, Sweep, read_state

SCRIPT = "sweep.sbatch"
# The options `--slurm_config` may set: their types, and defaults when neither sets them.
OPTIONS: dict[str, type] = dict(partition=str, time=str, nodes=int, gpus_per_node=int,
                                cpus_per_task=int, account=str, python=str)
DEFAULTS = dict(nodes=1, gpus_per_node=0)
# `on_change(names of the points queued or running, launcher fields per point name)`.
OnChange = Callable[[set[str], dict[str, dict]], None]


class SlurmLauncher:
    """Submits points as a SLURM job array and follows its tasks with `squeue`."""

    name = "slurm"
    poll_seconds = 30.0  # How often `launch(wait=True)` asks squeue.

    def __init__(self, *, partition: str | None = None, time: str | None = None,
                 nodes: int = 1, gpus_per_node: int = 0, cpus_per_task: int | None = None,
                 account: str | None = None, python: str | None = None,
                 parallel: int | None = None):
        self.partition, self.time, self.account = partition, time, account
        self.parallel = parallel  # At most this many tasks of the array run at once.
        self.nodes, self.gpus_per_node, self.cpus_per_task = nodes, gpus_per_node, cpus_per_task
        self.python = python or sys.executable

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        group = parser.add_argument_group("SLURM (--launcher=slurm)")
        group.add_argument("--partition", help="partition to submit to (default: the cluster's)")
        group.add_argument("--time", help="time limit of each point, e.g. 04:00:00")
        group.add_argument("--nodes", type=int, help="nodes per point (default 1)")
        group.add_argument("--gpus_per_node", type=int,
                           help="GPUs per node (default 0: none requested)")
        group.add_argument("--cpus_per_task", type=int, help="CPUs per node (one task per node)")
        group.add_argument("--account", help="account to charge")
        group.add_argument("--slurm_config", metavar="FILE",
                           help="JSON file with defaults for these flags, e.g. "
                                '{"partition": "gpu", "time": "04:00:00"}')
        group.add_argument("--python", help="python that runs jaxformer in the jobs "
                                            "(default: this one)")

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> SlurmLauncher:
        options = _read_config(args.slurm_config) if getattr(args, "slurm_config", None) else {}
        for key in OPTIONS:
            if getattr(args, key, None) is not None:
                options[key] = getattr(args, key)
        options = {**DEFAULTS, **options, "parallel": getattr(args, "parallel", None)}
        if options["parallel"] is not None and options["parallel"] < 1:
            raise UserError(f"--parallel must be >= 1, got {options['parallel']}")
        if options["nodes"] < 1:
            raise UserError(f"--nodes must be >= 1, got {options['nodes']}")
        if options["gpus_per_node"] < 0:
            raise UserError(f"--gpus_per_node must be >= 0, got {options['gpus_per_node']}")
        if options.get("cpus_per_task") is not None and options["cpus_per_task"] < 1:
            raise UserError(f"--cpus_per_task must be >= 1, got {options['cpus_per_task']}")
        for key in ("partition", "time", "account"):
            value = options.get(key)
            if value is not None and (not value or any(c.isspace() for c in value)):
                raise UserError(f"--{key} must be one word, got {value!r}")
        return cls(**options)

    def script(self, sweep: Sweep, points: Sequence[Point]) -> str:
        """The sbatch scripts `launch` submits: one job array per wave of points (a point
        follows the points it depends on, see launch/depends.py)."""
        waves = depends.levels(points)
        texts = [self.wave_script(sweep, waves[0])]
        for k, wave in enumerate(waves[1:], 1):
            texts.append(f"# {script_name(k)}: submitted with --dependency=afterany:<the job "
                         f"arrays of {', '.join(script_name(j) for j in range(k))}>\n"
                         + self.wave_script(sweep, wave, "afterany:<ID>"))
        return "\n".join(texts)

    def wave_script(self, sweep: Sweep, points: Sequence[Point], dependency: str = "") -> str:
        """The sbatch script of one job array whose task i trains `points[i]`, once the jobs
        of `dependency` (`afterany:ID:...`) have ended and the points it depends on have
        finished with exit 0."""
        if not points:
            raise ValueError("a job array needs at least one point")
        logs = os.path.abspath(os.path.join(sweep.root, LOGS))
        name = os.path.basename(os.path.abspath(sweep.root))
        output = os.path.join(logs.replace("%", "%%"), "slurm-%A_%a.out")  # `%%`: a literal %.
        array = f"0-{len(points) - 1}"
        if self.parallel and self.parallel < len(points):
            array += f"%{self.parallel}"
        options = [f"--job-name={name}", f"--array={array}", f"--output={output}",
                   f"--nodes={self.nodes}", "--ntasks-per-node=1"]
        if dependency:
            options.append(f"--dependency={dependency}")
        if self.cpus_per_task:
            options.append(f"--cpus-per-task={self.cpus_per_task}")
        if self.gpus_per_node:
            options.append(f"--gpus-per-node={self.gpus_per_node}")
        for key in ("time", "partition", "account"):
            if getattr(self, key):
                options.append(f"--{key}={getattr(self, key)}")
        lines = ["#!/bin/bash", *(f"#SBATCH {shlex.quote(o)}" for o in options), "",
                 f"# jaxformer sweep {sweep.root}: task i trains point i in the submission",
                 "# directory, appends its output to logs[i] and writes its exit code to exits[i]."]
        lines += _bash_array("names", [p.name for p in points])
        lines += _bash_array("logs", [os.path.abspath(sweep.log_path(p)) for p in points])
        lines += _bash_array("exits", [os.path.abspath(sweep.exit_path(p)) for p in points])
        lines += _bash_array("needs", [" ".join(p.after) for p in points])  # Names: no spaces.
        # Each command is one string for `eval`: its arguments shell-quoted, the whole in "...".
        lines += ["commands=(", *(f"  {_double_quote(shlex.join(self.command(sweep, p)))}"
                                  for p in points), ")"]
        lines += ["", f"logdir={shlex.quote(logs)}", "i=$SLURM_ARRAY_TASK_ID",
                  *_TASK.replace("{cwd}", shlex.quote(os.getcwd()))
                  .replace("{not_started}", str(depends.NOT_STARTED)).splitlines()]
        return "\n".join(lines) + "\n"

    def command(self, sweep: Sweep, point: Point) -> list[str]:
        """The command a task runs for `point`: `srun` across its nodes when more than one."""
        command = [self.python, "-m", "jaxformer", *sweep.train_args(point)]
        if self.nodes == 1:
            return command
        srun = ["srun", "--kill-on-bad-exit=1"]
        if self.cpus_per_task:  # srun does not take it from the allocation in every version.
            srun.append(f"--cpus-per-task={self.cpus_per_task}")
        return [*srun, *command, "--distributed"]

    def launch(self, sweep: Sweep, points: Sequence[Point], *, wait: bool = False,
               on_change: OnChange | None = None) -> dict[str, dict]:
        """Submits `points` as job arrays, one per wave (see `script`), and returns each
        point's launcher fields, `{"job_id": "<array id>_<task>"}` (and `started` once seen
        running). With `wait`, it returns when none of the tasks is queued or running any
        more, and calls `on_change` whenever that set changes."""
        if not points:
            return {}
        for point in points:  # Exit codes of earlier attempts must not satisfy a dependent.
            if os.path.exists(sweep.exit_path(point)):
                os.remove(sweep.exit_path(point))
        running_before = {name: fields for name, fields in _previous_jobs(sweep).items()
                          if sweep.exit_code(sweep.point_named(name)) is None}
        jobs: dict[str, dict] = {}
        for k, wave in enumerate(depends.levels(points)):
            after = sorted({_array_of(jobs.get(n) or running_before.get(n))
                            for p in wave for n in p.after} - {""})
            dependency = f"afterany:{':'.join(after)}" if after else ""
            array_id = self._submit(sweep, wave, script_name(k), dependency)
            jobs.update({p.name: {"job_id": f"{array_id}_{i}"} for i, p in enumerate(wave)})
        if on_change:
            on_change(set(jobs), jobs)
        if wait:
            self._wait({f["job_id"].split("_")[0] for f in jobs.values()}, jobs, on_change)
        return jobs

    def _submit(self, sweep: Sweep, points: Sequence[Point], name: str, dependency: str) -> str:
        """Writes ROOT/logs/<name> and submits it; returns the job array's id."""
        path = os.path.join(sweep.root, LOGS, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            f.write(self.wave_script(sweep, points, dependency))
        result = _run(["sbatch", "--parsable", path])
        if result is None:
            raise UserError("sbatch not found: --launcher=slurm needs the SLURM commands on PATH")
        if result.returncode != 0:
            raise UserError(f"sbatch failed: {_last_line(result)}")
        array_id = result.stdout.strip().split(";")[0]  # `ID;CLUSTER` on a federation.
        after = f", after {dependency}" if dependency else ""
        print(f"submitted SLURM job array {array_id} ({len(points)} tasks{after}): {path}",
              flush=True)
        return array_id

    @staticmethod
    def running(sweep: Sweep, state: dict) -> set[str]:
        """The points of `state` (a sweep.json) whose job is still queued or running; none
        when squeue is missing or fails (then with a warning). Needs no instance."""
        jobs = {p["job_id"]: p["name"] for p in state.get("points", []) if p.get("job_id")}
        if not jobs:
            return set()
        try:
            queued = _squeue({job.split("_")[0] for job in jobs}) or {}
        except UserError as e:
            print(f"warning: {e}", file=sys.stderr)
            return set()
        return {name for job, name in jobs.items() if job in queued}

    def _wait(self, array_ids: set[str], jobs: dict[str, dict],
              on_change: OnChange | None) -> None:
        names = {fields["job_id"]: name for name, fields in jobs.items()}
        last, line, failures = set(jobs), "", 0
        while True:
            try:
                queued = _squeue(array_ids)
            except UserError:
                failures += 1  # The controller may be restarting: give it a few polls.
                if failures > 10:
                    raise
                time.sleep(self.poll_seconds)
                continue
            failures = 0
            if queued is None:
                raise UserError("squeue not found: cannot wait for the SLURM jobs")
            for job, state in queued.items():
                if state == "RUNNING" and job in names:
                    jobs[names[job]].setdefault("started", time.time())
            states = list(queued.values())
            counts = ", ".join(f"{states.count(s)} {s.lower()}" for s in sorted(set(states)))
            if counts and counts != line:
                print(f"job {','.join(sorted(array_ids))}: {counts}", flush=True)
            line = counts
            now = {names[job] for job in queued if job in names}
            if on_change and now != last:
                on_change(now, jobs)
            last = now
            if not queued:
                return
            time.sleep(self.poll_seconds)


def _previous_jobs(sweep: Sweep) -> dict[str, dict]:
    """The launcher fields (job ids) of the points in the sweep's sweep.json, if any."""
    try:
        return {p["name"]: p for p in read_state(sweep.root)["points"] if p.get("job_id")}
    except UserError:
        return {}


def _array_of(fields: dict | None) -> str:
    """The job array id of a point's launcher fields (`{"job_id": "123_4"}`: "123")."""
    return (fields or {}).get("job_id", "").split("_")[0]


def script_name(wave: int) -> str:
    """ROOT/logs/<this>: the sbatch script of the `wave`-th job array of a launch."""
    return SCRIPT if wave == 0 else SCRIPT.replace(".", f"-{wave}.", 1)


# A task: skip the point if a point it depends on failed (recorded: exit {not_started}) or has
# not finished (left pending); run it; record its exit code unless SIGTERM stopped it.
_TASK = """\
# On scancel, preemption or the time limit SLURM sends SIGTERM to every process of the task:
# the trainer saves a checkpoint and exits; the point is left unfinished, to resume on a rerun.
trap 'stopped=1; echo "task $i: SIGTERM"' TERM
rm -f "${exits[i]}"
echo "== $(date '+%F %T') slurm job ${SLURM_ARRAY_JOB_ID}_$i on $(hostname): ${names[i]}" \\
  >> "${logs[i]}"
for dep in ${needs[i]}; do
  dep_code=$(cat "$logdir/$dep.exit" 2>/dev/null)
  if [ -z "$dep_code" ]; then
    echo "jaxformer sweep: point $dep has not finished: ${names[i]} not started" >> "${logs[i]}"
    exit 0
  elif [ "$dep_code" != 0 ]; then
    echo "jaxformer sweep: point $dep failed (exit $dep_code): ${names[i]} not started" \\
      >> "${logs[i]}"
    echo {not_started} > "${exits[i]}"
    exit {not_started}
  fi
done
{ cd {cwd} && eval "${commands[i]}"; } >> "${logs[i]}" 2>&1
code=$?
if [ -n "$stopped" ]; then
  echo "jaxformer sweep: ${names[i]} stopped by SIGTERM (exit $code): resumes on a rerun" \\
    >> "${logs[i]}"
  exit "$code"
fi
echo "$code" > "${exits[i]}.tmp" && mv -f "${exits[i]}.tmp" "${exits[i]}"
exit "$code"
"""


def _read_config(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            options = json.load(f)
    except OSError as e:
        raise UserError(f"cannot read --slurm_config {path}: {e.strerror}") from None
    except ValueError as e:
        raise UserError(f"--slurm_config {path} is not valid JSON: {e}") from None
    if not isinstance(options, dict):
        raise UserError(f"--slurm_config {path} must hold a JSON object")
    for key, value in options.items():
        if key not in OPTIONS:
            raise UserError(f"--slurm_config {path}: unknown key {key!r} "
                            f"(known: {', '.join(OPTIONS)})")
        kind = OPTIONS[key]
        if not isinstance(value, kind) or isinstance(value, bool):
            raise UserError(f"--slurm_config {path}: {key} must be a JSON "
                            f"{'integer' if kind is int else 'string'}, got {value!r}")
    return options


def _bash_array(name: str, values: Sequence[str]) -> list[str]:
    return [f"{name}=(", *(f"  {shlex.quote(v)}" for v in values), ")"]


def _double_quote(text: str) -> str:
    """`text` as one bash word in double quotes (which keep all but these four literal)."""
    return '"' + re.sub(r'(["$`\\])', r"\\\1", text) + '"'


def _run(command: list[str]) -> subprocess.CompletedProcess | None:
    """Runs a SLURM command; None when it is not installed."""
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=120)
    except FileNotFoundError:
        return None
    except subprocess.TimeoutExpired:
        raise UserError(f"{command[0]} did not answer within 120 s") from None


def _last_line(result: subprocess.CompletedProcess) -> str:
    lines = (result.stderr.strip() or result.stdout.strip() or
             f"exit code {result.returncode}").splitlines()
    return lines[-1]


def _squeue(array_ids: set[str]) -> dict[str, str] | None:
    """`{task id: state}` of the queued or running tasks of the job arrays (`123_4: "RUNNING"`);
    None when squeue is not installed."""
    result = _run(["squeue", "--noheader", "--array", "--format=%i %T",
                   f"--jobs={','.join(sorted(array_ids))}"])
    if result is None:
        return None
    if result.returncode != 0:
        if "Invalid job id" in result.stderr:  # Every job has ended and left the controller.
            return {}
        raise UserError(f"squeue failed: {_last_line(result)}")
    return dict(line.split() for line in result.stdout.splitlines() if line.strip())


def main(argv: list[str] | None = None) -> int:
    from jaxformer.cli import main as cli

    return cli(["sweep", "--launcher=slurm", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
