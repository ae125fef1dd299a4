"""Order between a sweep's points: a point that uses `hyper.workdir_of(X)` (its `after`) starts
only once X has finished with exit 0. When X failed, the point is not started: it is recorded
as failed (exit `NOT_STARTED`) with the reason in its log, and a rerun retries both. When X has
not finished (it was interrupted), the point stays pending for a rerun."""

from __future__ import annotations

from collections.abc import Sequence

NOT_STARTED = 1  # The exit code recorded for a point whose dependency failed.


def failed_dependency(sweep, point) -> str | None:
    """Why `point` must not start because a point it depends on failed; None if none did."""
    for name in point.after:
        code = sweep.exit_code(sweep.point_named(name))
        if code not in (None, 0):
            return f"point {name} failed (exit {code})"
    return None


def unfinished_dependency(sweep, point) -> str | None:
    """The name of a point `point` depends on that has not finished; None if all have."""
    return next((name for name in point.after
                 if sweep.exit_code(sweep.point_named(name)) is None), None)


def skip(sweep, point, reason: str) -> None:
    """Records that `point` was not started because of `reason` (a failed dependency)."""
    note(sweep, point, f"{reason}: {point.name} not started")
    sweep.record_exit(point, NOT_STARTED)


def note(sweep, point, line: str) -> None:
    """Appends `jaxformer sweep: <line>` to the point's log."""
    with open(sweep.log_path(point), "a", encoding="utf-8") as log:
        log.write(f"jaxformer sweep: {line}\n")


def levels(points: Sequence) -> list[list]:
    """`points` in waves: a point's wave follows the waves of the points of `points` it depends
    on (those not in `points` have finished or run elsewhere). Order is kept within a wave."""
    level: dict[str, int] = {}
    for point in points:  # A point depends only on earlier points.
        level[point.name] = 1 + max((level[n] for n in point.after if n in level), default=-1)
    waves: list[list] = [[] for _ in range(max(level.values(), default=-1) + 1)]
    for point in points:
        waves[level[point.name]].append(point)
    return waves


def chains(points: Sequence) -> list[list]:
    """`points` in groups that must run on one machine, one after another: a point and every
    point of `points` it depends on, transitively (in sweep order)."""
    group_of: dict[str, int] = {}
    groups: list[list] = []
    for point in points:
        linked = sorted({group_of[n] for n in point.after if n in group_of})
        if not linked:
            groups.append([])
            linked = [len(groups) - 1]
        target = linked[0]
        for other in linked[1:]:  # The point joins two chains: they become one.
            for moved in groups[other]:
                group_of[moved.name] = target
            groups[target] += groups[other]
            groups[other] = []
        groups[target].append(point)
        group_of[point.name] = target
    by_order = {p.name: i for i, p in enumerate(points)}
    return [sorted(g, key=lambda p: by_order[p.name]) for g in groups if g]
