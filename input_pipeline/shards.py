"""Shard file patterns as img2dataset writes them: 'cc12m/{00000..01242}.tar'.

Brace expressions: `{a..b}` is an inclusive integer range, zero-padded to the width of `a` when
`a` has a leading zero (as webdataset and bash do); `{x,y,z}` lists alternatives. Patterns may
be local paths or URLs ('gs://bucket/cc12m/{00000..01242}.tar').
"""

import os
import re
from typing import Iterable

from groupvit_jax import filesystem

_BRACES = re.compile(r'\{([^{}]*)\}')


def expand_braces(pattern: str) -> list[str]:
  """All paths a brace pattern names, in order."""
  match = _BRACES.search(pattern)
  if match is None:
    return [pattern]
  head, body, tail = pattern[: match.start()], match.group(1), pattern[match.end() :]
  numeric = re.fullmatch(r'(\d+)\.\.(\d+)', body)
  if numeric:
    first, last = numeric.groups()
    width = len(first) if first.startswith('0') and len(first) > 1 else 0
    if int(last) < int(first):
      raise ValueError(f'empty range {{{body}}} in {pattern!r}')
    options = [str(i).zfill(width) for i in range(int(first), int(last) + 1)]
  elif ',' in body:
    options = body.split(',')
  else:
    raise ValueError(f'cannot read {{{body}}} in {pattern!r}: use {{first..last}} or {{a,b}}')
  return [path for option in options for path in expand_braces(head + option + tail)]


def expand(patterns: str | Iterable[str]) -> list[str]:
  """Brace patterns and shell globs ('*.tar') -> the paths they name (globs: those present)."""
  if isinstance(patterns, str):
    patterns = [patterns]
  paths = []
  for pattern in patterns:
    for path in expand_braces(os.path.expanduser(pattern)):
      paths.extend(filesystem.glob(path) if filesystem.has_magic(path) else [path])
  return paths


def missing(paths: Iterable[str]) -> list[str]:
  """The paths that name no file (on Cloud Storage, one listing per folder of many shards)."""
  paths = list(paths)
  return [path for path, found in zip(paths, filesystem.are_files(paths)) if not found]
