"""Table 2, row 2: 16 group tokens, 8 output tokens. Paper: VOC mIoU 37.1.

configs/cc_1stage.py with 16 group tokens, which the grouping block's token MLP maps to 8.

  python -m groupvit_jax.main --config=configs/ablations/table2_groups16_outputs8.py --workdir=DIR
"""

import ml_collections

from configs import cc_1stage


def get_config(eval_data_dir: str = '') -> ml_collections.ConfigDict:
  config = cc_1stage.get_config(eval_data_dir)
  config.model.vision.num_group_tokens = (16, 0)
  config.model.vision.num_output_groups = (8,)
  return config
