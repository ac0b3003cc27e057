"""Synthetic shapes with captions: the embedded default dataset, no download needed.

Each image holds 1..max_objects shapes of distinct classes (circle, square, triangle, ...) in
random colours, sizes, positions, rotations and textures, drawn over one another on a solid,
gradient or noisy background. Every shape stays visible (at least `min_visible` of the image and
60% of itself), so whatever the caption names can be found in the image. The caption names every
shape with its colour and texture and sometimes the background colour; `nouns` lists the class
names it mentions, for GroupViT's multi-label loss. The label mask is pixel-exact: each pixel
holds the class of the topmost shape covering it, or 0 for background. Colours and textures are
attributes named in captions, not segmentation classes, so a model can only learn where a "star"
is from captions that say "star". With `shape_colours`, each shape has its own colour (as real
objects have typical colours) over neutral backgrounds, which a small model learns from far
fewer samples.

Every sample is a pure function of (seed, split, index), so data order, resumption and sharding
are free for the trainer: any process can draw any index.

  config = SyntheticConfig(image_size=64)
  example = sample(config, 'train', 0)  # .image, .mask, .caption, .nouns
  arrays = batch(config, 'heldout', range(16))
"""

import dataclasses
import functools
import math
import operator
from typing import Iterable, NamedTuple

import numpy as np

CLASS_NAMES = (
  'background',
  'circle',
  'square',
  'triangle',
  'star',
  'heart',
  'cross',
  'ring',
  'diamond',
)
OBJECT_CLASSES = CLASS_NAMES[1:]

# Saturated, mutually distinct colours whose names are single CLIP tokens.
COLOURS = {
  'red': (215, 35, 35),
  'orange': (245, 135, 20),
  'yellow': (245, 215, 35),
  'green': (40, 160, 60),
  'blue': (35, 80, 215),
  'purple': (135, 55, 185),
  'pink': (240, 125, 185),
  'brown': (125, 75, 35),
  'white': (245, 245, 245),
  'gray': (128, 128, 128),
  'black': (20, 20, 20),
}
# With SyntheticConfig.shape_colours: each shape in its own colour, on backgrounds of the
# neutral colours, the way real objects have typical colours.
SHAPE_COLOURS = {
  'circle': 'red',
  'square': 'blue',
  'triangle': 'yellow',
  'star': 'green',
  'heart': 'pink',
  'cross': 'orange',
  'ring': 'purple',
  'diamond': 'brown',
}
NEUTRAL_COLOURS = ('white', 'gray', 'black')
TEXTURES = ('plain', 'striped', 'dotted', 'checkered')
BACKGROUND_STYLES = ('solid', 'gradient', 'noise')
SPLITS = ('train', 'heldout')

_MIN_IMAGE_SIZE = 32  # below this the shapes stop being recognisable
_MIN_UNOCCLUDED = 0.6  # each shape keeps most of itself visible, so its outline still reads
_MIN_COLOUR_DISTANCE = 90.0  # RGB distance between a shape's colour and every background colour
_COLOUR_JITTER = 16  # per-channel, so a colour name covers a small range of shades
_TEXTURE_P = (0.4, 0.2, 0.2, 0.2)
_BACKGROUND_P = (0.4, 0.3, 0.3)
# Largest tilt in degrees either way, 30 for the other shapes: a square never turns towards a
# diamond, nor a cross towards an x.
_MAX_TILT = {'square': 10.0, 'diamond': 10.0, 'cross': 10.0}
# Beyond this total area of the smallest shapes, random placement often fails to keep them all
# visible.
_MAX_COVER = 0.3
_PLACEMENT_TRIES = 30  # per shape, shrinking its size from try to try
_SCENE_TRIES = 20


def _circle(u, v):
  return u * u + v * v <= 1.0


def _ring(u, v):
  r2 = u * u + v * v
  return (r2 <= 1.0) & (r2 >= 0.25)


def _square(u, v):
  return (np.abs(u) <= 0.7) & (np.abs(v) <= 0.7)


def _diamond(u, v):
  # A rhombus, taller than wide as on playing cards, so no rotation of a square looks like it.
  return np.abs(u) / 0.7 + np.abs(v) <= 1.0


def _triangle(u, v):
  # Equilateral, pointing up, vertices on the unit circle.
  return (v >= -0.5) & (v <= 1.0 - math.sqrt(3.0) * np.abs(u))


def _cross(u, v):
  a, b = np.abs(u), np.abs(v)
  return ((a <= 0.3) & (b <= 0.95)) | ((b <= 0.3) & (a <= 0.95))


_STAR_SECTOR = 2.0 * math.pi / 5.0
_STAR_INNER = (0.5 * math.cos(math.pi / 5.0), 0.5 * math.sin(math.pi / 5.0))


def _star(u, v):
  # Five points: fold the angle into half a sector, then test against the edge from the outer
  # vertex (1, 0) to the inner one.
  rho = np.hypot(u, v)
  phi = np.mod(np.arctan2(u, v), _STAR_SECTOR)
  phi = np.minimum(phi, _STAR_SECTOR - phi)
  px, py = rho * np.cos(phi), rho * np.sin(phi)
  bx, by = _STAR_INNER
  return (bx - 1.0) * py - by * (px - 1.0) >= 0.0


def _heart(u, v):
  # (x^2 + y^2 - 1)^3 <= x^2 y^3, scaled and shifted to fit the unit disk.
  x, y = 1.25 * u, 1.25 * v + 0.25
  return (x * x + y * y - 1.0) ** 3 <= x * x * y**3


# Indicator functions in shape coordinates (u right, v up); each shape lies inside the unit disk.
_SHAPES = {
  'circle': _circle,
  'square': _square,
  'triangle': _triangle,
  'star': _star,
  'heart': _heart,
  'cross': _cross,
  'ring': _ring,
  'diamond': _diamond,
}


# Each shape as a lookup table of cells of 1 / _TABLE_RES over [-_TABLE_HALF, _TABLE_HALF]^2
# (row 0 at the top, v = +_TABLE_HALF), so that a footprint costs the same few array operations
# whatever the shape. Cells are smaller than pixels for shapes up to 2 * _TABLE_RES pixels wide;
# the table reaches past sqrt(2) so that the corners of a rotated bounding square stay on it.
_TABLE_RES = 128
_TABLE_HALF = 1.5
_TABLE_SIZE = int(2 * _TABLE_HALF * _TABLE_RES)


def _table(shape) -> np.ndarray:
  t = (np.arange(_TABLE_SIZE) + 0.5) / _TABLE_RES - _TABLE_HALF
  return shape(t[None, :], -t[:, None]).ravel()


_SHAPE_TABLES = {name: _table(fn) for name, fn in _SHAPES.items()}
# Area of each shape at radius 1.
_UNIT_AREAS = {name: float(t.sum()) / _TABLE_RES**2 for name, t in _SHAPE_TABLES.items()}
# The largest image fraction at which every shape, at radius <= image_size / 2, still fits.
MAX_AREA = math.floor(min(_UNIT_AREAS.values()) / 4.0 * 100.0) / 100.0


@dataclasses.dataclass(frozen=True)
class SyntheticConfig:
  """What scenes look like. Areas are fractions of the image.

  min_area / max_area: the area range of a shape before occlusion.
  min_visible: the area every shape still covers after the later shapes are drawn over it.
  """

  # A training config must still give config.data.image_size, the vision tower's, which the
  # images must match; the default serves evaluators and tests.
  image_size: int = dataclasses.field(default=64, metadata={'required': True})
  min_objects: int = 1
  max_objects: int = 3
  seed: int = 0
  min_area: float = 0.05
  max_area: float = 0.25
  min_visible: float = 0.04
  # Whether captions also name colours, textures and backgrounds. Without them a caption names
  # only the shapes, so text supervision cannot be matched by colour alone (the images are
  # the same either way).
  caption_attributes: bool = True
  # Whether each shape has its own colour (SHAPE_COLOURS) over neutral backgrounds. Colour then
  # tells the class, as appearance does for real objects, and a small model learns the task
  # from the few tens of thousands of samples a laptop CPU sees in minutes; otherwise colours
  # are random and only the outline tells the class.
  shape_colours: bool = False
  # Whether shapes may be striped, dotted or checkered (else all plain). Textures split a shape
  # into two colours, which a grouping must learn to join.
  textures: bool = True

  def __post_init__(self):
    if not isinstance(self.image_size, int) or self.image_size < _MIN_IMAGE_SIZE:
      raise ValueError(
        f'image_size must be an int >= {_MIN_IMAGE_SIZE} (smaller shapes are not '
        f'recognisable), got {self.image_size!r}'
      )
    if not 1 <= self.min_objects <= self.max_objects:
      raise ValueError(
        f'need 1 <= min_objects <= max_objects, got {self.min_objects}, {self.max_objects}'
      )
    if self.max_objects > len(OBJECT_CLASSES):
      raise ValueError(
        f'max_objects must be at most {len(OBJECT_CLASSES)}, the number of object classes '
        f'(the shapes in a scene have distinct classes), got {self.max_objects}'
      )
    if not isinstance(self.seed, int) or self.seed < 0:
      raise ValueError(f'seed must be a non-negative int, got {self.seed!r}')
    if not 0.0 < self.min_visible <= self.min_area <= self.max_area <= MAX_AREA:
      raise ValueError(
        f'need 0 < min_visible <= min_area <= max_area <= {MAX_AREA} (the largest area at '
        f'which every shape fits in the image), got {self.min_visible}, {self.min_area}, '
        f'{self.max_area}'
      )
    if self.max_objects * self.min_area > _MAX_COVER:
      raise ValueError(
        f'max_objects * min_area must be <= {_MAX_COVER} so that the shapes fit side by side, '
        f'got {self.max_objects} * {self.min_area}; lower min_area (and min_visible)'
      )


@dataclasses.dataclass(frozen=True)
class SceneObject:
  """One shape. Coordinates are in pixels, (y, x), pixel (i, j) has its centre at (i+.5, j+.5).

  The shape lies inside the disk of `radius` around `centre`; `angle` rotates it (radians,
  counter-clockwise). Textures alternate `rgb` with a darker or lighter shade of it, with period
  `pattern_period` pixels along the direction `angle + pattern_angle`.
  """

  shape: str
  colour: str
  rgb: tuple[int, int, int]
  centre: tuple[float, float]
  radius: float
  angle: float = 0.0
  texture: str = 'plain'
  pattern_period: float = 6.0
  pattern_angle: float = 0.0

  def __post_init__(self):
    if not self.radius > 0:
      raise ValueError(f'radius must be positive, got {self.radius}')
    if self.shape not in _SHAPES:
      raise ValueError(f'unknown shape {self.shape!r}; expected one of {OBJECT_CLASSES}')
    if self.texture not in TEXTURES:
      raise ValueError(f'unknown texture {self.texture!r}; expected one of {TEXTURES}')

  @property
  def label(self) -> int:
    """Its class index in CLASS_NAMES (1..)."""
    return CLASS_NAMES.index(self.shape)


@dataclasses.dataclass(frozen=True)
class Background:
  """A solid colour, a linear gradient between two colours, or low-contrast noise on a colour.

  `colours` are the names (two for a gradient), `rgb` their jittered values. A gradient runs
  from rgb[0] to rgb[1] along direction `angle` (radians); noise comes from `noise_seed`.
  """

  style: str
  colours: tuple[str, ...]
  rgb: tuple[tuple[int, int, int], ...]
  angle: float = 0.0
  noise_seed: int = 0

  def __post_init__(self):
    if self.style not in BACKGROUND_STYLES:
      raise ValueError(f'unknown background style {self.style!r}; expected {BACKGROUND_STYLES}')
    expected = 2 if self.style == 'gradient' else 1
    if len(self.colours) != expected or len(self.rgb) != expected:
      raise ValueError(f'a {self.style} background needs matching colours and rgb, got {self}')


class Sample(NamedTuple):
  """One example: the arrays, the caption and the scene that produced them."""

  image: np.ndarray  # uint8 [H, W, 3]
  mask: np.ndarray  # int32 [H, W], values index CLASS_NAMES
  caption: str
  nouns: tuple[str, ...]  # the class names the caption mentions, in caption order
  objects: tuple[SceneObject, ...]  # bottom to top
  background: Background


def _footprint(obj: SceneObject, size: int):
  """(window, inside, dy, dx): the shape's pixels within its bounding square `window`, and the
  offsets of the window's pixel centres from the shape's centre (dy [h, 1], dx [1, w])."""
  cy, cx = obj.centre
  r = obj.radius
  # The pixels whose centres lie within r of the centre along both axes.
  y0, x0 = max(math.ceil(cy - r - 0.5), 0), max(math.ceil(cx - r - 0.5), 0)
  y1, x1 = min(math.floor(cy + r - 0.5) + 1, size), min(math.floor(cx + r - 0.5) + 1, size)
  # float32 and int32 (ample for offsets and cells of a few hundred) halve the work.
  dy = (np.arange(y0, y1, dtype=np.float32) + np.float32(0.5 - cy))[:, None]
  dx = (np.arange(x0, x1, dtype=np.float32) + np.float32(0.5 - cx))[None, :]
  # The table cell of each pixel centre in rotated shape coordinates (u right, v up):
  # column (u + HALF) * RES, row (HALF - v) * RES, both positive, so truncation floors them.
  scale = _TABLE_RES / r
  cos = np.float32(math.cos(obj.angle) * scale)
  sin = np.float32(math.sin(obj.angle) * scale)
  offset = np.float32(_TABLE_HALF * _TABLE_RES)
  col = ((cos * dx + offset) - sin * dy).astype(np.int32)
  row = (sin * dx + (cos * dy + offset)).astype(np.int32)
  row *= _TABLE_SIZE
  row += col
  inside = _SHAPE_TABLES[obj.shape].take(row)
  return (slice(y0, y1), slice(x0, x1)), inside, dy, dx


def _shade(rgb) -> tuple[int, int, int]:
  """The texture's second colour: the same hue, much darker (light colours) or lighter."""
  light = 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2] >= 128
  return tuple(round(c * 0.4) if light else round(c + 0.6 * (255 - c)) for c in rgb)


def _pattern(obj: SceneObject, dy, dx) -> np.ndarray:
  """Where the texture shows its second colour (bool, shaped like the footprint)."""
  a = obj.angle + obj.pattern_angle
  # In half-periods along the pattern's two axes.
  k = 2.0 / obj.pattern_period
  cos, sin = math.cos(a) * k, math.sin(a) * k
  s = cos * dx - sin * dy
  if obj.texture == 'striped':
    return np.floor(s) % 2 == 1
  t = sin * dx + cos * dy
  if obj.texture == 'checkered':
    return (np.floor(s) + np.floor(t)) % 2 == 1
  # dotted: a dot of radius 0.3 periods (0.6 half-periods) centred in each period cell
  ds, dt = np.mod(s, 2.0) - 1.0, np.mod(t, 2.0) - 1.0
  return ds * ds + dt * dt <= 0.36


@functools.lru_cache(maxsize=16)
def _interpolation(size: int, cells: int) -> np.ndarray:
  """The [size, cells] matrix of linear interpolation from cells points to size pixels."""
  position = (np.arange(size) + 0.5) * ((cells - 1) / size)
  return np.maximum(1.0 - np.abs(position[:, None] - np.arange(cells)[None, :]), 0.0)


def _smooth_noise(rng, size: int, cells: int, std: float) -> np.ndarray:
  """Gaussian noise on a cells x cells grid, bilinearly interpolated to size x size."""
  interp = _interpolation(size, cells)
  # einsum without `optimize` stays off BLAS: OpenBLAS's worker threads spin after each call
  # and, on a small CPU, take cores from XLA's training step (measured: 1.3 s -> >10 s a step).
  rows = np.einsum('ik,kl->il', interp, rng.normal(0.0, std, (cells, cells)))  # [size, cells]
  return np.einsum('il,jl->ij', rows, interp)


# Images are painted as one little-endian uint32 per pixel (R | G << 8 | B << 16): filling
# pixels with a colour is then a scalar store, about 8x faster than broadcasting three bytes.
_PIXEL = np.dtype('<u4')


def _pack(rgb) -> int:
  return rgb[0] | rgb[1] << 8 | rgb[2] << 16


_CHANNEL_SHIFTS = np.array([1, 1 << 8, 1 << 16], np.uint32)


def _pack_rows(colours: np.ndarray) -> np.ndarray:
  """Packed pixels from float RGB rows [N, 3] in 0..255, rounded."""
  return ((colours + 0.5).astype(np.uint32) * _CHANNEL_SHIFTS).sum(axis=1, dtype=_PIXEL)


_RAMP = np.linspace(0.0, 1.0, 256)[:, None]
_SHIFTS = np.arange(-127.0, 128.0)[:, None]


def _paint_background(background: Background, size: int) -> np.ndarray:
  """The background as packed pixels [S, S]."""
  if background.style == 'solid':
    return np.full((size, size), _pack(background.rgb[0]), _PIXEL)
  if background.style == 'gradient':
    # The projection onto the gradient's direction is the sum of a column and a row term,
    # scaled here to run over 0..255 in total: an index into 256 colours from start to end.
    coords = np.arange(size) + 0.5
    along_x = math.cos(background.angle) * coords
    along_y = -math.sin(background.angle) * coords
    along_x -= along_x.min()
    along_y -= along_y.min()
    scale = 255.0 / (along_x.max() + along_y.max())
    index = ((along_x * scale + 0.5)[None, :] + (along_y * scale)[:, None]).astype(np.intp)
    start, end = np.asarray(background.rgb, np.float64)
    colours = _pack_rows(start + _RAMP * (end - start))
    return colours.take(index)
  # Low-contrast blotches at two scales, in luminance only, so the colour stays nameable: an
  # index into the colour shifted by -127..127.
  rng = np.random.default_rng(background.noise_seed)
  noise = _smooth_noise(rng, size, 4, 14.0) + _smooth_noise(rng, size, 12, 7.0)
  index = (noise + 127.5).astype(np.intp)
  np.maximum(index, 0, out=index)
  np.minimum(index, 254, out=index)
  shades = np.asarray(background.rgb[0], np.float64) + _SHIFTS
  return _pack_rows(np.minimum(np.maximum(shades, 0.0, out=shades), 255.0, out=shades)).take(index)


def _paint(objects, footprints, background: Background, size: int) -> np.ndarray:
  """The scene as packed pixels [S, S]."""
  canvas = _paint_background(background, size)
  for obj, (window, inside, dy, dx) in zip(objects, footprints):
    region = canvas[window]
    region[inside] = _pack(obj.rgb)
    if obj.texture != 'plain':
      region[inside & _pattern(obj, dy, dx)] = _pack(_shade(obj.rgb))
  return canvas


def _unpack(canvas: np.ndarray, out: np.ndarray) -> np.ndarray:
  """Writes packed pixels [S, S] into uint8 RGB `out` [S, S, 3] (one long loop per channel)."""
  channels = canvas.view(np.uint8).reshape(*canvas.shape, 4)
  for c in range(3):
    out[..., c] = channels[..., c]
  return out


def render(objects: Iterable[SceneObject], background: Background, image_size: int):
  """Draws `objects` (bottom to top) over `background`: (image uint8 [S, S, 3], mask int32)."""
  objects = tuple(objects)
  footprints = [_footprint(obj, image_size) for obj in objects]
  mask = np.zeros((image_size, image_size), np.int32)
  for obj, (window, inside, _, _) in zip(objects, footprints):
    mask[window][inside] = obj.label
  canvas = _paint(objects, footprints, background, image_size)
  return _unpack(canvas, np.empty((image_size, image_size, 3), np.uint8)), mask


def _jitter(rgb, uniforms) -> tuple[int, int, int]:
  """rgb shifted per channel by up to _COLOUR_JITTER; `uniforms` are three draws in [0, 1)."""
  span = 2 * _COLOUR_JITTER + 1
  return tuple(min(max(c + int(x * span) - _COLOUR_JITTER, 0), 255) for c, x in zip(rgb, uniforms))


def _segment_distance(point, start, end) -> float:
  """Distance in RGB space from a colour to the colours of a gradient from start to end."""
  ab = [e - s for s, e in zip(start, end)]
  ap = [p - s for s, p in zip(start, point)]
  length2 = sum(x * x for x in ab)
  t = 0.0 if not length2 else min(max(sum(x * y for x, y in zip(ap, ab)) / length2, 0.0), 1.0)
  return math.dist(point, [s + t * x for s, x in zip(start, ab)])


_COLOUR_NAMES = tuple(COLOURS)
# For each background colour pair (a solid one is a pair with itself): the colour names that
# stand out against every colour of it.
_CONTRASTING = {
  (a, b): tuple(
    n
    for n in _COLOUR_NAMES
    if _segment_distance(COLOURS[n], COLOURS[a], COLOURS[b]) >= _MIN_COLOUR_DISTANCE
  )
  for a in _COLOUR_NAMES
  for b in _COLOUR_NAMES
}


def _pick(uniform: float, cumulative: tuple[float, ...]) -> int:
  """The index a [0, 1) draw falls into, given cumulative probabilities."""
  return next(i for i, c in enumerate(cumulative) if uniform < c)


_TEXTURE_CDF = tuple(np.cumsum(_TEXTURE_P[:-1])) + (1.0,)
_BACKGROUND_CDF = tuple(np.cumsum(_BACKGROUND_P[:-1])) + (1.0,)


def _draw_background(rng, colour_names: tuple[str, ...]) -> Background:
  # One block of draws, as per-call overhead dominates at these sizes.
  u = rng.random(11).tolist()
  style = BACKGROUND_STYLES[_pick(u[0], _BACKGROUND_CDF)]
  n = len(colour_names)
  first = int(u[1] * n)
  names = (colour_names[first],)
  if style == 'gradient':
    names += (colour_names[(first + 1 + int(u[2] * (n - 1))) % n],)
  return Background(
    style=style,
    colours=names,
    rgb=tuple(_jitter(COLOURS[c], u[3 + 3 * i : 6 + 3 * i]) for i, c in enumerate(names)),
    angle=2.0 * math.pi * u[9],
    noise_seed=int(u[10] * 2**53),
  )


def _draw_objects(config: SyntheticConfig, background: Background, rng):
  """Shapes, their footprints and the label mask, placed so that each keeps its visible area."""
  size = config.image_size
  count = config.min_objects + int(rng.random() * (config.max_objects - config.min_objects + 1))
  palette = _CONTRASTING[(background.colours[0], background.colours[-1])]
  candidates = OBJECT_CLASSES
  if config.shape_colours:
    # Only the shapes whose colour stands out against this background.
    candidates = tuple(s for s in OBJECT_CLASSES if SHAPE_COLOURS[s] in palette)
  shapes = [candidates[i] for i in rng.permutation(len(candidates))[:count]]
  # A ring goes at the bottom: a shape seen through its hole would look like a disk.
  shapes.sort(key=lambda shape: shape != 'ring')
  min_pixels = math.ceil(config.min_visible * size * size)
  lo, hi = math.sqrt(config.min_area), math.sqrt(config.max_area)
  for scene_try in range(_SCENE_TRIES):
    # Sizes are uniform in side length; each try of a shape, and each new start of a crowded
    # scene, draws from a smaller range.
    top = hi - (hi - lo) * scene_try / _SCENE_TRIES
    mask = np.zeros((size, size), np.int32)
    # Per placed label (each shape has its own class): pixels still visible, pixels it must keep.
    visible, needed = {}, {}
    objects, footprints = [], []
    for shape in shapes:
      u = rng.random(5).tolist()
      colour = SHAPE_COLOURS[shape] if config.shape_colours else palette[int(u[0] * len(palette))]
      texture = TEXTURES[_pick(u[1], _TEXTURE_CDF)] if config.textures else 'plain'
      rgb = _jitter(COLOURS[colour], u[2:5])
      for attempt in range(_PLACEMENT_TRIES):
        u = rng.random(5).tolist()
        side = lo + (top - lo) * (1.0 - attempt / _PLACEMENT_TRIES) * u[0]
        radius = size * side / math.sqrt(_UNIT_AREAS[shape])
        obj = SceneObject(
          shape=shape,
          colour=colour,
          rgb=rgb,
          centre=(radius + (size - 2 * radius) * u[1], radius + (size - 2 * radius) * u[2]),
          radius=radius,
          angle=math.radians(_MAX_TILT.get(shape, 30.0)) * (2.0 * u[3] - 1.0),
          texture=texture,
          pattern_period=max(4.0, radius / 2.0),
          pattern_angle=math.pi / 4.0 * int(u[4] * 4),
        )
        footprint = _footprint(obj, size)
        window, inside = footprint[0], footprint[1]
        area = int(np.count_nonzero(inside))
        if area < min_pixels:
          continue
        if visible:
          covered = np.bincount(mask[window][inside], minlength=len(CLASS_NAMES)).tolist()
          if any(visible[k] - covered[k] < needed[k] for k in visible):
            continue
          for k in visible:
            visible[k] -= covered[k]
        visible[obj.label] = area
        needed[obj.label] = max(min_pixels, math.ceil(_MIN_UNOCCLUDED * area))
        mask[window][inside] = obj.label
        objects.append(obj)
        footprints.append(footprint)
        break
      else:
        break  # this shape found no place: start the scene again
    else:
      return tuple(objects), footprints, mask
  raise RuntimeError(f'could not place {count} shapes in {_SCENE_TRIES} tries with {config}')


_TEXTURE_SUFFIX = {
  'striped': 'with stripes',
  'dotted': 'with dots',
  'checkered': 'with a checkered pattern',
}
_COUNT_WORDS = ('one', 'two', 'three', 'four', 'five', 'six', 'seven', 'eight')
_CAPTIONS = (
  '{objects}',
  'a photo of {objects}',
  'an image of {objects}',
  'a drawing of {objects}',
  'a picture with {objects}',
  '{count}: {objects}',
)
_BACKGROUND_CAPTIONS = (
  '{objects} on {background} background',
  'a photo of {objects} on {background} background',
  '{objects} against {background} background',
  '{background} background with {objects}',
  '{count} on {background} background: {objects}',
)


def _with_article(phrase: str) -> str:
  return ('an ' if phrase[0] in 'aeiou' else 'a ') + phrase


def _object_phrase(obj: SceneObject, u) -> str:
  """'a striped red star', 'a red star with stripes', now and then without the colour."""
  words = [obj.shape]
  if u[0] >= 0.1:
    words.insert(0, obj.colour)
  if obj.texture != 'plain':
    if u[1] < 0.5:
      words.insert(0, obj.texture)
    else:
      words.append(_TEXTURE_SUFFIX[obj.texture])
  return _with_article(' '.join(words))


def _caption(
  objects, background: Background, rng, attributes: bool = True
) -> tuple[str, tuple[str, ...]]:
  """A caption naming every shape (in random order) and the nouns it mentions."""
  order = rng.permutation(len(objects)).tolist()
  u = rng.random(3 + 2 * len(objects)).tolist()
  phrases = [
    _object_phrase(objects[i], u[3 + 2 * j :]) if attributes else _with_article(objects[i].shape)
    for j, i in enumerate(order)
  ]
  listed = phrases[0] if len(phrases) == 1 else ', '.join(phrases[:-1]) + ' and ' + phrases[-1]
  count = f'{_COUNT_WORDS[len(objects) - 1]} shape{"s" if len(objects) > 1 else ""}'
  if attributes and u[0] < 0.5:
    named = ' and '.join(background.colours)
    if background.style == 'noise' and u[1] < 0.5:
      named = 'noisy ' + named
    template = _BACKGROUND_CAPTIONS[int(u[2] * len(_BACKGROUND_CAPTIONS))]
    caption = template.format(objects=listed, count=count, background=_with_article(named))
  else:
    caption = _CAPTIONS[int(u[2] * len(_CAPTIONS))].format(objects=listed, count=count)
  return caption, tuple(objects[i].shape for i in order)


def _split_id(split: str) -> int:
  if split not in SPLITS:
    raise ValueError(f'unknown split {split!r}; expected one of {SPLITS}')
  return SPLITS.index(split)


def _generate(config: SyntheticConfig, split: str, index: int):
  """(packed image [S, S], mask, caption, nouns, objects, background) of one example."""
  split_id = _split_id(split)
  index = operator.index(index)
  if index < 0:
    raise ValueError(f'index must be >= 0, got {index}')
  rng = np.random.default_rng([config.seed, split_id, index])
  background = _draw_background(rng, NEUTRAL_COLOURS if config.shape_colours else _COLOUR_NAMES)
  objects, footprints, mask = _draw_objects(config, background, rng)
  canvas = _paint(objects, footprints, background, config.image_size)
  caption, nouns = _caption(objects, background, rng, config.caption_attributes)
  return canvas, mask, caption, nouns, objects, background


def sample(config: SyntheticConfig, split: str, index: int) -> Sample:
  """The example at `index` of `split`: a pure function of (config, split, index)."""
  canvas, *rest = _generate(config, split, index)
  size = config.image_size
  return Sample(_unpack(canvas, np.empty((size, size, 3), np.uint8)), *rest)


def batch(config: SyntheticConfig, split: str, indices: Iterable[int]) -> dict:
  """Examples `indices` of `split`, stacked: 'image' uint8 [N, S, S, 3], 'mask' int32 [N, S, S],
  'caption' list[str], 'nouns' list[tuple[str, ...]]."""
  indices = list(indices)
  size = config.image_size
  out = {
    'image': np.empty((len(indices), size, size, 3), np.uint8),
    'mask': np.empty((len(indices), size, size), np.int32),
    'caption': [],
    'nouns': [],
  }
  for row, index in enumerate(indices):
    canvas, mask, caption, nouns, _, _ = _generate(config, split, index)
    _unpack(canvas, out['image'][row])
    out['mask'][row] = mask
    out['caption'].append(caption)
    out['nouns'].append(nouns)
  return out
