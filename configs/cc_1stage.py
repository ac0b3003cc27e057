"""GroupViT-S with one grouping stage (196 patches -> 64 group tokens -> 8 segments), on
CC3M + CC12M: the paper's 1-stage ablation (Table 4), with the 2-stage recipe otherwise."""

import ml_collections

from configs import cc_yfcc_2stage

NUM_TRAIN_EXAMPLES = 2_891_445 + 11_156_203


def get_config(eval_data_dir: str = '') -> ml_collections.ConfigDict:
  config = cc_yfcc_2stage.get_config(eval_data_dir)
  vision = config.model.vision
  vision.depths = (6, 6)  # 12 blocks as in the 2-stage model
  vision.num_group_tokens = (64, 0)
  vision.num_output_groups = (8,)  # the grouping block's token MLP maps 64 tokens to 8
  config.num_train_examples = NUM_TRAIN_EXAMPLES
  config.data.shards = ('/data/cc3m/{00000..00331}.tar', '/data/cc12m/{00000..01242}.tar')
  return config
