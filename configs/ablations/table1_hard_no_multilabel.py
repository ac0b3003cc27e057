"""Table 1, row 2: hard assignment without the multi-label loss. Paper: VOC mIoU 36.7.

configs/cc_1stage.py without prompted words: each image's one text is its caption and the
loss is the image-text loss alone.

  python -m groupvit_jax.main --config=configs/ablations/table1_hard_no_multilabel.py --workdir=DIR
"""

import ml_collections

from configs import cc_1stage


def get_config(eval_data_dir: str = '') -> ml_collections.ConfigDict:
  config = cc_1stage.get_config(eval_data_dir)
  config.data.num_prompts = 0  # no multi-label loss
  return config
