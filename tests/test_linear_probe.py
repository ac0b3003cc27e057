"""The linear probe (groupvit_jax.linear_probe): CLIP's protocol on a tiny class-folder dataset
whose colour tells the class, checked against scikit-learn run here on features computed here."""

import json
import os

import numpy as np
import pytest
from PIL import Image
from sklearn.linear_model import LogisticRegression
from test_finetune import VIT, save_tiny_checkpoint

import groupvit_jax
from groupvit_jax import linear_probe
from groupvit_jax.evaluators import zero_shot_classification as zsc

CLASS_COLOURS = {'amber': (200, 90, 60), 'cyan': (70, 190, 180), 'violet': (120, 70, 190)}


def write_class_folders(root, split: str, per_class: int, seed: int, classes=CLASS_COLOURS):
  """split/<class>/<i>.png: 40 x 36 images of the class colour, each shifted by its own
  random colour (so that classes overlap and C matters), with pixel noise. Returns the paths
  in reading order and their labels."""
  rng = np.random.default_rng(seed)
  paths, labels = [], []
  for label, (name, colour) in enumerate(sorted(classes.items())):
    os.makedirs(os.path.join(root, split, name))
    for i in range(per_class):
      shifted = np.asarray(colour) + rng.normal(0, 60, 3)
      pixels = shifted + rng.normal(0, 20, (36, 40, 3))
      path = os.path.join(root, split, name, f'{i:02d}.png')
      Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(path)
      paths.append(path)
      labels.append(label)
  return paths, np.asarray(labels)


@pytest.fixture(scope='module')
def probe(tmp_path_factory):
  """(data_dir, checkpoint, (train paths, labels), (val paths, labels))."""
  data_dir = str(tmp_path_factory.mktemp('folders'))
  train = write_class_folders(data_dir, 'train', 30, seed=0)
  val = write_class_folders(data_dir, 'val', 5, seed=1)
  ckpt = save_tiny_checkpoint(tmp_path_factory.mktemp('ckpt') / 'vit', 'vit', VIT)
  return data_dir, ckpt, train, val


@pytest.mark.parametrize('kind', ['pooled', 'embedding'])
def test_chosen_c_and_accuracy_match_sklearn(probe, tmp_path, capsys, kind):
  data_dir, ckpt, (train_paths, train_y), (val_paths, val_y) = probe
  json_path = tmp_path / 'probe.json'
  args = ['--checkpoint', ckpt, '--data_dir', data_dir, '--dataset', 'folders', '--features', kind]
  args += ['--holdout_fraction', '0.25', '--json', str(json_path), '--workers', '2']
  args += ['--batch_size', '128']  # the whole split in one model call
  assert linear_probe.main(args) == 0
  assert f'folders linear probe ({kind} features): top-1' in capsys.readouterr().out
  result = json.loads(json_path.read_text())
  assert (result['num_train'], result['num_holdout'], result['num_val']) == (90, 24, 15)
  assert result['features'] == kind and result['image_size'] == 32

  # Features here: shorter side 32 * 256 / 224 = 36.6 -> 37, centre 32 x 32; the pooled
  # features before the projection head, or the L2-normalised embedding after it.
  model = groupvit_jax.load(ckpt)
  encode = model.image_features if kind == 'pooled' else model.encode_image

  crops = [
    zsc.resize_centre_crop(np.asarray(Image.open(p)), 37, 32) for p in train_paths + val_paths
  ]
  features = encode(np.stack(crops))  # one call: one compilation
  train_x, val_x = features[: len(train_paths)], features[len(train_paths) :]
  fit, held = linear_probe.stratified_holdout(train_y, 0.25, seed=0)
  top1 = {}  # log10 C -> held-out accuracy
  for log10_c in [-6.0, -4.0, -2.0, 0.0, 2.0, 4.0, 6.0]:
    classifier = LogisticRegression(C=10.0**log10_c, max_iter=1000)
    top1[log10_c] = classifier.fit(train_x[fit], train_y[fit]).score(train_x[held], train_y[held])
  for step in (1.0, 0.5, 0.25):  # around the best so far (highest accuracy, then smaller C)
    best = max(top1, key=lambda k: (top1[k], -k))
    for log10_c in (best - step, best + step):
      if log10_c not in top1 and -6 <= log10_c <= 6:
        classifier = LogisticRegression(C=10.0**log10_c, max_iter=1000)
        top1[log10_c] = classifier.fit(train_x[fit], train_y[fit]).score(
          train_x[held], train_y[held]
        )
  best = max(top1, key=lambda k: (top1[k], -k))
  assert result['C'] == 10.0**best and result['holdout_top1'] == top1[best]
  assert len(set(top1.values())) > 1  # C mattered: the sweep was no tie throughout
  classifier = LogisticRegression(C=result['C'], max_iter=1000).fit(train_x, train_y)
  assert result['top1'] == pytest.approx(classifier.score(val_x, val_y), abs=1e-12)
  assert result['top1'] > 1 / 3 and result['top5'] == 1.0  # 3 classes: always in the top 5


def test_stratified_holdout_and_per_class_subset():
  labels = np.repeat([0, 1, 2, 3], [1, 2, 5, 10])
  fit, held = linear_probe.stratified_holdout(labels, 0.3, seed=0)
  assert np.array_equal(np.sort(np.concatenate([fit, held])), np.arange(18))
  # Per class: round(0.3 n), at least 1 and at most n - 1: 0 of 1, 1 of 2, 2 of 5, 3 of 10.
  assert np.bincount(labels[held], minlength=4).tolist() == [0, 1, 2, 3]
  again, _ = linear_probe.stratified_holdout(labels, 0.3, seed=0)
  other = [linear_probe.stratified_holdout(labels, 0.3, seed=s)[1] for s in range(1, 4)]
  assert np.array_equal(fit, again) and any(not np.array_equal(held, o) for o in other)
  kept = linear_probe.per_class_subset(labels, 3, seed=0)
  assert np.bincount(labels[kept], minlength=4).tolist() == [1, 2, 3, 3]
  assert np.array_equal(kept, np.unique(kept))  # sorted, no repeats
  assert np.array_equal(linear_probe.per_class_subset(labels, None, seed=0), np.arange(18))


def test_bad_input_is_one_line(probe, tmp_path, capsys):
  _, ckpt, _, _ = probe
  only_train, mismatched = str(tmp_path / 'only_train'), str(tmp_path / 'mismatched')
  write_class_folders(only_train, 'train', 2, seed=0)
  write_class_folders(mismatched, 'train', 2, seed=0)
  write_class_folders(mismatched, 'val', 1, seed=0, classes={'amber': (0, 0, 0), 'teal': (0, 0, 0)})
  cases = [
    (only_train, [], ['no class folders in', 'val']),
    (mismatched, [], ['train: cyan, violet;', 'val: teal']),
    (only_train, ['--holdout_fraction', '1.5'], ['holdout_fraction']),
  ]
  for data_dir, extra, words in cases:
    args = ['--checkpoint', ckpt, '--data_dir', data_dir, '--dataset', 'folders', *extra]
    assert linear_probe.main(args) == 1
    err = capsys.readouterr().err
    assert err.startswith('error: ') and err.count('\n') == 1, err
    assert all(word in err for word in words), err
