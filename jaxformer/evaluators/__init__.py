"""Evaluators, one module per kind, chosen by `type` in `config.evals` (see base.py)."""
