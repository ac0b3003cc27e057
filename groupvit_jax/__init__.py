"""groupvit_jax: GroupViT (CVPR 2022) in JAX/Flax.

model = groupvit_jax.load('ckpt/gcc_yfcc')        # or an NVlabs .pth / a Hugging Face dir
image_embeddings = model.encode_image(images_uint8)  # [N, 256], L2-normalised
text_embeddings = model.encode_text(['a photo of a cat.'])
labels = model.segment(image_uint8, ['cat', 'grass', 'sky'])  # int32 [H, W], zero-shot
stage_groups = model.group_maps(image_uint8)  # per grouping stage, int32 [H, W]

`load` and `tokenize` are imported on first use, so that `import groupvit_jax` (and every
command's `--help`) does not load JAX.
"""

import importlib

__all__ = ['load', 'tokenize']
_HOMES = {'load': 'groupvit_jax.inference', 'tokenize': 'groupvit_jax.tokenizer'}


def __getattr__(name: str):
  if name in _HOMES:
    return getattr(importlib.import_module(_HOMES[name]), name)
  raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
