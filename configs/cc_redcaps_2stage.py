"""GroupViT-S, 2 stages, as released in group_vit_gcc_redcap_30e (CC3M + CC12M + RedCaps12M).

The same architecture and recipe as cc_yfcc_2stage.py; only the data differ.
"""

import ml_collections

from configs import cc_yfcc_2stage

NUM_TRAIN_EXAMPLES = 2_891_445 + 11_156_203 + 11_866_987


def get_config(eval_data_dir: str = '') -> ml_collections.ConfigDict:
  config = cc_yfcc_2stage.get_config(eval_data_dir)
  config.num_train_examples = NUM_TRAIN_EXAMPLES
  config.data.shards = (
    '/data/cc3m/{00000..00331}.tar',
    '/data/cc12m/{00000..01242}.tar',
    '/data/redcaps12m/{00000..01186}.tar',
  )
  return config
