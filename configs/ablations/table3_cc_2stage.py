"""Table 3, row 2: 2 stages on CC. Paper: VOC mIoU 41.1, boundary mIoU 33.5.

The released 2-stage model (configs/cc_yfcc_2stage.py) on configs/cc_1stage.py's data, CC3M +
CC12M.

  python -m groupvit_jax.main --config=configs/ablations/table3_cc_2stage.py --workdir=DIR
"""

import ml_collections

from configs import cc_1stage, cc_yfcc_2stage


def get_config(eval_data_dir: str = '') -> ml_collections.ConfigDict:
  config = cc_1stage.get_config(eval_data_dir)
  config.model = cc_yfcc_2stage.get_model_config()
  return config
