"""Table 1, row 4: hard assignment with the multi-label loss. Paper: VOC mIoU 39.3.

The 1-stage CC model of configs/cc_1stage.py unchanged (also Table 2's 64 group tokens with 8
output tokens and Table 3's CC 1-stage row).

  python -m groupvit_jax.main --config=configs/ablations/table1_hard_multilabel.py --workdir=DIR
"""

import ml_collections

from configs import cc_1stage


def get_config(eval_data_dir: str = '') -> ml_collections.ConfigDict:
  return cc_1stage.get_config(eval_data_dir)
