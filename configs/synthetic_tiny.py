"""The embedded default: a tiny GroupViT trained on synthetic captioned shapes on a laptop CPU.

No download: scenes of coloured, textured shapes come from input_pipeline/synthetic.py with
captions that name them. After training, zero-shot segmentation of the held-out split (pixel-
exact masks, "a photo of a {shape}." class embeddings, background threshold) gives the mIoU
logged to WORKDIR/metrics.jsonl, and WORKDIR/pictures/ shows the segmentations and groups.

  python -m groupvit_jax.main --config=configs/synthetic_tiny.py --workdir=/tmp/groupvit_tiny
"""

import ml_collections

IMAGE_SIZE = 64
CONTEXT_LENGTH = 32  # captions naming only shapes are at most 13 tokens (with start and end)
# The synthetic world, for training and held-out scenes alike (README, Embedded default): each
# shape in its own colour, plain (textures split a shape in two colours that the grouping must
# learn to join), at least 8% of the image.
WORLD = dict(shape_colours=True, textures=False, min_area=0.08)


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.model = ml_collections.ConfigDict(
    dict(
      vision=dict(
        image_size=IMAGE_SIZE,
        patch_size=8,  # an 8x8 grid of patches
        width=64,
        depths=(3, 2),
        num_heads=4,
        mlp_ratio=4.0,
        # One grouping stage, 64 patches -> 8 segments: enough for up to 3 shapes and the
        # background, and (measured) faster to learn in 500 steps than 64 -> 16 -> 4.
        num_group_tokens=(8, 0),
        num_output_groups=(8,),
        hard_assignment=True,
        gumbel=True,
        gumbel_tau=1.0,
        assign_eps=1.0,
        # Assignment logits x30: at the released scale (1) they stay far below the Gumbel
        # noise for the whole of a short run, so training groups at random and inference
        # merges everything into one segment.
        assign_scale=30.0,
        drop_path_rate=0.0,
      ),
      text=dict(
        vocab_size=49408,
        context_length=CONTEXT_LENGTH,
        width=64,
        depth=1,
        num_heads=4,
        mlp_ratio=4.0,
      ),
      embed_dim=128,
      projection_hidden_dim=512,
      dtype='float32',  # bfloat16 is slower than float32 on most CPUs
      remat='none',  # rematerialisation policy (README, Scale)
      attention='auto',  # cuDNN's fused attention on NVIDIA GPUs in bf16, else XLA's
    )
  )
  config.batch_size = 128
  config.total_steps = 800
  config.optimizer = ml_collections.ConfigDict(
    dict(
      lr=3e-3,
      warmup_lr=1e-5,
      min_lr=1e-5,
      scale_lr_with_batch=False,  # the rates as given, whatever the batch
      warmup_steps=25,
      weight_decay=0.05,
      b1=0.9,
      b2=0.999,
      eps=1e-8,
      grad_clip_norm=5.0,
      grad_accum_steps=1,
    )
  )
  config.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1))
  config.data = ml_collections.ConfigDict(
    dict(
      name='synthetic',
      image_size=IMAGE_SIZE,
      context_length=CONTEXT_LENGTH,
      num_prompts=3,
      # Captions name the shapes only ("a circle and a square"): with colours, textures and
      # backgrounds named too, captions are matched by colour words.
      caption_attributes=False,
      **WORLD,
    )
  )
  config.log_every_steps = 25
  config.checkpoint_every_steps = 250
  config.keep_checkpoints = 2
  # (first, last): a profiler trace of those steps in WORKDIR/tensorboard; () for none.
  config.profile_steps = ()
  # Embed the global batch in this many pieces: the same losses and gradients with a
  # piece's activations in memory (training/grad_cache.py), for the released batch on few chips.
  config.contrastive_chunks = 1
  # Cut each batch's texts to its longest caption, rounded up to this multiple (0: never): the
  # same losses and gradients, one compile of the step per length (training/text_trim.py).
  config.text_length_multiple = 16
  config.eval_every_steps = 0  # evaluate at the end only
  config.evals = ml_collections.ConfigDict(
    dict(
      synthetic=dict(
        type='synthetic_segmentation',
        image_size=IMAGE_SIZE,
        num_examples=500,
        background_threshold=0.7,
        **WORLD,
      )
    )
  )
  return config
