"""The paper's ViT baseline (Table 4; supplement Table 1): a plain ViT-S image tower trained
like CLIP, with the image-text contrastive loss alone.

configs/cc_yfcc_2stage.py's recipe (the same data, batch, optimiser and schedule) with the
grouping tower replaced by a ViT-S of the same width, depth and heads, pooled by its class
token as CLIP's ViT is, and no prompted nouns (so no multi-label loss). Its zero-shot
segmentation groups the patch embeddings non-parametrically (segmentation.Segmenter's
`grouping`; K-means into 8 groups, the paper's best baseline, in the periodic evaluations):

  python -m groupvit_jax.main --config=configs/vit_clip_baseline.py --workdir=DIR
  python -m groupvit_jax.evaluate ... --grouping=pixel|kmeans|meanshift|spectral
"""

import ml_collections

from configs import cc_yfcc_2stage


def get_vision_config() -> ml_collections.ConfigDict:
  """ViT-S/16 (models/vit.py's ViTTower keywords)."""
  return ml_collections.ConfigDict(
    dict(
      image_size=224,  # training resolution; any size works at inference
      patch_size=16,
      width=384,
      depth=12,  # GroupViT-S's 6 + 3 + 3 blocks, without grouping
      num_heads=6,
      mlp_ratio=4.0,
      drop_path_rate=0.1,  # linear from 0 over the 12 blocks, as GroupViT's
      pooling='cls',  # the class token is the image feature, as in CLIP ('mean': patch mean)
    )
  )


def get_config(eval_data_dir: str = '') -> ml_collections.ConfigDict:
  """`--config=configs/vit_clip_baseline.py:DIR` also evaluates zero-shot every epoch on the
  datasets under DIR (cc_yfcc_2stage.zero_shot_evals), segmenting with K-means groups."""
  config = cc_yfcc_2stage.get_config(eval_data_dir)
  config.model.image_tower = 'vit'
  config.model.vision = get_vision_config()
  config.data.num_prompts = 0  # the image-text loss alone: no prompted nouns
  for evaluation in config.evals.values():
    if evaluation.type == 'zero_shot_segmentation':
      evaluation.update(grouping='kmeans', num_groups=8)
  return config
