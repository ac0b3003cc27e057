"""metrics.jsonl rows, their clean-up on resume, the progress line and the picture helpers."""

import json

import numpy as np

from groupvit_jax import progress, visualize
from groupvit_jax.training import metric_writers


def test_jsonl_rows_and_resume_drops_steps_after_the_checkpoint(tmp_path):
  path = str(tmp_path / 'metrics.jsonl')
  writer = metric_writers.JsonlWriter(path)
  for step in range(1, 6):
    writer.write_scalars(step, {'loss': np.float32(step / 2), 'lr': np.asarray(1e-3)})
  writer.write_scalars(5, {'synthetic_miou': float('nan')})
  writer.close()
  rows = [json.loads(line) for line in open(path)]
  assert rows[0] == {'step': 1, 'loss': 0.5, 'lr': 1e-3}
  assert rows[-1] == {'step': 5, 'synthetic_miou': None}  # JSON has no NaN

  writer = metric_writers.JsonlWriter(path, resume_step=3)  # a checkpoint at step 3
  writer.write_scalars(4, {'loss': 9.0})
  writer.close()
  rows = [json.loads(line) for line in open(path)]
  assert [r['step'] for r in rows] == [1, 2, 3, 4] and rows[-1]['loss'] == 9.0


def test_progress_line_has_rate_and_eta():
  line = progress.progress_line(120, 500, 1.5, {'loss': 8.41234, 'samples_per_second': 85.33})
  assert line == 'step 120/500 (24%) | loss 8.4123 | 85.3 samples/s | 1.5 s/step | ETA 9m30s'
  line = progress.progress_line(0, 10**5, 2.0, {'loss': 1, 'samples_per_second': 1})
  assert line.endswith('| ETA 55h33m')


def test_label_colours_are_pascal_vocs():
  colours = visualize.label_colours(21)
  assert colours[0].tolist() == [0, 0, 0]
  assert colours[1].tolist() == [128, 0, 0]  # aeroplane
  assert colours[15].tolist() == [192, 128, 128]  # person
  assert len({tuple(c) for c in colours}) == 21


def test_panel_lays_out_tiles_with_titles_and_legend():
  tile = np.full((8, 8, 3), 200, np.uint8)
  picture = visualize.panel(
    [[tile, tile], [tile, tile]], ['a', 'b'], scale=2, legend=[('x', (1, 2, 3))]
  )
  # 2 columns of 16 px with 4 px gaps; title, 2 rows of 16 px with gaps, legend.
  assert picture.shape == (16 + 2 * 20 + 4 + 16, 2 * 20 + 4, 3)
  assert (picture[16 + 4 : 16 + 4 + 16, 4 : 4 + 16] == 200).all()
