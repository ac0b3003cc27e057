"""Table 3, row 3: 1 stage on CC + YFCC. Paper: VOC mIoU 37.2, boundary mIoU 32.3.

The 1-stage model of configs/cc_1stage.py on configs/cc_yfcc_2stage.py's data, CC3M + CC12M +
YFCC14M.

  python -m groupvit_jax.main --config=configs/ablations/table3_cc_yfcc_1stage.py --workdir=DIR
"""

import ml_collections

from configs import cc_1stage, cc_yfcc_2stage


def get_config(eval_data_dir: str = '') -> ml_collections.ConfigDict:
  config = cc_yfcc_2stage.get_config(eval_data_dir)
  config.model = cc_1stage.get_config().model
  return config
