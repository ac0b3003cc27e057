"""groupvit_jax: GroupViT (CVPR 2022) in JAX/Flax.

model = groupvit_jax.load('ckpt/gcc_yfcc')        # or an NVlabs .pth / a Hugging Face dir
image_embeddings = model.encode_image(images_uint8)  # [N, 256], L2-normalised
text_embeddings = model.encode_text(['a photo of a cat.'])
labels = model.segment(image_uint8, ['cat', 'grass', 'sky'])  # int32 [H, W], zero-shot
stage_groups = model.group_maps(image_uint8)  # per grouping stage, int32 [H, W]
"""

from groupvit_jax.inference import load
from groupvit_jax.tokenizer import tokenize

__all__ = ['load', 'tokenize']
