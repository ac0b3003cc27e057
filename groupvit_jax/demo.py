"""Segments one image into your own labels and draws it beside the model's groups.

  python -m groupvit_jax.demo --checkpoint DIR --image PATH --labels "cat,dog,grass" \
      --output OUT.png [--background_threshold 0.9]

`--checkpoint` is a groupvit_jax checkpoint, a released NVlabs `.pth` or a Hugging Face
directory. The picture shows the image with a coloured overlay and the label names, then the
groups of each grouping stage.
"""

import argparse
import sys
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

import groupvit_jax
from groupvit_jax import visualize
from groupvit_jax.evaluators import datasets


def parse_labels(text: str) -> list[str]:
  """'cat, dog,grass' -> ['cat', 'dog', 'grass']; empty names and repeats are errors."""
  names = [name.strip() for name in text.split(',')]
  if not all(names):
    raise ValueError(f'--labels {text!r} has an empty name; separate names with commas')
  if len(set(names)) != len(names):
    raise ValueError(f'--labels {text!r} names a class twice')
  return names


# The image at a path as uint8 RGB [H, W, 3]; a ValueError naming the file if unreadable.
load_image = datasets.read_image


def _label_positions(labels: np.ndarray) -> dict[int, tuple[int, int]]:
  """For each label, a pixel inside its region near the region's centre: (x, y)."""
  positions = {}
  for label in np.unique(labels):
    ys, xs = np.nonzero(labels == label)
    nearest = np.argmin((ys - ys.mean()) ** 2 + (xs - xs.mean()) ** 2)
    positions[int(label)] = (int(xs[nearest]), int(ys[nearest]))
  return positions


def render(
  image: np.ndarray, labels: np.ndarray, names: list[str], group_maps: list[np.ndarray]
) -> np.ndarray:
  """uint8 [H, W', 3]: the image under its label map with names on the regions, then each
  stage's groups; a legend of the labels present below. `names[i]` names label i."""
  colours = visualize.label_colours(len(names) + 1)[1:]  # skip black: 0 can be a real class
  overlay = Image.fromarray(visualize.blend(image, visualize.colourize(labels, colours)))
  draw, font = ImageDraw.Draw(overlay), ImageFont.load_default()
  for label, (x, y) in _label_positions(labels).items():
    draw.text((x, y), names[label], fill=(255, 255, 255), font=font, anchor='mm', stroke_width=2,
              stroke_fill=(0, 0, 0))  # fmt: skip
  groups = visualize.group_overlays(image, group_maps)
  titles = ['segmentation'] + [f'stage {i + 1} groups' for i in range(len(groups))]
  present = [int(label) for label in np.unique(labels)]
  legend = [(names[label], colours[label]) for label in present]
  return visualize.panel([[np.asarray(overlay), *groups]], titles, legend=legend)


def segment_and_render(
  model, image: np.ndarray, labels: list[str], background_threshold: float | None = None
) -> tuple[np.ndarray, np.ndarray]:
  """`model`'s label map of uint8 RGB `image` [H, W, 3] (0 = background when a threshold is
  given) and its picture (`render`, with each stage's groups)."""
  label_map = model.segment(image, labels, background_threshold)
  names = (['background'] if background_threshold is not None else []) + list(labels)
  return label_map, render(image, label_map, names, model.group_maps(image))


def run(
  checkpoint: str,
  image_path: str,
  labels: list[str],
  output: str,
  background_threshold: float | None = None,
) -> np.ndarray:
  """Loads the model and the image, segments, writes the picture to `output`; returns the
  label map (0 = background when a threshold is given)."""
  image = load_image(image_path)
  model = groupvit_jax.load(checkpoint)
  label_map, picture = segment_and_render(model, image, labels, background_threshold)
  visualize.save_png(output, picture)
  return label_map


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(
    prog='python -m groupvit_jax.demo', description=__doc__.split('\n')[0]
  )
  parser.add_argument(
    '--checkpoint', required=True, help='checkpoint dir, NVlabs .pth or Hugging Face dir'
  )
  parser.add_argument('--image', required=True, help='the image (JPEG, PNG, WebP, ...)')
  parser.add_argument('--labels', required=True, help='comma-separated, e.g. "cat,dog,grass"')
  parser.add_argument('--output', required=True, help='where to write the PNG')
  parser.add_argument(
    '--background_threshold',
    type=float,
    help='label pixels whose best class score is below this as background (VOC uses 0.95); '
    'by default every pixel gets one of the labels',
  )
  args = parser.parse_args(argv)
  try:
    labels = parse_labels(args.labels)
    run(args.checkpoint, args.image, labels, args.output, args.background_threshold)
  except (FileNotFoundError, ValueError) as error:
    print(f'error: {error}', file=sys.stderr)
    return 1
  print(f'wrote {args.output}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
