"""Table 1, row 3: soft assignment with the multi-label loss. Paper: VOC mIoU 25.1.

configs/cc_1stage.py with soft assignment: the grouping block merges tokens with the
Gumbel-softmax A itself rather than its straight-through one-hot (paper, Eq. 3-5; the Gumbel
noise stays in training, as Eq. 3 defines A with it; --config.model.vision.gumbel=False drops it).

  python -m groupvit_jax.main --config=configs/ablations/table1_soft_multilabel.py --workdir=DIR
"""

import ml_collections

from configs import cc_1stage


def get_config(eval_data_dir: str = '') -> ml_collections.ConfigDict:
  config = cc_1stage.get_config(eval_data_dir)
  config.model.vision.hard_assignment = False
  return config
