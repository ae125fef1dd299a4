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

`metric` and `params` are the published values (null where the paper has none);
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

    def results_path(self, scale: str) -> str:
        suffix = "" if scale == "cpu" else f"-{scale}"
        return os.path.join(os.path.dirname(os.path.normpath(self.directory)), "results",
                            f"{self.name}{suffix}.md")


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
    """Each point's total parameter count, from shapes alone (`jax.eval_shape`)."""
    from jaxformer import config as config_lib
    from jaxformer.commands.params import summary

    counts = {}
    for point in sweep.points:
        config = config_lib.load_config(sweep.config)
        config_lib.apply_overrides(config, [*sweep.overrides, *[
            f[len("--config."):] for f in point.override_flags()]])
        counts[point.name] = summary(config, depth=0)["total"]
    return counts


def table(experiment: Experiment, state: dict, params: dict[str, int], scale: str) -> str:
    """Markdown: each row's parameters and metric, ours beside the paper's."""
    metric = experiment.expected["metric"]
    factor = metric.get("scale", 1)
    rows = experiment.expected["rows"]
    name = metric["name"]
    header = ["row", "setting", "params", "paper params", name, f"paper {name}", "time"]
    if scale == "paper":
        header.insert(4, "reference params")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for point in state["points"]:
        row = rows.get(point["name"], {})
        ours = point.get("metrics", {}).get(metric["key"])
        wall = (point["finished"] - point["started"]
                if "started" in point and "finished" in point else None)
        ours_params = params.get(point["name"])
        cells = [point["name"], row.get("label", ""),
                 "" if ours_params is None else f"{ours_params:,}", _millions(row.get("params")),
                 f"{ours * factor:.2f}" if ours is not None else point["status"],
                 "" if row.get("metric") is None else f"{row['metric']:g}",
                 f"{wall / 60:.1f} min" if wall else ""]
        if scale == "paper":
            reference = row.get("reference_params")
            mark = "" if reference is None else (
                "= (exact)" if reference == params.get(point["name"]) else f"{reference:,} (!)")
            cells.insert(4, mark)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _millions(count) -> str:
    """A published count as papers print it: 65000000 -> 65M, 1542000000 -> 1542M."""
    return "" if count is None else f"{count / 1e6:g}M"


def report(experiment: Experiment, state: dict, params: dict[str, int], scale: str,
           command: str) -> str:
    """The results file: what was run, where and how long, and the table."""
    expected = experiment.expected
    walls = [p["finished"] - p["started"] for p in state["points"]
             if "started" in p and "finished" in p]
    machine = f"{os.cpu_count()} CPU cores, {platform.processor() or platform.machine()}"
    return "\n".join([
        f"# {expected['paper']}: {expected['table']}",
        "",
        f"Scale `{scale}`; reproduced with `{command}` on {machine}, "
        f"{time.strftime('%Y-%m-%d')}. Points trained: "
        f"{sum(p['status'] == 'done' for p in state['points'])}/{len(state['points'])}, "
        f"{sum(walls) / 3600:.2f} h of training in all.",
        "",
        table(experiment, state, params, scale),
        "",
        f"Paper: {expected.get('url', '')}. Metric: `{expected['metric']['key']}`. See "
        f"`experiments/{experiment.name}/README.md` for how the rows map to the paper's.",
        "",
    ])
