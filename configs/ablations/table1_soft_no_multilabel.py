"""Table 1, row 1: soft assignment without the multi-label loss. Paper: VOC mIoU 12.0.

configs/cc_1stage.py with soft assignment (as in table1_soft_multilabel.py) and no prompted
words: the image-text loss alone.

  python -m groupvit_jax.main --config=configs/ablations/table1_soft_no_multilabel.py --workdir=DIR
"""

import ml_collections

from configs import cc_1stage


def get_config(eval_data_dir: str = '') -> ml_collections.ConfigDict:
  config = cc_1stage.get_config(eval_data_dir)
  config.model.vision.hard_assignment = False
  config.data.num_prompts = 0  # no multi-label loss
  return config
