"""Memory of one training step on one chip, from XLA's memory analysis of the compiled step.

  python bench/step_memory.py --config configs/cc_yfcc_2stage.py --batch 4096 --chunks 1 8 32

Compiles (does not run) the trainer's jitted step for a per-chip batch with each
`contrastive_chunks` value on the default backend's first device, and prints the state
(parameters, optimizer state), the batch and XLA's temporaries: their sum is what the chip
must hold. On CPU this is XLA CPU's buffer assignment, an estimate of an accelerator's.
"""

import argparse
import functools
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from bench.mfu import load_config  # noqa: E402
from groupvit_jax.training import optimizer as optimizers  # noqa: E402
from groupvit_jax.training import sharding, train  # noqa: E402
from groupvit_jax.weights import checkpoint  # noqa: E402


def parse_args():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--config', required=True, help='a configs/*.py file with get_config()')
  parser.add_argument('--batch', type=int, default=4096, help='batch on the one chip')
  parser.add_argument('--chunks', type=int, nargs='+', default=[1, 8, 32])
  parser.add_argument('--dtype', default=None, help="override config.model.dtype, e.g. 'bfloat16'")
  args = parser.parse_args()
  if not os.path.isfile(args.config):
    parser.error(f'--config {args.config}: no such file')
  bad = [c for c in args.chunks if c < 1 or args.batch % c]
  if bad:
    parser.error(f'--chunks {bad}: each must be a positive divisor of --batch {args.batch}')
  return args


def step_memory(config, batch: int, chunks: int) -> dict:
  """Bytes of the compiled step's arguments, outputs and temporaries on one device."""
  model = checkpoint.build_model(config.model.to_dict())
  schedule = optimizers.schedule_from_config(
    config.optimizer, batch_size=batch, warmup_steps=1, total_steps=10
  )
  optimizer = optimizers.make_optimizer(config.optimizer, schedule)
  mesh = sharding.make_mesh({'data': 1, 'fsdp': 1}, jax.devices()[:1])
  state = jax.eval_shape(functools.partial(train.create_train_state, model, optimizer, 0))
  shardings = train.state_shardings(mesh, state)
  step = train.make_train_step(model, optimizer, schedule, mesh, shardings, 1, chunks)
  size, texts, length = (
    config.data.image_size,
    1 + config.data.num_prompts,
    config.data.context_length,
  )
  inputs = {
    'image': jax.ShapeDtypeStruct((batch, size, size, 3), np.uint8),
    'text': jax.ShapeDtypeStruct((batch, texts, length), np.int32),
  }
  analysis = step.lower(state, inputs).compile().memory_analysis()
  return {
    'arguments': analysis.argument_size_in_bytes,
    'outputs': analysis.output_size_in_bytes,
    'aliased': analysis.alias_size_in_bytes,
    'temporaries': analysis.temp_size_in_bytes,
  }


def main():
  args = parse_args()
  config = load_config(args.config)
  if args.dtype:
    config.model.dtype = args.dtype
  print(
    f'{args.config}, batch {args.batch} on one {jax.devices()[0].device_kind}, '
    f'model dtype {config.model.dtype}: GiB'
  )
  print(f'{"chunks":>6} {"state+batch":>12} {"temporaries":>12} {"total":>8} {"compile":>8}')
  for chunks in args.chunks:
    start = time.time()
    m = step_memory(config, args.batch, chunks)
    # The state is donated: outputs reuse the arguments' buffers (aliased).
    total = m['arguments'] + m['outputs'] - m['aliased'] + m['temporaries']
    print(
      f'{chunks:>6} {m["arguments"] / 2**30:12.2f} {m["temporaries"] / 2**30:12.2f} '
      f'{total / 2**30:8.2f} {time.time() - start:7.0f}s',
      flush=True,
    )


if __name__ == '__main__':
  main()
