"""Table 3, row 1: 1 stage on CC. Paper: VOC mIoU 39.3, boundary mIoU 31.6.

configs/cc_1stage.py unchanged (also Table 1's hard assignment with the multi-label loss and
Table 2's 64 group tokens with 8 output tokens).

  python -m groupvit_jax.main --config=configs/ablations/table3_cc_1stage.py --workdir=DIR
"""

import ml_collections

from configs import cc_1stage


def get_config(eval_data_dir: str = '') -> ml_collections.ConfigDict:
  return cc_1stage.get_config(eval_data_dir)
