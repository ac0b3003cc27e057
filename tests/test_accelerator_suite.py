"""bench/accelerator_suite.py: the tiny suite end to end on CPU (one subprocess), and the
largest-batch search on a made-up memory curve."""

import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, 'bench'))

import accelerator_suite as suite  # noqa: E402  (bench/)

ALLOWED_WITHOUT_RATE = {'not available', 'n/a'}


@pytest.fixture(scope='module')
def tiny_run(tmp_path_factory):
  out = tmp_path_factory.mktemp('suite') / 'x.json'
  env = dict(os.environ)
  # One CPU device, as on a machine of one chip (conftest asks for 8 for the sharding tests).
  env['XLA_FLAGS'] = ' '.join(
    f for f in env.get('XLA_FLAGS', '').split() if 'xla_force_host_platform_device_count' not in f
  )
  proc = subprocess.run(
    [sys.executable, os.path.join(REPO, 'bench', 'accelerator_suite.py'), '--tiny', '--out', out],
    capture_output=True,
    text=True,
    env=env,
    cwd=REPO,
    timeout=600,
  )
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  with open(out) as f:
    return json.load(f), proc.stdout


@pytest.mark.slow  # the tiny suite run takes 101 s in CI
def test_report_names_the_device_and_versions(tiny_run):
  report, _ = tiny_run
  assert report['device_kind'] == 'cpu'
  assert report['chip'] == 'cpu'
  assert report['peak_bf16_flops'] is None
  for name in ('jax', 'jaxlib', 'torch', 'transformers'):
    assert report['versions'][name][0].isdigit(), report['versions']
  assert report['setup']['trimmed_text_length'] == 16  # 16 of the tiny model's 32 tokens
  assert report['mode'] == 'tiny' and report['total_s'] > 0


@pytest.mark.slow  # the tiny suite run takes 101 s in CI
def test_every_case_ran(tiny_run):
  report, _ = tiny_run
  cases = report['cases']
  expected = [f'train/16/{lever}' for lever in suite.LEVERS]
  expected += ['peer/16', 'segmentation', 'max_batch/chunks=1', 'max_batch/chunks=4']
  assert sorted(cases) == sorted(expected)
  for name, record in cases.items():
    if record['status'] in ALLOWED_WITHOUT_RATE:
      continue
    assert record['status'] == 'ok', (name, record)
    assert record['samples_per_second'] > 0, (name, record)
  for lever in suite.LEVERS:
    record = cases[f'train/16/{lever}']
    assert record['mfu'] is None  # no peak for a CPU
    if record['status'] == 'ok':
      assert record['compile_s'] is not None and record['step_s'] > 0
  # A lever is "not available" exactly where this code lacks its config key; the memory search
  # has no limit to search against on CPU.
  in_code = report['setup']['levers_in_code']
  for lever, present in in_code.items():
    assert cases[f'train/16/{lever}']['status'] == ('ok' if present else 'not available')
  assert cases['max_batch/chunks=1']['status'] == 'n/a'
  if in_code['text_length_multiple']:
    assert cases['train/16/text_length_multiple']['levers']['text_length'] == 16
  if all(in_code.values()):
    assert cases['train/16/all']['levers'] == {
      'contrastive_chunks': 4,
      'remat': 'dots_saveable',
      'attention': 'auto',
      'text_length': 16,
      'host_round_trip': False,
    }


@pytest.mark.slow  # the tiny suite run takes 101 s in CI
def test_peer_and_segmentation_ratios(tiny_run):
  report, _ = tiny_run
  peer = report['cases']['peer/16']
  assert peer['mode'] == 'eager' and peer['precision'] == 'float32'
  for lever in ('baseline', 'all'):
    ours = report['cases'][f'train/16/{lever}']['samples_per_second']
    assert peer[f'ratio_{lever}'] == pytest.approx(ours / peer['samples_per_second'])
  seg = report['cases']['segmentation']
  assert seg['torch_images_per_second'] > 0 and seg['windows'] == 2
  assert seg['ratio'] == pytest.approx(
    seg['ours_images_per_second'] / seg['torch_images_per_second']
  )


@pytest.mark.slow  # the tiny suite run takes 101 s in CI
def test_table_is_printed(tiny_run):
  report, stdout = tiny_run
  lines = stdout.splitlines()
  header = next(i for i, line in enumerate(lines) if line.startswith('case '))
  assert 'samples/s' in lines[header] and 'MFU' in lines[header]
  rows = {line.split()[0] for line in lines[header + 2 :] if line.strip()}
  assert set(report['cases']) <= rows
  assert sum('elapsed' in line for line in lines) == len(report['cases'])  # progress lines


def test_search_finds_the_largest_fitting_batch():
  """Memory curves in bytes (state, per-sample activations, a quadratic logits term) like
  GroupViT-S's with 1 and 4 chunks and one more convex; the search must end on the largest
  multiple of 256 that fits, from no, one or two measured batches, one or four at a time."""
  curves = [
    lambda b: 1.2e9 + 2.0e8 * b + 30 * b**2,
    lambda b: 1.2e9 + 5.0e7 * b + 40 * b**2,
    lambda b: 3e7 + 1.5e5 * b + 20 * b**2,
  ]
  for memory in curves:
    for limit in (1e9, 1.6e9, 60e9, 105e9):
      truth = max((b for b in range(256, 65537, 256) if memory(b) <= limit), default=0)
      for seeds in ((), (256,), (256, 1024)):
        for width in (1, 4):
          known = {b: memory(b) for b in seeds}
          for _ in range(12):
            lo, hi = suite.search_bracket(known, limit)
            if (hi is not None and hi - lo <= 256) or lo == 65536:  # found, or the cap fits
              break
            picks = suite.search_candidates(known, limit, 256, width, 65536)
            assert 0 < len(picks) <= width
            assert all(b % 256 == 0 and b not in known for b in picks)
            known.update({b: memory(b) for b in picks})
          assert suite.search_bracket(known, limit)[0] == truth, (limit, seeds, width)


def test_peak_mapping_and_chip_names():
  assert suite.peak_flops('NVIDIA H200') == ('h200', 989e12)
  assert suite.peak_flops('NVIDIA H100 80GB HBM3')[0] == 'h100'
  assert suite.peak_flops('TPU v5 lite')[0] == 'tpu_v5e'
  assert suite.peak_flops('cpu') == (None, None)
  assert suite.peak_flops('NVIDIA H100 PCIe') == (None, None)  # a lower peak than the SXM's
  assert suite.slug('NVIDIA H100 80GB HBM3') == 'nvidia-h100-80gb-hbm3'


def test_peer_config_is_the_released_architecture():
  import transformers

  from configs import cc_yfcc_2stage

  kwargs = suite.hf_config_kwargs(cc_yfcc_2stage.get_model_config().to_dict())
  ours, default = transformers.GroupViTConfig(**kwargs), transformers.GroupViTConfig()
  for section in ('vision_config', 'text_config'):
    assert getattr(ours, section).to_dict() == getattr(default, section).to_dict()
  assert ours.projection_dim == default.projection_dim
  assert ours.projection_intermediate_dim == default.projection_intermediate_dim
