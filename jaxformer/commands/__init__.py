"""One module per subcommand: `HELP`, `add_arguments(parser)`, `run(args, overrides) -> int`.

Modules import jax only inside `run`, after the device set-up (see `common.py`).
"""
