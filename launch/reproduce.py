"""Paper tables: an `experiments/<paper>/` directory, its sweep, and the table that puts the
reproduced numbers beside the published ones.

An experiment directory holds `config.py` (`get_config(arg)` and `get_sweep(hyper, arg)`, both
taking `scale=cpu|paper`; one sweep point per table row, named as the row), `expected.json`
(the paper's numbers, below) and a README. `expected.json`:

    {"paper": "...", "url": "...", "table": "Table 3: ...",
     "metric": {"name": "BLEU", "key": "eval/test_bleu/bleu", "higher_is_better": true,
                "scale": 1},
     "rows": {"base": {"label": "...", "metric": 25.8, "params": 65000000,
                       "reference_params": 63082496}, ...}}

`metric` and `params` are the published values (null where the paper has none); an optional
`"also": [{"name": ..., "key": ..., "scale": ...}]` adds columns of further metrics (ours only;
with `"rows": [...]`, for those rows only, where other rows log another metric of that key);
a row may be chosen among several points (sweep points with `"row": "<row>"`, e.g. a grid of
learning rates), the best on `"select_on": {"name": ..., "key": ..., "higher_is_better": ...}`
(a validation metric), once every candidate has trained;
`reference_params`, where given, is the exact count of a reference implementation at
`scale=paper`, which the reproduction reports as matched or not.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import time

from jaxformer.errors import UserError
from launch import sweep as sweep_lib

SCALES = ("cpu", "paper")


@dataclasses.dataclass
class Experiment:
    directory: str
    expected: dict

    @property
    def name(self) -> str:
        return os.path.basename(os.path.normpath(self.directory))

    def config_spec(self, scale: str) -> str:
        return f"{os.path.join(self.directory, 'config.py')}:scale={scale}"

    def results_path(self, scale: str, extension: str = "md") -> str:
        """`experiments/results/<paper>[-<scale>].<extension>` (no suffix for cpu)."""
        suffix = "" if scale == "cpu" else f"-{scale}"
        return os.path.join(os.path.dirname(os.path.normpath(self.directory)), "results",
                            f"{self.name}{suffix}.{extension}")


def load(directory: str) -> Experiment:
    """The experiment in `directory`; a missing or malformed file is a `UserError`."""
    if not os.path.isdir(directory):
        raise UserError(f"experiment directory not found: {directory}")
    for needed in ("config.py", "expected.json"):
        if not os.path.isfile(os.path.join(directory, needed)):
            raise UserError(f"{directory} is not an experiment: it has no {needed}")
    path = os.path.join(directory, "expected.json")
    try:
        with open(path, encoding="utf-8") as f:
            expected = json.load(f)
    except ValueError as e:
        raise UserError(f"{path}: not JSON ({e})") from None
    missing = [k for k in ("paper", "table", "metric", "rows") if k not in expected]
    if missing or "key" not in expected["metric"] or not isinstance(expected["rows"], dict):
        raise UserError(f"{path}: needs paper, table, metric.key and rows "
                        f"(missing: {', '.join(missing) or 'metric.key or rows'})")
    return Experiment(os.path.abspath(directory), expected)


def parameter_counts(sweep) -> dict[str, int]:
    """Each trained point's total parameter count, from shapes alone (`jax.eval_shape`)."""
    from jaxformer.commands.params import summary

    counts, bases = {}, {}
    for point in sweep.points:
        if point.command != "train":
            continue  # Not a jaxformer model (a baseline).
        spec = sweep.config_spec(point)
        if spec not in bases:
            bases[spec] = sweep_lib.base_config(spec, sweep.overrides)
        base = bases[spec]
        counts[point.name] = summary(sweep_lib.point_config(base, point), depth=0)["total"]
    return counts


def records(state: dict, params: dict[str, int], command: str) -> dict[str, dict]:
    """Each point's outcome as the results file keeps it."""
    machine = f"{os.cpu_count()} CPU cores, {_cpu_name()}"
    out = {}
    for point in state["points"]:
        wall = sweep_lib.run_seconds(point)
        out[point["name"]] = dict(
            status=point["status"], params=params.get(point["name"]),
            metrics=point.get("metrics", {}), minutes=round(wall / 60, 2) if wall else None,
            date=time.strftime("%Y-%m-%d"), machine=machine, command=command)
    return out


def table_rows(points) -> dict[str, list[str]]:
    """Each table row (in sweep order) and the names of the points that are its candidates."""
    rows: dict[str, list[str]] = {}
    for point in points:
        rows.setdefault(point.table_row, []).append(point.name)
    return rows


def choose(experiment: Experiment, rows: dict[str, list[str]],
           records: dict[str, dict]) -> dict[str, dict]:
    """Each row's record: its point's, or for a row of several candidates the one best on the
    experiment's `select_on` metric (with `selected` naming it and the minutes of them all);
    such a row has no value until every candidate has trained."""
    select = experiment.expected.get("select_on")
    chosen = {}
    for row, names in rows.items():
        if len(names) == 1:
            if names[0] in records:
                chosen[row] = records[names[0]]
            continue
        if not select:
            raise UserError(f"row {row} has {len(names)} points ({', '.join(names)}): "
                            "expected.json needs select_on to choose among them")
        done = [n for n in names if records.get(n, {}).get("status") == "done"]
        if len(done) < len(names):
            chosen[row] = dict(status=f"{len(done)}/{len(names)} trained",
                               params=records.get(names[0], {}).get("params"))
            continue
        sign = 1 if select.get("higher_is_better", True) else -1
        best = max(done, key=lambda n: sign * records[n]["metrics"].get(
            select["key"], -sign * float("inf")))
        chosen[row] = dict(records[best], selected=best[len(row):].lstrip("-_.") or best,
                           minutes=sum(records[n]["minutes"] or 0 for n in names))
    return chosen


def _cpu_name() -> str:
    """The processor's model name (`/proc/cpuinfo` on Linux), else the architecture."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def merge_results(path: str, scale: str, new: dict[str, dict]) -> dict[str, dict]:
    """The rows of the results file at `path` (if any) updated with `new`; written back.

    The file is the lasting record of a table: rows trained in separate runs (`--rows`), on
    different days or machines, accumulate in it.
    """
    rows: dict[str, dict] = {}
    if os.path.exists(path):
        try:
            with open(path, encoding="utf-8") as f:
                rows = json.load(f)["rows"]
        except (ValueError, KeyError) as e:
            raise UserError(f"{path}: unreadable results file ({e}); move it away") from None
    rows.update(new)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        json.dump({"scale": scale, "rows": rows}, f, indent=1, sort_keys=True)
        f.write("\n")
    os.replace(path + ".tmp", path)
    return rows


def table(experiment: Experiment, rows: dict[str, dict], order: list[str], scale: str) -> str:
    """Markdown: each row's parameters and metric, ours beside the paper's (the paper's
    columns only where `expected.json` gives one of the rows a value)."""
    metric = experiment.expected["metric"]
    paper_rows = experiment.expected["rows"]
    name = metric["name"]
    also = experiment.expected.get("also", [])
    select = experiment.expected.get("select_on")
    printed = [paper_rows.get(row_name, {}) for row_name in order]
    with_params = any(r.get("params") is not None for r in printed)
    with_metric = any(r.get("metric") is not None for r in printed)
    header = ["row", "setting", "params", *(["paper params"] if with_params else []),
              *(["reference params"] if scale == "paper" else []), name,
              *([f"paper {name}"] if with_metric else []),
              *[extra["name"] for extra in also],
              *([f"chosen on {select['name']}"] if select else []), "time"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row_name in order:
        paper = paper_rows.get(row_name, {})
        ours = rows.get(row_name, {"status": "not run"})
        params = ours.get("params")
        reference = paper.get("reference_params")
        cells = [row_name, paper.get("label", ""), "" if params is None else f"{params:,}",
                 *([_millions(paper.get("params"))] if with_params else []),
                 *(["" if reference is None else "= (exact)" if reference == params
                    else f"{reference:,} (!)"] if scale == "paper" else []),
                 _value(ours, metric),
                 *(["" if paper.get("metric") is None else f"{paper['metric']:g}"]
                   if with_metric else []),
                 *[_value(ours, extra) if row_name in extra.get("rows", [row_name]) else "-"
                   for extra in also],
                 *([ours.get("selected", "")] if select else []),
                 f"{ours['minutes']:.1f} min" if ours.get("minutes") else ""]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _value(row: dict, metric: dict) -> str:
    """A row's value of `metric` as the table prints it; a finished row without it (a
    pretraining run in a fine-tuning table) shows "-", an unfinished one its status."""
    value = row.get("metrics", {}).get(metric["key"])
    if value is not None:
        return f"{value * metric.get('scale', 1):.2f}"
    return "-" if row["status"] == "done" else row["status"]


def _millions(count) -> str:
    """A published count as papers print it: 65000000 -> 65M, 1542000000 -> 1542M."""
    return "" if count is None else f"{count / 1e6:g}M"


def report(experiment: Experiment, rows: dict[str, dict], order: list[str], scale: str,
           plot: str | None = None) -> str:
    """The results file: the table, its plot, and how and where each row was trained."""
    expected = experiment.expected
    done = [rows[n] for n in order if rows.get(n, {}).get("status") == "done"]
    runs = sorted({(r["command"], r["machine"], r["date"]) for r in done})
    lines = [f"# {expected['paper']}: {expected['table']}", "",
             f"Scale `{scale}`: {len(done)}/{len(order)} rows trained, "
             f"{sum(r['minutes'] or 0 for r in done) / 60:.2f} h of training in all.", "",
             table(experiment, rows, order, scale), "",
             f"Paper: {expected.get('url', '')}. Metric: `{expected['metric']['key']}`. See "
             f"`experiments/{experiment.name}/README.md` for how the rows map to the paper's.",
             ""]
    if plot:
        lines += [f"![{expected['metric']['name']} per row, and the training loss curves]"
                  f"({os.path.basename(plot)})", ""]
    lines += ["Produced by:"]
    lines += [f"- `{command}` on {machine}, {date}" for command, machine, date in runs]
    return "\n".join(lines) + "\n"
