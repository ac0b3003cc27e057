"""GroupViT training FLOPs per sample and model FLOPs utilisation (MFU), analytically.

  python bench/mfu.py --config configs/cc_yfcc_2stage.py
  python bench/mfu.py --config configs/cc_yfcc_2stage.py --batch 4096 --step_time 1.9 \\
      --chip h100 --chips 16

Prints the per-sample GFLOPs of bench/flops.py (matmuls only, a multiply-add being 2
FLOPs): the image tower and projection on one image, the text towers on the image's texts, its
share of the contrastive logits, and their training total (3 x forward). Then the samples/s per
chip that 50% MFU (or --mfu) would mean on each chip of flops.PEAK_BF16_FLOPS, the chip-hours
of the config's whole run (its epochs of num_train_examples) at that MFU and, given a measured
step time, the MFU it achieved. Nothing is run: the numbers follow from the config alone.
"""

import argparse
import importlib.util
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import flops  # noqa: E402  (bench/ is on sys.path when run as a script)


def parse_args():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--config', required=True, help='a configs/*.py file with get_config()')
  parser.add_argument('--batch', type=int, default=4096, help='global batch, images')
  parser.add_argument('--image_size', type=int, default=224, help='training image side, pixels')
  parser.add_argument(
    '--texts', type=int, default=4, help='texts per image: the caption and K prompted nouns'
  )
  parser.add_argument(
    '--mfu', type=float, default=0.5, help='utilisation for the samples/s and chip-hours'
  )
  parser.add_argument('--step_time', type=float, default=None, help='measured seconds per step')
  parser.add_argument('--chip', choices=sorted(flops.PEAK_BF16_FLOPS), default='h100')
  parser.add_argument('--chips', type=int, default=1, help='chips the step ran on')
  args = parser.parse_args()
  if not 0 < args.mfu <= 1:
    parser.error(f'--mfu {args.mfu}: expected a fraction in (0, 1]')
  if not os.path.isfile(args.config):
    parser.error(f'--config {args.config}: no such file (expected a configs/*.py file)')
  return args


def load_config(path):
  """The ConfigDict of a configs/*.py file's get_config()."""
  spec = importlib.util.spec_from_file_location('experiment_config', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def main():
  args = parse_args()
  run_config = load_config(args.config)
  config = run_config.model.to_dict()
  image = flops.image_forward_flops(config, args.image_size)
  text = flops.text_forward_flops(config)
  logits = flops.contrastive_logits_flops(config, args.texts, args.batch)
  train = flops.train_flops_per_sample(config, args.image_size, args.texts, args.batch)
  context = config['text']['context_length']

  print(f'{args.config}: GFLOPs per sample (matmuls, multiply-add = 2), global batch {args.batch}')
  rows = [
    (f'image forward ({args.image_size}x{args.image_size})', image),
    (f'text forward, one text ({context} tokens)', text),
    (f'text forward, {args.texts} texts', args.texts * text),
    ('contrastive logits forward', logits),
    ('forward total', image + args.texts * text + logits),
    ('train (3 x forward)', train),
  ]
  for name, value in rows:
    print(f'  {name:<40} {value / 1e9:10.3f}')

  samples = run_config.get('epochs', 0) * run_config.get('num_train_examples', 0)
  print(
    f'per chip at {100 * args.mfu:.0f}% MFU (dense bf16 peak): samples/s, and chip-hours for '
    f'{run_config.get("epochs", 0):g} epochs of {run_config.get("num_train_examples", 0):,} '
    'samples'
  )
  for chip, peak in flops.PEAK_BF16_FLOPS.items():
    rate = args.mfu * peak / train
    hours = f'{samples / rate / 3600:10,.0f} chip-hours' if samples else ''
    print(f'  {chip:<10} {peak / 1e12:6.0f} TFLOP/s  {rate:8.0f} samples/s {hours}')

  if args.step_time is not None:
    peak = flops.PEAK_BF16_FLOPS[args.chip]
    utilisation = flops.mfu(args.step_time, args.batch, train, peak, args.chips)
    per_chip = args.batch / args.step_time / args.chips
    print(
      f'step {args.step_time} s for {args.batch} samples on {args.chips} x {args.chip}: '
      f'{per_chip:.0f} samples/s per chip, MFU {100 * utilisation:.1f}%'
    )


if __name__ == '__main__':
  main()
