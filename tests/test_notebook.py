"""Runs notebooks/zero_shot_segmentation.ipynb top to bottom on a tiny checkpoint.

The parameters cell (tagged 'parameters', as papermill expects) is replaced with test values:
no installs, a tiny NVlabs .pth served from a file:// URL (so the download and conversion run
as they do on Colab), a small local image and a working directory under tmp_path.
"""

import ast
import pathlib
import re

import nbclient
import nbformat
import numpy as np
import torch
from jupyter_client.kernelspec import NATIVE_KERNEL_NAME, KernelSpecManager
from jupyter_client.manager import AsyncKernelManager
from PIL import Image

import hf_reference as ref

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
NOTEBOOK = REPO_ROOT / 'notebooks' / 'zero_shot_segmentation.ipynb'
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


def read_notebook() -> nbformat.NotebookNode:
  return nbformat.read(NOTEBOOK, as_version=4)


def parameters_cell(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
  cells = [cell for cell in nb.cells if 'parameters' in cell.metadata.get('tags', [])]
  assert len(cells) == 1, 'exactly one cell must be tagged "parameters"'
  assert cells[0].cell_type == 'code'
  return cells[0]


def kernel_manager() -> AsyncKernelManager:
  """A manager for ipykernel in this interpreter, whatever kernelspecs are installed: with no
  kernel directories, jupyter_client falls back to ipykernel's own spec (sys.executable)."""
  specs = KernelSpecManager(kernel_dirs=[])
  return AsyncKernelManager(kernel_name=NATIVE_KERNEL_NAME, kernel_spec_manager=specs)


def stream_text(cell: nbformat.NotebookNode) -> str:
  return ''.join(out.get('text', '') for out in cell.outputs if out.output_type == 'stream')


def test_notebook_is_saved_clean_with_a_parameters_cell():
  nb = read_notebook()
  nbformat.validate(nb)
  assert nb.nbformat == 4 and nb.metadata.kernelspec.name == 'python3'
  for cell in nb.cells:
    if cell.cell_type == 'code':
      assert cell.outputs == [] and cell.execution_count is None, cell.source[:80]
  # Plain assignments only, so that papermill (or the test below) can override every one.
  body = ast.parse(parameters_cell(nb).source).body
  assert all(isinstance(node, ast.Assign) for node in body)
  assert [node.targets[0].id for node in body] == list(PARAMETERS)


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

  nb = read_notebook()
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
  parameters_cell(nb).source = '\n'.join(f'{name} = {values[name]!r}' for name in PARAMETERS)
  # From notebooks/, as Jupyter opens it in a clone: the notebook finds the checkout itself.
  client = nbclient.NotebookClient(
    nb,
    timeout=600,
    km=kernel_manager(),
    resources={'metadata': {'path': str(NOTEBOOK.parent)}},
  )
  client.execute()  # raises CellExecutionError, with the traceback, if any cell fails

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
  rows = re.findall(r'^(background|cat|dog) +(\d+\.\d)%$', stream_text(segment_cell), re.M)
  assert [name for name, _ in rows] == ['background', 'cat', 'dog']
  assert abs(sum(float(share) for _, share in rows) - 100) < 0.5
