"""Launchers: run a command as a local multi-process pod, and run sweeps locally, on SLURM or
on TPU VM pod slices (`jaxformer sweep`)."""
