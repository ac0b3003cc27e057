"""Runs notebooks/zero_shot_segmentation.ipynb top to bottom on a tiny checkpoint.

The parameters cell (tagged 'parameters', as papermill expects) is replaced with test values:
no installs, a tiny NVlabs .pth served from a file:// URL (so the download and conversion run
as they do on Colab), a small local image and a working directory under tmp_path.
"""

import re

import numpy as np
import torch
from PIL import Image

import hf_reference as ref
import notebook_runner

NOTEBOOK = 'zero_shot_segmentation.ipynb'
PARAMETERS = (
  'INSTALL',
  'REPO_URL',
  'CHECKPOINT_URL',
  'CHECKPOINT',
  'IMAGE_URL',
  'IMAGE',
  'LABELS',
  'BACKGROUND_THRESHOLD',
  'WORKDIR',
)


def test_notebook_is_saved_clean_with_a_parameters_cell():
  notebook_runner.assert_saved_clean(notebook_runner.read(NOTEBOOK), PARAMETERS)


def test_notebook_runs_on_a_tiny_checkpoint(tmp_path):
  pth = tmp_path / 'tiny.pth'
  hf_model = ref.make_model(seed=0, **ref.TINY)
  torch.save({'model': ref.nvlabs_state_dict(hf_model, multi_label_logit_scale=2.5)}, pth)
  image = np.zeros((64, 80, 3), np.uint8)
  image[:, :40] = (200, 40, 40)
  image[:, 40:] = (40, 160, 60)
  image_path = tmp_path / 'halves.png'
  Image.fromarray(image).save(image_path)
  workdir = tmp_path / 'work'

  values = {
    'INSTALL': False,
    'REPO_URL': '',
    'CHECKPOINT_URL': pth.as_uri(),
    'CHECKPOINT': '',
    'IMAGE_URL': 'https://example.invalid/not-used.jpg',
    'IMAGE': str(image_path),
    'LABELS': 'cat, dog',
    'BACKGROUND_THRESHOLD': 0.5,
    'WORKDIR': str(workdir),
  }
  nb = notebook_runner.execute(NOTEBOOK, values)

  # Downloaded once and converted into a groupvit_jax checkpoint.
  assert (workdir / 'tiny.pth').read_bytes() == pth.read_bytes()
  assert (workdir / 'ckpt' / 'config.json').is_file()

  with Image.open(workdir / 'segmentation.png') as picture:
    assert picture.format == 'PNG'
    width, height = picture.size
  # The overlay, then one panel per grouping stage (two in the tiny model), titles and legend.
  assert width >= 3 * image.shape[1] and height > image.shape[0]

  segment_cell = next(c for c in nb.cells if 'model.segment(' in c.source)
  assert any('image/png' in out.get('data', {}) for out in segment_cell.outputs)
  text = notebook_runner.stream_text(segment_cell)
  rows = re.findall(r'^(background|cat|dog) +(\d+\.\d)%$', text, re.M)
  assert [name for name, _ in rows] == ['background', 'cat', 'dog']
  assert abs(sum(float(share) for _, share in rows) - 100) < 0.5
