"""Train-step rate of a config on this machine, as MFU against a matmul peak measured here.

  python bench/train_step.py --config configs/synthetic_tiny.py
  python bench/train_step.py --config configs/cc_yfcc_2stage.py --batch 32 --dtype float32

Times the jitted train step (the trainer's own, on all local devices) on synthetic batches
after compiling it, and reports samples/s. The reference, measured in the same run, is the
FLOP/s of one large float32 (or bfloat16) matmul on the same devices: the step's analytic
training FLOPs (bench/flops.py) per second over that peak is the fraction of the machine's
matmul speed the step achieves.
"""

import argparse
import functools
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# bench/ is on sys.path when run as a script.
import flops  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from mfu import load_config  # noqa: E402

from groupvit_jax.training import optimizer, sharding, steps, train  # noqa: E402
from groupvit_jax.weights import checkpoint  # noqa: E402


def matmul_flops_per_second(dtype, size=2048, repeats=10) -> float:
  """The reference: FLOP/s of a [size, size] @ [size, size] matmul (best of `repeats`)."""
  a = jnp.ones((size, size), dtype)
  f = jax.jit(lambda x: x @ x)
  f(a).block_until_ready()
  best = float('inf')
  for _ in range(repeats):
    start = time.perf_counter()
    f(a).block_until_ready()
    best = min(best, time.perf_counter() - start)
  return 2 * size**3 / best


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--config', required=True, help='a configs/*.py file with get_config()')
  parser.add_argument('--batch', type=int, default=None, help='global batch (default: config)')
  parser.add_argument('--dtype', default=None, help="compute dtype (default: the config's)")
  parser.add_argument('--steps', type=int, default=5, help='timed steps after compiling')
  args = parser.parse_args()
  if not os.path.isfile(args.config):
    parser.error(f'--config {args.config}: no such file (expected a configs/*.py file)')

  config = load_config(args.config)
  batch_size = args.batch or config.batch_size
  model_config = config.model.to_dict()
  if args.dtype:
    model_config['dtype'] = args.dtype
  image_size = model_config['vision']['image_size']
  context = model_config['text']['context_length']
  texts = 1 + config.data.get('num_prompts', 3)

  mesh = sharding.make_mesh({'data': -1, 'fsdp': 1})
  sharding.check_batch_size(batch_size, mesh)
  model = checkpoint.build_model(model_config)
  # The run's durations and rates for this batch, as the trainer derives them.
  config.batch_size = batch_size
  run = steps.run_steps(config)
  schedule_args = dict(batch_size=batch_size, warmup_steps=run.warmup, total_steps=run.updates)
  schedule = optimizer.schedule_from_config(config.optimizer, **schedule_args)
  opt = optimizer.make_optimizer(config.optimizer, schedule)
  init = functools.partial(train.create_train_state, model, opt, 0)
  shardings = train.state_shardings(mesh, jax.eval_shape(init))
  state = jax.jit(init, out_shardings=shardings)()
  step = train.make_train_step(model, opt, schedule, mesh, shardings, run.grad_accum_steps)
  rng = np.random.default_rng(0)
  batch = jax.device_put(
    {
      'image': rng.integers(0, 256, (batch_size, image_size, image_size, 3), np.uint8),
      'text': rng.integers(1, 49406, (batch_size, texts, context)).astype(np.int32),
    },
    sharding.batch_sharding(mesh),
  )
  start = time.perf_counter()
  state, metrics = step(state, batch)
  jax.block_until_ready(metrics)
  compile_s = time.perf_counter() - start
  times = []
  for _ in range(args.steps):
    start = time.perf_counter()
    state, metrics = step(state, batch)
    jax.block_until_ready(metrics)
    times.append(time.perf_counter() - start)
  step_s = float(np.median(times))

  per_sample = flops.train_flops_per_sample(model_config, image_size, texts, batch_size)
  peak = matmul_flops_per_second(jnp.dtype(model_config.get('dtype', 'float32')))
  achieved = batch_size * per_sample / step_s
  print(f'devices: {mesh.size} x {jax.devices()[0].device_kind}; config {args.config}')
  print(
    f'batch {batch_size}, {image_size}px, {texts} texts of {context} tokens, '
    f'{model_config.get("dtype", "float32")}'
  )
  print(f'first step (compile + run): {compile_s:.1f} s')
  print(
    f'train step: {step_s:.3f} s (median of {args.steps}) = {batch_size / step_s:.1f} samples/s'
  )
  print(
    f'analytic training FLOPs: {per_sample / 1e9:.3f} GFLOP/sample -> {achieved / 1e9:.1f} GFLOP/s'
  )
  print(f'reference matmul on the same devices: {peak / 1e9:.1f} GFLOP/s')
  print(f'ratio (step FLOP/s / matmul FLOP/s): {achieved / peak:.3f}')


if __name__ == '__main__':
  main()
