"""configs/synthetic_tiny.py shrunk so that a run of a few steps takes seconds (for tests)."""

from configs import synthetic_tiny


def get_config(options: str = ''):
  """options 'eval': keep the synthetic evaluation at the end, on 8 scenes of 32 pixels."""
  if options not in ('', 'eval'):
    raise ValueError(f'unknown option {options!r}; expected "eval" or none')
  config = synthetic_tiny.get_config()
  vision = config.model.vision
  vision.image_size, vision.width, vision.num_heads = 32, 32, 2
  vision.depths, vision.num_group_tokens, vision.num_output_groups = (1, 1, 1), (8, 4, 0), (8, 4)
  vision.drop_path_rate = 0.1  # randomness that must resume exactly, with the Gumbel noise
  config.model.text.width, config.model.text.num_heads = 32, 2
  config.model.embed_dim, config.model.projection_hidden_dim = 16, 32
  config.data.image_size = 32
  config.batch_size = 16
  config.total_steps = 8
  config.optimizer.warmup_steps = 2
  config.log_every_steps = 1
  config.checkpoint_every_steps = 3
  config.keep_checkpoints = 5
  if options == 'eval':
    config.evals.synthetic.update(image_size=32, num_examples=8, num_pictures=2)
  else:
    config.evals = {}
  return config
