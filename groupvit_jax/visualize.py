"""Pictures of segmentations and groups: label maps to colours, highlighted regions, and
captioned panels and grids as PNG."""

import os
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from groupvit_jax import filesystem


def label_colours(num_labels: int) -> np.ndarray:
  """PASCAL VOC's colour map, uint8 [num_labels, 3]: label 0 black, then distinct colours."""
  colours = np.zeros((num_labels, 3), np.uint8)
  for label in range(num_labels):
    c, value = label, [0, 0, 0]
    for shift in range(7, -1, -1):
      for channel in range(3):
        value[channel] |= ((c >> channel) & 1) << shift
      c >>= 3
    colours[label] = value
  return colours


def colourize(labels: np.ndarray, colours: np.ndarray) -> np.ndarray:
  """int label map [H, W] -> uint8 RGB [H, W, 3]."""
  return colours[np.asarray(labels) % len(colours)]


def blend(image: np.ndarray, overlay: np.ndarray, alpha: float = 0.6) -> np.ndarray:
  """uint8 image and overlay [H, W, 3] mixed as alpha * overlay + (1 - alpha) * image."""
  mixed = alpha * overlay.astype(np.float32) + (1 - alpha) * image.astype(np.float32)
  return np.round(mixed).astype(np.uint8)


def group_overlays(image: np.ndarray, group_maps) -> list[np.ndarray]:
  """Each grouping stage's map (int [H, W]) drawn over `image` (uint8 [H, W, 3]), one colour
  per group (black left out, so that group 0 shows)."""
  colours = label_colours(256)[1:]
  return [blend(image, colourize(groups, colours)) for groups in group_maps]


def panel(
  rows: Sequence[Sequence[np.ndarray]],
  titles: Sequence[str],
  scale: int = 1,
  legend: Sequence[tuple[str, Sequence[int]]] = (),
) -> np.ndarray:
  """Images (uint8 [H, W, 3], all the same size) in a grid, a title over each column and an
  optional legend of (name, colour) below: uint8 [H', W', 3]."""
  h, w = rows[0][0].shape[:2]
  h, w = h * scale, w * scale
  gap, title_h, legend_h = 4, 16, 16 if legend else 0
  width = len(titles) * (w + gap) + gap
  height = title_h + len(rows) * (h + gap) + gap + legend_h
  canvas = Image.new('RGB', (width, height), (255, 255, 255))
  draw = ImageDraw.Draw(canvas)
  font = ImageFont.load_default()
  for c, title in enumerate(titles):
    draw.text((gap + c * (w + gap), 2), title, fill=(0, 0, 0), font=font)
  for r, row in enumerate(rows):
    for c, image in enumerate(row):
      tile = Image.fromarray(np.asarray(image, np.uint8)).resize((w, h), Image.NEAREST)
      canvas.paste(tile, (gap + c * (w + gap), title_h + gap + r * (h + gap)))
  x, y = gap, height - legend_h + 2
  for name, colour in legend:
    draw.rectangle([x, y, x + 10, y + 10], fill=tuple(int(v) for v in colour), outline=(0, 0, 0))
    draw.text((x + 14, y), name, fill=(0, 0, 0), font=font)
    x += 14 + int(draw.textlength(name, font=font)) + 10
  return np.asarray(canvas)


def save_png(path: str, image: np.ndarray) -> None:
  """Writes uint8 `image` to `path` (local or a URL): a PNG, unless its extension names another
  format Pillow writes."""
  filesystem.makedirs(os.path.dirname(filesystem.abspath(path)))
  extension = os.path.splitext(path)[1].lower()
  image_format = Image.registered_extensions().get(extension, 'PNG')
  with filesystem.open(path, 'wb') as f:
    Image.fromarray(np.asarray(image, np.uint8)).save(f, format=image_format)


def highlight(image: np.ndarray, mask: np.ndarray, dim: float = 0.3) -> np.ndarray:
  """uint8 `image` [H, W, 3] with the pixels of bool `mask` [H, W] as they are and every other
  pixel dimmed to `dim` of its brightness."""
  image = np.asarray(image, np.uint8)
  dimmed = np.round(image.astype(np.float32) * dim).astype(np.uint8)
  return np.where(np.asarray(mask, bool)[..., None], image, dimmed)


def letterbox(image: np.ndarray, size: int) -> np.ndarray:
  """uint8 `image` [H, W, 3] scaled to fit a `size` x `size` square, its aspect ratio kept,
  centred on white: uint8 [size, size, 3]."""
  h, w = image.shape[:2]
  scale = size / max(h, w)
  fitted_w, fitted_h = max(round(w * scale), 1), max(round(h * scale), 1)
  fitted = Image.fromarray(np.asarray(image, np.uint8)).resize((fitted_w, fitted_h), Image.BICUBIC)
  square = Image.new('RGB', (size, size), (255, 255, 255))
  square.paste(fitted, ((size - fitted_w) // 2, (size - fitted_h) // 2))
  return np.asarray(square)


def _fitted_text(draw: ImageDraw.ImageDraw, text: str, width: int, font) -> str:
  """`text`, cut short with '..' if it is wider than `width` pixels."""
  if draw.textlength(text, font=font) <= width:
    return text
  while text and draw.textlength(text + '..', font=font) > width:
    text = text[:-1]
  return text + '..'


def titled_grid(
  rows: Sequence[Sequence[np.ndarray]],
  row_titles: Sequence[str],
  captions: Sequence[Sequence[str]],
  tile_hw: tuple[int, int],
) -> np.ndarray:
  """Tiles (uint8 [h, w, 3] with (h, w) = `tile_hw`) in rows, each row's title (one or more
  lines) at its left and a one-line caption under each tile (cut short to the tile's width).
  Rows may hold fewer tiles than others; their remaining places stay white. -> uint8 [H', W', 3]."""
  tile_h, tile_w = tile_hw
  gap, caption_h = 4, 14
  font = ImageFont.load_default()
  measure = ImageDraw.Draw(Image.new('RGB', (1, 1)))
  title_w = max(measure.multiline_textbbox((0, 0), title, font=font)[2] for title in row_titles)
  columns = max(max(len(row) for row in rows), 1)
  left, cell_h = gap + title_w + 2 * gap, tile_h + caption_h + gap
  width = left + columns * (tile_w + gap)
  height = gap + len(rows) * cell_h
  canvas = Image.new('RGB', (width, height), (255, 255, 255))
  draw = ImageDraw.Draw(canvas)
  for r, (row, title, row_captions) in enumerate(zip(rows, row_titles, captions)):
    top = gap + r * cell_h
    draw.multiline_text((gap, top + 2), title, fill=(0, 0, 0), font=font)
    for c, (tile, caption) in enumerate(zip(row, row_captions)):
      x = left + c * (tile_w + gap)
      canvas.paste(Image.fromarray(np.asarray(tile, np.uint8)), (x, top))
      text = _fitted_text(draw, caption, tile_w, font)
      draw.text((x, top + tile_h + 1), text, fill=(0, 0, 0), font=font)
  return np.asarray(canvas)
