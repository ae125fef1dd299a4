"""A sweep: the points a config's `get_sweep` defines, their workdirs, commands and status.

`plan()` expands the sweep and checks every point against the locked config before anything
starts. Each point trains in `ROOT/<name>/`; its output goes to `ROOT/logs/<name>.log` and,
when its command ends, its exit code to `ROOT/logs/<name>.exit`, whichever launcher ran it
(on a cluster the job writes both). `ROOT/sweep.json` records the points, their commands,
status and final metrics; it is rewritten from those files by `refresh()`, so a sweep can be
inspected (`jaxformer results`) and rerun at any time: finished points are skipped and the
others resume from their last checkpoint.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

from jaxformer import config as config_lib
from jaxformer import registry
from jaxformer.errors import UserError
from launch import hyper
from launch.naming import format_value, name_points

SWEEP_FILE = "sweep.json"
LOGS = "logs"
PENDING, RUNNING, DONE, FAILED = "pending", "running", "done", "failed"


@dataclasses.dataclass
class Point:
    """One run of a sweep: its name (directory under the root), config overrides, the arg
    string it adds to the config's, the `jaxformer` command that runs it and the table row it
    is a candidate for (empty: its own name)."""

    name: str
    overrides: dict[str, Any]  # Config keys without the `config.` prefix.
    arg: str = ""
    command: str = "train"
    row: str = ""
    after: list[str] = dataclasses.field(default_factory=list)  # Points whose workdir it uses.

    @property
    def table_row(self) -> str:
        return self.row or self.name

    def override_flags(self) -> list[str]:
        return [f"--config.{key}={format_value(value)}" for key, value in self.overrides.items()]


@dataclasses.dataclass
class Sweep:
    """The points of `config` (FILE[:ARGS]) with the common `overrides`, under `root`."""

    config: str
    root: str
    points: list[Point]
    overrides: list[str] = dataclasses.field(default_factory=list)  # `a.b=v`, for every point.

    def workdir(self, point: Point) -> str:
        return os.path.join(self.root, point.name)

    def log_path(self, point: Point) -> str:
        return os.path.join(self.root, LOGS, f"{point.name}.log")

    def exit_path(self, point: Point) -> str:
        return os.path.join(self.root, LOGS, f"{point.name}.exit")

    def point_named(self, name: str) -> Point:
        return next(p for p in self.points if p.name == name)

    def config_spec(self, point: Point) -> str:
        """The point's config, FILE[:ARGS]: the sweep's arg string and the point's `arg`."""
        return with_arg(self.config, point.arg)

    def train_args(self, point: Point, config: str | None = None) -> list[str]:
        """`jaxformer` arguments that train (or resume) the point; `config` is the sweep's
        config spec as the machine that runs it names it (default: as given)."""
        return [point.command, f"--config={with_arg(config or self.config, point.arg)}",
                f"--workdir={self.workdir(point)}", *[f"--config.{o}" for o in self.overrides],
                *point.override_flags()]

    def record_exit(self, point: Point, code: int) -> None:
        """Writes the exit code of the point's command (atomically: readers see all or none)."""
        path = self.exit_path(point)
        with open(path + ".tmp", "w", encoding="utf-8") as f:
            f.write(f"{code}\n")
        os.replace(path + ".tmp", path)

    def exit_code(self, point: Point) -> int | None:
        """The exit code of the point's last finished command (None: never finished)."""
        try:
            with open(self.exit_path(point), encoding="utf-8") as f:
                return int(f.read().strip())
        except (FileNotFoundError, ValueError):
            return None


def with_arg(spec: str, arg: str) -> str:
    """Config `spec` (FILE[:ARGS]) with `arg` appended to its arg string."""
    if not arg:
        return spec
    return f"{spec},{arg}" if ":" in spec else f"{spec}:{arg}"


def load_sweep_points(spec: str) -> list[hyper.Point]:
    """The raw points of `get_sweep(hyper, arg)` in the config file `spec` = FILE[:ARGS]."""
    with config_lib.config_module(spec) as (module, path, arg):
        get_sweep = getattr(module, "get_sweep", None)
        if get_sweep is None:
            raise UserError(f"{path} defines no get_sweep(hyper, arg)")
        takes_arg = len(inspect.signature(get_sweep).parameters) > 1
        try:
            points = get_sweep(hyper, arg) if takes_arg else get_sweep(hyper)
        except ValueError as e:
            raise UserError(f"{spec}: get_sweep: {e}") from e
    if not isinstance(points, (list, tuple)) or not all(isinstance(p, dict) for p in points):
        raise UserError(f"{path}: get_sweep() must return a list of dicts")
    if not points:
        raise UserError(f"{path}: get_sweep() returned no points")
    return list(points)


def plan(spec: str, root: str, overrides: Sequence[str] = ()) -> Sweep:
    """The sweep of config `spec` with every point validated; raises `UserError` naming the
    first point that does not apply (unknown key, wrong type), before anything is written."""
    raw_points = load_sweep_points(spec)
    bases: dict[str, Any] = {}
    points = []
    named = set()
    for i, raw in enumerate(raw_points):
        for key in raw:
            if key not in (hyper.NAME, hyper.ARG, hyper.COMMAND, hyper.ROW) and not (
                    key.startswith(hyper.PREFIX)):
                raise UserError(f"sweep point {i}: key {key!r} must be 'name', 'arg', "
                                "'command', 'row' or 'config.*'")
        point = Point(name=str(raw.get(hyper.NAME, "")), arg=str(raw.get(hyper.ARG, "")),
                      command=str(raw.get(hyper.COMMAND, "train")),
                      row=str(raw.get(hyper.ROW, "")),
                      overrides={k[len(hyper.PREFIX):]: v for k, v in raw.items()
                                 if k.startswith(hyper.PREFIX)})
        after: list[str] = []
        try:
            point.overrides = {k: _resolve(v, root, named, after)
                               for k, v in point.overrides.items()}
            point.arg = ",".join(_resolve(item, root, named, after)
                                 for item in point.arg.split(",")
                                 if item) if hyper.WORKDIR_OF in point.arg else point.arg
            spec_i = with_arg(spec, point.arg)
            if spec_i not in bases:
                bases[spec_i] = config_lib.load_config(spec_i)
                _apply_common(bases[spec_i], overrides, point)
            registry.check_variant_overrides(
                point_config(bases[spec_i], point),
                [*(o.partition("=")[0] for o in overrides), *point.overrides])
        except CommonOverrideError as e:
            raise UserError(str(e)) from None
        except UserError as e:
            raise UserError(f"sweep point {i} ({_describe(point)}): {e}") from None
        point.after = list(dict.fromkeys(after))
        named.add(point.name)
        points.append(point)
    name_points(points)
    return Sweep(config=spec, root=root, points=points, overrides=list(overrides))


def _resolve(value: Any, root: str, earlier: set[str], after: list[str]) -> Any:
    """`value`, or for `hyper.workdir_of(name)` the workdir of the earlier point `name` (also
    as the value of an arg-string item, `key=<workdir_of(name)>`), whose name goes to `after`."""
    if isinstance(value, str) and "=" in value and not value.startswith(hyper.WORKDIR_OF):
        key, _, item = value.partition("=")
        return f"{key}={_resolve(item, root, earlier, after)}"
    if not (isinstance(value, str) and value.startswith(hyper.WORKDIR_OF)):
        return value
    name = value[len(hyper.WORKDIR_OF):]
    if name not in earlier:
        raise UserError(f"workdir_of({name!r}): no earlier point is named {name!r}")
    after.append(name)
    return os.path.join(root, name)


def point_config(base, point: Point):
    """A locked copy of `base` (the config with the sweep's common overrides) with the point's
    overrides applied."""
    config = base.copy_and_resolve_references()
    config.lock()
    config_lib.apply_overrides(config, [f[len("--config."):] for f in point.override_flags()])
    return config


class CommonOverrideError(UserError):
    """A `--config.*` override of the whole sweep does not apply."""


def _apply_common(config, overrides: Sequence[str], point: Point) -> None:
    """Applies the sweep's common overrides; an error names them, not the point (unless the
    point's own arg made the config they do not fit)."""
    try:
        config_lib.apply_overrides(config, overrides)
    except UserError as e:
        where = f" (config with the arg of point {point.arg!r})" if point.arg else ""
        raise CommonOverrideError(f"{e}{where}") from None


def base_config(spec: str, overrides: Sequence[str]):
    """The config `spec` (FILE[:ARGS]) with a sweep's common overrides."""
    config = config_lib.load_config(spec)
    config_lib.apply_overrides(config, overrides)
    return config


def _describe(point: Point) -> str:
    return point.name or ", ".join(f"{k}={format_value(v)}" for k, v in point.overrides.items())


# ---------------------------------------------------------------------------------------------
# Status: ROOT/sweep.json, rebuilt from the logs and workdirs.


def status(sweep: Sweep, point: Point, running: set[str] = frozenset()) -> str:
    code = sweep.exit_code(point)
    if point.name in running:
        return RUNNING
    if code is None:
        return PENDING
    return DONE if code == 0 else FAILED


def final_metrics(workdir: str) -> dict[str, float]:
    """The last value of every scalar in the workdir's metrics.jsonl, and its last step."""
    path = os.path.join(workdir, "metrics.jsonl")
    last: dict[str, float] = {}
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue  # A line cut short by a kill.
                last.update({k: v for k, v in record.items() if isinstance(v, (int, float))})
    except FileNotFoundError:
        pass
    return last


def log_tail(sweep: Sweep, point: Point, lines: int = 15) -> str:
    try:
        with open(sweep.log_path(point), encoding="utf-8", errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"


def read_state(root: str) -> dict:
    """ROOT/sweep.json, with ROOT as the sweep's root: a sweep copied or moved elsewhere reads
    (and refreshes) its points there, its paths to the old root mapped to ROOT."""
    path = os.path.join(root, SWEEP_FILE)
    if not os.path.isdir(root):
        what = "does not exist" if not os.path.exists(root) else "is not a directory"
        raise UserError(f"{root} {what}: give a sweep's --workdir")
    try:
        with open(path, encoding="utf-8") as f:
            state = json.load(f)
    except FileNotFoundError:
        raise UserError(f"{root} holds no {SWEEP_FILE}: not a sweep directory") from None
    except OSError as e:
        raise UserError(f"cannot read {path}: {e.strerror}") from None
    except ValueError as e:
        raise UserError(f"cannot read {path}: {e}") from None
    return _moved(state, os.path.abspath(root))


def _moved(state: dict, root: str) -> dict:
    """`state` with `root` as its root, workdir paths under its old root rewritten to it."""
    old = state.get("root")
    if not old or os.path.abspath(old) == root:
        return state

    def remap(value):
        if isinstance(value, str) and (value == old or value.startswith(old + os.sep)):
            return root + value[len(old):]
        if isinstance(value, str) and f"={old}" in value:  # An arg-string item.
            return value.replace(f"={old}", f"={root}")
        return value

    for point in state.get("points", []):
        point["overrides"] = {k: remap(v) for k, v in point.get("overrides", {}).items()}
        point["arg"] = remap(point.get("arg", ""))
    return {**state, "root": root}


def sweep_from_state(state: dict) -> Sweep:
    return Sweep(config=state["config"], root=state["root"], overrides=state["overrides"],
                 points=[Point(p["name"], p["overrides"], p.get("arg", ""),
                               p.get("subcommand", "train"), p.get("row", ""),
                               p.get("after", []))
                         for p in state["points"]])


def refresh(sweep: Sweep, *, launcher: str, running: set[str] = frozenset(),
            extra: dict[str, dict] | None = None) -> dict:
    """Rewrites ROOT/sweep.json from the points' logs and workdirs and returns it.

    `extra` adds launcher fields per point name (e.g. a SLURM job id); fields of an earlier
    sweep.json that the launcher set are kept.
    """
    old = {}
    try:
        old = {p["name"]: p for p in read_state(sweep.root)["points"]}
    except UserError:
        pass
    points = []
    for point in sweep.points:
        entry = dict(old.get(point.name, {}))
        restarted = (extra or {}).get(point.name, {}).get("started")
        if restarted is not None and restarted != entry.get("started", restarted):
            _keep_interrupted_time(entry, sweep.workdir(point))
        entry.update(
            name=point.name, overrides=point.overrides, arg=point.arg, subcommand=point.command,
            row=point.row, after=point.after,
            workdir=sweep.workdir(point),
            command=[sys.executable, "-m", "jaxformer", *sweep.train_args(point)],
            log=sweep.log_path(point), status=status(sweep, point, running),
            exit_code=sweep.exit_code(point), metrics=final_metrics(sweep.workdir(point)))
        if os.path.exists(sweep.exit_path(point)):
            entry["finished"] = os.path.getmtime(sweep.exit_path(point))
        entry.update((extra or {}).get(point.name, {}))
        points.append(entry)
    state = dict(config=sweep.config, root=sweep.root, overrides=sweep.overrides,
                 launcher=launcher, updated=time.time(), points=points)
    _write_state(sweep.root, state)
    return state


def _write_state(root: str, state: dict) -> None:
    """Writes ROOT/sweep.json atomically; a root that cannot be written (a read-only copy of
    a sweep) keeps its old file, with a warning."""
    path = os.path.join(root, SWEEP_FILE)
    try:
        os.makedirs(root, exist_ok=True)
        with open(path + ".tmp", "w", encoding="utf-8") as f:
            json.dump(state, f, indent=2, default=str)
        os.replace(path + ".tmp", path)
    except OSError as e:
        print(f"warning: cannot update {path}: {e.strerror}", file=sys.stderr)


def _keep_interrupted_time(entry: dict, workdir: str) -> None:
    """A point starts again: an earlier attempt that ended without an exit code (interrupted)
    counts in its time up to the last metrics it wrote."""
    if entry.get("finished", 0) >= entry["started"]:
        entry.pop("earlier_seconds", None)  # That attempt finished (failed): a new count.
        return
    try:
        last_write = os.path.getmtime(os.path.join(workdir, "metrics.jsonl"))
    except FileNotFoundError:
        return
    entry["earlier_seconds"] = (entry.get("earlier_seconds", 0.0)
                                + max(last_write - entry["started"], 0.0))


def run_seconds(entry: dict) -> float | None:
    """A finished point's time: its last attempt's and that of interrupted earlier ones."""
    if "started" not in entry or entry.get("finished", 0) < entry["started"]:
        return None
    return entry["finished"] - entry["started"] + entry.get("earlier_seconds", 0.0)


def progress_line(state: dict, parallel: int = 1) -> str:
    """`3/8 done, 2 running, 1 failed, ETA 12m` from a sweep.json state."""
    points = state["points"]
    counts = {s: sum(1 for p in points if p["status"] == s) for s in (DONE, RUNNING, FAILED)}
    line = (f"{counts[DONE]}/{len(points)} done, {counts[RUNNING]} running, "
            f"{counts[FAILED]} failed")
    durations = [run_seconds(p) for p in points
                 if p["status"] == DONE and run_seconds(p) is not None]
    left = len(points) - counts[DONE] - counts[FAILED]
    if durations and left:
        seconds = sum(durations) / len(durations) * left / max(parallel, 1)
        line += f", ETA {_duration(seconds)}"
    return line


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f}s"
    if seconds < 5400:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"
