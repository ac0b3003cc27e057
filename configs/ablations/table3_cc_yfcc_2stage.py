"""Table 3, row 4: 2 stages on CC + YFCC. Paper: VOC mIoU 52.3, boundary mIoU 40.3.

The released model and recipe, configs/cc_yfcc_2stage.py, unchanged.

  python -m groupvit_jax.main --config=configs/ablations/table3_cc_yfcc_2stage.py --workdir=DIR
"""

import ml_collections

from configs import cc_yfcc_2stage


def get_config(eval_data_dir: str = '') -> ml_collections.ConfigDict:
  return cc_yfcc_2stage.get_config(eval_data_dir)
