"""Table 2, row 5: 64 group tokens, 16 output tokens. Paper: VOC mIoU 38.0.

configs/cc_1stage.py with 64 group tokens, which the grouping block's token MLP maps to 16.

  python -m groupvit_jax.main --config=configs/ablations/table2_groups64_outputs16.py --workdir=DIR
"""

import ml_collections

from configs import cc_1stage


def get_config(eval_data_dir: str = '') -> ml_collections.ConfigDict:
  config = cc_1stage.get_config(eval_data_dir)
  config.model.vision.num_group_tokens = (64, 0)
  config.model.vision.num_output_groups = (16,)
  return config
