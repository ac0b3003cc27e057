"""Training: the train state, the sharded train step and the loop (`train_and_evaluate`).

The step is one jit-compiled function over global arrays laid out on the mesh (see
sharding.py). The towers run as ordinary global computations, so the projection heads'
BatchNorm statistics are over the global batch; the losses run under shard_map, where each
device scores its own rows against all-gathered embeddings. Randomness (Gumbel noise, drop
path) is drawn per image from a key folded with the step number and the image's row in the
global batch, so a run depends neither on the mesh it runs on nor on contrastive_chunks.
"""

import collections
import functools
import signal
import threading
import time
from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging
from jax.experimental import multihost_utils
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from groupvit_jax import evaluators, filesystem, progress, visualize
from groupvit_jax.evaluators import common
from groupvit_jax.image_ops import normalize_images
from groupvit_jax.inference import GroupViTInference
from groupvit_jax.models.groupvit import GroupViT
from groupvit_jax.training import (
  config_checks,
  grad_cache,
  losses,
  metric_writers,
  profiling,
  sharding,
  text_trim,
  train_checkpoints,
)
from groupvit_jax.training import optimizer as optimizers
from groupvit_jax.training import steps as durations
from groupvit_jax.weights import checkpoint
from input_pipeline import device_augment, failures, train_data


@flax.struct.dataclass
class TrainState:
  step: jax.Array  # int32 scalar: batches done (optimizer updates, without accumulation)
  params: Any
  batch_stats: Any
  opt_state: Any
  rng: jax.Array  # the run's base key (raw uint32 key data, checkpoint friendly)


def create_train_state(
  model: GroupViT,
  optimizer: optax.GradientTransformation,
  seed: int,
) -> TrainState:
  """Freshly initialised parameters and optimizer state."""
  init_rng, run_rng = jax.random.split(jax.random.key(seed))
  variables = model.init({'params': init_rng}, *checkpoint.init_inputs(model))
  return TrainState(
    step=jnp.zeros((), jnp.int32),
    params=variables['params'],
    batch_stats=variables['batch_stats'],
    opt_state=optimizer.init(variables['params']),
    rng=jax.random.key_data(run_rng),
  )


def loss_and_grads(
  model: GroupViT, mesh: Mesh, state: TrainState, batch: dict, contrastive_chunks: int = 1
):
  """Losses, metrics, new BatchNorm statistics and gradients for one global batch.

  batch: 'image' uint8 [B, H, W, 3]; 'text' int32 [B, 1 + K, L], the caption then K prompts
  (K = 0: the image-text loss alone, losses.contrastive_losses);
  'augment' (optional): each image's flip, RandAugment and erasing draws, applied here
  (input_pipeline/device_augment.py).
  With `contrastive_chunks` > 1 the towers run on that many pieces of the batch at a time
  (grad_cache.py): the same losses and gradients, with one piece's activations in memory.
  Gumbel noise and drop path are drawn per image, from a key folded with the image's row in
  the global batch, so they do not depend on the chunking.
  """
  step_rng = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)
  rows = jnp.arange(batch['image'].shape[0])
  row_keys = jax.vmap(jax.random.fold_in, (None, 0))(step_rng, rows)  # [B] keys
  row_keys = jax.lax.with_sharding_constraint(row_keys, sharding.batch_sharding(mesh))
  image = batch['image']
  if 'augment' in batch:
    image = device_augment.augment(image, batch['augment'])
  inputs = {'image': image, 'text': batch['text'], 'key': row_keys}
  contrastive = jax.shard_map(
    functools.partial(losses.contrastive_losses, axis_name=sharding.BATCH_AXES),
    mesh=mesh,
    in_specs=(P(sharding.BATCH_AXES),) * 3 + (P(), P()),
    out_specs=P(),
  )

  def features(params, rows):
    def one_image(image, key):  # [H, W, 3] -> [Dv], with this image's own random draws
      gumbel, dropout = jax.random.split(key)
      return model.apply(
        {'params': params},
        normalize_images(image[None]),
        rngs={'gumbel': gumbel, 'dropout': dropout},
        method=GroupViT.image_backbone,
      )[0]

    image = jax.vmap(one_image)(rows['image'], rows['key'])  # [B, Dv]
    text = model.apply({'params': params}, rows['text'], method=GroupViT.text_backbone)
    return image, text  # [B, Dv], [B, 1 + K, Dt]

  def head(params, feats):
    (image, text, (scale, multi_label_scale)), updates = model.apply(
      {'params': params, 'batch_stats': state.batch_stats},
      *feats,
      mutable=['batch_stats'],
      method=GroupViT.project_for_training,
    )
    metrics = contrastive(image, text[:, 0], text[:, 1:], scale, multi_label_scale)
    metrics = dict(metrics, logit_scale=scale)
    if 'loss_multi_label' in metrics:  # none without prompts: its temperature is unused
      metrics['multi_label_logit_scale'] = multi_label_scale
    return metrics['loss'], (metrics, updates['batch_stats'])

  if contrastive_chunks == 1:
    (_, (metrics, batch_stats)), grads = jax.value_and_grad(
      lambda params: head(params, features(params, inputs)), has_aux=True
    )(state.params)
  else:
    (_, (metrics, batch_stats)), grads = grad_cache.loss_and_grads(
      features, head, state.params, inputs, contrastive_chunks, mesh
    )
  return metrics, batch_stats, grads


def make_train_step(
  model: GroupViT,
  optimizer: optax.GradientTransformation,
  schedule: Callable[[jax.Array], jax.Array],
  mesh: Mesh,
  state_shardings: Any,
  grad_accum_steps: int = 1,
  contrastive_chunks: int = 1,
) -> Callable[[TrainState, dict], tuple[TrainState, dict]]:
  """The jitted step: (state, batch) -> (next state, metrics). The old state is donated.

  `state.step` counts batches; with gradient accumulation the optimizer (optax.MultiSteps)
  updates every `grad_accum_steps` of them, and the schedule advances with those updates.
  `contrastive_chunks` > 1 embeds the batch in that many pieces (see loss_and_grads).
  """

  def train_step(state: TrainState, batch: dict):
    metrics, batch_stats, grads = loss_and_grads(model, mesh, state, batch, contrastive_chunks)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    grad_norm = optax.global_norm(grads)
    metrics = dict(metrics, grad_norm=grad_norm, lr=schedule(state.step // grad_accum_steps))
    new_state = state.replace(
      step=state.step + 1,
      params=optax.apply_updates(state.params, updates),
      batch_stats=batch_stats,
      opt_state=opt_state,
    )
    # A NaN or Inf loss or gradient leaves the whole state as it was, so no NaN ever reaches
    # the parameters or a checkpoint; the loop sees the metric and stops the run.
    finite = jnp.isfinite(metrics['loss']) & jnp.isfinite(grad_norm)
    new_state = jax.tree.map(lambda new, old: jnp.where(finite, new, old), new_state, state)
    return new_state, metrics

  batch_sharding = sharding.batch_sharding(mesh)
  return jax.jit(
    train_step,
    in_shardings=(state_shardings, batch_sharding),
    out_shardings=(state_shardings, sharding.replicated(mesh)),
    donate_argnums=0,
  )


def state_shardings(mesh: Mesh, state_shapes: TrainState) -> TrainState:
  """Parameters and optimizer state sharded by the fsdp rule; step and rng replicated."""
  return TrainState(
    step=sharding.replicated(mesh),
    params=sharding.param_shardings(mesh, state_shapes.params),
    batch_stats=sharding.param_shardings(mesh, state_shapes.batch_stats),
    opt_state=sharding.param_shardings(mesh, state_shapes.opt_state),
    rng=sharding.replicated(mesh),
  )


class _Preemption:
  """SIGTERM (how preemptible TPU and cloud VMs announce the end) makes the loop save a
  checkpoint and return.

  One process: a Python signal handler sets a flag. Several: jax.distributed's preemption
  notifier catches the signal (on any process) and its sync manager, which orbax asks, names the
  same step to every process, so all save that one step; no Python handler may replace it.
  """

  def __init__(self):
    self._event = threading.Event()
    self._previous = None
    if jax.process_count() == 1:
      self._previous = signal.signal(signal.SIGTERM, lambda *_: self._event.set())

  def reached(self, manager, step: int) -> bool:
    if jax.process_count() > 1:
      return manager.reached_preemption(step)
    return self._event.is_set()

  def close(self):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)


def _next_batch(data, manager) -> dict:
  """The next batch of this process; a failure of the input pipeline names the checkpoint
  that a rerun resumes from."""
  try:
    return next(data)
  except failures.DataError as error:
    manager.wait_until_finished()
    raise type(error)(
      f'{error}. The last checkpoint is step {manager.latest_step()} in {manager.directory}.'
    ) from error


def _data_counters(data) -> dict[str, int]:
  """The input pipeline's counters (damaged samples by reason) summed over all processes;
  every process must call this at the same steps."""
  counts = {k: np.asarray(v, np.int64) for k, v in data.counters().items()}
  return {k: int(v) for k, v in common.process_sum(counts).items()}


# How many steps the loop dispatches ahead of the devices: before fetching batch s + 1 it waits
# for step s - _STEPS_AHEAD to finish, so that few batches wait on the devices, while the
# devices always have the next step queued.
_STEPS_AHEAD = 2


def _fresh_tally() -> dict:
  return {
    'steps': jnp.zeros((), jnp.int32),  # steps counted since the last check
    'nonfinite': jnp.zeros((), jnp.int32),  # of which non-finite
    'first': jnp.full((), -1, jnp.int32),  # the first non-finite one, counted from 0
    'loss': jnp.zeros((), jnp.float32),  # its loss and gradient norm
    'grad_norm': jnp.zeros((), jnp.float32),
  }


def _count_step(tally: dict, loss: jax.Array, grad_norm: jax.Array) -> dict:
  bad = ~(jnp.isfinite(loss) & jnp.isfinite(grad_norm))
  first = bad & (tally['nonfinite'] == 0)
  return {
    'steps': tally['steps'] + 1,
    'nonfinite': tally['nonfinite'] + bad.astype(jnp.int32),
    'first': jnp.where(first, tally['steps'], tally['first']),
    'loss': jnp.where(first, loss, tally['loss']).astype(jnp.float32),
    'grad_norm': jnp.where(first, grad_norm, tally['grad_norm']).astype(jnp.float32),
  }


class _NonFiniteSteps:
  """Counts on the devices the steps whose loss or gradient norm is NaN or Inf, so that the
  loop reads them only where it waits for a step anyway (log, checkpoint and evaluation steps,
  preemption). A small jitted function of its own, dispatched after each step, keeps the count:
  neither the train step nor the TrainState (and so no checkpoint) changes."""

  def __init__(self, mesh: Mesh):
    replicated = sharding.replicated(mesh)
    self._fresh = jax.jit(_fresh_tally, out_shardings=replicated)
    self._count = jax.jit(_count_step, out_shardings=replicated)
    self.tally = self._fresh()

  def count(self, metrics: dict) -> None:
    self.tally = self._count(self.tally, metrics['loss'], metrics['grad_norm'])

  def restart(self) -> None:
    self.tally = self._fresh()


def _stop_if_nonfinite(tally: dict, step: int, metrics: dict, writer, manager, workdir) -> None:
  """Raises FloatingPointError if a step counted in `tally` (the host copy of the steps up to
  `step`) was not finite, after logging `metrics`, this step's."""
  if not tally['nonfinite']:
    return
  checked = step - int(tally['steps'])  # the step of the previous check
  first = checked + int(tally['first']) + 1
  span = ''
  if step - checked > 1:
    span = f' ({int(tally["nonfinite"])} of the steps {checked + 1}-{step}, read at step {step})'
  writer.write_scalars(step, metrics)
  manager.wait_until_finished()
  raise FloatingPointError(
    f'non-finite loss {tally["loss"]} or gradient norm {tally["grad_norm"]} at step {first}'
    f'{span}: such a step leaves the weights as they were, and the run stops. The last good '
    f'checkpoint (step {manager.latest_step()}) is in {workdir}/checkpoints; lower optimizer.lr '
    'or raise optimizer.warmup_epochs (or warmup_steps) and rerun to resume from it.'
  )


def _write_config(config: ml_collections.ConfigDict, workdir: str) -> None:
  if jax.process_index() == 0:
    text = config.to_json_best_effort(indent=2, sort_keys=True) + '\n'
    filesystem.write_text(filesystem.join(workdir, 'config.json'), text)


def _host_variables(state: TrainState) -> dict:
  """The model's variables as NumPy arrays on every process (all processes must call this),
  whatever the training mesh shards (fsdp) or spans (hosts)."""
  return multihost_utils.process_allgather(
    {'params': state.params, 'batch_stats': state.batch_stats}, tiled=True
  )


class PeriodicEvaluation:
  """Runs every evaluator of `config.evals` on the current weights and logs their metrics and
  pictures: WORKDIR/pictures/<evaluator>/step_<N>/<name>.png and, beside the scalars,
  TensorBoard images tagged <evaluator>/<name>. The inference model is built at the first
  evaluation and then only given new weights, so its compiled encoders and the protocol's
  jitted steps serve the whole run."""

  def __init__(self, evals: dict, model_config):
    self.evals = evals
    self.model_config = model_config
    self.inference = None

  def __call__(self, state, step: int, writer, workdir: str) -> None:
    if not self.evals:
      return
    # Evaluators run per process, each on its share of the split, with a full copy.
    variables = _host_variables(state)
    if self.inference is None:
      self.inference = GroupViTInference(self.model_config, variables)
    else:
      self.inference.set_variables(variables)
    for name, evaluator in self.evals.items():
      start = time.time()
      results = evaluator.run(self.inference)
      writer.write_scalars(step, {f'{name}_{k}': v for k, v in results.items()})
      logging.info(
        'step %d | %s: %s (%.1fs)',
        step,
        name,
        ', '.join(f'{k} {v:.4f}' for k, v in results.items() if k in ('miou', 'top1')),
        time.time() - start,
      )
      if jax.process_index() == 0:
        pictures = evaluator.pictures(self.inference)
        directory = filesystem.join(workdir, 'pictures', name, f'step_{step}')
        for key, picture in pictures.items():
          visualize.save_png(filesystem.join(directory, f'{key}.png'), picture)
        writer.write_images(step, {f'{name}/{k}': p[None] for k, p in pictures.items()})
        if pictures:
          logging.info('wrote %s', directory)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Trains (or resumes) the run in `workdir` to its last step; returns the last metrics.

  The run's length, warm-up and evaluation interval come from its epochs and batch size, or
  from explicit steps (training/steps.py); they are logged first, with the learning rates.

  Writes WORKDIR/config.json, metrics.jsonl, tensorboard/, checkpoints/ and, at the end,
  model/ (a groupvit_jax checkpoint for groupvit_jax.load) and pictures/.
  """
  config_checks.check(config)
  # Epochs become steps here, for the batch size this run has (never when the config is built).
  run = durations.run_steps(config)
  accum = run.grad_accum_steps
  try:
    mesh = sharding.make_mesh(config.mesh)
    sharding.check_batch_size(config.batch_size, mesh)
    chunks = config.get('contrastive_chunks', 1)
    if config.batch_size % (mesh.size * chunks):
      raise ValueError(
        f'batch_size {config.batch_size} does not split into contrastive_chunks {chunks} of '
        f'equal rows on each of the {mesh.size} devices; use a multiple of {mesh.size * chunks}'
      )
    # Warm-up and length in optimizer updates, the rates scaled with the batch if so
    # configured; built (and so checked) before anything is written.
    schedule = optimizers.schedule_from_config(
      config.optimizer,
      batch_size=config.batch_size,
      warmup_steps=run.warmup,
      total_steps=run.updates,
    )
  except ValueError as error:
    raise config_checks.ConfigError(str(error)) from None
  logging.info(durations.describe(config, run))
  logging.info(optimizers.describe_rates(config.optimizer, config.batch_size))
  train_data.check_data_config(config.data)
  filesystem.makedirs(workdir)
  _write_config(config, workdir)

  model_config = config.model.to_dict()
  model = checkpoint.build_model(model_config)
  optimizer = optimizers.make_optimizer(config.optimizer, schedule)
  init = functools.partial(create_train_state, model, optimizer, config.seed)
  state_shapes = jax.eval_shape(init)
  shardings = state_shardings(mesh, state_shapes)
  data = train_data.create_iterator(
    config.data, config.batch_size, config.seed, jax.process_index(), jax.process_count()
  )

  manager = train_checkpoints.create_manager(workdir, config.get('keep_checkpoints', 3))
  restored = train_checkpoints.restore_latest(manager, state_shapes, shardings)
  if restored is None:
    state = jax.jit(init, out_shardings=shardings)()
  else:
    state, data_state = restored
    if data_state is not None:
      data.set_state(data_state)
    logging.info('resumed from the checkpoint at step %d in %s', int(state.step), workdir)
  step = int(state.step)
  writer = metric_writers.create_writer(workdir, resume_step=step)
  evaluate = PeriodicEvaluation(evaluators.create(config.get('evals', {})), model_config)
  train_step = make_train_step(model, optimizer, schedule, mesh, shardings, accum, chunks)
  batch_sharding = sharding.batch_sharding(mesh)
  total = run.total
  logging.info(
    'training %s to step %d: global batch %d on %d devices %s',
    workdir,
    total,
    config.batch_size,
    mesh.size,
    dict(mesh.shape),
  )

  preemption = _Preemption()
  trace = profiling.StepTrace(
    config.get('profile_steps'), filesystem.join(workdir, metric_writers.TENSORBOARD_DIR)
  )
  last_saved = step if restored is not None else None
  log_time, log_step = time.time(), step
  logged_counters = _data_counters(data)
  metrics = {}
  trim = text_trim.TextTrimmer(config.get('text_length_multiple', 0))
  nonfinite = _NonFiniteSteps(mesh)
  in_flight = collections.deque()  # the metrics of steps dispatched and not yet waited for
  try:
    while step < total:
      local_batch = trim(_next_batch(data, manager), step)
      batch = jax.make_array_from_process_local_data(batch_sharding, local_batch)
      trace.before_step(step + 1)
      state, step_metrics = train_step(state, batch)
      step += 1
      trace.after_step(step, step_metrics)
      nonfinite.count(step_metrics)
      # Nothing here waits for this step: the host fetches the next batch while the devices
      # run it. Only steps _STEPS_AHEAD back are waited for, which bounds the batches queued.
      in_flight.append(step_metrics)
      if len(in_flight) > _STEPS_AHEAD:
        jax.block_until_ready(in_flight.popleft())
      log = step % config.log_every_steps == 0 or step == total
      save = step % config.checkpoint_every_steps == 0 or step == total
      evaluation = bool(run.eval_every) and step % run.eval_every == 0 and step < total
      preempted = preemption.reached(manager, step)
      if log or save or evaluation or preempted:
        # Each of these waits for the step anyway. A NaN or Inf step since the last of them
        # stops the run here, before anything later is logged, saved or evaluated.
        in_flight.clear()
        metrics, tally = jax.device_get((step_metrics, nonfinite.tally))
        _stop_if_nonfinite(tally, step, metrics, writer, manager, workdir)
        nonfinite.restart()
      if log:
        seconds_per_step = (time.time() - log_time) / (step - log_step)
        metrics['samples_per_second'] = config.batch_size / seconds_per_step
        counters = _data_counters(data)
        metrics.update(counters)
        writer.write_scalars(step, metrics)
        logging.info(progress.progress_line(step, total, seconds_per_step, metrics))
        new_skips = {
          k: v - logged_counters.get(k, 0)
          for k, v in counters.items()
          if k.startswith('skipped_') and v != logged_counters.get(k, 0)
        }
        if new_skips:
          logging.warning('skipped damaged samples since step %d: %s', log_step, new_skips)
        log_time, log_step, logged_counters = time.time(), step, counters
      if save:
        writer.flush()  # the metrics up to a checkpoint are written before it
        train_checkpoints.save(manager, state, data.get_state())
        last_saved = step
      if evaluation:
        evaluate(state, step, writer, workdir)
        log_time, log_step = time.time(), step  # evaluation time is not training time
      if preempted:
        if last_saved != step:
          train_checkpoints.save(manager, state, data.get_state())
        manager.wait_until_finished()
        logging.warning(
          'SIGTERM: saved a checkpoint at step %d; rerun the same command to resume.', step
        )
        return metrics
    manager.wait_until_finished()
    evaluate(state, step, writer, workdir)
    variables = _host_variables(state)
    if jax.process_index() == 0:
      checkpoint.save(
        filesystem.join(workdir, 'model'), model_config, variables, {'step': step}, overwrite=True
      )
  finally:
    trace.stop()
    preemption.close()
    data.close()
    manager.wait_until_finished()
    manager.close()
    writer.flush()
  return metrics
