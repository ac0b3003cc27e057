"""RandAugment's ops equal timm 0.4.12's under Pillow 8/9, bit for bit, at every level.

The default tests compare `randaugment.OPS` with an independent NumPy computation of what
Pillow 9 and timm compute (tests/randaugment_reference.py); the slow test runs timm itself under
Pillow 9.5 in a side venv and compares with both.
"""

import collections
import hashlib
import io
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from input_pipeline import image_transforms, randaugment
from tests import randaugment_reference as reference

LEVELS = tuple(0.5 * i for i in range(21))  # 0, 0.5, ..., 10


def _signs(name: str) -> tuple[int, ...]:
  return (1, -1) if name in reference.SIGNED else (1,)


def _images() -> dict[str, np.ndarray]:
  rng = np.random.default_rng(0)
  y, x = np.mgrid[0:224, 0:224]
  gradient = np.stack([x * 255 // 223, y * 255 // 223, (x + y) * 255 // 446], -1)
  return {
    # Every value in every channel, and neighbours that differ: every bilinear weight and
    # every truncation shows in the result.
    'noise': rng.integers(0, 256, (224, 224, 3), dtype=np.uint8),
    'gradient': gradient.astype(np.uint8),
    # Few distinct values: autocontrast stretches, equalize takes coarse steps.
    'low_contrast': rng.integers(60, 90, (120, 160, 3), dtype=np.uint8),
    'constant': np.full((64, 64, 3), 77, np.uint8),
    # An odd size puts the rotation centre between pixels.
    'odd': rng.integers(0, 256, (37, 61, 3), dtype=np.uint8),
  }


def _op(name: str, pixels: np.ndarray, level: float, sign: int) -> np.ndarray:
  height, width = pixels.shape[:2]
  arg = randaugment.argument(name, level, sign, width, height)
  out = randaugment.OPS[name](Image.fromarray(pixels), arg)
  assert out.mode == 'RGB' and out.size == (pixels.shape[1], pixels.shape[0])
  return np.asarray(out)


def test_the_op_set_is_timms_increasing_set():
  assert tuple(randaugment.OPS) == randaugment.OP_NAMES == reference.NAMES
  assert randaugment.FILL == reference.FILL
  assert randaugment.SIGNED == reference.SIGNED


@pytest.mark.parametrize('name', reference.NAMES)
def test_op_equals_pillow9_timm_at_every_level(name):
  for key, pixels in _images().items():
    for level in LEVELS:
      for sign in _signs(name):
        np.testing.assert_array_equal(
          _op(name, pixels, level, sign),
          reference.apply(name, pixels, level, sign),
          err_msg=f'{name} at level {level}, sign {sign}, on the {key} image',
        )


def test_posterize_at_full_magnitude_is_black():
  # timm asks for 0 bits at level 10; Pillow 8/9 gave black, Pillow 10+ raises for 0 bits.
  pixels = _images()['noise']
  assert not _op('PosterizeIncreasing', pixels, 10.0, 1).any()
  assert _op('PosterizeIncreasing', pixels, 9.99, 1).any()  # 1 bit kept just below


def test_randaugment_draws_every_op_at_full_magnitude(monkeypatch):
  """Thousands of draws never fail, keep the image RGB and its size, reach level 10 (clipped;
  2.3% of magnitude draws) with every op, and every applied op, at its drawn level and sign,
  equals the reference."""
  drawn, applied = [], []
  argument = randaugment.argument

  def recorded_argument(name, level, sign, width, height):
    drawn.append((name, level, sign))
    return argument(name, level, sign, width, height)

  def recording(op):
    def recorded(image, arg):
      out = op(image, arg)
      applied.append((np.asarray(image), np.asarray(out)))
      return out

    return recorded

  monkeypatch.setattr(randaugment, 'argument', recorded_argument)
  for name, op in list(randaugment.OPS.items()):
    monkeypatch.setitem(randaugment.OPS, name, recording(op))
  image = Image.fromarray(_images()['noise'][:32, :32])
  for seed in range(5000):
    out = randaugment.randaugment(image, np.random.default_rng(seed))
    assert out.mode == 'RGB' and out.size == image.size
  assert len(drawn) == len(applied) > 4000
  full = collections.Counter(name for name, level, _ in drawn if level == 10.0)
  assert set(full) == set(reference.NAMES), full
  for (name, level, sign), (before, after) in zip(drawn, applied):
    # draw rounds the argument to float32, which the device gets too.
    arg = np.float32(reference.argument(name, level, sign, *before.shape[1::-1]))
    expected = reference.apply_argument(name, before, float(arg))
    np.testing.assert_array_equal(after, expected, err_msg=f'{name} at {level}, sign {sign}')


def _encoded() -> dict[str, bytes]:
  """One small image per mode a web shard can hold, encoded as it would be."""
  rng = np.random.default_rng(1)
  y, x = np.mgrid[0:40, 0:56]
  rgb = np.stack([x * 4, y * 6, rng.integers(0, 256, x.shape)], -1).astype(np.uint8)
  source = Image.fromarray(rgb)
  palette = source.convert('P', palette=Image.Palette.ADAPTIVE, colors=32)
  rgba = Image.fromarray(np.concatenate([rgb, (x * 4).astype(np.uint8)[..., None]], -1))

  def encode(image, fmt, **kwargs):
    out = io.BytesIO()
    image.save(out, fmt, **kwargs)
    return out.getvalue()

  return {
    '1': encode(source.convert('1'), 'PNG'),
    'L': encode(source.convert('L'), 'PNG'),
    'L JPEG': encode(source.convert('L'), 'JPEG', quality=90),
    'LA': encode(rgba.convert('LA'), 'PNG'),
    'P': encode(palette, 'PNG'),
    'P, transparent index': encode(palette, 'PNG', transparency=3),
    'P, alpha per entry': encode(palette, 'PNG', transparency=bytes(range(0, 256, 8))),
    'RGB': encode(source, 'PNG'),
    'RGB JPEG': encode(source, 'JPEG', quality=90),
    'RGBA': encode(rgba, 'PNG'),
    'CMYK JPEG': encode(source.convert('CMYK'), 'JPEG', quality=90),
    'I;16': encode(Image.fromarray(rgb[..., 0].astype(np.uint16) * 257), 'PNG'),
  }


# Pillow warns when it converts a palette with per-entry alpha; dropping alpha is intended.
@pytest.mark.filterwarnings('ignore:Palette images with Transparency:UserWarning')
@pytest.mark.parametrize('kind', list(_encoded()))
def test_ops_on_every_decoded_mode(kind):
  image = image_transforms.decode(_encoded()[kind])
  assert image.mode == 'RGB' and image.size == (56, 40)
  pixels = np.asarray(image)
  for name in reference.NAMES:
    for level in (0.0, 10.0):
      for sign in _signs(name):
        arg = randaugment.argument(name, level, sign, *image.size)
        out = randaugment.OPS[name](image, arg)
        assert out.mode == 'RGB' and out.size == image.size
        np.testing.assert_array_equal(
          np.asarray(out),
          reference.apply(name, pixels, level, sign),
          err_msg=f'{name} at level {level}, sign {sign}, on the decoded {kind} image',
        )


# The slow test: timm 0.4.12 itself, under Pillow 9.5, in a venv of its own.

_REQUIREMENTS = pathlib.Path(__file__).with_name('timm_pillow9_requirements.txt')
_TIMM = 'timm==0.4.12'

# Runs in the side venv: argv = images.npz, levels (JSON), out.npz. Saves, per image, every
# op's output at every level and sign, stacked in the order of `_cases`.
_TIMM_SCRIPT = r"""
import importlib.util, json, pathlib, sys
import numpy as np
import PIL
from PIL import Image

assert PIL.__version__ == '9.5.0', PIL.__version__
# By file path: importing the timm package would import torch.
data = pathlib.Path(importlib.util.find_spec('timm').submodule_search_locations[0]) / 'data'


def load(name):
  spec = importlib.util.spec_from_file_location(f'timm_data_{name}', data / f'{name}.py')
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


constants, auto_augment = load('constants'), load('auto_augment')
# The hparams transforms_imagenet_train passes for img_size 224 and 'bilinear'.
hparams = dict(
  translate_const=int(224 * 0.45),
  img_mean=tuple(min(255, round(255 * x)) for x in constants.IMAGENET_DEFAULT_MEAN),
  interpolation=Image.BILINEAR,
)
transform = auto_augment.rand_augment_transform('rand-m9-mstd0.5-inc1', hparams)
assert hparams['img_mean'] == (124, 116, 104) and hparams['magnitude_std'] == 0.5
names = auto_augment._RAND_INCREASING_TRANSFORMS
assert len(transform.ops) == len(names) == 15 and transform.num_layers == 2


class Draw:
  # Replaces the module's `random`: _randomly_negate negates when random.random() > 0.5.
  value = 0.0

  def random(self):
    return self.value


draw = Draw()
auto_augment.random = draw
images = np.load(sys.argv[1])
levels = json.loads(sys.argv[2])
signed = json.loads(sys.argv[3])
out = {}
for key in images.files:
  outputs = []
  for name, op in zip(names, transform.ops):
    assert op.prob == 0.5 and op.magnitude == 9
    for level in levels:
      for sign in (1, -1) if name in signed else (1,):
        draw.value = 1.0 if sign < 0 else 0.0
        args = op.level_fn(level, op.hparams) if op.level_fn else ()
        result = op.aug_fn(Image.fromarray(images[key]), *args, **op.kwargs)
        assert result.mode == 'RGB'
        outputs.append(np.asarray(result))
  out[key] = np.stack(outputs)
np.savez(sys.argv[4], names=np.array(names), **out)
"""


def _cases():
  return [
    (name, level, sign) for name in reference.NAMES for level in LEVELS for sign in _signs(name)
  ]


def _timm_python() -> pathlib.Path:
  """The side venv's python, built once per pin set under ~/.cache (or $XDG_CACHE_HOME)."""
  key = hashlib.sha256(_REQUIREMENTS.read_bytes() + _TIMM.encode()).hexdigest()[:16]
  cache = pathlib.Path(os.environ.get('XDG_CACHE_HOME') or pathlib.Path.home() / '.cache')
  venv = cache / 'groupvit_jax' / 'timm_pillow9_venv' / key
  python = venv / 'bin' / 'python'
  ready = venv / 'ready'  # written last: a venv without it is half-built and rebuilt
  if not ready.exists():
    subprocess.run([sys.executable, '-m', 'venv', '--clear', str(venv)], check=True)
    pip = [str(python), '-m', 'pip', 'install', '-q', '--only-binary=:all:']
    subprocess.run(pip + ['-r', str(_REQUIREMENTS)], check=True, timeout=900)
    subprocess.run(pip + ['--no-deps', _TIMM], check=True, timeout=900)
    ready.touch()
  return python


@pytest.mark.slow
def test_ops_equal_timm_under_pillow9(tmp_path):
  images = _images()
  np.savez(tmp_path / 'images.npz', **images)
  levels, signed = json.dumps(LEVELS), json.dumps(sorted(reference.SIGNED))
  args = [tmp_path / 'images.npz', levels, signed, tmp_path / 'timm.npz']
  run = subprocess.run(
    [str(_timm_python()), '-c', _TIMM_SCRIPT, *map(str, args)],
    check=False,  # the assertion below shows the script's stderr
    capture_output=True,
    text=True,
    timeout=900,
  )
  assert run.returncode == 0, run.stderr
  timm = np.load(tmp_path / 'timm.npz')
  assert tuple(timm['names']) == reference.NAMES
  cases = _cases()
  for key, pixels in images.items():
    assert timm[key].shape == (len(cases), *pixels.shape)
    for (name, level, sign), expected in zip(cases, timm[key]):
      where = f'{name} at level {level}, sign {sign}, on the {key} image'
      np.testing.assert_array_equal(_op(name, pixels, level, sign), expected, err_msg=where)
      # The reference the default tests rely on agrees with timm too.
      np.testing.assert_array_equal(
        reference.apply(name, pixels, level, sign), expected, err_msg=f'reference: {where}'
      )
