"""Lines for the person running a command: process 0 prints, the others stay quiet."""

from __future__ import annotations

import os
import sys

import jax


def log(message: str) -> None:
    """A line on stdout from process 0; nothing once stdout is a pipe its reader has closed
    (`jaxformer train ... | head`), so that training goes on."""
    if jax.process_index() != 0:
        return
    try:
        print(message, file=sys.stdout, flush=True)
    except BrokenPipeError:
        # Later lines, and the flush at exit, then go to /dev/null instead of raising again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
