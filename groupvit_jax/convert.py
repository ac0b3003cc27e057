"""Convert released GroupViT weights into a groupvit_jax checkpoint.

  python -m groupvit_jax.convert --input group_vit_gcc_yfcc_30e-879422e0.pth --output ckpt/gcc_yfcc
  python -m groupvit_jax.convert --input path/to/hf/groupvit-gcc-yfcc --output ckpt/gcc_yfcc_hf

--input is an NVlabs checkpoint (a `torch.save` dict with a `model` state dict) or a Hugging
Face GroupViTModel directory (`config.json` + `model.safetensors` or `pytorch_model.bin`).
The architecture is inferred from the weights. Nothing is written unless every key converts.
Either path may be a URL (gs://...).
"""

import argparse
import sys

from groupvit_jax import filesystem
from groupvit_jax.weights.state_dicts import ConversionError


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(
    prog='python -m groupvit_jax.convert',
    description='Convert an NVlabs .pth or a Hugging Face GroupViT directory into a '
    'groupvit_jax checkpoint directory.',
  )
  parser.add_argument('--input', required=True, help='NVlabs .pth file or Hugging Face dir')
  parser.add_argument('--output', required=True, help='checkpoint directory to create')
  parser.add_argument('--overwrite', action='store_true', help='replace an existing --output')
  parser.add_argument(
    '--num_heads',
    type=int,
    default=None,
    help='image-tower heads (not stored in the weights; default: 6 for '
    'width 384, else width/64, or the Hugging Face config)',
  )
  parser.add_argument(
    '--text_num_heads',
    type=int,
    default=None,
    help='text-tower heads (default: width/64 or the Hugging Face config)',
  )
  args = parser.parse_args(argv)
  # After argument parsing, so that --help and usage errors answer at once.
  from groupvit_jax.weights import checkpoint, released  # pylint: disable=g-import-not-at-top

  try:
    model_config, variables, source = released.convert(
      args.input, args.num_heads, args.text_num_heads
    )
    checkpoint.save(
      args.output,
      model_config,
      variables,
      metadata={'source': {'format': source, 'path': filesystem.abspath(args.input)}},
      overwrite=args.overwrite,
    )
  except (ConversionError, FileNotFoundError, FileExistsError) as e:
    print(f'convert: error: {e}', file=sys.stderr)
    return 1
  vision = model_config['vision']
  print(
    f'converted {source} weights from {args.input} -> {args.output}\n'
    f'  image tower: width {vision["width"]}, depths {vision["depths"]}, group tokens '
    f'{vision["num_group_tokens"]}, output groups {vision["num_output_groups"]}'
  )
  return 0


if __name__ == '__main__':
  sys.exit(main())
