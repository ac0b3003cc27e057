"""Table 2, row 4: 64 group tokens, 8 output tokens. Paper: VOC mIoU 39.3.

configs/cc_1stage.py unchanged (also Table 1's hard assignment with the multi-label loss and
Table 3's CC 1-stage row).

  python -m groupvit_jax.main --config=configs/ablations/table2_groups64_outputs8.py --workdir=DIR
"""

import ml_collections

from configs import cc_1stage


def get_config(eval_data_dir: str = '') -> ml_collections.ConfigDict:
  return cc_1stage.get_config(eval_data_dir)
