"""configs/ hold the released architecture."""

import jax
import numpy as np
import transformers

from configs import cc_yfcc_2stage
from groupvit_jax.training import config_checks, optimizer, steps
from groupvit_jax.weights import checkpoint, state_dicts


def test_cc_yfcc_2stage_is_the_released_architecture():
  """transformers' default GroupViTConfig is the released gcc-yfcc model (its hub config)."""
  model_config = cc_yfcc_2stage.get_config().model.to_dict()
  hf_model = transformers.GroupViTModel(transformers.GroupViTConfig())
  released = {k: v.numpy() for k, v in hf_model.state_dict().items()}
  inferred = state_dicts.infer_model_config(state_dicts.hf_to_nvlabs(released))
  for tower in ('vision', 'text'):
    for key, value in inferred[tower].items():
      assert np.all(np.asarray(model_config[tower][key]) == np.asarray(value)), (tower, key)
  assert model_config['embed_dim'] == inferred['embed_dim']
  assert model_config['projection_hidden_dim'] == inferred['projection_hidden_dim']

  shapes = checkpoint.variable_shapes(checkpoint.build_model(model_config))
  ours = sum(np.prod(s.shape) for s in jax.tree.leaves(shapes['params']))
  # transformers keeps no multi-label temperature; everything else is the same parameters.
  assert ours == sum(p.numel() for p in hf_model.parameters()) + 1


def test_cc_yfcc_2stage_recipe_builds_the_released_schedule():
  config = cc_yfcc_2stage.get_config()
  config_checks.check(config)
  steps_per_epoch = -(-(2_891_445 + 11_156_203 + 14_615_499) // 4096)
  run = steps.run_steps(config)
  assert run.total == 30 * steps_per_epoch
  assert run.warmup == 2 * steps_per_epoch
  schedule = optimizer.schedule_from_config(
    config.optimizer, batch_size=4096, warmup_steps=run.warmup, total_steps=run.updates
  )
  np.testing.assert_allclose(schedule(0), 4e-6, rtol=1e-6)
  np.testing.assert_allclose(schedule(run.warmup), 1.6e-3, rtol=1e-6)
  np.testing.assert_allclose(schedule(run.total), 4e-5, rtol=1e-5)
  optimizer.make_optimizer(config.optimizer, schedule).init({'w': np.ones((2, 2))})


def test_web_configs_state_epochs_and_evaluate_every_epoch_only_given_the_evaluation_data():
  from configs import cc_1stage, cc_redcaps_2stage  # pylint: disable=g-import-not-at-top

  assert len(cc_yfcc_2stage.get_config().evals) == 0
  for module, examples in (
    (cc_yfcc_2stage, 2_891_445 + 11_156_203 + 14_615_499),
    (cc_redcaps_2stage, 2_891_445 + 11_156_203 + 11_866_987),
    (cc_1stage, 2_891_445 + 11_156_203),
  ):
    config = module.get_config('/data/eval')
    # Epochs, not steps: nothing is derived from the batch size when the config is built.
    assert config.num_train_examples == examples
    assert (config.epochs, config.optimizer.warmup_epochs, config.eval_every_epochs) == (30, 2, 1)
    assert config.total_steps is None and config.optimizer.warmup_steps is None
    assert config.eval_every_steps is None
    assert config.optimizer.scale_lr_with_batch
    steps_per_epoch = -(-examples // 4096)
    assert steps.run_steps(config) == steps.RunSteps(
      total=30 * steps_per_epoch,
      warmup=2 * steps_per_epoch,
      eval_every=steps_per_epoch,
      steps_per_epoch=steps_per_epoch,
    )
    assert sorted(config.evals) == ['coco_object', 'context', 'imagenet', 'voc']
    assert config.evals.voc.to_dict() == dict(
      type='zero_shot_segmentation', dataset='voc', data_dir='/data/eval'
    )
    config_checks.check(config)  # every evaluator setting is one its class takes


def test_synthetic_tiny_keeps_its_explicit_steps_and_rates():
  from configs import synthetic_tiny  # pylint: disable=g-import-not-at-top

  config = synthetic_tiny.get_config()
  config_checks.check(config)
  assert steps.run_steps(config) == steps.RunSteps(800, 25, 0, None)
  assert optimizer.scaled_rates(config.optimizer, config.batch_size) == dict(
    lr=3e-3, warmup_lr=1e-5, min_lr=1e-5
  )
