"""Names of sweep points: override values as the command line writes them, and a point's
directory name made from its overrides."""

from __future__ import annotations

import re
from typing import Any


def format_value(value: Any) -> str:
    """A value as the command line writes it (`--config.key=<this>`)."""
    if isinstance(value, (tuple, list)):
        return repr(tuple(value))
    return str(value)


_UNSAFE = re.compile(r"[^A-Za-z0-9_.=+-]+")


def name_points(points: list) -> None:
    """Names unnamed points from their overrides (`lr=0.001,num_layers=2`), with each key's
    shortest unambiguous suffix; names are made safe for paths and unique."""
    keys = sorted({k for p in points if not p.name for k in p.overrides})
    short = {}
    for key in keys:
        parts = key.split(".")
        for n in range(1, len(parts) + 1):
            suffix = ".".join(parts[-n:])
            if sum(1 for k in keys if k == suffix or k.endswith("." + suffix)) == 1:
                short[key] = suffix
                break
    seen: dict[str, int] = {}
    for point in points:
        name = point.name or ",".join(f"{short[k]}={format_value(v)}"
                                      for k, v in point.overrides.items()) or "base"
        name = _UNSAFE.sub("_", name).strip("_.") or "point"
        if name in seen:
            seen[name] += 1
            name = f"{name}_{seen[name]}"
        seen.setdefault(name, 0)
        point.name = name
