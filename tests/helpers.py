"""Paths the tests share."""

import glob
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Every experiment config (configs/common.py holds shared blocks, not an experiment).
CONFIGS = sorted(os.path.relpath(p, ROOT) for p in glob.glob(
    os.path.join(ROOT, "configs", "**", "*.py"), recursive=True)
    if os.path.basename(p) != "common.py")
