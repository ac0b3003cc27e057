"""Image-encoder forward on CPU: groupvit_jax against transformers' PyTorch GroupViTModel.

  python bench/bench_image_encoder.py                      # batch 8, 224x224, all cores
  python bench/bench_image_encoder.py --threads 1 --repeats 20 --json out.json

What is measured, per timed call, on the same batch of random uint8 RGB images [B, S, S, 3]:

  jax:   `GroupViTInference.encode_image(images)`, the public inference API: numpy uint8 in,
         the jitted image forward (ImageNet normalisation, patch embedding, every grouping
         stage, final LayerNorm, projection, L2 normalisation), numpy float32 [B, E] out.
  torch: the same work in PyTorch, under `torch.inference_mode()` with the model in eval mode:
         uint8 -> float NCHW with the same normalisation, `GroupViTModel.get_image_features`,
         L2 normalisation of its projected output, numpy out.

Both run fp32 with IDENTICAL weights: a GroupViT-S (transformers' default GroupViTConfig) with
the tests' perturbed random weights (`tests/hf_reference.make_model`), saved as a Hugging Face
directory and loaded with `groupvit_jax.load`, exactly as the tests load it.

Both use the same cores: `--threads N` pins the whole process to N cores with
`os.sched_setaffinity` before jax and torch are imported (XLA sizes its thread pool from the
affinity mask) and sets `torch.set_num_threads(N)`; the default is every core available.

Each side is warmed up first; JAX's first call (trace + compile + one run) is reported apart.
Then timing rounds alternate jax, torch, jax, torch, ... so that load from other processes on
the machine hits both alike; reported times are medians over `--repeats` rounds, and
speedup = torch_time / jax_time (> 1 means JAX is faster).
"""

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def parse_args():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--batch', type=int, default=8)
  parser.add_argument('--size', type=int, default=224, help='image height and width, pixels')
  parser.add_argument('--repeats', type=int, default=10, help='timed rounds per framework')
  parser.add_argument('--warmup', type=int, default=2, help='untimed calls per framework')
  parser.add_argument('--threads', type=int, default=None, help='cores to use (default: all)')
  parser.add_argument('--seed', type=int, default=0, help='weight and image seed')
  parser.add_argument('--json', default=None, help='also write the results to this file')
  return parser.parse_args()


def pin_to_cores(threads):
  """Restricts this process to `threads` of its available cores; returns the cores used."""
  available = sorted(os.sched_getaffinity(0))
  threads = threads or len(available)
  if not 1 <= threads <= len(available):
    sys.exit(f'--threads {threads}: only {len(available)} cores are available')
  cores = available[:threads]
  os.sched_setaffinity(0, cores)
  return cores


def timed(fn):
  start = time.perf_counter()
  out = fn()
  return time.perf_counter() - start, out


def main():
  args = parse_args()
  cores = pin_to_cores(args.threads)  # before jax and torch start their thread pools

  # pylint: disable=g-import-not-at-top
  import jax
  import numpy as np
  import torch

  sys.path.insert(0, os.path.join(REPO, 'tests'))
  sys.path.insert(0, REPO)
  import groupvit_jax

  import hf_reference as ref
  # pylint: enable=g-import-not-at-top

  torch.set_num_threads(len(cores))

  hf_model = ref.make_model(seed=args.seed)  # eval mode, GroupViT-S architecture
  with tempfile.TemporaryDirectory() as directory:
    hf_model.save_pretrained(directory)
    model = groupvit_jax.load(directory)
  images = ref.random_images(args.seed, args.batch, args.size, args.size)

  mean = torch.from_numpy(ref.IMAGENET_MEAN).view(1, 3, 1, 1)
  std = torch.from_numpy(ref.IMAGENET_STD).view(1, 3, 1, 1)
  embeddings = hf_model.vision_model.embeddings
  if args.size != hf_model.config.vision_config.image_size:
    # get_image_features does not pass interpolate_pos_encoding down (as in the tests).
    forward = embeddings.forward
    embeddings.forward = lambda pixels: forward(pixels, interpolate_pos_encoding=True)

  def run_jax():
    return model.encode_image(images)

  def run_torch():
    with torch.inference_mode():
      pixels = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
      features = hf_model.get_image_features(pixel_values=(pixels - mean) / std).pooler_output
      return torch.nn.functional.normalize(features, dim=-1).numpy()

  first_call, jax_out = timed(run_jax)
  for _ in range(args.warmup - 1):
    run_jax()
  for _ in range(args.warmup):
    torch_out = run_torch()
  max_diff = float(np.abs(jax_out - torch_out).max())

  jax_times, torch_times = [], []
  for _ in range(args.repeats):
    jax_times.append(timed(run_jax)[0])
    torch_times.append(timed(run_torch)[0])
  jax_time, torch_time = statistics.median(jax_times), statistics.median(torch_times)

  results = {
    'batch': args.batch,
    'size': args.size,
    'threads': len(cores),
    'cores': cores,
    'repeats': args.repeats,
    'jax_version': jax.__version__,
    'torch_version': torch.__version__,
    'xla_flags': os.environ.get('XLA_FLAGS', ''),
    'jax_first_call_s': first_call,
    'jax_compile_s': first_call - jax_time,
    'jax_s': jax_time,
    'torch_s': torch_time,
    'jax_times_s': jax_times,
    'torch_times_s': torch_times,
    'jax_images_per_s': args.batch / jax_time,
    'torch_images_per_s': args.batch / torch_time,
    'speedup': torch_time / jax_time,
    'max_abs_diff': max_diff,
  }

  print(f'image encoder, batch {args.batch}, {args.size}x{args.size}, fp32, {len(cores)} threads')
  print(f'  jax {jax.__version__} ({jax.default_backend()}), torch {torch.__version__}')
  if results['xla_flags']:
    print(f'  XLA_FLAGS={results["xla_flags"]}')
  print(f'  jax first call {first_call:.2f} s (compile ~{first_call - jax_time:.2f} s)')
  print(f'  embeddings max |jax - torch| = {max_diff:.2e}')

  def spread(ts):
    return f'[{min(ts):.3f} .. {max(ts):.3f}]'

  print(
    f'  jax   {jax_time:.4f} s  {args.batch / jax_time:6.2f} images/s  '
    f'(min..max {spread(jax_times)})'
  )
  print(
    f'  torch {torch_time:.4f} s  {args.batch / torch_time:6.2f} images/s  '
    f'(min..max {spread(torch_times)})'
  )
  print(
    f'SUMMARY batch={args.batch} size={args.size} threads={len(cores)} '
    f'jax={jax_time:.4f}s torch={torch_time:.4f}s speedup={torch_time / jax_time:.3f}x '
    f'max_abs_diff={max_diff:.1e}'
  )
  if args.json:
    with open(args.json, 'w') as f:
      json.dump(results, f, indent=2)


if __name__ == '__main__':
  main()
