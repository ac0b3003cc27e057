"""What the command-line tools share: argparse types and JSON-ready results."""

import argparse
import math

import numpy as np


def positive_int(text: str) -> int:
  """argparse type: a whole number >= 1."""
  value = int(text)
  if value < 1:
    raise argparse.ArgumentTypeError(f'{text} is not a positive whole number')
  return value


def json_ready(value):
  """A result for json.dumps: NaN -> None (JSON has no NaN), arrays dropped, dicts recursed."""
  if isinstance(value, dict):
    return {k: json_ready(v) for k, v in value.items() if not isinstance(v, np.ndarray)}
  if isinstance(value, float) and math.isnan(value):
    return None
  return value
