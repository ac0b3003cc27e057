"""Table 2, row not in the paper: 8 group tokens, 8 output tokens. Paper: VOC mIoU -, no figure.

The issue's sweep (group tokens 8/16/32/64 with 8 outputs; outputs 4/8/16 with 64 groups) has
two rows the paper's Table 2 does not print; this is one. configs/cc_1stage.py with 8 group
tokens, which the grouping block's token MLP maps to 8.

  python -m groupvit_jax.main --config=configs/ablations/table2_groups8_outputs8.py --workdir=DIR
"""

import ml_collections

from configs import cc_1stage


def get_config(eval_data_dir: str = '') -> ml_collections.ConfigDict:
  config = cc_1stage.get_config(eval_data_dir)
  config.model.vision.num_group_tokens = (8, 0)
  config.model.vision.num_output_groups = (8,)
  return config
