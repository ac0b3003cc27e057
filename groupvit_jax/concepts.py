"""Concept maps (supplement Fig. 1): the regions chosen group tokens take across a dataset's
images, one PNG grid per grouping stage.

  python -m groupvit_jax.concepts --checkpoint CKPT --dataset DATASET --data_dir DIR \
      --out DIR [--tokens '1:3,36;2:0,5'] [--tokens_per_stage 8] [--images_per_token 6] \
      [--max_examples N] [--short_side 448] [--tile_size 160]

DATASET is voc, context, coco_object, imagenet, or images (the image files directly in DIR);
the datasets read their evaluation split (layouts: groupvit_jax/evaluators/datasets.py). The
region a group token of stage s takes in an image is the set of pixels whose stage-s group
(GroupViTInference.group_maps) is that token. Without --tokens each stage shows the
--tokens_per_stage tokens with the largest mean area over the images; --tokens names them
instead, and stages it leaves out are not drawn. A token's row shows the --images_per_token
images of which it takes the largest share, its region as it is and the rest dimmed.

Writes OUT/stage1.png, OUT/stage2.png, ... (rows: tokens, columns: images) and
OUT/concepts.json (per stage and token: its mean area, the share of images it appears in, and
the images shown with the share of each it takes). Every path may be a URL (gs://...).
"""

import argparse
import json
import os
import sys
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np
from PIL import Image

import groupvit_jax
from groupvit_jax import filesystem, visualize
from groupvit_jax.command_line import positive_int
from groupvit_jax.evaluators import datasets
from groupvit_jax.progress import Progress

# Images enter the model with sides rounded to a multiple of this many patches, so that a
# dataset's many image sizes become a few input shapes (each shape compiles once).
PATCHES_PER_SIZE_STEP = 4


def parse_tokens(text: str) -> dict[int, list[int]]:
  """--tokens '1:3,36;2:0,5' -> {1: [3, 36], 2: [0, 5]}: stages count from 1, tokens from 0."""
  tokens = {}
  for part in text.split(';'):
    stage, colon, listed = part.partition(':')
    try:
      stage, stage_tokens = int(stage), [int(token) for token in listed.split(',')]
    except ValueError:
      colon = ''
    if not colon:
      raise ValueError(f"--tokens {text!r}: expected STAGE:TOKEN,TOKEN;... such as '1:3,36;2:0,5'")
    if stage in tokens:
      raise ValueError(f'--tokens {text!r} names stage {stage} twice')
    if len(set(stage_tokens)) != len(stage_tokens):
      raise ValueError(f'--tokens {text!r} names a token of stage {stage} twice')
    tokens[stage] = stage_tokens
  return tokens


def check_tokens(tokens: Mapping[int, Sequence[int]], stage_sizes: Sequence[int]) -> None:
  """A ValueError if `tokens` (as parse_tokens gives them) names a stage or a token that the
  model, with `stage_sizes` tokens in each grouping stage, does not have."""
  for stage, stage_tokens in tokens.items():
    if not 1 <= stage <= len(stage_sizes):
      raise ValueError(
        f'--tokens names stage {stage}, but the model has grouping stages 1 to {len(stage_sizes)}'
      )
    size = stage_sizes[stage - 1]
    for token in stage_tokens:
      if not 0 <= token < size:
        raise ValueError(
          f'--tokens names token {token} of stage {stage}, which has tokens 0 to {size - 1}'
        )


def grouping_stages(model) -> tuple[list[int], int]:
  """(tokens of each grouping stage, patch size) of a loaded model; a ValueError if its image
  tower has no group tokens."""
  from groupvit_jax.models.vision import VisionTower  # pylint: disable=g-import-not-at-top  # jax

  if model.model.image_tower != 'groupvit':
    raise ValueError(
      f'the checkpoint has a {model.model.image_tower!r} image tower, which has no group tokens'
    )
  vision = VisionTower(**model.model.vision)
  return list(vision.num_output_groups), vision.patch_size


def list_images(dataset: str, data_dir: str) -> tuple[list[str], list[str]]:
  """(ids, paths) of a dataset's images: for 'images' the image files directly in `data_dir`
  (ids: their names), otherwise the evaluation split of datasets.open_dataset."""
  if dataset != 'images':
    found = datasets.open_dataset(dataset, data_dir)
    return list(found.ids), list(found.images)
  if not filesystem.isdir(data_dir):
    raise FileNotFoundError(f'{data_dir} is not a directory')
  names = [n for n in filesystem.listdir(data_dir) if n.lower().endswith(datasets.IMAGE_SUFFIXES)]
  if not names:
    raise FileNotFoundError(
      f'{data_dir} holds no images (files ending {", ".join(datasets.IMAGE_SUFFIXES)})'
    )
  return names, [os.path.join(data_dir, name) for name in names]


def input_size(h: int, w: int, short_side: int, step: int) -> tuple[int, int]:
  """The size an h x w image enters the model at: its shorter side scaled to `short_side`
  (segmentation.rescale_size), then each side rounded to a multiple of `step` (at least one)."""
  from groupvit_jax import segmentation  # pylint: disable=g-import-not-at-top  # imports jax

  scaled = segmentation.rescale_size(h, w, short_side)
  return tuple(max(round(side / step), 1) * step for side in scaled)


def model_input(image: np.ndarray, short_side: int, step: int) -> np.ndarray:
  """uint8 `image` [H, W, 3] resized (bilinear) to input_size: uint8 [h, w, 3]."""
  h, w = input_size(*image.shape[:2], short_side, step)
  if (h, w) == image.shape[:2]:
    return image
  return np.asarray(Image.fromarray(image).resize((w, h), Image.BILINEAR))


def area_fractions(group_maps: Sequence[np.ndarray], stage_sizes: Sequence[int]) -> list:
  """One image's group map per stage (int [H, W]) -> per stage, the share of the image's
  pixels each of the stage's tokens takes: float64 [stage size]."""
  return [np.bincount(m.ravel(), minlength=n) / m.size for m, n in zip(group_maps, stage_sizes)]


def measure_areas(
  group_maps: Callable[[np.ndarray], Sequence[np.ndarray]],
  images: Iterable[np.ndarray],
  stage_sizes: Sequence[int],
  progress: Progress | None = None,
) -> list[np.ndarray]:
  """The area fractions of every image: float64 [images, stage size] per stage.
  `group_maps(image)` gives an image's group map per stage."""
  rows = []
  for image in images:
    rows.append(area_fractions(group_maps(image), stage_sizes))
    if progress:
      progress.update()
  return [np.stack(stage) for stage in zip(*rows)]


def busiest_tokens(areas: np.ndarray, count: int) -> list[int]:
  """The `count` tokens with the largest mean area over the images of `areas` [images,
  tokens], largest first (ties: lower token first); tokens that never take a pixel are left
  out."""
  mean = areas.mean(axis=0)
  return [int(token) for token in np.argsort(-mean, kind='stable')[:count] if mean[token] > 0]


def top_images(areas: np.ndarray, token: int, count: int) -> list[int]:
  """The rows of `areas` [images, tokens] (images) of which `token` takes the largest share,
  at most `count`, largest first (ties: earlier image first); images without it left out."""
  column = areas[:, token]
  return [int(row) for row in np.argsort(-column, kind='stable')[:count] if column[row] > 0]


def choose_concepts(
  areas: Sequence[np.ndarray],
  tokens: Mapping[int, Sequence[int]] | None,
  tokens_per_stage: int,
  images_per_token: int,
) -> dict[int, dict[int, list[int]]]:
  """What to draw: {stage: {token: [image row, ...]}}, stages in order, tokens in drawing
  order. The tokens are `tokens` ({stage: [token, ...]}), or else each stage's busiest; `areas`
  holds the area fractions of each stage (counted from 1) at index stage - 1."""
  if tokens is None:
    tokens = {s + 1: busiest_tokens(a, tokens_per_stage) for s, a in enumerate(areas)}
  return {
    stage: {token: top_images(areas[stage - 1], token, images_per_token) for token in listed}
    for stage, listed in sorted(tokens.items())
  }


def concept_tile(image: np.ndarray, group_map: np.ndarray, token: int, size: int) -> np.ndarray:
  """The image with `token`'s region (group_map == token) kept and the rest dimmed, fitted
  into a size x size square: uint8 [size, size, 3]."""
  return visualize.letterbox(visualize.highlight(image, group_map == token), size)


def draw_tiles(
  group_maps: Callable[[np.ndarray], Sequence[np.ndarray]],
  images: Iterable[tuple[int, np.ndarray]],
  concepts: Mapping[int, Mapping[int, Sequence[int]]],
  size: int,
  progress: Progress | None = None,
) -> dict[tuple[int, int, int], np.ndarray]:
  """The tiles of `concepts` (choose_concepts), keyed (stage, token, image row), from the
  (row, image) pairs of the rows they show."""
  wanted = {}
  for stage, token_rows in concepts.items():
    for token, rows in token_rows.items():
      for row in rows:
        wanted.setdefault(row, []).append((stage, token))
  tiles = {}
  for row, image in images:
    maps = group_maps(image)
    for stage, token in wanted[row]:
      tiles[stage, token, row] = concept_tile(image, maps[stage - 1], token, size)
    if progress:
      progress.update()
  return tiles


def stage_sheet(
  stage: int,
  token_rows: Mapping[int, Sequence[int]],
  tiles: Mapping[tuple[int, int, int], np.ndarray],
  areas: np.ndarray,
  ids: Sequence[str],
  size: int,
) -> np.ndarray:
  """One stage's PNG image: a row per token titled 'stage s, token t' and its mean area, each
  tile captioned with the share of the image the token takes ('52%  <image id>')."""
  mean = areas.mean(axis=0)
  rows = [[tiles[stage, token, row] for row in rows] for token, rows in token_rows.items()]
  titles = [f'stage {stage}, token {t}\nmean area {100 * mean[t]:.2g}%' for t in token_rows]
  captions = [
    [f'{100 * areas[row, token]:.0f}%  {ids[row]}' for row in rows]  # one space looks like none
    for token, rows in token_rows.items()
  ]
  return visualize.titled_grid(rows, titles, captions, (size, size))


def summary(
  concepts: Mapping[int, Mapping[int, Sequence[int]]],
  areas: Sequence[np.ndarray],
  ids: Sequence[str],
) -> list[dict]:
  """concepts.json's 'stages': per stage its PNG and, per token, its mean area, the share of
  images it appears in and the images shown with the share of each it takes."""
  stages = []
  for stage, token_rows in concepts.items():
    stage_areas = areas[stage - 1]
    tokens = [
      {
        'token': token,
        'mean_area': float(stage_areas[:, token].mean()),
        'present_in': float((stage_areas[:, token] > 0).mean()),
        'images': [{'id': ids[row], 'area': float(stage_areas[row, token])} for row in rows],
      }
      for token, rows in token_rows.items()
    ]
    stages.append({'stage': stage, 'png': f'stage{stage}.png', 'tokens': tokens})
  return stages


def run(
  checkpoint: str,
  dataset: str,
  data_dir: str,
  out: str,
  tokens: Mapping[int, Sequence[int]] | None = None,
  tokens_per_stage: int = 8,
  images_per_token: int = 6,
  max_examples: int | None = None,
  short_side: int = 448,
  tile_size: int = 160,
  workers: int = 8,
  dtype: str | None = None,
) -> dict:
  """Measures every token's area in each image, chooses the concepts, writes OUT/stage<s>.png
  and OUT/concepts.json; returns what concepts.json holds."""
  ids, paths = list_images(dataset, data_dir)
  indices = datasets.subset(len(ids), max_examples)
  ids = [ids[i] for i in indices]
  model = groupvit_jax.load(checkpoint, dtype)
  stage_sizes, patch_size = grouping_stages(model)
  if tokens is not None:
    check_tokens(tokens, stage_sizes)
  step = PATCHES_PER_SIZE_STEP * patch_size

  def load(row: int) -> np.ndarray:
    return model_input(datasets.read_image(paths[indices[row]]), short_side, step)

  def group_maps(image: np.ndarray) -> list[np.ndarray]:
    return model.group_maps(image, None)

  progress = Progress(len(ids), what='concepts')
  images = datasets.prefetch(load, range(len(ids)), workers)
  areas = measure_areas(group_maps, images, stage_sizes, progress)
  progress.finish()
  concepts = choose_concepts(areas, tokens, tokens_per_stage, images_per_token)
  shown = sorted({row for stage in concepts.values() for rows in stage.values() for row in rows})
  progress = Progress(len(shown), what='tiles')
  images = zip(shown, datasets.prefetch(load, shown, workers))
  tiles = draw_tiles(group_maps, images, concepts, tile_size, progress)
  progress.finish()
  for stage, token_rows in concepts.items():
    sheet = stage_sheet(stage, token_rows, tiles, areas[stage - 1], ids, tile_size)
    visualize.save_png(os.path.join(out, f'stage{stage}.png'), sheet)
  result = dict(
    checkpoint=checkpoint,
    dataset=dataset,
    data_dir=data_dir,
    num_images=len(ids),
    short_side=short_side,
    stages=summary(concepts, areas, ids),
  )
  filesystem.write_text(os.path.join(out, 'concepts.json'), json.dumps(result, indent=2))
  return result


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(
    prog='python -m groupvit_jax.concepts', description=__doc__.split('\n\n')[0]
  )
  parser.add_argument(
    '--checkpoint', required=True, help='checkpoint dir, NVlabs .pth or Hugging Face dir'
  )
  parser.add_argument('--dataset', required=True, choices=('images',) + datasets.DATASETS)
  parser.add_argument(
    '--data_dir', required=True, help="a folder of images, or the dataset's directory or one above"
  )
  parser.add_argument('--out', required=True, help='where to write stage<s>.png, concepts.json')
  parser.add_argument(
    '--tokens',
    help='the tokens to show, STAGE:TOKEN,...;... (stages from 1, tokens from 0), e.g. '
    "'1:3,36;2:0,5'; default: each stage's --tokens_per_stage largest by mean area",
  )
  parser.add_argument('--tokens_per_stage', type=positive_int, default=8)
  parser.add_argument(
    '--images_per_token', type=positive_int, default=6, help='columns: the images it fills most'
  )
  parser.add_argument(
    '--max_examples', type=positive_int, help='look at this many images, evenly spread'
  )
  parser.add_argument(
    '--short_side',
    type=positive_int,
    default=448,
    help='images enter the model with this shorter side (sides rounded to 4 patches)',
  )
  parser.add_argument('--tile_size', type=positive_int, default=160, help='pixels per tile side')
  parser.add_argument(
    '--workers', type=positive_int, default=8, help='threads reading images ahead of the model'
  )
  parser.add_argument('--dtype', choices=('float32', 'bfloat16'), help='default float32')
  args = parser.parse_args(argv)
  try:
    tokens = parse_tokens(args.tokens) if args.tokens else None
    result = run(
      args.checkpoint,
      args.dataset,
      args.data_dir,
      args.out,
      tokens,
      args.tokens_per_stage,
      args.images_per_token,
      args.max_examples,
      args.short_side,
      args.tile_size,
      args.workers,
      args.dtype,
    )
  except (FileNotFoundError, ValueError) as error:
    print(f'error: {error}', file=sys.stderr)
    return 1
  for stage in result['stages']:
    listed = ', '.join(f'{t["token"]} ({100 * t["mean_area"]:.2g}%)' for t in stage['tokens'])
    print(f'stage {stage["stage"]}: tokens {listed} -> {os.path.join(args.out, stage["png"])}')
  print(f'wrote {os.path.join(args.out, "concepts.json")} ({result["num_images"]} images)')
  return 0


if __name__ == '__main__':
  sys.exit(main())
