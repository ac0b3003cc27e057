"""Concept maps (supplement Fig. 1): which tokens and images each stage's grid shows, the tiles,
the PNG grid and the command's errors, on synthetic scenes with a tiny random model."""

import contextlib
import io
import json
import os

import numpy as np
import pytest
from PIL import Image
from test_eval_datasets import _write as write_segmentation_split

import groupvit_jax
from groupvit_jax import concepts, visualize
from groupvit_jax.evaluators import datasets
from input_pipeline import synthetic

import hf_reference as ref

NUM_SCENES, SIZE, TILE, IMAGES_PER_TOKEN = 6, 64, 40, 3
TOKENS_PER_STAGE = 8  # the command's default


@pytest.fixture(scope='module')
def tiny(tmp_path_factory):
  """(the tiny model's directory, the model loaded from it)."""
  directory = str(tmp_path_factory.mktemp('tiny'))
  ref.make_model(seed=1, **ref.TINY).save_pretrained(directory)
  return directory, groupvit_jax.load(directory)


@pytest.fixture(scope='module')
def scenes(tmp_path_factory):
  """A folder of synthetic scenes (and a text file the command must skip): (folder, {file
  name: image})."""
  folder = tmp_path_factory.mktemp('scenes')
  images = synthetic.batch(synthetic.SyntheticConfig(image_size=SIZE), 'heldout', range(NUM_SCENES))
  names = {f'scene{i}.png': image for i, image in enumerate(images['image'])}
  for name, image in names.items():
    Image.fromarray(image).save(folder / name)
  (folder / 'notes.txt').write_text('not an image')
  return str(folder), names


@pytest.fixture(scope='module')
def reference(tiny, scenes):
  """Each scene's group maps from the inference API, and per stage the share of each scene's
  pixels each token takes, counted here: (maps by name, [float [scenes, tokens]] per stage)."""
  _, model = tiny
  maps = {name: model.group_maps(image, SIZE) for name, image in scenes[1].items()}
  vision = ref.TINY['vision_config']
  sizes = [n for n, g in zip(vision['num_output_groups'], vision['num_group_tokens']) if g]
  areas = [
    np.array([[np.mean(maps[name][s] == t) for t in range(n)] for name in sorted(maps)])
    for s, n in enumerate(sizes)
  ]
  return maps, areas


@pytest.fixture(scope='module')
def command(tiny, scenes, tmp_path_factory):
  """The command run on the scenes: (output folder, concepts.json, stdout)."""
  out = str(tmp_path_factory.mktemp('concepts'))
  argv = ['--checkpoint', tiny[0], '--dataset', 'images', '--data_dir', scenes[0], '--out', out,
          '--short_side', SIZE, '--tile_size', TILE,
          '--images_per_token', IMAGES_PER_TOKEN]  # fmt: skip

  def load(path, dtype=None):
    # `tiny`'s model, loaded from that directory already: a second load would compile again.
    assert (path, dtype) == (tiny[0], None)
    return tiny[1]

  stdout = io.StringIO()
  with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(stdout):
    patch.setattr(groupvit_jax, 'load', load)
    assert concepts.main([str(a) for a in argv]) == 0
  with open(os.path.join(out, 'concepts.json')) as f:
    return out, json.load(f), stdout.getvalue().splitlines()


def _expected_choice(areas, names):
  """Per stage, [(token, [image names])] worked out here: the tokens of largest mean area
  (none that never appear), each with the images it fills most, largest first."""
  choice = []
  for stage_areas in areas:
    mean = stage_areas.mean(axis=0)
    tokens = sorted((t for t in range(len(mean)) if mean[t] > 0), key=lambda t: (-mean[t], t))
    rows = {
      t: sorted((i for i in range(len(names)) if stage_areas[i, t] > 0),
                key=lambda i: (-stage_areas[i, t], i))[:IMAGES_PER_TOKEN]
      for t in tokens[:TOKENS_PER_STAGE]
    }  # fmt: skip
    choice.append([(t, [names[i] for i in rows[t]]) for t in tokens[:TOKENS_PER_STAGE]])
  return choice


def test_tokens_and_images_are_those_the_group_maps_give(command, reference, scenes):
  _, result, printed = command
  _, areas = reference
  names = sorted(scenes[1])
  expected = _expected_choice(areas, names)
  assert [stage['stage'] for stage in result['stages']] == [1, 2]
  assert result['num_images'] == NUM_SCENES
  for stage, stage_areas, want in zip(result['stages'], areas, expected):
    got = [(t['token'], [image['id'] for image in t['images']]) for t in stage['tokens']]
    assert got == want
    for token in stage['tokens']:
      t = token['token']
      assert token['mean_area'] == pytest.approx(stage_areas[:, t].mean(), abs=1e-12)
      assert token['present_in'] == pytest.approx(np.mean(stage_areas[:, t] > 0))
      for image in token['images']:
        assert image['area'] == pytest.approx(stage_areas[names.index(image['id']), t])
  # Every pixel belongs to one token: a stage's areas add up to the whole image.
  np.testing.assert_allclose([a.sum(axis=1) for a in areas], 1.0)
  assert printed[0].startswith(f'stage 1: tokens {expected[0][0][0]} (')
  assert printed[-1].startswith('wrote ') and len(printed) == 3


def test_grouping_stages_are_read_from_the_model(tiny):
  vision = ref.TINY['vision_config']  # two stages with group tokens: [8, 4, 0]
  assert concepts.grouping_stages(tiny[1]) == ([8, 4], vision['patch_size'])


def test_named_tokens_are_drawn_in_their_order_stage_by_stage(reference):
  _, areas = reference
  chosen = concepts.choose_concepts(areas, {2: [3, 0], 1: [5]}, 8, 2)
  assert list(chosen) == [1, 2] and list(chosen[2]) == [3, 0] and list(chosen[1]) == [5]
  for stage, token, rows in [(s, t, r) for s in chosen for t, r in chosen[s].items()]:
    column = areas[stage - 1][:, token]
    assert rows == sorted(np.flatnonzero(column), key=lambda i: (-column[i], i))[:2]


def test_a_tile_keeps_exactly_the_tokens_pixels_and_dims_the_rest(reference, scenes):
  maps, _ = reference
  image = scenes[1]['scene0.png']
  brightness = image.astype(int).sum(-1)
  partial = 0
  for group_map in maps['scene0.png']:
    for token in np.unique(group_map):
      region = group_map == token
      tile = concepts.concept_tile(image, group_map, int(token), SIZE)
      kept = np.all(tile == image, axis=-1)
      assert tile.shape == (SIZE, SIZE, 3)
      # Black pixels look the same kept or dimmed; every other one is kept iff in the region.
      np.testing.assert_array_equal(kept | (brightness == 0), region | (brightness == 0))
      assert np.all(tile[~region].astype(int).sum(-1) < np.maximum(brightness[~region], 1))
      partial += not region.all()
  assert partial >= 3


def _find(sheet, tile):
  """The (y, x) of every place `sheet` holds exactly `tile`."""
  h, w = tile.shape[:2]
  ys, xs = np.nonzero(np.all(sheet == tile[0, 0], axis=-1))
  return [(y, x) for y, x in zip(ys, xs) if np.array_equal(sheet[y : y + h, x : x + w], tile)]


def test_each_stage_png_is_a_grid_of_the_chosen_tiles(command, reference, scenes):
  out, result, _ = command
  maps, _ = reference
  for stage in result['stages']:
    sheet = np.asarray(Image.open(os.path.join(out, f'stage{stage["stage"]}.png')).convert('RGB'))
    places = []
    for token in stage['tokens']:
      row = []
      for image in token['images']:
        group_map = maps[image['id']][stage['stage'] - 1]
        tile = concepts.concept_tile(scenes[1][image['id']], group_map, token['token'], TILE)
        found = _find(sheet, tile)
        assert len(found) == 1, (stage['stage'], token['token'], image['id'], found)
        row.append(found[0])
      places.append(row)
    assert len(places) == len(stage['tokens'])
    assert max(len(row) for row in places) == IMAGES_PER_TOKEN
    tops = [row[0][0] for row in places]
    assert all(len({y for y, _ in row}) == 1 for row in places)  # a row of tiles
    assert all(b - a >= TILE for a, b in zip(tops, tops[1:]))  # rows go down, never overlap
    columns = [[x for _, x in row] for row in places]
    assert all(b - a >= TILE for row in columns for a, b in zip(row, row[1:]))
    assert all(row == columns[0][: len(row)] for row in columns)  # columns line up


def test_titled_grid_places_tiles_in_rows_and_columns():
  colours = [[(200, 30, 30), (30, 200, 30), (30, 30, 200)], [(200, 200, 30)]]
  rows = [[np.full((12, 20, 3), c, np.uint8) for c in row] for row in colours]
  captions = [['a caption far wider than its tile', 'b', 'c'], ['d']]
  sheet = visualize.titled_grid(rows, ['first\nrow', 'second'], captions, (12, 20))
  corners = {}
  for c in colours[0] + colours[1]:
    ys, xs = np.nonzero(np.all(sheet == c, axis=-1))
    assert len(ys) == 12 * 20 and np.ptp(ys) == 11 and np.ptp(xs) == 19  # one whole tile
    corners[c] = (ys.min(), xs.min())
  top, lefts = corners[colours[0][0]][0], [corners[c][1] for c in colours[0]]
  assert {corners[c][0] for c in colours[0]} == {top} and lefts[0] < lefts[1] < lefts[2]
  second_top, second_left = corners[colours[1][0]]
  assert second_top >= top + 12 and second_left == lefts[0]
  assert np.any(sheet[top : top + 12, : lefts[0]] != 255)  # the row's title, left of it
  assert np.any(sheet[top + 12 : second_top, lefts[0] : lefts[0] + 20] != 255)  # a caption
  # The long caption is cut at its tile's edge; the short row's other places stay white.
  assert np.all(sheet[top:second_top, lefts[0] + 20 : lefts[1]] == 255)
  assert np.all(sheet[second_top:, second_left + 20 :] == 255)


def test_letterbox_keeps_the_aspect_ratio_on_white():
  tile = visualize.letterbox(np.full((10, 20, 3), (0, 0, 128), np.uint8), 40)
  blue = np.all(tile == (0, 0, 128), axis=-1)
  ys, xs = np.nonzero(blue)
  assert tile.shape == (40, 40, 3) and blue.sum() == 40 * 20
  assert (ys.min(), ys.max(), xs.min(), xs.max()) == (10, 29, 0, 39)
  assert np.all(tile[~blue] == 255)


@pytest.mark.parametrize(
  'h, w, short_side, expected',
  [
    (375, 500, 448, (448, 576)),  # 448 x 597.3 -> 597 -> 9.3 steps
    (333, 500, 448, (448, 704)),  # 448 x 672.7 -> 673 -> 10.5 steps
    (64, 64, 64, (64, 64)),
    (10, 1000, 448, (64, 2048)),  # the long side capped at 2048; at least one step
  ],
)
def test_input_size_scales_the_short_side_and_rounds_to_steps(h, w, short_side, expected):
  assert concepts.input_size(h, w, short_side, 64) == expected


def test_parse_tokens():
  assert concepts.parse_tokens('1:3,36;2:0,5') == {1: [3, 36], 2: [0, 5]}
  assert concepts.parse_tokens(' 2 : 7 ') == {2: [7]}
  for text in ('1', '1:', '1:a', 'x:1', '1:2;1:3', '1:2,2', '1:2;'):
    with pytest.raises(ValueError, match='--tokens'):
      concepts.parse_tokens(text)


def test_segmentation_datasets_are_read_from_their_split(tmp_path):
  layout = datasets.LAYOUTS['voc']
  ids = ['2007_000042', '2007_000033']
  write_segmentation_split(str(tmp_path / layout.root), layout, ids)
  found_ids, paths = concepts.list_images('voc', str(tmp_path))
  assert found_ids == ids and all(os.path.isfile(p) for p in paths)
  assert [os.path.basename(p) for p in paths] == [i + '.jpg' for i in ids]


@pytest.mark.parametrize(
  'change, message',
  [
    (['--tokens', '3:0'], 'stage 3, but the model has grouping stages 1 to 2'),
    (['--tokens', '1:2;2:4'], 'token 4 of stage 2, which has tokens 0 to 3'),
    (['--tokens', '1:-1'], 'token -1 of stage 1'),
    (['--tokens', '1-2'], "--tokens '1-2': expected STAGE:TOKEN"),
    (['--data_dir', 'MISSING'], 'missing is not a directory'),
    (['--data_dir', 'EMPTY'], 'holds no images'),
    (['--dataset', 'voc'], 'voc: '),
    (['--checkpoint', 'MISSING'], 'does not exist'),
  ],
)
def test_bad_input_is_one_line_error(change, message, tiny, scenes, tmp_path, capsys):
  folders = {'MISSING': str(tmp_path / 'missing'), 'EMPTY': str(tmp_path)}
  options = {'--checkpoint': tiny[0], '--dataset': 'images', '--data_dir': scenes[0],
             '--out': str(tmp_path / 'out')}  # fmt: skip
  options[change[0]] = folders.get(change[1], change[1])
  assert concepts.main([v for pair in options.items() for v in pair]) == 1
  stderr = capsys.readouterr().err
  assert stderr.count('\n') == 1 and stderr.startswith('error: ') and message in stderr, stderr
  assert not os.path.exists(tmp_path / 'out')
