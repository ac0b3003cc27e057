"""metrics.jsonl rows, their clean-up on resume, TensorBoard event files (read back by
TensorBoard's own loader), the progress line and the picture helpers."""

import io
import json
import os

import numpy as np
import pytest
from PIL import Image
from tensorboard.backend.event_processing import event_accumulator

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


def tensorboard_scalars(directory: str) -> dict[str, list[tuple[int, float]]]:
  """{tag: [(step, value)...]} as TensorBoard loads them from the event files in `directory`."""
  loader = event_accumulator.EventAccumulator(directory, size_guidance={'scalars': 0})
  loader.Reload()
  return {tag: [(e.step, e.value) for e in loader.Scalars(tag)] for tag in loader.Tags()['scalars']}


def test_tensorboard_reads_the_event_files_and_they_roll_over(tmp_path, monkeypatch):
  directory = str(tmp_path / 'tensorboard')
  monkeypatch.setattr(metric_writers, 'EVENT_FILE_BYTES', 2000)  # a new file every ~40 steps
  writer = metric_writers.EventFileWriter(directory)
  for step in range(1, 101):
    writer.write_scalars(step, {'loss': np.float32(1 / step), 'lr': step * 1e-4})
  writer.close()
  files = sorted(os.listdir(directory))
  assert len(files) >= 3 and all(f.startswith('events.out.tfevents.') for f in files)
  assert all(os.path.getsize(os.path.join(directory, f)) < 2000 + 200 for f in files)
  scalars = tensorboard_scalars(directory)
  assert sorted(scalars) == ['loss', 'lr']
  assert [step for step, _ in scalars['loss']] == list(range(1, 101))
  np.testing.assert_allclose([v for _, v in scalars['loss']], 1 / np.arange(1, 101), rtol=1e-6)
  np.testing.assert_allclose(scalars['lr'][-1][1], 1e-2, rtol=1e-6)


def test_tensorboard_shows_the_images_beside_the_scalars(tmp_path):
  workdir = str(tmp_path)
  rng = np.random.default_rng(0)
  rgb = rng.integers(0, 256, (2, 20, 30, 3), np.uint8)
  grey = rng.integers(0, 256, (1, 16, 8, 1), np.uint8)
  writer = metric_writers.create_writer(workdir)  # the trainer's writer: async, both files
  writer.write_scalars(5, {'synthetic_miou': 0.25})
  writer.write_images(5, {'synthetic/segmentation': rgb, 'voc/2007_000033': grey})
  writer.write_images(9, {'synthetic/segmentation': rgb[:1]})
  writer.close()
  loader = event_accumulator.EventAccumulator(
    os.path.join(workdir, metric_writers.TENSORBOARD_DIR), size_guidance={'images': 0}
  )
  loader.Reload()
  tags = loader.Tags()
  assert tags['scalars'] == ['synthetic_miou']
  want = ['synthetic/segmentation', 'synthetic/segmentation/0', 'synthetic/segmentation/1']
  assert sorted(tags['images']) == sorted(want + ['voc/2007_000033'])

  def decoded(tag):
    return [
      (e.step, e.width, e.height, np.asarray(Image.open(io.BytesIO(e.encoded_image_string))))
      for e in loader.Images(tag)
    ]

  for i in range(2):
    [(step, width, height, pixels)] = decoded(f'synthetic/segmentation/{i}')
    assert (step, width, height) == (5, 30, 20)
    np.testing.assert_array_equal(pixels, rgb[i])
  [(step, _, _, pixels)] = decoded('synthetic/segmentation')
  assert step == 9
  np.testing.assert_array_equal(pixels, rgb[0])
  [(_, _, _, pixels)] = decoded('voc/2007_000033')
  np.testing.assert_array_equal(pixels, grey[0, ..., 0])
  # Images are not metrics: metrics.jsonl holds the scalars only.
  rows = [json.loads(line) for line in open(os.path.join(workdir, metric_writers.METRICS_FILE))]
  assert rows == [{'step': 5, 'synthetic_miou': 0.25}]


def test_an_image_summary_of_the_wrong_shape_is_refused(tmp_path):
  writer = metric_writers.EventFileWriter(str(tmp_path))
  with pytest.raises(ValueError, match=r"'pictures/a'.*\(20, 30, 3\)"):
    writer.write_images(1, {'pictures/a': np.zeros((20, 30, 3), np.uint8)})
  with pytest.raises(ValueError, match='C 1, 3 or 4'):
    writer.write_images(1, {'pictures/a': np.zeros((1, 20, 30, 2), np.uint8)})


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
