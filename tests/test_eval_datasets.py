"""Segmentation dataset readers on tiny fixtures written in the real on-disk layouts."""

import os

import numpy as np
import pytest
from PIL import Image

from groupvit_jax.evaluators import datasets


def _write(root, layout: datasets.Layout, ids, palette=False, size=(12, 8)):
  os.makedirs(os.path.join(root, layout.images), exist_ok=True)
  os.makedirs(os.path.join(root, layout.masks), exist_ok=True)
  masks = {}
  for n, i in enumerate(ids):
    Image.new('RGB', size, (10 * n, 20, 30)).save(
      os.path.join(root, layout.images, i + layout.image_suffix)
    )
    labels = np.full(size[::-1], n + 1, np.uint8)
    labels[0, :] = 255  # a boundary row, ignored
    labels[-1, :] = 0
    mask = Image.fromarray(labels, 'L')
    if palette:  # VOC's masks are palette PNGs whose indices are the labels
      mask = mask.convert('P')
      mask.putpalette([v for c in range(256) for v in (c, 255 - c, c // 2)])
    mask.save(os.path.join(root, layout.masks, i + layout.mask_suffix))
    masks[i] = labels
  if layout.split:
    os.makedirs(os.path.dirname(os.path.join(root, layout.split)), exist_ok=True)
    with open(os.path.join(root, layout.split), 'w') as f:
      f.write(''.join(f'{i}\n' for i in ids))
  return masks


@pytest.mark.parametrize(
  'name, palette', [('voc', True), ('context', False), ('coco_object', False)]
)
def test_readers_find_the_split_from_the_parent_or_the_root(tmp_path, name, palette):
  layout = datasets.LAYOUTS[name]
  root = tmp_path / layout.root
  ids = ['2007_000033', '2007_000042', '2008_000001']
  masks = _write(str(root), layout, ids, palette)
  for data_dir in (tmp_path, root, root.parent):
    dataset = datasets.open_dataset(name, str(data_dir))
    assert dataset.ids == tuple(sorted(ids)) and len(dataset) == 3
  image, mask = dataset.load(1)
  assert image.shape == (8, 12, 3) and image.dtype == np.uint8
  assert image[0, 0].tolist() == [10, 20, 30]
  np.testing.assert_array_equal(mask, masks[dataset.ids[1]])
  assert dataset.class_names[0] == 'background'


@pytest.mark.parametrize('name', ['voc', 'context', 'coco_object'])
def test_the_training_split_is_read_from_its_own_list_or_folder(tmp_path, name):
  for split, ids in (('val', ['v1', 'v2']), ('train', ['t1', 't2', 't3'])):
    layout = datasets.layout(name, split)
    _write(str(tmp_path / layout.root), layout, ids)
  assert datasets.open_dataset(name, str(tmp_path), 'train').ids == ('t1', 't2', 't3')
  assert datasets.open_dataset(name, str(tmp_path)).ids == ('v1', 'v2')
  assert datasets.layout(name, 'train').class_names == datasets.LAYOUTS[name].class_names


def test_class_names_and_thresholds_are_the_released_evaluations():
  assert len(datasets.VOC_CLASSES) == 21 and datasets.VOC_CLASSES[11] == 'table'
  assert datasets.VOC_CLASSES[16] == 'plant' and datasets.VOC_CLASSES[20] == 'monitor'
  assert len(datasets.CONTEXT_CLASSES) == 60 and len(set(datasets.CONTEXT_CLASSES)) == 60
  assert len(datasets.COCO_OBJECT_CLASSES) == 81 and datasets.COCO_OBJECT_CLASSES[1] == 'person'
  thresholds = {n: layout.background_threshold for n, layout in datasets.LAYOUTS.items()}
  assert thresholds == {'voc': 0.95, 'context': 0.35, 'coco_object': 0.95}


def test_a_missing_directory_is_named_with_the_expected_layout(tmp_path):
  layout = datasets.LAYOUTS['voc']
  _write(str(tmp_path / layout.root), layout, ['a'])
  os.remove(tmp_path / layout.root / layout.split)
  with pytest.raises(datasets.LayoutError) as error:
    datasets.open_dataset('voc', str(tmp_path))
  message = str(error.value)
  assert 'ImageSets/Segmentation/val.txt not found' in message
  assert 'VOCdevkit/VOC2012/{JPEGImages/*.jpg, SegmentationClass/*.png' in message


def test_a_partial_split_names_the_first_missing_file(tmp_path):
  layout = datasets.LAYOUTS['context']
  root = tmp_path / layout.root
  _write(str(root), layout, ['a', 'b', 'c'])
  os.remove(root / layout.masks / 'b.png')
  with pytest.raises(
    datasets.LayoutError, match=r'1 of the 6 .* \(first: .*SegmentationClassContext/b\.png\)'
  ):
    datasets.open_dataset('context', str(tmp_path))


def test_an_empty_directory_and_an_unknown_name(tmp_path):
  with pytest.raises(datasets.LayoutError, match='images/val2017'):
    datasets.open_dataset('coco_object', str(tmp_path))
  with pytest.raises(ValueError, match='ade20k'):
    datasets.open_dataset('ade20k', str(tmp_path))


def test_a_mask_of_another_size_is_an_error(tmp_path):
  layout = datasets.LAYOUTS['voc']
  root = tmp_path / layout.root
  _write(str(root), layout, ['a'])
  Image.new('L', (5, 5)).save(root / layout.masks / 'a.png')
  with pytest.raises(ValueError, match='5x5 but its image is 12x8'):
    datasets.open_dataset('voc', str(tmp_path)).load(0)
