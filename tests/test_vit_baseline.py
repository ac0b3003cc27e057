"""The plain ViT image tower (config.model.image_tower 'vit'), the paper's CLIP baseline,
against transformers' ViTModel with our weights copied in, and its place in the model, the
inference API, checkpoints, its config and the trainer."""

import jax
import numpy as np
import pytest
import tiny_train_config
import torch
import transformers

from configs import cc_yfcc_2stage, vit_clip_baseline
from groupvit_jax.inference import GroupViTInference
from groupvit_jax.models import groupvit, layers
from groupvit_jax.models.vit import ViTTower
from groupvit_jax.training import train
from groupvit_jax.weights import checkpoint

import hf_reference as ref
from cli import read_metrics

WIDTH, DEPTH, HEADS, PATCH, SIZE = 64, 2, 2, 16, 64


def model_config(pooling: str) -> dict:
  return dict(
    image_tower='vit',
    vision=dict(
      image_size=SIZE,
      patch_size=PATCH,
      width=WIDTH,
      depth=DEPTH,
      num_heads=HEADS,
      mlp_ratio=4.0,
      drop_path_rate=0.1,
      pooling=pooling,
    ),
    text=dict(context_length=16, width=32, depth=1, num_heads=2),
    embed_dim=32,
    projection_hidden_dim=64,
  )


def perturbed_variables(config: dict, seed: int) -> dict:
  """Random variables of the model's shapes: LayerNorm and BatchNorm scales about 1,
  everything else (biases included) about 0, BatchNorm variances in [0.5, 1.5)."""
  rng = np.random.default_rng(seed)

  def draw(path, shape):
    name = jax.tree_util.keystr(path)
    noise = rng.standard_normal(shape.shape).astype(np.float32)
    if name.endswith("['var']"):
      return (0.5 + rng.random(shape.shape)).astype(np.float32)
    if name.endswith("['scale']"):
      return 1 + 0.2 * noise
    return 0.05 * noise

  shapes = checkpoint.variable_shapes(checkpoint.build_model(config))
  return jax.tree_util.tree_map_with_path(draw, shapes)


def hf_vit(variables: dict) -> transformers.ViTModel:
  """transformers' ViTModel (exact GELU, LayerNorm eps 1e-5) holding our ViT's weights; our
  class token has no positional embedding, so the model's first one is zero."""
  params = variables['params']['img_encoder']
  hf_config = transformers.ViTConfig(
    hidden_size=WIDTH,
    num_hidden_layers=DEPTH,
    num_attention_heads=HEADS,
    intermediate_size=4 * WIDTH,
    hidden_act='gelu',
    layer_norm_eps=1e-5,
    image_size=SIZE,
    patch_size=PATCH,
    qkv_bias=True,
  )
  model = transformers.ViTModel(hf_config, add_pooling_layer=False).eval()

  def t(x):
    return torch.from_numpy(np.ascontiguousarray(x))

  def linear(prefix, p):
    return {f'{prefix}.weight': t(p['kernel'].T), f'{prefix}.bias': t(p['bias'])}

  def norm(prefix, p):
    return {f'{prefix}.weight': t(p['scale']), f'{prefix}.bias': t(p['bias'])}

  pos = params['pos_embed']
  cls = params.get('cls_token', np.zeros(WIDTH, np.float32))
  state = {
    'embeddings.cls_token': t(cls.reshape(1, 1, WIDTH)),
    'embeddings.position_embeddings': t(np.concatenate([np.zeros((1, WIDTH)), pos])[None]),
    # ours [p, p, 3, D] -> torch's conv [D, 3, p, p]
    'embeddings.patch_embeddings.projection.weight': t(
      params['patch_embed']['kernel'].transpose(3, 2, 0, 1)
    ),
    'embeddings.patch_embeddings.projection.bias': t(params['patch_embed']['bias']),
    **norm('layernorm', params['norm']),
  }
  for i in range(DEPTH):
    block, prefix = params[f'blocks_{i}'], f'layers.{i}'
    qkv = block['attn']['qkv']
    for j, name in enumerate(('q_proj', 'k_proj', 'v_proj')):
      cut = slice(j * WIDTH, (j + 1) * WIDTH)
      part = {'kernel': qkv['kernel'][:, cut], 'bias': qkv['bias'][cut]}
      state.update(linear(f'{prefix}.attention.{name}', part))
    state.update(linear(f'{prefix}.attention.o_proj', block['attn']['proj']))
    state.update(linear(f'{prefix}.mlp.fc1', block['mlp']['fc1']))
    state.update(linear(f'{prefix}.mlp.fc2', block['mlp']['fc2']))
    state.update(norm(f'{prefix}.layernorm_before', block['norm1']))
    state.update(norm(f'{prefix}.layernorm_after', block['norm2']))
  model.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
  return model


def hf_forward(model, images: np.ndarray, with_cls: bool):
  """(final LayerNorm'ed tokens [B, T, D], each block's input [B, T, D]) of the reference,
  run block by block; without a class token, the encoder sees the patch embeddings alone."""
  with torch.no_grad():
    x = model.embeddings(ref.pixel_values(images), interpolate_pos_encoding=True)
    x = x if with_cls else x[:, 1:]
    inputs = []
    for layer in model.layers:
      inputs.append(x.numpy())
      x = layer(x, None)
    return model.layernorm(x).numpy(), inputs


def numpy_projection(x: np.ndarray, head: dict, stats: dict) -> np.ndarray:
  """The projection head in eval mode (Linear, BatchNorm on running statistics, ReLU, Linear)
  and L2 normalisation, on [..., D]."""
  h = x @ head['linear_hidden']['kernel'] + head['linear_hidden']['bias']
  bn, s = head['bn'], stats['bn']
  h = (h - s['mean']) / np.sqrt(s['var'] + 1e-5) * bn['scale'] + bn['bias']
  out = np.maximum(h, 0) @ head['linear_out']['kernel'] + head['linear_out']['bias']
  return out / np.linalg.norm(out, axis=-1, keepdims=True)


@pytest.fixture(scope='module', params=['cls', 'mean'])
def vit(request):
  config = model_config(request.param)
  variables = perturbed_variables(config, seed=3)
  return request.param, config, variables, GroupViTInference(config, variables), hf_vit(variables)


def test_tower_and_image_outputs_match_transformers_vit(vit):
  pooling, _, variables, inference, hf_model = vit
  # 'cls' on a 3 x 5 grid (the positional embedding interpolated), 'mean' on the training 4 x 4.
  height, width = (48, 80) if pooling == 'cls' else (64, 64)
  images = ref.random_images(seed=height, n=3, height=height, width=width)
  tokens, _ = hf_forward(hf_model, images, with_cls=pooling == 'cls')
  patches = tokens[:, 1:] if pooling == 'cls' else tokens  # [B, N, D]
  pooled = tokens[:, 0] if pooling == 'cls' else patches.mean(axis=1)

  np.testing.assert_allclose(inference.image_features(images), pooled, atol=1e-4)
  out = inference.image_outputs(images)
  params, stats = variables['params'], variables['batch_stats']
  head, head_stats = params['img_projector'], stats['img_projector']
  assert out.assignments == () and tuple(int(g) for g in out.grid) == (height // 16, width // 16)
  # A ViT's groups are its patches: each one projected and normalised.
  assert out.group_embeddings.shape == (3, (height // 16) * (width // 16), 32)
  np.testing.assert_allclose(
    out.group_embeddings, numpy_projection(patches, head, head_stats), atol=1e-4
  )
  np.testing.assert_allclose(out.embedding, numpy_projection(pooled, head, head_stats), atol=1e-4)
  np.testing.assert_allclose(np.linalg.norm(out.embedding, axis=-1), 1.0, rtol=1e-5)
  np.testing.assert_allclose(np.linalg.norm(out.group_embeddings, axis=-1), 1.0, rtol=1e-5)


def test_cls_attention_is_the_last_blocks_class_token_softmax(vit):
  pooling, _, variables, inference, hf_model = vit
  images = ref.random_images(seed=7, n=3, height=48, width=80)
  if pooling == 'mean':
    with pytest.raises(ValueError, match='pooling'):
      inference.cls_attention(images)
    return
  _, hidden = hf_forward(hf_model, images, with_cls=True)
  x = hidden[-1]  # the last block's input [B, 1 + N, D]
  block = variables['params']['img_encoder'][f'blocks_{DEPTH - 1}']
  mean, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
  h = (x - mean) / np.sqrt(var + 1e-5) * block['norm1']['scale'] + block['norm1']['bias']
  qkv = h @ block['attn']['qkv']['kernel'] + block['attn']['qkv']['bias']  # [B, T, 3D]
  dh = WIDTH // HEADS
  q = qkv[:, :1, :WIDTH].reshape(3, 1, HEADS, dh)  # the class token's query
  k = qkv[:, :, WIDTH : 2 * WIDTH].reshape(3, -1, HEADS, dh)
  logits = np.einsum('bqhd,bkhd->bhk', q, k) / np.sqrt(dh)  # [B, H, 1 + N]
  weights = np.exp(logits - logits.max(-1, keepdims=True))
  weights /= weights.sum(-1, keepdims=True)
  expected = weights[:, :, 1:].reshape(3, HEADS, 3, 5)  # class -> patches, a 3 x 5 grid

  ours = inference.cls_attention(images)
  assert ours.shape == (3, HEADS, 3, 5) and ours.dtype == np.float32
  np.testing.assert_allclose(ours, expected, atol=1e-5)
  assert np.all(ours.sum(axis=(2, 3)) < 1)  # the class token's weight on itself is dropped


@pytest.mark.parametrize('is_causal', [False, True])
def test_the_sown_attention_weights_are_the_ones_attention_applies(is_causal):
  q, k, v = np.random.default_rng(0).standard_normal((3, 2, 5, 8)).astype(np.float32)
  weights = layers.attention_weights(q, k, 2, is_causal)  # [B, H, Tq, Tk]
  heads = np.einsum('bhqk,bkhd->bqhd', weights, v.reshape(2, 5, 2, 4)).reshape(2, 5, 8)
  np.testing.assert_allclose(heads, layers.attend(q, k, v, 2, is_causal, 'xla'), atol=1e-6)
  np.testing.assert_allclose(np.sum(weights, axis=-1), 1.0, rtol=1e-6)
  assert not is_causal or not np.triu(weights, k=1).any()


def test_cls_attention_refuses_a_groupvit():
  model = checkpoint.build_model(dict(vision={}, text={}))
  with pytest.raises(ValueError, match='image_tower "vit" with pooling "cls"'):
    groupvit.cls_attention(model, {}, np.zeros((1, 32, 32, 3), np.float32))


def test_bad_image_tower_and_pooling_are_refused():
  config = model_config('cls')
  with pytest.raises(ValueError, match="image_tower is 'vitt'; expected one of groupvit, vit"):
    checkpoint.variable_shapes(checkpoint.build_model(dict(config, image_tower='vitt')))
  bad = dict(config, vision=dict(config['vision'], pooling='max'))
  with pytest.raises(ValueError, match="pooling is 'max'; expected one of cls, mean"):
    checkpoint.variable_shapes(checkpoint.build_model(bad))


def test_checkpoints_keep_the_image_tower(vit, tmp_path):
  _, config, variables, _, _ = vit
  checkpoint.save(str(tmp_path / 'model'), config, variables)
  loaded_config, loaded = checkpoint.load(str(tmp_path / 'model'))
  assert loaded_config['image_tower'] == 'vit' and loaded_config['vision'] == config['vision']
  assert jax.tree.structure(loaded) == jax.tree.structure(variables)
  jax.tree.map(np.testing.assert_array_equal, loaded, variables)


def test_the_config_is_cc_yfcc_with_a_vit_s_tower_and_no_prompts():
  config, recipe = vit_clip_baseline.get_config(), cc_yfcc_2stage.get_config()
  assert config.model.image_tower == 'vit' and config.data.num_prompts == 0
  assert config.model.vision.pooling == 'cls'
  assert config.optimizer.to_dict() == recipe.optimizer.to_dict()
  assert {k: v for k, v in config.data.items() if k != 'num_prompts'} == {
    k: v for k, v in recipe.data.items() if k != 'num_prompts'
  }
  assert (config.batch_size, config.epochs) == (recipe.batch_size, recipe.epochs)
  images = jax.ShapeDtypeStruct((1, 224, 224, 3), np.float32)
  tower = jax.eval_shape(ViTTower(**config.model.vision).init, jax.random.key(0), images)
  # ViT-S/16 at 224: 12 blocks of qkv 384*1152+1152, proj 384*384+384, fc1 384*1536+1536,
  # fc2 1536*384+384 and two norms 4*384 (1,774,464 each); patch 16*16*3*384+384; positions
  # 196*384; class token 384; final norm 768.
  expected = 12 * 1_774_464 + 295_296 + 196 * 384 + 384 + 768
  assert sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tower)) == expected
  # The periodic segmentation evaluations group the patches with K-means.
  evals = vit_clip_baseline.get_config('/data/eval').evals
  assert evals.voc.grouping == 'kmeans' and 'grouping' not in evals.imagenet


@pytest.mark.slow  # about 30 s on 2 CPU cores
def test_the_trainer_trains_a_vit_with_the_image_text_loss_alone(tmp_path):
  config = tiny_train_config.get_config()
  config.model.image_tower = 'vit'
  config.model.vision = dict(
    image_size=32, patch_size=8, width=32, depth=2, num_heads=2, drop_path_rate=0.1
  )
  config.data.num_prompts = 0
  config.total_steps, config.log_every_steps, config.checkpoint_every_steps = 3, 1, 3
  config.text_length_multiple = 0  # one text length, one compile of the step
  train.train_and_evaluate(config, str(tmp_path))

  rows = [row for row in read_metrics(str(tmp_path)) if 'loss' in row]
  assert [row['step'] for row in rows] == [1, 2, 3]
  assert all(np.isfinite(row['loss']) and 'loss_multi_label' not in row for row in rows)
  assert all(row['loss'] == row['loss_image_text'] for row in rows)
  assert len({row['loss'] for row in rows}) == 3  # it learns something (or at least changes)
  saved, _ = checkpoint.load(str(tmp_path / 'model'))
  assert saved['image_tower'] == 'vit' and saved['vision']['depth'] == 2
