"""GroupViT-S, 2 stages, as released in group_vit_gcc_yfcc_30e (CC3M + CC12M + YFCC14M).

The model section is the released architecture: converted official weights load into it and
`python -m groupvit_jax.convert` infers exactly these values from them.
"""

import ml_collections
from ml_collections import config_dict


def get_model_config() -> ml_collections.ConfigDict:
  """The released 2-stage GroupViT-S.

  See docs/released_model.md, from "Image tower" to "Projection heads and temperatures".
  """
  return ml_collections.ConfigDict(
    dict(
      vision=dict(
        image_size=224,  # training resolution; any size works at inference
        patch_size=16,
        width=384,
        depths=(6, 3, 3),
        num_heads=6,
        mlp_ratio=4.0,
        num_group_tokens=(64, 8, 0),  # stage 3 has no group tokens
        num_output_groups=(64, 8),  # the two grouping blocks: 196 patches -> 64 -> 8
        hard_assignment=True,  # straight-through one-hot (Table 1: soft is >10 mIoU worse)
        gumbel=True,  # Gumbel noise on the assignment logits in training only
        gumbel_tau=1.0,
        assign_eps=1.0,  # A / (sum_tokens A + 1): the released value, not a small epsilon
        drop_path_rate=0.1,  # linear from 0 over the 12 blocks
      ),
      text=dict(
        vocab_size=49408,
        context_length=77,
        width=256,
        depth=12,
        num_heads=4,
        mlp_ratio=4.0,
      ),
      embed_dim=256,
      projection_hidden_dim=4096,
      # Compute dtype; parameters, normalisations and the assignment softmax stay float32.
      dtype='bfloat16',
      remat='none',  # rematerialisation policy (README, Scale)
      attention='auto',  # cuDNN's fused attention on NVIDIA GPUs in bf16, else XLA's
    )
  )


# Decoding processes per host (see the README's input-pipeline figures).
WORKERS = 32

# CC3M + CC12M + YFCC14M image-text pairs in the released recipe
# (docs/released_model.md, "Training recipe and data").
NUM_TRAIN_EXAMPLES = 2_891_445 + 11_156_203 + 14_615_499


def zero_shot_evals(eval_data_dir: str) -> dict:
  """The released run's evaluations, each epoch: ImageNet top-1 and VOC mIoU, plus Context and
  COCO-Object, with the datasets in their usual layouts under `eval_data_dir`."""
  return {
    'imagenet': dict(type='zero_shot_classification', data_dir=eval_data_dir),
    **{
      name: dict(type='zero_shot_segmentation', dataset=name, data_dir=eval_data_dir)
      for name in ('voc', 'context', 'coco_object')
    },
  }


def get_config(eval_data_dir: str = '') -> ml_collections.ConfigDict:
  """The recipe of group_vit_gcc_yfcc_30e: 30 epochs at global batch 4096.

  Durations are in epochs; the trainer turns them into steps for the batch size the run has
  (training/steps.py), and scales the learning rates with that batch, as released.

  `--config=configs/cc_yfcc_2stage.py:DIR` also evaluates zero-shot every epoch on the
  datasets under DIR (see zero_shot_evals); without DIR, nothing is evaluated.
  """
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.model = get_model_config()
  # The authors stress that the batch size is crucial: 2048 cost about 5 mIoU on VOC, and
  # gradient accumulation adds no contrastive negatives.
  config.batch_size = 4096
  # Epochs of num_train_examples, the training set's size (set it for other data). An
  # explicit total_steps, optimizer.warmup_steps or eval_every_steps wins over its epochs.
  config.epochs = 30.0
  config.num_train_examples = NUM_TRAIN_EXAMPLES
  config.total_steps = config_dict.placeholder(int)
  config.optimizer = ml_collections.ConfigDict(
    dict(
      # The rates at global batch 4096; the trainer scales all three linearly with the global
      # batch (times grad_accum_steps), as the released main_group_vit.py does.
      lr=1.6e-3,  # peak
      warmup_lr=4e-6,
      min_lr=4e-5,
      scale_lr_with_batch=True,
      warmup_epochs=2.0,  # the paper says 5; the released code 2
      warmup_steps=config_dict.placeholder(int),  # in optimizer updates
      weight_decay=0.05,  # not on biases, norms or temperatures
      b1=0.9,
      b2=0.999,
      eps=1e-8,
      grad_clip_norm=5.0,
      grad_accum_steps=1,
    )
  )
  # Pure data parallelism over every device; set fsdp > 1 to shard parameters too.
  config.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1))
  config.data = ml_collections.ConfigDict(
    dict(
      name='webdataset',
      # img2dataset output (10,000 pairs per shard by default): point these at your copies,
      # e.g. --config.data.shards='/mnt/cc3m/{00000..00331}.tar'.
      shards=(
        '/data/cc3m/{00000..00331}.tar',
        '/data/cc12m/{00000..01242}.tar',
        '/data/yfcc14m/{00000..01888}.tar',
      ),
      context_length=77,
      num_prompts=3,  # K prompted words per caption
      # The released transform: RandomResizedCrop 224 (scale 0.08..1) and flip, then the DeiT
      # set: RandAugment rand-m9-mstd0.5-inc1 and random erasing 0.25. timm drops colour
      # jitter when RandAugment is on, so the released runs had none.
      image_size=224,
      min_scale=0.08,
      randaugment=True,
      random_erasing=0.25,
      colour_jitter=0.0,
      # Flip, RandAugment and erasing are drawn on the host and applied in the train step,
      # a third of the host's work per image (input_pipeline/device_augment.py).
      augment_on_device=True,
      shuffle_buffer=10_000,  # samples, per process
      cycle_length=4,  # shards read at once, per worker
      workers=WORKERS,
    )
  )
  config.log_every_steps = 50
  config.checkpoint_every_steps = 1000
  config.keep_checkpoints = 3
  # (first, last): a profiler trace of those steps in WORKDIR/tensorboard; () for none.
  config.profile_steps = ()
  # Embed the global batch in this many pieces: the same losses and gradients with a
  # piece's activations in memory (training/grad_cache.py), for the released batch on few chips.
  config.contrastive_chunks = 1
  # Cut each batch's texts to its longest caption, rounded up to this multiple (0: never): the
  # same losses and gradients, one compile of the step per length (training/text_trim.py).
  config.text_length_multiple = 16
  config.evals = zero_shot_evals(eval_data_dir) if eval_data_dir else {}
  config.eval_every_epochs = 1.0
  config.eval_every_steps = config_dict.placeholder(int)  # 0: at the end only
  return config
