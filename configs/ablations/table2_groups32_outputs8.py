"""Table 2, row 3: 32 group tokens, 8 output tokens. Paper: VOC mIoU 38.3.

configs/cc_1stage.py with 32 group tokens, which the grouping block's token MLP maps to 8.

  python -m groupvit_jax.main --config=configs/ablations/table2_groups32_outputs8.py --workdir=DIR
"""

import ml_collections

from configs import cc_1stage


def get_config(eval_data_dir: str = '') -> ml_collections.ConfigDict:
  config = cc_1stage.get_config(eval_data_dir)
  config.model.vision.num_group_tokens = (32, 0)
  config.model.vision.num_output_groups = (8,)
  return config
