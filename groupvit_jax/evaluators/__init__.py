"""Evaluators: plug-ins whose `run(...)` returns a dict of metrics."""
