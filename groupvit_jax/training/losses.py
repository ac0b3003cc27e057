"""GroupViT's training losses over the global batch: image-text InfoNCE and multi-label.

Every function takes the LOCAL batch of one device and, with `axis_name`, runs inside
`jax.shard_map` with the batch split over those mesh axes (docs/released_model.md, "Losses"):
each device all-gathers the embeddings, scores only its own rows against all gathered
columns (at most b x B*K logits per device, never B x B), and the per-row losses are summed
with `psum` and divided by the global counts. With `axis_name=None` the same code is the
plain single-device loss on the whole batch.

A tuple of axis names is one flattened axis in the order given: `all_gather` concatenates
the shards and `axis_index` numbers the devices in that same row-major order, so a device's
rows sit at `axis_index * b` in the gathered arrays whatever order the batch's
PartitionSpec lists the axes in (a different order permutes the global batch, which leaves
the loss unchanged).

Gradients through the collectives equal the single-device ones: all_gather transposes to a
reduce-scatter, and shard_map sums the replicated scales' gradients over devices.
"""

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

AxisName = str | tuple[str, ...] | None


def _gather(x: jax.Array, axis_name: AxisName) -> jax.Array:
  """[b, ...] local rows -> [B, ...] rows of all devices, in device order."""
  return x if axis_name is None else jax.lax.all_gather(x, axis_name, tiled=True)


def _global_mean(local_sum: jax.Array, count: int, axis_name: AxisName) -> jax.Array:
  """Sum of per-row losses over all devices divided by the global row count."""
  total = local_sum if axis_name is None else jax.lax.psum(local_sum, axis_name)
  return total / count


def _offset_and_devices(b: int, axis_name: AxisName) -> tuple[jax.Array | int, int]:
  """Index of this device's first row in the gathered batch, and the number of devices."""
  if axis_name is None:
    return 0, 1
  return jax.lax.axis_index(axis_name) * b, jax.lax.axis_size(axis_name)


def _cross_entropy_sum(logits: jax.Array, targets: jax.Array) -> jax.Array:
  """Sum over rows of -log_softmax(logits)[row, targets[row]]; logits [n, C], targets [n]."""
  log_probs = jax.nn.log_softmax(logits, axis=-1)
  return -jnp.sum(jnp.take_along_axis(log_probs, targets[:, None], axis=-1))


def image_text_loss(
  image: jax.Array, text: jax.Array, scale: ArrayLike, axis_name: AxisName = None
) -> jax.Array:
  """Symmetric InfoNCE: 0.5 * (image->text + text->image), each a mean over the global batch.

  image, text: [b, E] L2-normalised; text[i] is image[i]'s caption. scale: the used
  temperature, min(exp(logit_scale), 100).
  """
  image, text = image.astype(jnp.float32), text.astype(jnp.float32)
  scale = jnp.asarray(scale, jnp.float32)
  b = image.shape[0]
  offset, devices = _offset_and_devices(b, axis_name)
  targets = offset + jnp.arange(b)  # global index of each local row's partner
  image_to_text = scale * image @ _gather(text, axis_name).T  # [b, B]
  text_to_image = scale * text @ _gather(image, axis_name).T  # [b, B]
  local = _cross_entropy_sum(image_to_text, targets) + _cross_entropy_sum(text_to_image, targets)
  return 0.5 * _global_mean(local, b * devices, axis_name)


def multi_label_loss(
  image: jax.Array, prompts: jax.Array, scale: ArrayLike, axis_name: AxisName = None
) -> jax.Array:
  """Multi-label contrastive loss between images and their K prompted-noun texts.

  image: [b, E]; prompts: [b, K, E], prompts[i] the K texts made from image i's caption;
  both L2-normalised. Image side: soft cross-entropy against all B*K gathered prompts with
  mass 1/K on each of the image's own K. Text side: each prompt against all B gathered
  images, one-hot on its own. Returns 0.5 * (mean over B images + mean over B*K prompts).
  """
  b, k, e = prompts.shape
  if not k:
    raise ValueError('the multi-label loss needs at least one prompt per image, got K = 0')
  image, prompts = image.astype(jnp.float32), prompts.astype(jnp.float32)
  scale = jnp.asarray(scale, jnp.float32)
  offset, devices = _offset_and_devices(b, axis_name)
  prompts_all = _gather(prompts, axis_name).reshape(-1, e)  # [B, K, E] -> [B*K, E]
  # Prompt k of global image g is row g*K + k of prompts_all.
  own_prompts = (offset + jnp.arange(b))[:, None] * k + jnp.arange(k)  # [b, K]

  # Soft target 1/K on the own K columns: -sum(t * log p) = -mean_k log p[own_k]; gathering
  # those K columns avoids materialising a [b, B*K] target matrix.
  image_to_prompts = scale * image @ prompts_all.T  # [b, B*K]
  log_probs = jax.nn.log_softmax(image_to_prompts, axis=-1)
  image_side = -jnp.sum(jnp.take_along_axis(log_probs, own_prompts, axis=-1)) / k

  prompts_to_image = scale * prompts.reshape(b * k, e) @ _gather(image, axis_name).T  # [b*K, B]
  prompt_targets = jnp.repeat(offset + jnp.arange(b), k)  # [b*K], row i*K + k -> image i
  text_side = _cross_entropy_sum(prompts_to_image, prompt_targets)

  image_mean = _global_mean(image_side, b * devices, axis_name)
  text_mean = _global_mean(text_side, b * k * devices, axis_name)
  return 0.5 * (image_mean + text_mean)


def contrastive_losses(
  image: jax.Array,
  text: jax.Array,
  prompts: jax.Array,
  image_text_scale: ArrayLike,
  multi_label_scale: ArrayLike,
  axis_name: AxisName = None,
) -> dict[str, jax.Array]:
  """GroupViT's training loss: image-text InfoNCE + multi-label loss (weight 1).

  image, text: [b, E]; prompts: [b, K, E]; all L2-normalised, b the local batch. The scales
  are the used temperatures min(exp(.), 100) of `logit_scale` and `multi_label_logit_scale`.
  axis_name: the mesh axis (or tuple of axes) the batch is sharded over inside shard_map, or
  None on one device. Returns scalars {'loss', 'loss_image_text', 'loss_multi_label'}, equal
  on every device. K = 0 (config.data.num_prompts = 0, the paper's Table 1 rows without the
  multi-label loss): the image-text loss alone, {'loss', 'loss_image_text'}.
  """
  loss_image_text = image_text_loss(image, text, image_text_scale, axis_name)
  if not prompts.shape[1]:
    return {'loss': loss_image_text, 'loss_image_text': loss_image_text}
  loss_multi_label = multi_label_loss(image, prompts, multi_label_scale, axis_name)
  return {
    'loss': loss_image_text + loss_multi_label,
    'loss_image_text': loss_image_text,
    'loss_multi_label': loss_multi_label,
  }
