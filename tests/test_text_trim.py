"""Texts cut to the batch's longest caption (config.text_length_multiple) change nothing: the
same text embeddings, losses and gradients as at the full context length."""

import functools
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest
import tiny_train_config

from groupvit_jax.models.groupvit import GroupViT
from groupvit_jax.training import config_checks, optimizer, sharding, text_trim, train
from groupvit_jax.weights import checkpoint

import cli
import hf_reference as ref

EOT, SOT = 49407, 49406
CONTEXT = 77


def rows_ending_at(ends, context=CONTEXT, seed=0):
  """int32 [len(ends), context]: SOT, random ids, EOT at position `end`, zeros after."""
  rng = np.random.default_rng(seed)
  tokens = np.zeros((len(ends), context), np.int32)
  for i, end in enumerate(ends):
    tokens[i, 0] = SOT
    tokens[i, 1:end] = rng.integers(1, SOT, end - 1)
    tokens[i, end] = EOT
  return tokens


def tiny_model_config(**text):
  """tests/tiny_train_config.py's model, its text tower at CLIP's context of 77 (and 2 blocks,
  so that a position attends to positions that attended before)."""
  model = tiny_train_config.get_config().model.to_dict()
  model['text'] = dict(model['text'], context_length=CONTEXT, depth=2, **text)
  return model


def test_buckets_of_hand_made_token_rows():
  assert text_trim.bucket_lengths(16, 77) == [16, 32, 48, 64, 77]
  assert text_trim.bucket_lengths(16, 32) == [16, 32]
  assert text_trim.bucket_lengths(0, 77) == [77]
  assert [text_trim.bucket_length(n, 16, 77) for n in (1, 15, 16, 17, 64, 65, 77)] == [
    16,
    16,
    16,
    32,
    64,
    77,
    77,
  ]
  assert text_trim.text_length(rows_ending_at([3, 15, 9])) == 16  # EOT at 15: 16 tokens
  # A caption cut at the context keeps EOT in its last slot (the tokenizer's rule).
  assert text_trim.text_length(rows_ending_at([76, 4])) == 77

  trim = text_trim.TextTrimmer(16)
  # [b, 1 + K, L]: caption, then K prompts; a prompt may be the longest text.
  batch = {
    'image': np.zeros((2, 4, 4, 3), np.uint8),
    'text': rows_ending_at([5, 7, 6, 4, 9, 20, 3, 2]).reshape(2, 4, CONTEXT),
  }
  cut = trim(batch, step=0)
  assert cut['text'].shape == (2, 4, 32)  # the prompt ending at 20: 21 tokens -> 32
  np.testing.assert_array_equal(cut['text'], batch['text'][..., :32])
  assert cut['image'] is batch['image']
  for ends, length in (([15, 3, 3, 3], 16), ([16, 3, 3, 3], 32), ([47, 3, 3, 3], 48)):
    tokens = rows_ending_at(ends).reshape(1, 4, CONTEXT)
    assert trim({'text': tokens}, step=1)['text'].shape[-1] == length
  full = {'text': rows_ending_at([76, 3, 3, 3]).reshape(1, 4, CONTEXT)}
  assert trim(full, step=2) is full
  assert trim.lengths == {16, 32, 48, 77}
  assert text_trim.TextTrimmer(0)(batch, step=0) is batch  # 0: never cut


def test_cut_texts_embed_as_the_full_ones():
  model = checkpoint.build_model(tiny_model_config())
  # The longest ends at 15, the last position kept at 16 tokens; others end anywhere before.
  tokens = rows_ending_at([15, 1, 7, 14, 15, 3, 10, 12])
  init = jax.jit(functools.partial(model.init, method=GroupViT.encode_text))  # the text side
  variables = init(jax.random.key(0), tokens)
  encode = jax.jit(lambda tokens: model.apply(variables, tokens, method=GroupViT.encode_text))
  length = text_trim.bucket_length(text_trim.text_length(tokens), 16, CONTEXT)
  assert length == 16
  full = np.asarray(encode(tokens))
  cut = np.asarray(encode(tokens[:, :length]))
  assert full.dtype == np.float32
  np.testing.assert_allclose(cut, full, rtol=0, atol=2e-6)
  # And at another length.
  for end in (40,):
    tokens = rows_ending_at([end, 2, end - 1, 5], seed=end)
    length = text_trim.bucket_length(end + 1, 16, CONTEXT)
    np.testing.assert_allclose(
      np.asarray(encode(tokens[:, :length])), np.asarray(encode(tokens)), rtol=0, atol=2e-6
    )


def relative_l2(a, b):
  diff = sum(np.sum((x - y) ** 2) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))
  return np.sqrt(diff / sum(np.sum(y**2) for y in jax.tree.leaves(b)))


@pytest.mark.skipif(len(jax.devices()) < 8, reason='needs 8 (virtual) devices')
def test_cut_texts_give_the_train_steps_losses_and_gradients():
  config = tiny_train_config.get_config()
  model = checkpoint.build_model(tiny_model_config())
  schedule = optimizer.schedule_from_config(
    config.optimizer, batch_size=16, warmup_steps=2, total_steps=10
  )
  opt = optimizer.make_optimizer(config.optimizer, schedule)
  state = jax.jit(functools.partial(train.create_train_state, model, opt, 0))()
  mesh = sharding.make_mesh({'data': 8, 'fsdp': 1}, jax.devices()[:8])
  state = jax.device_put(state, train.state_shardings(mesh, state))
  grads_fn = jax.jit(functools.partial(train.loss_and_grads, model, mesh))

  rng = np.random.default_rng(0)
  ends = rng.integers(1, 30, 16 * 4)
  ends[5] = 31  # one caption fills the 32 tokens kept
  tokens = rows_ending_at(ends).reshape(16, 4, CONTEXT)
  batch = {'image': ref.random_images(0, 16, 32, 32), 'text': tokens}
  cut = text_trim.TextTrimmer(16)(batch, step=0)
  assert cut['text'].shape == (16, 4, 32)

  def run(b):
    return jax.device_get(grads_fn(state, jax.device_put(b, sharding.batch_sharding(mesh))))

  (metrics, stats, grads), (cut_metrics, cut_stats, cut_grads) = run(batch), run(cut)
  assert np.isfinite(metrics['loss'])
  for key in ('loss', 'loss_image_text', 'loss_multi_label'):
    np.testing.assert_allclose(cut_metrics[key], metrics[key], rtol=1e-6)
  # Float32 noise: the text tower's matmuls and softmaxes run over other lengths, so its sums
  # are blocked differently (merely reordering the batch gives about 6e-5 on this model, see
  # tests/test_train_step.py).
  assert relative_l2(cut_grads, grads) < 3e-5, relative_l2(cut_grads, grads)
  # Positions past every text get no gradient either way.
  pos = grads['text_encoder']['positional_embedding']
  assert not np.any(pos[32:])
  close = functools.partial(np.testing.assert_allclose, rtol=1e-5, atol=1e-6)
  jax.tree.map(close, cut_stats, stats)


@pytest.mark.parametrize('value', [-1, 2.5, True, '16'])
def test_config_rejects_a_bad_text_length_multiple(value):
  config = tiny_train_config.get_config().to_dict()  # a ConfigDict would refuse the type
  config['text_length_multiple'] = value
  with pytest.raises(config_checks.ConfigError, match=r'config\.text_length_multiple must be'):
    config_checks.check(config)


def test_config_takes_zero_or_a_positive_multiple_or_none_at_all():
  from configs import cc_1stage, cc_redcaps_2stage, cc_yfcc_2stage  # pylint: disable=g-import-not-at-top

  for module in (cc_1stage, cc_redcaps_2stage, cc_yfcc_2stage):
    assert module.get_config().text_length_multiple == 16
  config = tiny_train_config.get_config()
  assert config.text_length_multiple == 16
  for value in (0, 8):
    config.text_length_multiple = value
    config_checks.check(config)
  del config['text_length_multiple']
  config_checks.check(config)


_TWO_PROCESSES = """
import sys
import jax
import numpy as np
from groupvit_jax.training import text_trim

port, pid = sys.argv[1], int(sys.argv[2])
jax.distributed.initialize(f'127.0.0.1:{port}', num_processes=2, process_id=pid)
trim = text_trim.TextTrimmer(16)
# Per step, each process's longest text ends at these positions; the global batch's is the max.
ends = [(3, 20), (40, 5), (10, 10), (76, 1)]
lengths = []
for step, pair in enumerate(ends):
  tokens = np.zeros((2, 4, 77), np.int32)
  tokens[:, :, 0] = 49406
  tokens[0, 1, pair[pid]] = 49407
  lengths.append(trim({'text': tokens}, step)['text'].shape[-1])
print('lengths', lengths)
"""


def test_processes_agree_on_the_global_batchs_length():
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    port = s.getsockname()[1]
  env = cli._environment(XLA_FLAGS='--xla_force_host_platform_device_count=1')
  processes = [
    subprocess.Popen(
      [sys.executable, '-c', _TWO_PROCESSES, str(port), str(pid)],
      cwd=cli.REPO_ROOT,
      env=env,
      stdout=subprocess.PIPE,
      stderr=subprocess.PIPE,
      text=True,
    )
    for pid in range(2)
  ]
  for process in processes:
    out, err = process.communicate(timeout=120)
    assert process.returncode == 0, err[-3000:]
    # max(3, 20) + 1 = 21 -> 32; 41 -> 48; 11 -> 16; 77 -> 77
    assert 'lengths [32, 48, 16, 77]' in out, out


def test_inspect_reports_the_lengths_the_trainer_cuts_to(tmp_path):
  from input_pipeline import inspect  # pylint: disable=g-import-not-at-top
  from tests import shard_fixtures as fx  # pylint: disable=g-import-not-at-top

  assert inspect.length_buckets(np.array([1, 16, 17, 70, 77]), 16, 77) == {
    '16': 2,
    '32': 1,
    '77': 2,
  }
  assert inspect.length_buckets(np.array([3, 40]), 0, 77) == {'77': 2}
  fx.write_good_shards(str(tmp_path), 2, 10)  # 'a photo of a dog and a cat number N'
  report = inspect.inspect(f'{tmp_path}/{{00000..00001}}.tar', 10, 8, log=lambda _: None)
  assert report['token_length']['max'] == 13  # SOT, 11 words and numbers, EOT
  assert report['caption_cut_lengths'] == {'16': 20}
  assert report['batch_cut_lengths'] == {'16': 3}  # 8 + 8 + 4 samples, prompts included
