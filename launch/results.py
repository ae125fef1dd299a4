"""A sweep's results: the table of points x final metrics, and plots (metric against the swept
hyperparameters, and every point's loss curve), from ROOT/sweep.json and the workdirs. Only
finished points are plotted against the hyperparameters; failed ones say so in the table's
status column and have a dashed loss curve."""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Sequence

from jaxformer.errors import UserError
from launch.sweep import DONE, FAILED, run_seconds

LOSS = "train/loss"


def swept_keys(state: dict) -> list[str]:
    """The override keys whose value differs between points, in first-seen order."""
    keys: list[str] = []
    for point in state["points"]:
        keys += [k for k in point["overrides"] if k not in keys]
    values = lambda key: {json.dumps(p["overrides"].get(key), default=str)  # noqa: E731
                          for p in state["points"]}
    return [k for k in keys if len(values(k)) > 1]


def metric_columns(state: dict, metrics: Sequence[str] = ()) -> list[str]:
    """The metrics asked for, or every final `eval/...` metric and the training loss. A
    metric asked for that no point has (while some point has metrics) is a UserError."""
    present = {k for p in state["points"] for k in p.get("metrics", {})} - {"step"}
    if metrics:
        unknown = [m for m in metrics if m not in present]
        if present and unknown:
            hint = " (repeat --metric for several)" if "," in unknown[0] else ""
            raise UserError(f"--metric {unknown[0]}: no point has it{hint}; they have "
                            f"{', '.join(sorted(present))}")
        return list(metrics)
    return sorted(k for k in present if k.startswith("eval/")) + ([LOSS] if LOSS in present
                                                                   else [])


def rows(state: dict, columns: Sequence[str]) -> tuple[list[str], list[list]]:
    """(header, rows): point name, swept values, status, step, wall time, and the final
    values of the metrics in `columns` (`metric_columns`)."""
    keys = swept_keys(state)
    header = ["point", *keys, "status", "step", "time", *columns]
    table = []
    for point in state["points"]:
        final = point.get("metrics", {})
        wall = run_seconds(point)
        table.append([point["name"], *[point["overrides"].get(k, "") for k in keys],
                      point["status"], final.get("step", ""),
                      _duration(wall) if wall and wall > 0 else "",
                      *[final.get(c, "") for c in columns]])
    return header, table


def format_table(header: list[str], table: list[list], fmt: str = "md") -> str:
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(table)
        return out.getvalue()
    cells = [[_cell(v) for v in row] for row in table]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in cells]
    return "\n".join(lines)


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (tuple, list)):
        return ",".join(map(str, value))
    return str(value)


def _duration(seconds: float) -> str:
    minutes, seconds = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{seconds:02d}s"


def loss_curve(workdir: str, key: str = LOSS) -> tuple[list[int], list[float]]:
    """(steps, values) of `key` in the workdir's metrics.jsonl (last record of a step wins)."""
    by_step: dict[int, float] = {}
    try:
        with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8") as f:
            for line in f:
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if key in record and "step" in record:
                    by_step[record["step"]] = record[key]
    except FileNotFoundError:
        pass
    steps = sorted(by_step)
    return steps, [by_step[s] for s in steps]


def check_plot_path(path: str) -> None:
    """UserError unless matplotlib writes the format `path`'s extension names (none: PNG)."""
    from matplotlib.backend_bases import FigureCanvasBase

    extension = os.path.splitext(path)[1][1:].lower()
    formats = FigureCanvasBase.get_supported_filetypes()
    if extension and extension not in formats:
        raise UserError(f"--plot {path}: .{extension} is no format a plot is written in; use "
                        f"one of .{', .'.join(sorted(formats))}")


def plot(state: dict, metric: str, path: str) -> None:
    """Writes the plot at `path`, in its extension's format (`check_plot_path`): `metric`
    against the swept hyperparameter(s), and every loss curve."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    # Only finished points are results; a failed point's last value would be one.
    done = [p for p in state["points"]
            if p["status"] == DONE and metric in p.get("metrics", {})]
    keys = swept_keys(state)
    numeric = [k for k in keys if all(_is_number(p["overrides"].get(k)) for p in done)]
    if done and numeric:
        x_key = numeric[0]
        # Keys that move with x (heads with width) label nothing: one line per other setting.
        others = [k for k in keys if k != x_key and not _follows(done, k, x_key)]
        groups: dict[str, list] = {}
        for point in done:
            label = ", ".join(f"{k}={point['overrides'].get(k)}" for k in others)
            groups.setdefault(label, []).append((point["overrides"][x_key],
                                                 point["metrics"][metric]))
        for label, values in groups.items():
            xs, ys = zip(*sorted(values))
            left.plot(xs, ys, "o-", label=label or None)
        xs = [p["overrides"][x_key] for p in done]
        if min(xs) > 0 and max(xs) / min(xs) >= 10:
            left.set_xscale("log")
        left.set_xlabel(x_key)
        if any(groups):
            left.legend(fontsize=7)
    elif done:
        left.barh([p["name"] for p in done], [p["metrics"][metric] for p in done])
    left.set_title(metric)
    for point in state["points"]:
        steps, values = loss_curve(point["workdir"])
        if steps:
            failed = point["status"] == FAILED
            right.plot(steps, values, "--" if failed else "-", linewidth=1,
                       label=point["name"] + (" (failed)" if failed else ""))
    right.set_xlabel("step")
    right.set_title(LOSS)
    if len(state["points"]) <= 20:
        right.legend(fontsize=7)
    fig.tight_layout()
    try:
        fig.savefig(path, dpi=100)
    except OSError as e:
        raise UserError(f"cannot write the plot {path}: {e.strerror}; choose --plot=FILE") \
            from None
    finally:
        plt.close(fig)


def _follows(points: list[dict], key: str, x_key: str) -> bool:
    """Whether `key`'s value is the same for all points with the same `x_key` value."""
    seen: dict[str, object] = {}
    for point in points:
        x = json.dumps(point["overrides"].get(x_key), default=str)
        value = point["overrides"].get(key)
        if seen.setdefault(x, value) != value:
            return False
    return True


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
