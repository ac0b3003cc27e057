"""The evaluation command (with its extra metrics), ImageNet reading and classification, the
evaluator plug-ins in the trainer, and the demo: on tiny fixtures in the real layouts and a tiny
random model."""

import functools
import json
import os
import types

import jax
import numpy as np
import pytest
import torch
from PIL import Image
from tensorboard.backend.event_processing import event_accumulator
from test_boundary_miou import reference_miou as boundary_reference_miou
from test_eval_datasets import _write as write_segmentation_split

import groupvit_jax
from groupvit_jax import demo, evaluate, evaluators, segmentation, tokenizer
from groupvit_jax.evaluators import common, datasets, metrics, zero_shot_segmentation
from groupvit_jax.evaluators import zero_shot_classification as zsc
from groupvit_jax.evaluators.imagenet_classes import IMAGENET_CLASSES
from groupvit_jax.prompts import IMAGENET_TEMPLATES, SUBSET_TEMPLATES

import cli
import hf_reference as ref


@pytest.fixture(scope='module')
def tiny(tmp_path_factory):
  """(Hugging Face model, its directory, our loaded model)."""
  hf = ref.make_model(seed=1, **ref.TINY)
  directory = tmp_path_factory.mktemp('hf')
  hf.save_pretrained(directory)
  return hf, str(directory), groupvit_jax.load(str(directory))


@pytest.fixture(scope='module')
def voc(tmp_path_factory):
  """A VOC2012 layout with three 60 x 45 images: (data_dir, masks by id)."""
  data_dir = tmp_path_factory.mktemp('voc')
  root = data_dir / 'VOCdevkit' / 'VOC2012'
  masks = write_segmentation_split(
    str(root), datasets.LAYOUTS['voc'], ['2007_000033', '2007_000042', '2008_000001'], True,
    (60, 45),
  )  # fmt: skip
  return str(data_dir), masks


def write_imagenet(root, per_class=1, size=(40, 30)):
  """1000 class folders of small JPEGs whose colour encodes the class: labels by path."""
  labels = {}
  for label in range(1000):
    folder = os.path.join(root, f'n{1440764 + label:08d}')
    os.makedirs(folder)
    for k in range(per_class):
      path = os.path.join(folder, f'ILSVRC2012_val_{label * per_class + k:08d}.JPEG')
      Image.new('RGB', size, (label % 256, label // 256 * 60, 128)).save(path)
      labels[path] = label
  return labels


@pytest.fixture(scope='module')
def imagenet(tmp_path_factory):
  data_dir = tmp_path_factory.mktemp('imagenet')
  return str(data_dir), write_imagenet(str(data_dir / 'val'))


def test_imagenet_reader_orders_classes_by_folder_and_names_them(imagenet, tmp_path):
  data_dir, labels = imagenet
  for where in (data_dir, os.path.join(data_dir, 'val')):
    dataset = datasets.open_dataset('imagenet', where)
    assert len(dataset) == 1000 and dataset.root == os.path.join(data_dir, 'val')
  assert [labels[p] for p in dataset.images] == list(dataset.labels) == list(range(1000))
  assert dataset.class_names == IMAGENET_CLASSES
  assert IMAGENET_CLASSES[0] == 'tench' and IMAGENET_CLASSES[-1] == 'toilet paper'
  assert IMAGENET_CLASSES.count('missile') == 2 and len(IMAGENET_CLASSES) == 1000
  image, label = dataset.load(3)
  assert image.shape == (30, 40, 3) and label == 3
  assert dataset.ids[3] == 'n01440767/ILSVRC2012_val_00000003'

  partial = tmp_path / 'partial'
  write_imagenet(str(partial), size=(4, 4))
  os.rename(partial / 'n01440764', partial / 'not_a_class')
  with pytest.raises(datasets.LayoutError, match='999 class folders, expected 1000'):
    datasets.open_dataset('imagenet', str(partial))
  with pytest.raises(datasets.LayoutError, match='no class folders'):
    datasets.open_dataset('imagenet', str(tmp_path / 'nowhere'))


def test_resize_centre_crop_is_torchvisions_resize_256_centre_crop_224():
  image = np.random.default_rng(0).integers(0, 256, (300, 500, 3), dtype=np.uint8)
  # Shorter side 300 -> 256, longer 500 -> int(256 * 500 / 300) = 426; crop offsets
  # round((256 - 224) / 2) = 16 and round((426 - 224) / 2) = 101.
  resized = np.asarray(Image.fromarray(image).resize((426, 256), Image.BILINEAR))
  np.testing.assert_array_equal(zsc.resize_centre_crop(image), resized[16:240, 101:325])
  tall = image.transpose(1, 0, 2)  # 500 x 300: the width is the shorter side
  resized = np.asarray(Image.fromarray(tall).resize((256, 426), Image.BILINEAR))
  np.testing.assert_array_equal(zsc.resize_centre_crop(tall), resized[101:325, 16:240])
  exact = image[:256, :256]  # already 256: cropped, not resampled
  np.testing.assert_array_equal(zsc.resize_centre_crop(exact), exact[16:240, 16:240])


def test_top_k_and_templates_are_the_released_ones():
  sims = np.array([[0.1, 0.9, 0.3, 0.8, 0.2, 0.7, 0.0], [0.5, 0.5, 0.1, 0.1, 0.1, 0.1, 0.9]])
  np.testing.assert_array_equal(zsc.top_k_correct(sims, np.array([1, 0]), 1), [True, False])
  np.testing.assert_array_equal(zsc.top_k_correct(sims, np.array([4, 0]), 5), [True, True])
  np.testing.assert_array_equal(zsc.top_k_correct(sims, np.array([6, 6]), 5), [False, True])
  # CLIP's seven, except the second (GroupViT's code has 'a bad photo of a {}.').
  assert len(SUBSET_TEMPLATES) == 7 and set(SUBSET_TEMPLATES) <= set(IMAGENET_TEMPLATES)
  assert SUBSET_TEMPLATES[1] == 'a bad photo of a {}.'


def test_imagenet_evaluation_against_pytorch_and_predictions_file(tiny, imagenet, tmp_path):
  hf, directory, model = tiny
  data_dir, _ = imagenet
  result = evaluate.run(
    directory, 'imagenet', data_dir, str(tmp_path / 'r.json'), str(tmp_path / 'pred'), 40
  )
  dataset = datasets.open_dataset('imagenet', data_dir)
  indices = datasets.subset(len(dataset), 40)
  assert len(indices) == 40 and len({dataset.labels[i] for i in indices}) == 40  # spread

  # Independently: PyTorch embeddings of the same crops against PyTorch class embeddings.
  crops = np.stack([zsc.resize_centre_crop(dataset.load(i)[0]) for i in indices])
  texts = [t.format(n) for n in IMAGENET_CLASSES for t in SUBSET_TEMPLATES]
  with torch.no_grad():
    ids = torch.from_numpy(tokenizer.tokenize(texts, 77).astype(np.int64))
    text = torch.cat([hf.get_text_features(input_ids=c).pooler_output for c in ids.split(1000)])
    text = text.reshape(1000, 7, -1).mean(1)
    embeddings = hf.vision_model.embeddings
    forward = embeddings.forward  # 224 px on a 64 px model: interpolate its positions
    embeddings.forward = functools.partial(forward, interpolate_pos_encoding=True)
    try:
      pooled = hf.vision_model(pixel_values=ref.pixel_values(crops)).pooler_output
    finally:
      embeddings.forward = forward
    image = hf.visual_projection(pooled)
  sims = (
    torch.nn.functional.normalize(image, dim=-1) @ torch.nn.functional.normalize(text, dim=-1).T
  )
  labels = np.array([dataset.labels[i] for i in indices])
  ranks = np.argsort(-sims.numpy(), axis=1, kind='stable')
  want_top1 = float((ranks[:, 0] == labels).mean())
  want_top5 = float((ranks[:, :5] == labels[:, None]).any(1).mean())
  assert result['top1'] == pytest.approx(want_top1) and result['top5'] == pytest.approx(want_top5)
  assert result['num_images'] == 40

  saved = json.load(open(tmp_path / 'r.json'))
  assert saved['top1'] == result['top1'] and saved['dataset'] == 'imagenet'
  rows = [
    line.split('\t') for line in open(tmp_path / 'pred' / 'predictions.tsv').read().splitlines()
  ]
  assert len(rows) == 40 and rows[0][0] == dataset.ids[indices[0]]
  assert [int(r[1]) for r in rows] == ranks[:, 0].tolist()
  assert all(r[2] == IMAGENET_CLASSES[int(r[1])] for r in rows)


def oracle_labels(groups: np.ndarray, truth: np.ndarray, num_classes: int) -> np.ndarray:
  """Each group's pixels labelled with its most frequent non-ignored true class (the lowest of
  a tie; 0 for a group of ignored pixels only)."""
  labels = np.zeros_like(groups)
  for g in np.unique(groups):
    votes = truth[(groups == g) & (truth != 255)]
    labels[groups == g] = np.bincount(votes, minlength=num_classes).argmax() if votes.size else 0
  return labels


def test_segmentation_command_writes_json_label_pngs_and_extra_metrics(
  tiny, voc, tmp_path, monkeypatch, capsys
):
  _, directory, model = tiny
  data_dir, masks = voc
  out = tmp_path / 'voc.json'
  # The tiny model is a GroupViT, whose groups are its own: a stand-in Segmenter records the
  # grouping flags and segments as the real one does without them.
  recorded = {}

  def segmenter_without_grouping(*args, grouping: str | None, num_groups: int, **kwargs):
    recorded.update(grouping=grouping, num_groups=num_groups)
    return segmentation.Segmenter(*args, **kwargs)

  monkeypatch.setattr(zero_shot_segmentation, 'Segmenter', segmenter_without_grouping)
  # The fixture's copy of the checkpoint, whose encoders compile once for the command and the
  # checks below (the ImageNet test covers loading).
  loaded = []
  monkeypatch.setattr(groupvit_jax, 'load', lambda path, dtype: loaded.append(path) or model)
  args = ['--checkpoint', directory, '--dataset', 'voc', '--data_dir', data_dir, '--json',
          str(out), '--save_predictions', str(tmp_path / 'pred'), '--metrics',
          'boundary,oracle,mask_probing', '--grouping', 'kmeans', '--num_groups', '3']  # fmt: skip
  assert evaluate.main(args) == 0
  saved = json.load(open(out))
  assert {'miou', 'macc', 'aacc', 'per_class', 'per_class_acc', 'images_per_second'} <= set(saved)
  assert len(saved['per_class']) == 21 and saved['num_images'] == 3
  assert recorded == {'grouping': 'kmeans', 'num_groups': 3} and loaded == [directory]
  assert saved['grouping'] == 'kmeans' and saved['num_groups'] == 3

  # The saved label maps are the segmenter's, and re-scoring them gives the JSON's numbers.
  dataset = datasets.open_dataset('voc', data_dir)
  segmenter = segmentation.Segmenter(model, datasets.VOC_CLASSES[1:], 0.95)
  conf, oracle_conf, pairs, jaccards = 0, 0, [], []
  for i, key in enumerate(dataset.ids):
    with Image.open(tmp_path / 'pred' / f'{key}.png') as png:
      assert png.mode == 'P'
      labels = np.asarray(png)
    image, truth = dataset.load(i)
    np.testing.assert_array_equal(labels, segmenter(image))
    conf = conf + metrics.confusion_matrix(labels, masks[key], 21)
    pairs.append((masks[key], labels))
    # The oracle and mask probing from the final groups at the protocol's shorter side.
    groups = model.group_maps(image, 448)[-1]
    oracle = oracle_labels(groups, truth, 21)
    oracle_conf = oracle_conf + metrics.confusion_matrix(oracle, truth, 21)
    valid = truth != 255
    foreground = valid & (truth != 0)
    jaccards.append(
      max(
        ((groups == g) & foreground).sum() / (((groups == g) | foreground) & valid).sum()
        for g in np.unique(groups)
      )
    )
  assert saved['miou'] == pytest.approx(
    metrics.segmentation_metrics(conf, dataset.class_names)['miou']
  )
  assert saved['boundary_miou'] == pytest.approx(boundary_reference_miou(pairs, 21))
  assert saved['oracle_miou'] == pytest.approx(
    metrics.segmentation_metrics(oracle_conf, dataset.class_names)['miou']
  )
  assert saved['mask_probing_jaccard'] == pytest.approx(np.mean(jaccards))
  assert saved['mask_probing_images'] == 3  # every image has foreground
  assert saved['per_class']['boat'] is None  # absent everywhere: NaN in mmseg, null in JSON
  text = capsys.readouterr().out
  assert 'monitor' in text
  means = text.splitlines()[-2]  # then the timing line
  assert means.startswith('voc: mIoU') and 'boundary mIoU' in means and 'oracle mIoU' in means
  assert means.endswith(f'mask probing Jaccard {100 * np.mean(jaccards):5.2f} (3 images)')


def test_command_line_errors_are_one_line(tmp_path, capsys):
  process = cli.run(
    'groupvit_jax.evaluate', '--checkpoint', str(tmp_path), '--dataset', 'voc',
    '--data_dir', str(tmp_path / 'missing'),
  )  # fmt: skip
  assert process.returncode == 1
  assert process.stderr.strip().splitlines()[-1].startswith('error: voc:')
  assert 'VOCdevkit/VOC2012' in process.stderr and 'Traceback' not in process.stderr
  for flag in ('--max_examples', '--batch_size', '--workers', '--num_groups'):
    with pytest.raises(SystemExit) as exit_info:
      evaluate.main(['--checkpoint', 'c', '--dataset', 'voc', '--data_dir', 'd', flag, '0'])
    assert exit_info.value.code == 2  # argparse's usage error, before anything loads
    assert f'{flag}: 0 is not a positive whole number' in capsys.readouterr().err
  with pytest.raises(SystemExit):
    evaluate.main(['--checkpoint', 'c', '--dataset', 'voc', '--data_dir', 'd', '--grouping', 'x'])
  assert "invalid choice: 'x'" in capsys.readouterr().err

  # --metrics: checked before anything loads, one line naming the choices.
  usage = ['--checkpoint', 'c', '--data_dir', 'd', '--dataset']
  assert evaluate.main(usage + ['voc', '--metrics', 'boundary,edges']) == 1
  want = "error: unknown metric 'edges': choose from boundary, oracle, mask_probing\n"
  assert capsys.readouterr().err == want
  assert evaluate.main(usage + ['imagenet', '--metrics', 'oracle']) == 1
  want = 'error: --metrics and --grouping are for segmentation datasets, not imagenet\n'
  assert capsys.readouterr().err == want
  assert metrics.extra_metric_names(' oracle,boundary, oracle') == ('oracle', 'boundary')
  assert metrics.extra_metric_names(None) == metrics.extra_metric_names('') == ()
  assert metrics.extra_metric_names(['mask_probing']) == ('mask_probing',)


def test_trainer_evaluation_runs_the_plug_ins_and_writes_pictures(tiny, voc, tmp_path):
  from groupvit_jax.training import train  # pylint: disable=g-import-not-at-top

  _, _, model = tiny
  data_dir, _ = voc
  evals = evaluators.create(
    {
      'voc': dict(
        type='zero_shot_segmentation', dataset='voc', data_dir=data_dir, max_examples=2,
        num_pictures=1, short_side=64, window=64, stride=32,
        metrics='boundary,oracle,mask_probing',
      )
    }
  )  # fmt: skip
  state = types.SimpleNamespace(
    params=model.variables['params'], batch_stats=model.variables['batch_stats']
  )
  logged, images = {}, {}
  writer = types.SimpleNamespace(
    write_scalars=lambda step, scalars: logged.update(scalars),
    write_images=lambda step, pictures: images.update({(step, k): v for k, v in pictures.items()}),
  )
  evaluate = train.PeriodicEvaluation(evals, model.config)
  evaluate(state, 7, writer, str(tmp_path))
  assert {'voc_miou', 'voc_macc', 'voc_aacc', 'voc_iou_monitor'} <= set(logged)
  assert 0 <= logged['voc_miou'] <= 1
  for key in ('voc_boundary_miou', 'voc_oracle_miou', 'voc_mask_probing_jaccard'):
    assert 0 <= logged[key] <= 1
  assert logged['voc_mask_probing_images'] == 2
  pictures = tmp_path / 'pictures' / 'voc' / 'step_7'
  assert [p.name for p in pictures.iterdir()] == ['2007_000033.png']
  # The same picture goes to TensorBoard, as a batch of one.
  assert list(images) == [(7, 'voc/2007_000033')]
  with Image.open(pictures / '2007_000033.png') as png:
    np.testing.assert_array_equal(images[7, 'voc/2007_000033'], np.asarray(png)[None])

  # The next evaluation, on other weights of the same shapes, compiles nothing.
  state = types.SimpleNamespace(
    params=jax.tree.map(lambda p: np.asarray(p) * 1.01, state.params),
    batch_stats=state.batch_stats,
  )
  first, compiles = dict(logged), []

  def count(event, seconds, **_):
    if event == '/jax/core/compile/backend_compile_duration':
      compiles.append(seconds)

  jax.monitoring.register_event_duration_secs_listener(count)
  try:
    evaluate(state, 8, writer, str(tmp_path))
  finally:
    jax.monitoring.unregister_event_duration_listener(count)
  assert not compiles, f'{len(compiles)} compilations in the second evaluation'
  assert logged.keys() == first.keys()
  with pytest.raises(datasets.LayoutError, match='VOCdevkit'):
    evaluators.create({'voc': dict(type='zero_shot_segmentation', dataset='voc', data_dir='/no')})


def test_synthetic_evaluator_reports_the_oracle_miou_of_the_final_groups(tiny):
  from input_pipeline import synthetic  # pylint: disable=g-import-not-at-top

  _, _, model = tiny
  evaluator = evaluators.create(
    {'synthetic': dict(type='synthetic_segmentation', image_size=64, num_examples=3)}
  )['synthetic']
  scores = evaluator.run(model)
  # Independently: each scene's final groups at its own size, labelled by the majority.
  num_classes, conf = len(synthetic.CLASS_NAMES), 0
  for image, truth in zip(evaluator.images, evaluator.masks):
    labels = oracle_labels(model.group_maps(image, None)[-1], truth, num_classes)
    conf = conf + metrics.confusion_matrix(labels, truth, num_classes)
  want = metrics.segmentation_metrics(conf, synthetic.CLASS_NAMES)['miou']
  assert scores['oracle_miou'] == pytest.approx(want) and 0 <= scores['miou'] <= 1


def test_synthetic_evaluator_draws_its_scenes_from_the_world_its_config_names():
  from input_pipeline import synthetic  # pylint: disable=g-import-not-at-top

  world = dict(
    min_objects=2,
    max_objects=2,
    min_area=0.1,
    max_area=0.3,
    min_visible=0.08,
    shape_colours=True,
    textures=False,
  )
  evaluator = evaluators.create(
    {'synthetic': dict(type='synthetic_segmentation', image_size=48, num_examples=40, **world)}
  )['synthetic']
  want = synthetic.batch(synthetic.SyntheticConfig(image_size=48, **world), 'heldout', range(40))
  np.testing.assert_array_equal(evaluator.images, want['image'])
  np.testing.assert_array_equal(evaluator.masks, want['mask'])
  assert all(len(np.unique(m)) == 3 for m in evaluator.masks)  # background and two shapes


@pytest.mark.slow
def test_trainer_runs_the_dataset_evaluators_periodically(voc, tmp_path):
  import tiny_train_config  # pylint: disable=g-import-not-at-top

  from groupvit_jax.training import train  # pylint: disable=g-import-not-at-top

  data_dir, _ = voc
  config = tiny_train_config.get_config()
  config.total_steps, config.eval_every_steps, config.checkpoint_every_steps = 2, 1, 2
  config.optimizer.warmup_steps = 1
  config.evals = {
    'voc': dict(
      type='zero_shot_segmentation', dataset='voc', data_dir=data_dir, max_examples=2,
      num_pictures=1, short_side=32, window=32, stride=16,
    )
  }  # fmt: skip
  train.train_and_evaluate(config, str(tmp_path))
  rows = [json.loads(line) for line in open(tmp_path / 'metrics.jsonl')]
  evaluated = [row['step'] for row in rows if 'voc_miou' in row]
  assert evaluated == [1, 2]
  assert all(0 <= row['voc_miou'] <= 1 for row in rows if 'voc_miou' in row)
  # Pictures at every evaluation: PNGs in pictures/ and images in TensorBoard.
  pictures = tmp_path / 'pictures' / 'voc'
  assert sorted(p.name for p in pictures.iterdir()) == ['step_1', 'step_2']
  assert [p.name for p in (pictures / 'step_2').iterdir()] == ['2007_000033.png']
  loader = event_accumulator.EventAccumulator(str(tmp_path / 'tensorboard'))
  loader.Reload()
  assert [e.step for e in loader.Images('voc/2007_000033')] == [1, 2]


def test_demo_writes_the_picture_and_rejects_bad_input(tiny, tmp_path):
  _, directory, _ = tiny
  image = np.zeros((48, 64, 3), np.uint8)
  image[:, 32:] = (200, 180, 40)
  Image.fromarray(image).save(tmp_path / 'in.png')
  args = ['--checkpoint', directory, '--image', str(tmp_path / 'in.png'), '--labels',
          'cat, dog,grass', '--output', str(tmp_path / 'out.png')]  # fmt: skip
  assert demo.main(args) == 0  # the command line, in this process (saves a jax start-up)
  with Image.open(tmp_path / 'out.png') as picture:
    width, height = picture.size
  assert width > 3 * 64 and height > 48  # overlay and two stages' groups, titles and legend

  assert demo.parse_labels(' cat,dog , grass') == ['cat', 'dog', 'grass']
  with pytest.raises(ValueError, match='empty name'):
    demo.parse_labels('cat,,dog')
  with pytest.raises(ValueError, match='twice'):
    demo.parse_labels('cat,cat')
  (tmp_path / 'bad.jpg').write_bytes(b'\xff\xd8 not really a jpeg')
  with pytest.raises(ValueError, match='bad.jpg: not a readable image'):
    demo.load_image(str(tmp_path / 'bad.jpg'))
  with pytest.raises(FileNotFoundError):
    demo.load_image(str(tmp_path / 'missing.jpg'))


def test_prefetch_keeps_order_and_subset_spreads():
  assert list(datasets.prefetch(lambda i: i * i, range(50), workers=3)) == [
    i * i for i in range(50)
  ]
  assert datasets.subset(10, None) == list(range(10)) and datasets.subset(10, 20) == list(range(10))
  assert datasets.subset(10, 4) == [0, 3, 6, 9]


@pytest.mark.parametrize('processes', [2, 3])
def test_processes_split_the_split_and_their_sums_equal_one_process(
  tiny, voc, imagenet, monkeypatch, processes
):
  """Each of N (simulated) processes evaluates its share of the split; the counts summed over
  processes give exactly one process's result over the whole split."""
  _, _, model = tiny
  segment = evaluators.create(
    {'voc': dict(type='zero_shot_segmentation', dataset='voc', data_dir=voc[0], short_side=64,
                 window=64, stride=32)}
  )['voc']  # fmt: skip
  classify = evaluators.create(
    {'imagenet': dict(type='zero_shot_classification', data_dir=imagenet[0], max_examples=7)}
  )['imagenet']
  whole = {'voc': segment.evaluate(model), 'imagenet': classify.evaluate(model)}

  shares = {'voc': [], 'imagenet': []}
  for index in range(processes):
    monkeypatch.setattr(common.jax, 'process_index', lambda index=index: index)
    monkeypatch.setattr(common.jax, 'process_count', lambda: processes)
    for name, evaluator in (('voc', segment), ('imagenet', classify)):
      seen = []
      # The collective sum is where processes meet: here each keeps (and returns) its own.
      monkeypatch.setattr(common, 'process_sum', lambda c, seen=seen: seen.append(c) or c)
      evaluator.evaluate(model)
      shares[name].append(seen[0])
  np.testing.assert_array_equal(sum(shares['voc']), whole['voc']['confusion_matrix'])
  correct1, correct5, total = sum(shares['imagenet'])
  assert total == whole['imagenet']['num_images'] == 7
  assert correct1 / total == whole['imagenet']['top1']
  assert correct5 / total == whole['imagenet']['top5']
  # Every process got images to work on (the split is shared, not repeated).
  assert all(share.sum() > 0 for share in shares['voc'])
