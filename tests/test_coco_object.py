"""COCO-Object mask conversion on tiny COCO-Stuff maps and instances jsons written here."""

import json
import os
import re

import numpy as np
import pytest
from PIL import Image

from groupvit_jax.evaluators import coco_object, datasets

import cli

# Facts of COCO's category list, written out independently of the module.
UNUSED_IDS = (12, 26, 29, 30, 45, 66, 68, 69, 71, 83, 91)
CATEGORY_NAMES = {
  1: 'person', 3: 'car', 11: 'fire hydrant', 13: 'stop sign', 25: 'giraffe', 27: 'backpack',
  28: 'umbrella', 31: 'handbag', 44: 'bottle', 46: 'wine glass', 65: 'bed', 67: 'dining table',
  70: 'toilet', 72: 'tv', 82: 'refrigerator', 84: 'book', 90: 'toothbrush',
}  # fmt: skip


def _save(array: np.ndarray, path) -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  Image.fromarray(array.astype(np.uint8), 'L').save(path)


def _read(path) -> np.ndarray:
  with Image.open(path) as image:
    assert image.mode == 'L' and image.format == 'PNG'
    return np.asarray(image)


def test_stuffthingmap_table_sends_things_to_their_class_index_and_the_rest_to_0():
  lut = coco_object.STUFFTHINGMAP_TO_TRAIN_ID
  assert lut.shape == (256,) and lut.dtype == np.uint8
  for category_id, name in CATEGORY_NAMES.items():
    assert datasets.COCO_OBJECT_CLASSES[lut[category_id - 1]] == name
  assert all(lut[i - 1] == 0 for i in UNUSED_IDS)
  assert not lut[91:].any()  # stuff 91..181 and 255 unlabeled
  used = [lut[i - 1] for i in range(1, 91) if i not in UNUSED_IDS]
  assert used == list(range(1, 81))  # every thing id in order, each class once
  assert coco_object.TRAIN_IDS == {i + 1: int(t) for i, t in enumerate(lut[:91]) if t}


def test_from_stuffthingmaps_relabels_maps_and_skips_converted_masks(tmp_path):
  maps = tmp_path / 'annotations' / 'val2017'
  values = np.array([[0, 2, 89], [91, 181, 255]], np.uint8)
  _save(np.tile(values, (2, 3)), maps / '000000000139.png')
  earlier = np.full((3, 3), 7, np.uint8)
  _save(earlier, maps / '000000000285_instanceTrainIds.png')
  (maps / 'notes.txt').write_text('not a map')
  assert coco_object.from_stuffthingmaps(str(tmp_path), progress=False) == 1
  expected = np.array([[1, 3, 80], [0, 0, 0]], np.uint8)  # person, car, toothbrush; rest 0
  np.testing.assert_array_equal(
    _read(maps / '000000000139_instanceTrainIds.png'), np.tile(expected, (2, 3))
  )
  np.testing.assert_array_equal(_read(maps / '000000000285_instanceTrainIds.png'), earlier)
  assert sorted(os.listdir(maps)) == [
    '000000000139.png', '000000000139_instanceTrainIds.png',
    '000000000285_instanceTrainIds.png', 'notes.txt',
  ]  # fmt: skip


def test_from_stuffthingmaps_reports_progress(tmp_path, monkeypatch, capsys):
  for i in range(3):
    _save(np.zeros((2, 2)), tmp_path / 'annotations' / 'val2017' / f'{i}.png')
  assert coco_object.from_stuffthingmaps(str(tmp_path), workers=1) == 3
  lines = capsys.readouterr().err.splitlines()
  assert lines[-1].startswith('converted: 3/3 masks (100%) | ') and lines[-1].endswith('ETA 0m00s')


def test_from_stuffthingmaps_names_an_unreadable_map(tmp_path):
  maps = tmp_path / 'annotations' / 'val2017'
  _save(np.zeros((2, 2)), maps / '000000000001.png')
  (maps / '000000000002.png').write_bytes(b'\x89PNG\r\n\x1a\n truncated')
  with pytest.raises(coco_object.ConversionError, match='000000000002.png: cannot read'):
    coco_object.from_stuffthingmaps(str(tmp_path), workers=2, progress=False)
  Image.new('RGB', (2, 2)).save(maps / '000000000002.png')
  with pytest.raises(coco_object.ConversionError, match='000000000002.png: mode RGB'):
    coco_object.from_stuffthingmaps(str(tmp_path), progress=False)


def _rectangle(x0, y0, x1, y1) -> list:
  """A polygon pycocotools fills as exactly [y0:y1, x0:x1] (checked here: corners on the
  pixel grid, right and bottom edges exclusive)."""
  return [x0, y0, x1, y0, x1, y1, x0, y1]


def _uncompressed_rle(mask: np.ndarray) -> dict:
  """COCO's uncompressed RLE: run lengths over the column-major pixels, starting with 0s."""
  counts, value, run = [], 0, 0
  for pixel in mask.flatten(order='F'):
    if pixel == value:
      run += 1
    else:
      counts.append(run)
      value, run = pixel, 1
  return {'counts': counts + [run], 'size': list(mask.shape)}


def _instances_fixture(coco_dir) -> dict:
  """Writes the images and an instances json of three images; returns the expected masks."""
  images = [(139, 20, 30), (285, 16, 24), (632, 8, 10)]  # id, height, width
  for image_id, height, width in images:
    os.makedirs(coco_dir / 'images' / 'val2017', exist_ok=True)
    Image.new('RGB', (width, height), (90, 30, 60)).save(
      coco_dir / 'images' / 'val2017' / f'{image_id:012d}.jpg'
    )
  crowd = np.zeros((20, 30), np.uint8)
  crowd[12:18, 15:28] = 1
  crowd[0:4, 25:30] = 1
  annotations = [  # image id, category id, segmentation, iscrowd
    (139, 1, [_rectangle(2, 3, 12, 10)], 0),
    (285, 44, [_rectangle(4, 2, 20, 14)], 0),
    (139, 3, [_rectangle(8, 5, 20, 15)], 0),  # over the person
    (139, 90, _uncompressed_rle(crowd), 1),  # over the car
    (139, 13, [_rectangle(0, 0, 5, 3), _rectangle(24, 14, 30, 20)], 0),  # over the crowd
    (285, 1, [_rectangle(0, 10, 6, 16)], 0),  # over the bottle
  ]
  instances = {
    'images': [
      {'id': i, 'file_name': f'{i:012d}.jpg', 'height': h, 'width': w} for i, h, w in images
    ],
    'annotations': [
      {'id': n, 'image_id': i, 'category_id': c, 'segmentation': s, 'iscrowd': crowd_flag}
      for n, (i, c, s, crowd_flag) in enumerate(annotations, 1)
    ],
    'categories': [{'id': i, 'name': CATEGORY_NAMES[i]} for i in (1, 3, 13, 44, 90)],
  }
  os.makedirs(coco_dir / 'annotations', exist_ok=True)
  (coco_dir / 'annotations' / 'instances_val2017.json').write_text(json.dumps(instances))

  def label(category_id):
    return datasets.COCO_OBJECT_CLASSES.index(CATEGORY_NAMES[category_id])

  first = np.zeros((20, 30), np.uint8)
  first[3:10, 2:12] = label(1)
  first[5:15, 8:20] = label(3)
  first[crowd == 1] = label(90)
  first[0:3, 0:5] = first[14:20, 24:30] = label(13)
  second = np.zeros((16, 24), np.uint8)
  second[2:14, 4:20] = label(44)
  second[10:16, 0:6] = label(1)
  return {'000000000139': first, '000000000285': second, '000000000632': np.zeros((8, 10))}


def test_from_instances_paints_annotations_in_file_order(tmp_path):
  coco_dir = tmp_path / 'coco'
  expected = _instances_fixture(coco_dir)
  assert expected['000000000139'][13, 16] == 80 and expected['000000000285'][12, 4] == 1
  assert coco_object.from_instances(str(coco_dir), workers=2, progress=False) == 3
  out_dir = coco_dir / 'annotations' / 'val2017'
  assert sorted(os.listdir(out_dir)) == [f'{i}_instanceTrainIds.png' for i in sorted(expected)]
  for stem, labels in expected.items():
    np.testing.assert_array_equal(_read(out_dir / f'{stem}_instanceTrainIds.png'), labels)
  dataset = datasets.open_dataset('coco_object', str(tmp_path))
  assert dataset.ids == tuple(sorted(expected))
  image, mask = dataset.load(0)
  assert image.shape == (20, 30, 3)
  np.testing.assert_array_equal(mask, expected['000000000139'])


def test_from_instances_takes_an_explicit_json(tmp_path):
  expected = _instances_fixture(tmp_path / 'elsewhere')
  json_path = tmp_path / 'elsewhere' / 'annotations' / 'instances_val2017.json'
  count = coco_object.from_instances(
    str(tmp_path / 'coco'), 'val2017', str(json_path), progress=False
  )
  assert count == 3
  mask = _read(tmp_path / 'coco' / 'annotations' / 'val2017' / '000000000285_instanceTrainIds.png')
  np.testing.assert_array_equal(mask, expected['000000000285'])


def test_from_instances_refuses_a_json_that_is_not_coco_instances(tmp_path):
  _instances_fixture(tmp_path)
  path = tmp_path / 'annotations' / 'instances_val2017.json'
  instances = json.loads(path.read_text())
  instances['categories'][1]['name'] = 'automobile'
  path.write_text(json.dumps(instances))
  with pytest.raises(coco_object.ConversionError, match="category 3 is 'automobile'"):
    coco_object.from_instances(str(tmp_path), progress=False)
  instances['categories'][1]['name'] = 'car'
  instances['annotations'][0]['category_id'] = 12
  path.write_text(json.dumps(instances))
  with pytest.raises(coco_object.ConversionError, match=r'category ids \[12\]'):
    coco_object.from_instances(str(tmp_path), progress=False)
  path.write_text('{"images": [')
  with pytest.raises(coco_object.ConversionError, match='not readable as JSON'):
    coco_object.from_instances(str(tmp_path), progress=False)


def test_missing_inputs_name_the_path(tmp_path):
  with pytest.raises(FileNotFoundError, match='instances_val2017.json not found'):
    coco_object.from_instances(str(tmp_path), progress=False)
  maps = os.path.join(tmp_path, 'annotations', 'val2017')
  with pytest.raises(FileNotFoundError, match=re.escape(f'{maps} not found; expected COCO-Stuff')):
    coco_object.from_stuffthingmaps(str(tmp_path), progress=False)
  os.makedirs(maps)
  with pytest.raises(FileNotFoundError, match=re.escape(f'no <id>.png maps in {maps}')):
    coco_object.from_stuffthingmaps(str(tmp_path), progress=False)


def test_cli_converts_and_summarises(tmp_path, capsys):
  _instances_fixture(tmp_path)
  assert coco_object.main(['--coco_dir', str(tmp_path), '--workers', '1']) == 0
  out_dir = os.path.join(tmp_path, 'annotations', 'val2017')
  assert capsys.readouterr().out == f'wrote 3 masks (*_instanceTrainIds.png) to {out_dir}\n'


def test_cli_on_a_missing_directory_exits_with_one_line(tmp_path):
  missing = tmp_path / 'no_coco'
  result = cli.run(
    'groupvit_jax.evaluators.coco_object', '--coco_dir', missing, '--source', 'stuffthingmaps'
  )
  assert result.returncode == 1 and result.stdout == ''
  assert result.stderr.strip().splitlines() == [
    f'error: {missing}/annotations/val2017 not found; expected COCO-Stuff 164k pixel maps '
    f'(stuffthingmaps_trainval2017.zip, its val2017/*.png) in {missing}/annotations/val2017'
  ]
