"""Launchers: run a command as a local multi-process pod, and run sweeps locally, on SLURM or
on TPU VM pod slices (`jaxformer sweep`)."""

import importlib

LAUNCHERS = {"local": "launch.local:LocalLauncher", "slurm": "launch.slurm:SlurmLauncher",
             "tpu": "launch.tpu:TpuLauncher"}


def launcher_class(name: str) -> type:
    """The launcher class registered as `name` in `LAUNCHERS`."""
    module, _, attribute = LAUNCHERS[name].partition(":")
    return getattr(importlib.import_module(module), attribute)
