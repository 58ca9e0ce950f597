"""Evaluators as plug-ins: one module per evaluator, chosen, placed and timed by config.evals (common.py)."""
