"""Runs notebooks/evaluate.ipynb top to bottom on a tiny checkpoint and a tiny VOC archive.

As on Colab, the notebook downloads (from file:// URLs) a tiny NVlabs .pth, which it converts,
and a VOC2012-layout tar, which it extracts; then it evaluates, and its figures and printed
numbers are checked against the saved predictions re-scored here.
"""

import json
import pathlib
import re
import tarfile

import numpy as np
import torch
from PIL import Image
from test_eval_datasets import _write as write_segmentation_split

from groupvit_jax import visualize
from groupvit_jax.evaluators import datasets, metrics

import hf_reference as ref
import notebook_runner
from notebook_runner import assert_not_blank, picture

NOTEBOOK = 'evaluate.ipynb'
PARAMETERS = (
  'INSTALL',
  'REPO_URL',
  'CHECKPOINT_URL',
  'CHECKPOINT',
  'DATASET',
  'DATA_URL',
  'DATA_DIR',
  'MAX_EXAMPLES',
  'BACKGROUND_THRESHOLD',
  'NUM_GALLERY',
  'WORKDIR',
)
IDS = ['2007_000033', '2007_000042', '2008_000001', '2008_000002']
SIZE = (80, 64)  # width, height of the fixture's images


def write_voc_archive(tmp_path: pathlib.Path) -> tuple[pathlib.Path, dict]:
  """A tar laid out as VOC2012's (VOCdevkit/VOC2012/...), and its masks by id. The images are
  striped so that the model's groups differ across each image."""
  root = tmp_path / 'voc' / 'VOCdevkit' / 'VOC2012'
  layout = datasets.LAYOUTS['voc']
  masks = write_segmentation_split(str(root), layout, IDS, True, SIZE)
  rng = np.random.default_rng(0)
  for n, i in enumerate(IDS):
    pixels = rng.integers(0, 256, (SIZE[1], SIZE[0], 3), np.uint8)
    pixels[:, : 16 * (n + 1)] = (200, 40 * n, 40)
    Image.fromarray(pixels).save(root / layout.images / f'{i}{layout.image_suffix}')
  archive = tmp_path / 'VOCtrainval.tar'
  with tarfile.open(archive, 'w') as tar:
    tar.add(tmp_path / 'voc' / 'VOCdevkit', 'VOCdevkit')
  return archive, masks


def test_notebook_is_saved_clean_with_a_parameters_cell():
  notebook_runner.assert_saved_clean(notebook_runner.read(NOTEBOOK), PARAMETERS)


def test_notebook_evaluates_a_tiny_checkpoint_on_a_tiny_voc(tmp_path):
  pth = tmp_path / 'tiny.pth'
  hf_model = ref.make_model(seed=0, **ref.TINY)
  torch.save({'model': ref.nvlabs_state_dict(hf_model, multi_label_logit_scale=2.5)}, pth)
  archive, masks = write_voc_archive(tmp_path)
  workdir = tmp_path / 'work'

  values = {
    'INSTALL': False,
    'REPO_URL': '',
    'CHECKPOINT_URL': pth.as_uri(),
    'CHECKPOINT': '',
    'DATASET': 'voc',
    'DATA_URL': archive.as_uri(),
    'DATA_DIR': '',
    'MAX_EXAMPLES': 3,
    'BACKGROUND_THRESHOLD': 0.0,  # a random model is background everywhere at VOC's 0.95
    'NUM_GALLERY': 1,
    'WORKDIR': str(workdir),
  }
  nb = notebook_runner.execute(NOTEBOOK, values, notebook_runner.one_device_environment())

  # Downloaded, converted and extracted as on Colab.
  assert (workdir / 'ckpt' / 'config.json').is_file()
  assert (workdir / 'voc' / 'VOCdevkit' / 'VOC2012' / 'ImageSets' / 'Segmentation').is_dir()

  # The saved predictions of the 3 evenly spread images re-scored here give the notebook's
  # result, its per-image mIoUs and the mIoU it prints.
  result = json.loads((workdir / 'voc_result.json').read_text())
  evaluated = [IDS[i] for i in datasets.subset(len(IDS), 3)]
  assert sorted(result['image_miou']) == sorted(evaluated) and result['num_images'] == 3
  names = datasets.VOC_CLASSES
  total = np.zeros((len(names), len(names)), np.int64)
  for key in evaluated:
    with Image.open(workdir / 'predictions' / 'voc' / f'{key}.png') as saved:
      prediction = np.asarray(saved)
    conf = metrics.confusion_matrix(prediction, masks[key], len(names))
    assert np.isclose(metrics.segmentation_metrics(conf, names)['miou'], result['image_miou'][key])
    total += conf
  assert np.isclose(metrics.segmentation_metrics(total, names)['miou'], result['miou'])
  evaluate_cell = next(c for c in nb.cells if 'evaluator.evaluate(' in c.source)
  text = notebook_runner.stream_text(evaluate_cell)
  assert '3/3 images (100%)' in text and '[' + '#' * 30 + ']' in text
  printed = re.search(r'^mIoU (\d+\.\d\d) over 3 images$', text, re.M)
  assert printed and float(printed.group(1)) == round(100 * result['miou'], 2)
  assert re.search(r'^voc: mIoU +\d+\.\d\d \| mAcc', text, re.M)

  # Bars for the classes with an IoU (at most the 21), under 100 pixels of frame and legend.
  bars = picture(workdir / 'per_class_iou.png')
  scored = sum(1 for iou in result['per_class'].values() if iou is not None)
  assert 1 <= scored <= len(names)
  assert bars.shape[1] == 700 and bars.shape[0] == 100 + 25 * scored
  assert_not_blank(bars, 8)
  # 21 x 21 cells with class names, 100 dpi: at least 6 inches a side.
  confusion = picture(workdir / 'confusion.png')
  assert confusion.shape[0] >= 600 and confusion.shape[1] >= 700
  assert_not_blank(confusion, 8)

  # The best and the worst image, each a row of 160-pixel tiles: image, truth, prediction and
  # the groups of the tiny model's 2 stages, at the right of the row titles.
  gallery = picture(workdir / 'gallery.png')
  tile, gap, caption = 160, 4, 14  # visualize.titled_grid's tiles, gaps and caption lines
  height, width = gallery.shape[:2]
  assert height == gap + 2 * (tile + caption + gap)
  assert 5 * (tile + gap) < width < 5 * (tile + gap) + 150
  assert_not_blank(gallery, 50)
  ranked = sorted((miou, key) for key, miou in result['image_miou'].items())
  predicted_colours = set()
  for row, (_, key) in enumerate([ranked[-1], ranked[0]]):
    top = gap + row * (tile + caption + gap)
    tiles = [
      gallery[top : top + tile, width - (5 - c) * (tile + gap) :][:, :tile] for c in range(5)
    ]
    # The prediction panel is the saved label map in the label colours, letterboxed.
    with Image.open(workdir / 'predictions' / 'voc' / f'{key}.png') as saved:
      prediction = np.asarray(saved, np.int32)
    colours = visualize.colourize(prediction, visualize.label_colours(256))
    np.testing.assert_array_equal(tiles[2], visualize.letterbox(colours, tile))
    predicted_colours |= {tuple(c) for c in colours.reshape(-1, 3)}
    for groups in tiles[3:]:
      assert_not_blank(groups, 8)
  assert len(predicted_colours) >= 2
