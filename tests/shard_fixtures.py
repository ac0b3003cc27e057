"""Small webdataset shards with every kind of web-data damage, written by the tests.

Good samples are solid-colour images whose colour encodes their number (`colour_of`), so a
test reads back which sample a batch row came from, whatever crop and flip it got.
"""

import io
import os
import struct
import tarfile
import zlib

import numpy as np
from PIL import Image

from input_pipeline import webdataset


def colour_of(number: int) -> tuple[int, int, int]:
  """A distinct, JPEG-robust colour per sample number (0..215): steps of 51 per channel."""
  return (51 * (number % 6), 51 * (number // 6 % 6), 51 * (number // 36 % 6))


def number_of(pixels: np.ndarray) -> int:
  """The sample number of a solid-colour image (inverse of colour_of, robust to JPEG)."""
  r, g, b = (int(round(float(c) / 51.0)) for c in pixels.reshape(-1, 3).mean(axis=0))
  return r + 6 * g + 36 * b


def encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
  out = io.BytesIO()
  image.save(out, fmt, **kwargs)
  return out.getvalue()


def solid_jpeg(number: int, size=(96, 64)) -> bytes:
  return encode(Image.new('RGB', size, colour_of(number)), 'JPEG', quality=95)


def huge_png(width: int = 100_000, height: int = 100_000) -> bytes:
  """A valid 1x1 PNG whose header claims width x height: enormous to open, tiny on disk."""
  data = encode(Image.new('L', (1, 1)), 'PNG')
  ihdr_start = 8 + 8  # signature, then length and type of the IHDR chunk
  ihdr = struct.pack('>II', width, height) + data[ihdr_start + 8 : ihdr_start + 13]
  crc = struct.pack('>I', zlib.crc32(b'IHDR' + ihdr) & 0xFFFFFFFF)
  return data[:ihdr_start] + ihdr + crc + data[ihdr_start + 17 :]


def image_variants() -> dict[str, tuple[bytes, tuple[int, int, int]]]:
  """Decodable images in awkward formats: name -> (bytes, the RGB they decode to)."""
  rgba = Image.new('RGBA', (40, 30), (200, 100, 50, 0))
  palette = Image.new('P', (40, 30))
  palette.putpalette([10, 20, 30] + [0] * 765)
  grey16 = Image.fromarray(np.full((30, 40), 0x8000, np.uint16))
  return {
    'cmyk': (
      encode(Image.new('CMYK', (40, 30), (0, 255, 255, 0)), 'JPEG', quality=95),
      (255, 0, 0),
    ),
    'grey': (encode(Image.new('L', (40, 30), 90), 'PNG'), (90, 90, 90)),
    'palette': (encode(palette, 'PNG'), (10, 20, 30)),
    'alpha': (encode(rgba, 'PNG'), (200, 100, 50)),
    'grey16': (encode(grey16, 'PNG'), (128, 128, 128)),
    'webp': (
      encode(Image.new('RGB', (40, 30), (0, 102, 204)), 'WEBP', lossless=True),
      (0, 102, 204),
    ),
  }


# Damaged samples: name -> (members, the reason they are skipped).
def damaged_samples() -> dict[str, tuple[dict[str, bytes], str]]:
  good = solid_jpeg(0)
  return {
    'truncated_jpeg': ({'jpg': good[: len(good) // 2], 'txt': b'a cut off photo'}, 'corrupt_image'),
    'garbage_image': ({'jpg': b'not an image at all', 'txt': b'a photo'}, 'corrupt_image'),
    'zero_bytes': ({'jpg': b'', 'txt': b'an empty file'}, 'empty_image'),
    'enormous': ({'png': huge_png(), 'txt': b'a very large picture'}, 'image_too_large'),
    'no_caption': ({'jpg': good}, 'missing_caption'),
    'no_image': ({'txt': b'a caption alone', 'json': b'{}'}, 'missing_image'),
    'blank_caption': ({'jpg': good, 'txt': b'  \n '}, 'empty_caption'),
    'latin1_caption': (
      {'jpg': good, 'txt': 'caf\xe9 on the street'.encode('latin-1')},
      'caption_not_utf8',
    ),
  }


def write_good_shards(directory: str, num_shards: int, per_shard: int, start: int = 0) -> list[str]:
  """Shards of solid-colour samples numbered start, start + 1, ...; returns their paths."""
  os.makedirs(directory, exist_ok=True)
  paths = []
  for s in range(num_shards):
    samples = []
    for i in range(per_shard):
      n = start + s * per_shard + i
      members = {'jpg': solid_jpeg(n), 'txt': f'a photo of a dog and a cat number {n}'.encode()}
      members['json'] = b'{"status": "success"}'
      samples.append((f'{n:09d}', members))
    path = os.path.join(directory, f'{s:05d}.tar')
    webdataset.write_shard(path, samples)
    paths.append(path)
  return paths


def truncate(path: str, keep_bytes: int) -> None:
  with open(path, 'r+b') as f:
    f.truncate(keep_bytes)


def member_offsets(path: str) -> list[int]:
  with tarfile.open(path) as tar:
    return [m.offset for m in tar.getmembers()]


def _animation(fmt: str, **kwargs) -> bytes:
  """Two frames (or pages) of different colours."""
  frames = [Image.new('RGB', (40, 30), colour) for colour in ((200, 0, 0), (0, 200, 0))]
  return encode(frames[0], fmt, save_all=True, append_images=frames[1:], **kwargs)


def web_oddities(seed: int = 0) -> dict[str, tuple[dict[str, bytes], str]]:
  """Valid images the web serves in odd forms: name -> (members, '' if the pipeline keeps the
  sample, else the reason it is skipped). Kept images decode as Pillow's
  `Image.open(...).convert('RGB')` does, which is what the released pipeline did."""
  rng = np.random.default_rng(seed)
  photo = Image.fromarray(rng.integers(0, 256, (60, 80, 3), dtype=np.uint8))
  spacer = Image.new('P', (1, 1))
  spacer.putpalette([255, 255, 255] + [0] * 765)
  rotated = Image.Exif()
  rotated[0x0112] = 6  # orientation: rotate 90 degrees to display
  floats = Image.fromarray(rng.random((30, 40)).astype(np.float32), 'F')
  images = {
    'spacer_gif': ('gif', encode(spacer, 'GIF', transparency=0), ''),
    'animated_gif': ('gif', _animation('GIF', loop=0, duration=100), ''),
    'animated_webp': ('webp', _animation('WEBP', lossless=True, duration=100), ''),
    'multipage_tiff': ('tif', _animation('TIFF'), ''),
    'tall_1x3000': ('png', encode(Image.new('RGB', (1, 3000), (10, 200, 30)), 'PNG'), ''),
    'wide_3000x1': ('jpg', encode(Image.new('RGB', (3000, 1), (10, 200, 30)), 'JPEG'), ''),
    'one_bit': ('png', encode(photo.convert('1'), 'PNG'), ''),
    'grey_alpha': ('png', encode(photo.convert('LA'), 'PNG'), ''),
    'progressive_jpeg': ('jpg', encode(photo, 'JPEG', progressive=True, quality=90), ''),
    'png_named_jpg': ('jpg', encode(photo, 'PNG'), ''),
    'tiff_named_jpg': ('jpg', encode(photo, 'TIFF'), ''),
    'exif_rotated': ('jpg', encode(photo, 'JPEG', exif=rotated.tobytes()), ''),
    'tiny_8x8': ('jpg', encode(photo.resize((8, 8)), 'JPEG'), ''),
    'float_tiff': ('tif', encode(floats, 'TIFF'), 'unsupported_image'),
  }
  return {
    name: ({extension: data, 'txt': f'a web image: {name}'.encode()}, reason)
    for name, (extension, data, reason) in images.items()
  }
