"""OpenAI CLIP's own tokenizer, the independent reference for groupvit_jax.tokenizer.

It is ``clip/simple_tokenizer.py`` of the ``clip-anytorch`` package (requirements-reference.txt,
installed with --no-deps), loaded straight from its file: importing the ``clip`` package would
pull in torchvision.
"""

import importlib.metadata
import importlib.util
from pathlib import Path
from types import ModuleType

import numpy as np

SOT, EOT = 49406, 49407
_PIP = 'pip install --no-deps -r requirements-reference.txt'


def package_file(name: str) -> Path:
  """Path of a file of the installed clip-anytorch package."""
  try:
    dist = importlib.metadata.distribution('clip-anytorch')
  except importlib.metadata.PackageNotFoundError as err:
    raise RuntimeError(f'the reference tokenizer is missing; run `{_PIP}`') from err
  return Path(str(dist.locate_file(f'clip/{name}')))


def load_module() -> ModuleType:
  """The simple_tokenizer module (SimpleTokenizer uses the BPE file bundled beside it)."""
  spec = importlib.util.spec_from_file_location(
    '_openai_clip_simple_tokenizer', package_file('simple_tokenizer.py')
  )
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def reference_rows(reference, texts: list[str], context_length: int = 77) -> np.ndarray:
  """Reference ids laid out as GroupViT's released code does: SOT + ids + EOT, truncated with
  EOT in the last slot, zero padded."""
  out = np.zeros((len(texts), context_length), dtype=np.int32)
  for row, text in enumerate(texts):
    ids = [SOT, *reference.encode(text), EOT]
    if len(ids) > context_length:
      ids = ids[:context_length]
      ids[-1] = EOT
    out[row, : len(ids)] = ids
  return out
