"""config.model.attention: the kernel choice (layers.attention_implementation), attend against a
NumPy reference, and the setting reaching every standard attention of the model."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tiny_train_config

from groupvit_jax.models import layers
from groupvit_jax.training import config_checks
from groupvit_jax.weights import checkpoint

BF16, F16, F32 = jnp.bfloat16, jnp.float16, jnp.float32


def qkv(seed, b=2, tq=7, tk=7, d=16, dtype=F32):
  rng = np.random.default_rng(seed)
  q, k, v = (rng.standard_normal((b, t, d)).astype(np.float32) for t in (tq, tk, tk))
  return tuple(jnp.asarray(x, dtype) for x in (q, k, v))


def numpy_attention(q, k, v, num_heads, is_causal):
  """softmax(Q K^T / sqrt(Dh) [+ causal mask]) V per head, in float64."""
  q, k, v = (np.asarray(x, np.float64) for x in (q, k, v))
  b, tq, d = q.shape
  dh = d // num_heads
  out = np.zeros((b, tq, d))
  for h in range(num_heads):
    cols = slice(h * dh, (h + 1) * dh)
    logits = q[..., cols] @ np.swapaxes(k[..., cols], 1, 2) / np.sqrt(dh)  # [B, Tq, Tk]
    if is_causal:
      future = np.triu(np.ones(logits.shape[1:], bool), k=1)
      logits = np.where(future, -np.inf, logits)
    weights = np.exp(logits - logits.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    out[..., cols] = weights @ v[..., cols]
  return out


@pytest.mark.parametrize('is_causal', [False, True])
@pytest.mark.parametrize('dtype, tolerance', [(F32, 1e-5), (BF16, 2e-2)])
def test_attend_matches_numpy(is_causal, dtype, tolerance):
  q, k, v = qkv(0, dtype=dtype)
  out = jax.jit(layers.attend, static_argnums=(3, 4))(q, k, v, 2, is_causal)
  assert out.dtype == dtype and out.shape == q.shape
  # The reference sees the same (rounded) inputs; bfloat16 then differs by its output rounding.
  np.testing.assert_allclose(
    np.asarray(out, np.float32), numpy_attention(q, k, v, 2, is_causal), atol=tolerance
  )


def test_cross_attention_with_other_lengths_matches_numpy():
  q, k, v = qkv(1, tq=3, tk=9)
  np.testing.assert_allclose(
    layers.attend(q, k, v, 4), numpy_attention(q, k, v, 4, False), atol=1e-5
  )


@pytest.mark.parametrize('is_causal', [False, True])
def test_xla_is_the_previous_path_on_cpu(is_causal):
  q, k, v = qkv(2)

  def heads(t):
    return t.reshape(2, 7, 2, 8)

  before = jax.nn.dot_product_attention(heads(q), heads(k), heads(v), is_causal=is_causal)
  for setting in ('xla', 'auto'):
    out = layers.attend(q, k, v, 2, is_causal, attention=setting)
    np.testing.assert_array_equal(out, before.reshape(2, 7, 16))


@pytest.mark.parametrize(
  'setting, dtype, head_dim, platform, expected',
  [
    ('auto', BF16, 64, 'cuda', 'cudnn'),
    ('auto', F16, 128, 'cuda', 'cudnn'),
    ('auto', F16, 8, 'cuda', 'cudnn'),
    ('auto', F32, 64, 'cuda', None),  # cuDNN's fused attention takes fp16/bf16 only
    ('auto', BF16, 60, 'cuda', None),  # head width not a multiple of 8
    ('auto', BF16, 256, 'cuda', None),  # wider than every GPU generation takes
    ('auto', BF16, 64, 'rocm', None),
    ('auto', BF16, 64, 'tpu', None),
    ('auto', BF16, 64, 'cpu', None),
    ('xla', BF16, 64, 'cuda', None),
    ('xla', F32, 64, 'cpu', None),
    ('cudnn', BF16, 64, 'cuda', 'cudnn'),
  ],
)
def test_implementation_choice(setting, dtype, head_dim, platform, expected):
  assert layers.attention_implementation(setting, dtype, head_dim, platform) == expected


@pytest.mark.parametrize('platform', ['cpu', 'tpu', 'rocm'])
def test_cudnn_off_nvidia_gpus_is_an_error(platform):
  with pytest.raises(ValueError, match=r"config\.model\.attention='cudnn' needs an NVIDIA GPU"):
    layers.attention_implementation('cudnn', BF16, 64, platform)


def test_cudnn_in_float32_is_an_error():
  with pytest.raises(ValueError, match=r"config\.model\.attention='cudnn' needs bfloat16"):
    layers.attention_implementation('cudnn', F32, 64, 'cuda')


def test_unknown_setting_is_an_error():
  with pytest.raises(ValueError, match=r"config\.model\.attention is 'flash'; expected one of"):
    layers.attention_implementation('flash', BF16, 64, 'cuda')


@pytest.mark.skipif(layers.default_platform() == 'cuda', reason='checks a machine without cuDNN')
def test_cudnn_on_this_machine_is_a_clear_error():
  q, k, v = qkv(3, dtype=BF16)
  with pytest.raises(ValueError, match=r'config\.model\.attention.*NVIDIA GPU'):
    layers.attend(q, k, v, 2, attention='cudnn')


def tiny_model_config():
  return dict(tiny_train_config.get_config().model.to_dict())


def tiny_inputs(model_config):
  size = model_config['vision']['image_size']
  images = jnp.asarray(np.random.default_rng(0).standard_normal((2, size, size, 3)), F32)
  tokens = jnp.asarray(np.random.default_rng(1).integers(1, 500, (2, 16)), jnp.int32)
  return images, tokens


def test_every_standard_attention_gets_the_setting(monkeypatch):
  """The towers' self-attention and the grouping blocks' cross-attention all ask for it."""
  config = dict(tiny_model_config(), attention='xla')
  model = checkpoint.build_model(config)
  images, tokens = tiny_inputs(config)
  variables = model.init(jax.random.key(0), images, tokens)
  asked = []
  choose = layers.attention_implementation

  def spy(setting, *args, **kwargs):
    asked.append(setting)
    return choose(setting, *args, **kwargs)

  monkeypatch.setattr(layers, 'attention_implementation', spy)
  model.apply(variables, images, tokens)
  vision, text = config['vision'], config['text']
  blocks = sum(vision['depths']) + text['depth']
  cross = sum(1 for s in vision['num_group_tokens'] if s)
  assert asked == ['xla'] * (blocks + cross)


def test_xla_and_auto_models_agree_on_cpu_and_old_configs_load():
  """A model config without the key (as stored checkpoints have) builds the 'auto' model."""
  config = tiny_model_config()
  del config['attention']
  old = checkpoint.build_model(config)
  assert old.attention == 'auto'
  images, tokens = tiny_inputs(config)
  variables = old.init(jax.random.key(0), images, tokens)
  xla = checkpoint.build_model(dict(config, attention='xla'))
  for a, b in zip(
    jax.tree.leaves(old.apply(variables, images, tokens)),
    jax.tree.leaves(xla.apply(variables, images, tokens)),
  ):
    np.testing.assert_array_equal(a, b)


def test_config_check_names_the_key():
  config = tiny_train_config.get_config()
  config_checks.check(config)
  config.model.attention = 'flash'
  with pytest.raises(config_checks.ConfigError, match=r"config\.model\.attention is 'flash'"):
    config_checks.check(config)


def test_attention_is_a_model_key_not_a_tower_key():
  config = tiny_train_config.get_config()
  config.model.vision.attention = 'xla'
  with pytest.raises(config_checks.ConfigError, match=r'unknown config key config\.model\.vision'):
    config_checks.check(config)
