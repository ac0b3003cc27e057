"""Runs notebooks/train_tiny.ipynb top to bottom: 4 steps of its TINY model, evaluated every 2,
without TensorBoard; checks the trainer's outputs, the printed table and the groups figure."""

import json
import re

import numpy as np

import notebook_runner
from notebook_runner import assert_not_blank, picture

NOTEBOOK = 'train_tiny.ipynb'
PARAMETERS = (
  'INSTALL',
  'REPO_URL',
  'TOTAL_STEPS',
  'EVAL_EVERY_STEPS',
  'TINY',
  'NUM_SCENES',
  'TENSORBOARD',
  'WORKDIR',
)


def test_notebook_is_saved_clean_with_a_parameters_cell():
  notebook_runner.assert_saved_clean(notebook_runner.read(NOTEBOOK), PARAMETERS)


def test_notebook_trains_the_tiny_model_and_draws_its_groups(tmp_path):
  workdir = tmp_path / 'work'
  values = {
    'INSTALL': False,
    'REPO_URL': '',
    'TOTAL_STEPS': 4,
    'EVAL_EVERY_STEPS': 2,
    'TINY': True,
    'NUM_SCENES': 3,
    'TENSORBOARD': False,
    'WORKDIR': str(workdir),
  }
  nb = notebook_runner.execute(NOTEBOOK, values, notebook_runner.one_device_environment())

  # The trainer ran to the end: every evaluation step checkpointed and kept, the final model.
  assert sorted(int(p.name) for p in (workdir / 'checkpoints').iterdir()) == [2, 4]
  assert (workdir / 'model' / 'config.json').is_file()
  assert json.loads((workdir / 'config.json').read_text())['model']['vision']['width'] == 32
  rows = [json.loads(line) for line in (workdir / 'metrics.jsonl').read_text().splitlines()]
  evaluations = [row for row in rows if 'synthetic_miou' in row]
  assert [row['step'] for row in evaluations] == [2, 4]

  train_cell = next(c for c in nb.cells if 'train_and_evaluate(' in c.source)
  text = notebook_runner.stream_text(train_cell)
  assert re.search(r'step 4/4 \(100%\) \| loss \d', text)
  assert 'orbax' not in text  # the filter keeps orbax's lines out
  table = re.findall(r'^ +(\d+) +(\d+\.\d\d) +(\d+\.\d\d)$', text, re.M)
  assert [int(step) for step, _, _ in table] == [2, 4]
  for (_, miou, oracle), row in zip(table, evaluations):
    assert float(miou) == round(100 * row['synthetic_miou'], 2)
    assert float(oracle) == round(100 * row['synthetic_oracle_miou'], 2)

  # 3 scenes x (scene, truth, step 2, step 4), 32-pixel scenes drawn at 128 pixels.
  groups = picture(workdir / 'groups_over_training.png')
  tile, gap, title = 128, 4, 16  # visualize.panel's tiles (scale 4), gaps and title line
  assert groups.shape[:2] == (title + 3 * (tile + gap) + gap, 4 * (tile + gap) + gap)
  assert_not_blank(groups, 50)
  for row in range(3):
    top = title + gap + row * (tile + gap)
    for column in (2, 3):  # each step's groups over the scene
      left = gap + column * (tile + gap)
      assert_not_blank(groups[top : top + tile, left : left + tile], 8)
  figure_cell = next(c for c in nb.cells if 'groups_over_training.png' in c.source)
  assert any('image/png' in out.get('data', {}) for out in figure_cell.outputs)
  assert (workdir / 'pictures' / 'synthetic' / 'step_4' / 'segmentation.png').is_file()
  assert np.isfinite([row['loss'] for row in rows if 'loss' in row]).all()
