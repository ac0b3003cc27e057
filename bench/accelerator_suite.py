"""The accelerator figures in one command: the train step per speed lever, the largest batch
that fits, the PyTorch peer's train step and zero-shot segmentation, on one chip.

  python bench/accelerator_suite.py                  # GroupViT-S on the first chip, < 8 minutes
  python bench/accelerator_suite.py --tiny           # the tests' tiny model, CPU: 1-2 minutes
  python bench/accelerator_suite.py --out r.json --cases 'train/256|peer'   # a subset

Prints one table and writes bench/results/<chip>-<date>.json (chip: the device kind as JAX
reports it, slugified, e.g. nvidia-h200; --out overrides), with the device kind, the jax,
jaxlib, torch and transformers versions and one record per case. Everything runs on the
default backend's first device (a 1-device mesh), on synthetic data: random uint8 images and
token rows with the end-of-text token where captions end.

Cases (the full run; --tiny: tests/tiny_train_config.py's model, batch 16, 32-pixel images):

  train/B/LEVER  The trainer's own jitted step (training/train.make_train_step) of GroupViT-S
      (configs/cc_yfcc_2stage.py, model.dtype bfloat16) at per-chip batch B = 256 and 1024,
      compiled ahead (compile time reported, not timed), then timed over --steps steps on one
      device-resident batch. LEVER is
        baseline              today's step: contrastive_chunks=1, model.remat 'none' (False in
                              older code), model.attention 'xla', no text trimming, and the
                              metrics fetched to the host (jax.device_get) after every step;
        contrastive_chunks    4 (GradCache: one more forward pass, a quarter of the memory);
        remat                 model.remat='dots_saveable' (older code: True, i.e. full);
        attention             model.attention='auto' (cuDNN's fused attention on NVIDIA GPUs
                              in bf16; elsewhere it is XLA's, the baseline's program);
        text_length_multiple  16: the trainer cuts each batch's token rows on the host to the
                              longest text, rounded up to 16 (training/text_trim.py); emulated
                              by feeding rows already cut to that bucket, 32 of 77 tokens for
                              captions of at most 30 BPE tokens (--caption_tokens);
        no_host_round_trip    the loop reads metrics on log steps only: the baseline's program,
                              timed with one block_until_ready after the last step;
        device_augment        a cost, not a speed-up: the batch carries each image's flip,
                              RandAugment and erasing draws and the step applies them
                              (input_pipeline/device_augment.py), as training does with
                              config.data.augment_on_device, the host's work moved here;
        all                   every available lever at once.
      A lever whose config key this code lacks (`key in config`) is "not available".
      samples/s, and MFU = bench/flops.py's analytic training FLOPs per sample x samples/s /
      the chip's dense bf16 peak (flops.PEAK_BF16_FLOPS; null where the chip has no entry,
      e.g. CPU). The FLOPs count full 77-token texts, so trimming shows as a higher
      MFU-equivalent (the trimmed FLOPs are not subtracted), and neither GradCache's extra
      forward pass nor remat's recomputation is counted (model FLOPs, by convention).
  peer/B  transformers' GroupViTModel of the same architecture (tests/hf_reference.py builds
      it): forward with return_loss=True, backward, gradient clipping and a fused AdamW step,
      under bf16 autocast on CUDA (fp32 on CPU), torch.compile'd when that works within the
      time limit (else eager; the record says which), same per-chip batch, in a subprocess run
      before any JAX case so that it has the chip's memory. It does less work than ours: one
      caption per image and the image-text loss only (no multi-label loss over 3 prompted
      nouns, no drop path). ratio_baseline / ratio_all = our samples/s (baseline / all) over
      its samples/s.
  segmentation  Zero-shot segmentation of VOC-sized images (375x500): ours is
      `segmentation.Segmenter` (resize to 448, two 448x448 windows, the image tower, group
      to class scores, label maps back on the host), the PyTorch port's network alone on the
      same two windows (as bench/bench_eval.py does); both float32 (TF32 matmuls on CUDA).
  max_batch/chunks=C  The largest per-chip batch (a multiple of 256) whose compiled step, in
      XLA's memory analysis (arguments + outputs - donated + temporaries, as
      bench/step_memory.py), fits the device's memory_stats()['bytes_limit'], with the
      baseline's model settings and contrastive_chunks C = 1 and 4: doubling, then
      bisection, each round guided by a linear fit of memory against batch and compiling up
      to --compile_workers candidates at once. n/a where the device reports no limit (CPU).

The run keeps to --budget_s (full: 440 s, so that start-up and the last case end within 8
minutes): a compile starts only while the budget still holds the longest compile so far, and
what does not fit is reported "skipped"; rerun it with --cases. Programs of one batch size
compile concurrently (--compile_workers), on GPUs after the baseline's, whose GEMM autotuning
the others then reuse.
"""

import argparse
import concurrent.futures
import dataclasses
import datetime
import functools
import importlib.util
import inspect
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from typing import Any, Callable

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
for _path in (os.path.join(REPO, 'tests'), os.path.join(REPO, 'bench'), REPO):
  if _path not in sys.path:
    sys.path.insert(0, _path)

CHUNKS = 4  # the contrastive_chunks lever
REMAT = 'dots_saveable'  # the model.remat lever
TRIM_MULTIPLE = 16  # the text_length_multiple lever
LEVERS = (
  'baseline',
  'contrastive_chunks',
  'remat',
  'attention',
  'text_length_multiple',
  'no_host_round_trip',
  'device_augment',
  'all',
)
SOT, EOT = 49406, 49407  # CLIP's start and end of text; EOT is the largest id
GIB = 2**30

OK, NOT_AVAILABLE, NA, OOM, SKIPPED, ERROR = (
  'ok',
  'not available',
  'n/a',
  'out of memory',
  'skipped',
  'error',
)

# jax.devices()[0].device_kind -> bench/flops.PEAK_BF16_FLOPS key; other kinds have no peak
# (PCIe and NVL parts have lower clocks than the SXM figures there), so their MFU is null.
PEAK_KEYS = {
  'NVIDIA H200': 'h200',
  'NVIDIA H100 80GB HBM3': 'h100',
  'NVIDIA A100-SXM4-80GB': 'a100',
  'NVIDIA A100-SXM4-40GB': 'a100',
  'TPU v4': 'tpu_v4',
  'TPU v5 lite': 'tpu_v5e',
  'TPU v5e': 'tpu_v5e',
  'TPU v5': 'tpu_v5p',
  'TPU v5p': 'tpu_v5p',
  'TPU v6 lite': 'tpu_v6e',
  'TPU v6e': 'tpu_v6e',
  'cpu': None,
}


@dataclasses.dataclass(frozen=True)
class Mode:
  """What a run measures: the full suite or the tiny one."""

  name: str
  config: str  # a configs/*.py-style file, relative to the repository
  dtype: str | None  # model.dtype override
  batches: tuple[int, ...]
  warmup_steps: int  # untimed steps after the compile
  steps: int  # timed steps
  caption_tokens: int  # the longest synthetic text, SOT and EOT included
  seg_images: int
  seg_hw: tuple[int, int]
  seg_short_side: int
  seg_window: int
  seg_stride: int
  seg_repeats: int
  peer_timeout_s: float
  budget_s: float
  compile_workers: int
  search_granularity: int = 256
  search_max_batch: int = 65536


FULL = Mode(
  name='full',
  config='configs/cc_yfcc_2stage.py',  # GroupViT-S
  dtype='bfloat16',
  batches=(256, 1024),
  warmup_steps=2,
  steps=20,
  caption_tokens=32,  # captions of up to 30 BPE tokens: cut to 32 of 77
  seg_images=8,
  seg_hw=(375, 500),  # VOC's most common size
  seg_short_side=448,
  seg_window=448,
  seg_stride=224,  # two windows per image
  seg_repeats=3,
  peer_timeout_s=120.0,
  budget_s=440.0,  # + start-up and an overrun of at most one case: within 8 minutes
  compile_workers=4,
)
TINY = Mode(
  name='tiny',
  config='tests/tiny_train_config.py',
  dtype=None,  # its float32
  batches=(16,),
  warmup_steps=1,
  steps=2,
  caption_tokens=16,  # cut to 16 of 32
  seg_images=2,
  seg_hw=(48, 64),
  seg_short_side=64,
  seg_window=64,
  seg_stride=32,  # two windows per image
  seg_repeats=2,
  peer_timeout_s=60.0,
  budget_s=240.0,
  compile_workers=2,
)


def parse_args(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--tiny', action='store_true', help='the tiny model, for CPU and tests')
  parser.add_argument('--out', default=None, help='JSON path (default bench/results/CHIP-DATE)')
  parser.add_argument('--cases', default=None, help='regex: run only the cases it matches')
  parser.add_argument('--batches', type=int, nargs='+', default=None, help='per-chip batches')
  parser.add_argument('--steps', type=int, default=None, help='timed steps per train case')
  parser.add_argument('--budget_s', type=float, default=None, help='start no case after this')
  parser.add_argument('--compile_workers', type=int, default=None, help='concurrent compiles')
  parser.add_argument(
    '--caption_tokens', type=int, default=None, help='longest synthetic text, SOT/EOT included'
  )
  parser.add_argument(
    '--peer_compile',
    choices=('auto', 'on', 'off'),
    default='auto',
    help='torch.compile the peer (auto: on accelerators, not on CPU, where it takes minutes)',
  )
  parser.add_argument('--peer_timeout_s', type=float, default=None)
  parser.add_argument(
    '--memory_limit_gib',
    type=float,
    default=None,
    help="max_batch's limit (default: the device's memory_stats()['bytes_limit'])",
  )
  parser.add_argument('--peer_worker', default=None, help=argparse.SUPPRESS)  # internal
  args = parser.parse_args(argv)
  base = TINY if args.tiny else FULL
  overrides = {
    'batches': tuple(args.batches) if args.batches else None,
    'steps': args.steps,
    'budget_s': args.budget_s,
    'compile_workers': args.compile_workers,
    'caption_tokens': args.caption_tokens,
    'peer_timeout_s': args.peer_timeout_s,
  }
  mode = dataclasses.replace(base, **{k: v for k, v in overrides.items() if v is not None})
  if any(b < 1 for b in mode.batches) or mode.steps < 1:
    parser.error('--batches and --steps must be positive')
  return args, mode


def slug(text: str) -> str:
  return re.sub(r'[^a-z0-9]+', '-', text.lower()).strip('-') or 'unknown'


def peak_flops(device_kind: str) -> tuple[str | None, float | None]:
  """The flops.PEAK_BF16_FLOPS key and value for a device kind; (None, None) if unknown."""
  import flops  # pylint: disable=g-import-not-at-top  (bench/)

  key = PEAK_KEYS.get(device_kind)
  return key, (flops.PEAK_BF16_FLOPS[key] if key else None)


def versions() -> dict:
  out = {'python': platform.python_version()}
  for name in ('jax', 'jaxlib', 'flax', 'optax', 'numpy', 'torch', 'transformers'):
    try:
      out[name] = __import__(name).__version__
    except Exception as error:  # pylint: disable=broad-except
      out[name] = f'unavailable ({type(error).__name__})'
  return out


def load_config(path: str):
  from mfu import load_config as load  # pylint: disable=g-import-not-at-top  (bench/)

  return load(os.path.join(REPO, path))


def synthetic_tokens(rng, batch: int, texts: int, context: int, longest: int) -> np.ndarray:
  """int32 [batch, texts, context]: SOT, random ids, EOT, zero padding. Captions (text 0) have
  3 to longest - 2 BPE tokens, prompts ("a photo of a dog.") 5 to 8; one caption is as long as
  allowed, so the longest text ends exactly at `longest` (capped at the context)."""
  longest = min(longest, context)
  tokens = np.zeros((batch, texts, context), np.int32)
  lengths = np.empty((batch, texts), np.int64)
  lengths[:, 0] = rng.integers(min(3, longest - 2), longest - 1, batch)
  lengths[:, 1:] = rng.integers(min(5, longest - 2), min(9, longest - 1), (batch, texts - 1))
  lengths[0, 0] = longest - 2
  for index in np.ndindex(batch, texts):
    n = lengths[index]
    tokens[index][0] = SOT
    tokens[index][1 : n + 1] = rng.integers(1, SOT, n)
    tokens[index][n + 1] = EOT
  return tokens


def trimmed_length(tokens: np.ndarray, multiple: int) -> int:
  """The length the trainer cuts these rows to (training/text_trim.py where it exists)."""
  context = tokens.shape[-1]
  try:
    from groupvit_jax.training import text_trim  # pylint: disable=g-import-not-at-top

    return text_trim.bucket_length(text_trim.text_length(tokens), multiple, context)
  except ImportError:
    length = int(np.argmax(tokens, axis=-1).max()) + 1
    return min(-(-length // multiple) * multiple, context)


def hf_config_kwargs(model: dict) -> dict:
  """transformers.GroupViTConfig keyword arguments for a `model` config section (GroupViT-S's
  gives transformers' default config, the released model)."""
  v, t = model['vision'], model['text']
  depths = list(v['depths'])
  outputs = list(v['num_output_groups'])
  outputs += [outputs[-1]] * (len(depths) - len(outputs))  # transformers: one per stage
  return dict(
    vision_config=dict(
      hidden_size=v['width'],
      intermediate_size=int(v['width'] * v.get('mlp_ratio', 4.0)),
      depths=depths,
      num_hidden_layers=sum(depths),
      num_group_tokens=list(v['num_group_tokens']),
      num_output_groups=outputs,
      num_attention_heads=v['num_heads'],
      image_size=v['image_size'],
      patch_size=v['patch_size'],
    ),
    text_config=dict(
      vocab_size=t.get('vocab_size', 49408),
      hidden_size=t['width'],
      intermediate_size=int(t['width'] * t.get('mlp_ratio', 4.0)),
      num_hidden_layers=t['depth'],
      num_attention_heads=t['num_heads'],
      max_position_embeddings=t['context_length'],
    ),
    projection_dim=model['embed_dim'],
    projection_intermediate_dim=model['projection_hidden_dim'],
  )


def _short_error(error: BaseException) -> str:
  text = f'{type(error).__name__}: {error}'.replace('\n', ' ')
  return text if len(text) < 400 else text[:400] + '...'


def _is_oom(error: BaseException) -> bool:
  text = str(error)
  return 'RESOURCE_EXHAUSTED' in text or 'out of memory' in text.lower()


# ----------------------------------------------------------------------------- the train step


@dataclasses.dataclass(frozen=True)
class Variant:
  """One train-case setting. remat/attention are None where the config lacks the key."""

  chunks: int
  remat: Any
  attention: str | None
  text_length: int
  round_trip: bool
  augment: bool = False  # the batch carries the DeiT set's draws, applied in the step

  def program_key(self, batch: int, attention_auto: str | None = 'auto') -> tuple:
    """What the compiled program depends on; `attention_auto`: what 'auto' runs here ('xla'
    where it resolves to XLA's attention, whose program is the baseline's)."""
    attention = attention_auto if self.attention == 'auto' else self.attention
    return (batch, self.chunks, self.remat, attention, self.text_length, self.augment)


@dataclasses.dataclass
class Program:
  """A compiled step, or why there is none."""

  compiled: Any = None
  compile_s: float | None = None
  memory: dict | None = None
  error: str | None = None
  oom: bool = False
  skipped: bool = False

  @property
  def total_bytes(self) -> int | None:
    m = self.memory
    if not m:
      return None
    # The state is donated: the outputs reuse the arguments' buffers (aliased).
    return m['arguments'] + m['outputs'] - m['aliased'] + m['temporaries']


def memory_of(compiled) -> dict | None:
  try:
    analysis = compiled.memory_analysis()
  except Exception:  # pylint: disable=broad-except  (not every backend has one)
    return None
  if analysis is None:
    return None
  return {
    'arguments': int(analysis.argument_size_in_bytes),
    'outputs': int(analysis.output_size_in_bytes),
    'aliased': int(analysis.alias_size_in_bytes),
    'temporaries': int(analysis.temp_size_in_bytes),
  }


class Suite:
  """The run's device, config, compiled programs, data and results."""

  def __init__(self, args, mode: Mode):
    import jax  # pylint: disable=g-import-not-at-top

    from groupvit_jax.training import optimizer as optimizers  # pylint: disable=g-import-not-at-top
    from groupvit_jax.training import sharding, train  # pylint: disable=g-import-not-at-top

    self.args, self.mode = args, mode
    self.start = time.perf_counter()
    self.deadline = self.start + mode.budget_s
    self.device = jax.devices()[0]
    self.device_kind = self.device.device_kind
    self.platform = self.device.platform
    self.peak_key, self.peak = peak_flops(self.device_kind)
    stats = None
    try:
      stats = self.device.memory_stats()
    except Exception:  # pylint: disable=broad-except
      pass
    self.memory_limit = int(stats['bytes_limit']) if stats and 'bytes_limit' in stats else None
    if args.memory_limit_gib:
      self.memory_limit = int(args.memory_limit_gib * GIB)
    self.mesh = sharding.make_mesh({'data': 1, 'fsdp': 1}, [self.device])

    config = load_config(mode.config)
    if mode.dtype:
      config.model.dtype = mode.dtype
    self.config = config
    self.image_size = config.data.image_size
    self.texts = 1 + config.data.num_prompts
    self.context = config.model.text.context_length
    self.has = {
      'contrastive_chunks': 'contrastive_chunks' in config
      and 'contrastive_chunks' in inspect.signature(train.make_train_step).parameters,
      'remat': 'remat' in config.model,
      'attention': 'attention' in config.model,
      'text_length_multiple': 'text_length_multiple' in config,
      'device_augment': importlib.util.find_spec('input_pipeline.device_augment') is not None,
    }
    rng = np.random.default_rng(0)
    sample = synthetic_tokens(rng, 8, self.texts, self.context, mode.caption_tokens)
    self.trim_length = trimmed_length(sample, TRIM_MULTIPLE)

    schedule = optimizers.schedule_from_config(
      config.optimizer, batch_size=mode.batches[0], warmup_steps=1, total_steps=1000
    )
    self.schedule = schedule
    self.optimizer = optimizers.make_optimizer(config.optimizer, schedule)
    baseline_model = self.build_model(self.variant('baseline'))
    self.init = functools.partial(train.create_train_state, baseline_model, self.optimizer, 0)
    self.state_shapes = jax.eval_shape(self.init)
    self.state_shardings = train.state_shardings(self.mesh, self.state_shapes)
    self._host_state = None
    self.programs: dict[tuple, Program] = {}
    self.data: dict[tuple, Any] = {}
    self.results: dict[str, dict] = {}
    self.selected_levers: dict[int, list[str]] = {}
    self._torch = None
    self.tmp = tempfile.mkdtemp(prefix='accelerator_suite_')
    self.compile_log: list[dict] = []
    self.peer_batches: list[int] = []  # set by main from the selected cases
    self.want_segmentation = False
    self._seg = None
    self.peer_compile = args.peer_compile == 'on' or (
      args.peer_compile == 'auto' and self.platform != 'cpu'
    )
    # The tiny suite is a smoke test of every path: on CPU it compiles without LLVM's costly
    # optimisations (half the compile time, slower code).
    self.compile_options = None
    if mode.name == 'tiny' and self.platform == 'cpu':
      self.compile_options = {
        'xla_backend_optimization_level': 0,
        'xla_llvm_disable_expensive_passes': True,
      }

  # -- settings

  def remaining(self) -> float:
    return self.deadline - time.perf_counter()

  def expected_compile_s(self) -> float:
    """How long a compile may take: the longest so far (0 before the first)."""
    return max((c['seconds'] for c in self.compile_log), default=0.0)

  def elapsed(self) -> float:
    return time.perf_counter() - self.start

  def baseline_remat(self):
    return 'none' if isinstance(self.config.model.remat, str) else False

  def variant(self, lever: str) -> Variant | None:
    """The setting of a lever's case; None if this code lacks the lever's config key."""
    if lever != 'all' and lever in self.has and not self.has[lever]:
      return None
    remat = self.baseline_remat() if self.has['remat'] else None
    attention = 'xla' if self.has['attention'] else None
    v = Variant(1, remat, attention, self.context, True)
    use = set(self.has_levers()) if lever == 'all' else {lever}
    if 'contrastive_chunks' in use:
      v = dataclasses.replace(v, chunks=CHUNKS)
    if 'remat' in use:
      v = dataclasses.replace(v, remat=REMAT if isinstance(remat, str) else True)
    if 'attention' in use:
      v = dataclasses.replace(v, attention='auto')
    if 'text_length_multiple' in use:
      v = dataclasses.replace(v, text_length=self.trim_length)
    if 'no_host_round_trip' in use:
      v = dataclasses.replace(v, round_trip=False)
    if 'device_augment' in use:
      v = dataclasses.replace(v, augment=True)
    return v

  def has_levers(self) -> list[str]:
    return [lever for lever in LEVERS[1:-1] if self.has.get(lever, True)]

  def setting(self, lever: str) -> str:
    """The lever's value in words, for the table."""
    v = self.variant(lever)
    if lever == 'baseline':
      return f'chunks 1, remat none, attention xla, {self.context} tokens, device_get per step'
    if v is None:
      return {
        'contrastive_chunks': f'contrastive_chunks={CHUNKS}',
        'remat': f'model.remat={REMAT}',
        'attention': "model.attention='auto'",
        'text_length_multiple': f'text_length_multiple={TRIM_MULTIPLE}',
        'device_augment': 'config.data.augment_on_device',
      }[lever]
    parts = {
      'contrastive_chunks': f'contrastive_chunks={v.chunks}',
      'remat': f'model.remat={v.remat}',
      'attention': f"model.attention='auto' ({self.attention_resolves_to()})",
      'text_length_multiple': f'text_length_multiple={TRIM_MULTIPLE}: '
      f'{v.text_length} of {self.context} tokens',
      'no_host_round_trip': 'block_until_ready after the last step only',
      'device_augment': 'flip, RandAugment and erasing applied in the step (a cost)',
    }
    if lever == 'all':
      short = {
        'contrastive_chunks': f'chunks {v.chunks}',
        'remat': f'remat {v.remat}',
        'attention': 'attention auto',
        'text_length_multiple': f'{v.text_length} tokens',
        'no_host_round_trip': 'no round trip',
        'device_augment': 'device augment',
      }
      return ' + '.join(short[k] for k in self.has_levers())
    return parts[lever]

  def program_key(self, batch: int, v: Variant) -> tuple:
    return v.program_key(batch, 'auto' if self.auto_is_cudnn() else 'xla')

  def auto_is_cudnn(self) -> bool:
    return self.attention_resolves_to().startswith('cuDNN')

  def attention_resolves_to(self) -> str:
    """What model.attention='auto' runs here, as layers.attention_implementation decides."""
    from groupvit_jax.models import layers  # pylint: disable=g-import-not-at-top

    choose = getattr(layers, 'attention_implementation', None)
    if choose is None:
      return 'unknown'
    vision = self.config.model.vision
    try:
      impl = choose('auto', self.config.model.dtype, vision.width // vision.num_heads)
    except Exception as error:  # pylint: disable=broad-except
      return _short_error(error)
    return 'cuDNN fused attention' if impl == 'cudnn' else 'XLA attention, as the baseline'

  def model_config(self, v: Variant) -> dict:
    config = self.config.model.copy_and_resolve_references()
    if v.remat is not None:
      config.remat = v.remat
    if v.attention is not None:
      config.attention = v.attention
    return config.to_dict()

  def build_model(self, v: Variant):
    from groupvit_jax.weights import checkpoint  # pylint: disable=g-import-not-at-top

    return checkpoint.build_model(self.model_config(v))

  def flops_per_sample(self, batch: int) -> float:
    import flops  # pylint: disable=g-import-not-at-top

    model = self.config.model.to_dict()
    return flops.train_flops_per_sample(model, self.image_size, self.texts, batch)

  # -- programs and data

  def lower(self, batch: int, v: Variant):
    """The jitted train step of variant `v` at `batch`, lowered for abstract inputs."""
    import jax  # pylint: disable=g-import-not-at-top

    from groupvit_jax.training import train  # pylint: disable=g-import-not-at-top

    kwargs = {'contrastive_chunks': v.chunks} if self.has['contrastive_chunks'] else {}
    step = train.make_train_step(
      self.build_model(v),
      self.optimizer,
      self.schedule,
      self.mesh,
      self.state_shardings,
      1,
      **kwargs,
    )
    inputs = {
      'image': jax.ShapeDtypeStruct((batch, self.image_size, self.image_size, 3), np.uint8),
      'text': jax.ShapeDtypeStruct((batch, self.texts, v.text_length), np.int32),
    }
    if v.augment:
      inputs['augment'] = {
        k: jax.ShapeDtypeStruct((batch, *x.shape[1:]), x.dtype) for k, x in self.draws().items()
      }
    return step.lower(self.state_shapes, inputs)

  def draws(self, batch: int = 1, seed: int = 0) -> dict:
    """`batch` images' flip, RandAugment and erasing draws, stacked as a batch's 'augment'."""
    from input_pipeline import image_transforms  # pylint: disable=g-import-not-at-top

    rng = np.random.default_rng(seed)
    config = image_transforms.TransformConfig(image_size=self.image_size)
    rows = [image_transforms.augment_params(rng, config) for _ in range(batch)]
    return {k: np.stack([np.asarray(r[k]) for r in rows]) for k in rows[0]}

  def compile_many(self, jobs: list[tuple[Any, Callable]], workers: int, options=None) -> list:
    """Compiles (key, lower_fn) jobs, up to `workers` at a time. Lowering (tracing, which holds
    the GIL) happens here one job after another while earlier jobs compile in the pool; a job
    that would start after the deadline is skipped."""

    def compile_one(key, low):
      if self.remaining() < self.expected_compile_s():
        return key, Program(skipped=True, error='no time left in the budget to compile it')
      start = time.perf_counter()
      try:
        compiled = compile_with_options(low, options)
      except Exception as error:  # pylint: disable=broad-except
        return key, Program(error=_short_error(error), oom=_is_oom(error))
      seconds = time.perf_counter() - start
      self.compile_log.append({'key': str(key), 'seconds': seconds, 'workers': workers})
      return key, Program(compiled, seconds, memory_of(compiled))

    with concurrent.futures.ThreadPoolExecutor(max(1, workers)) as pool:
      futures = []
      for key, lower_fn in jobs:
        if self.remaining() < self.expected_compile_s():
          program = Program(skipped=True, error='no time left in the budget to compile it')
          futures.append(_done((key, program)))
          continue
        try:
          low = lower_fn()
        except Exception as error:  # pylint: disable=broad-except
          futures.append(_done((key, Program(error=_short_error(error), oom=_is_oom(error)))))
          continue
        futures.append(pool.submit(compile_one, key, low))
      return [f.result() for f in futures]

  def program(self, batch: int, v: Variant) -> Program:
    """The compiled step; the first call at a batch size compiles every selected train case's
    program of that size: the baseline's first, then the others concurrently."""
    key = self.program_key(batch, v)
    if key not in self.programs:
      variants = {}
      for lever in self.selected_levers.get(batch, []) or [None]:
        other = v if lever is None else self.variant(lever)
        if other is not None:
          variants.setdefault(self.program_key(batch, other), other)
      variants.setdefault(key, v)
      todo = [(k, functools.partial(self.lower, batch, x)) for k, x in variants.items()]
      todo = [job for job in todo if job[0] not in self.programs]
      # On GPUs the others reuse the baseline's GEMM autotuning, so it compiles alone first.
      first, rest = (todo[:1], todo[1:]) if self.platform == 'gpu' else ([], todo)
      print(
        f'    compiling {len(todo)} train-step programs for batch {batch}'
        + (' (the first alone, then ' if first else ' (')
        + f'{min(self.mode.compile_workers, max(len(rest), 1))} at a time)',
        flush=True,
      )
      options = self.compile_options
      for k, p in self.compile_many(first, 1, options) + self.compile_many(
        rest, self.mode.compile_workers, options
      ):
        self.programs[k] = p
    return self.programs[key]

  def host_state(self):
    """The initial TrainState as NumPy arrays (initialised once, on the host CPU if there)."""
    if self._host_state is None:
      import jax  # pylint: disable=g-import-not-at-top

      try:
        cpu = jax.devices('cpu')[0]
      except RuntimeError:
        cpu = None
      # Its speed does not matter: compiled without LLVM's costly optimisations.
      fast = {'xla_backend_optimization_level': 0, 'xla_llvm_disable_expensive_passes': True}
      if cpu is not None:
        with jax.default_device(cpu):
          state = compile_with_options(jax.jit(self.init).lower(), fast)()
      else:
        state = jax.jit(self.init, out_shardings=self.state_shardings)()
      self._host_state = jax.device_get(state)
    return self._host_state

  def fresh_state(self):
    import jax  # pylint: disable=g-import-not-at-top

    return jax.device_put(self.host_state(), self.state_shardings)

  def batch(self, batch: int, text_length: int, augment: bool = False):
    """A device-resident synthetic batch (the same for every case of this size), with the
    DeiT set's draws if `augment`."""
    import jax  # pylint: disable=g-import-not-at-top

    from groupvit_jax.training import sharding  # pylint: disable=g-import-not-at-top

    key = (batch, text_length, augment)
    if key not in self.data:
      for old in [k for k in self.data if k[0] != batch]:
        del self.data[old]  # one batch size on the device at a time
      rng = np.random.default_rng(batch)
      size = self.image_size
      images = rng.integers(0, 256, (batch, size, size, 3), np.uint8)
      tokens = synthetic_tokens(rng, batch, self.texts, self.context, self.mode.caption_tokens)
      host = {'image': images, 'text': np.ascontiguousarray(tokens[..., :text_length])}
      if augment:
        host['augment'] = self.draws(batch, seed=batch)
      self.data[key] = jax.device_put(host, sharding.batch_sharding(self.mesh))
    return self.data[key]

  # -- the PyTorch side, in a subprocess

  def torch_results(self) -> dict:
    """The peer's train steps and the PyTorch segmentation network, measured once (in a
    subprocess, before the JAX cases hold the chip's memory)."""
    if self._torch is None:
      self._torch = run_torch_worker(self)
    return self._torch


def _done(value) -> concurrent.futures.Future:
  future = concurrent.futures.Future()
  future.set_result(value)
  return future


def compile_with_options(lowered, options):
  if not options:
    return lowered.compile()
  try:
    return lowered.compile(compiler_options=options)
  except Exception as error:  # pylint: disable=broad-except
    if 'compile option' not in str(error):
      raise
    return lowered.compile()  # an option this XLA does not know


def time_steps(compiled, state, batch, warmup: int, steps: int, round_trip: bool) -> dict:
  """Runs `warmup` untimed then `steps` timed steps. With `round_trip`, each step's metrics
  are fetched to the host before the next is dispatched (device_get), else only the last
  step is waited for."""
  import jax  # pylint: disable=g-import-not-at-top

  start = time.perf_counter()
  metrics = None
  for _ in range(warmup):
    state, metrics = compiled(state, batch)
    jax.device_get(metrics)
  warmup_s = time.perf_counter() - start
  times = []
  start = time.perf_counter()
  for _ in range(steps):
    t = time.perf_counter()
    state, metrics = compiled(state, batch)
    if round_trip:
      jax.device_get(metrics)
      times.append(time.perf_counter() - t)
  jax.block_until_ready((state, metrics))
  total = time.perf_counter() - start
  loss = float(jax.device_get(metrics['loss']))
  del state
  return {
    'total_s': total,
    'step_s': statistics.median(times) if times else total / steps,
    'warmup_s': warmup_s,
    'loss': loss,
  }


# ----------------------------------------------------------------------------- the cases


def train_case(suite: Suite, batch: int, lever: str) -> dict:
  """train/B/LEVER: the trainer's step with one lever (or none, or all) at per-chip batch B."""
  v = suite.variant(lever)
  record = {'kind': 'train', 'batch': batch, 'lever': lever, 'setting': suite.setting(lever)}
  if v is None:
    key = {'remat': 'model.remat', 'attention': 'model.attention'}.get(lever, lever)
    return dict(record, status=NOT_AVAILABLE, note=f'this code has no config key {key}')
  record['levers'] = {
    'contrastive_chunks': v.chunks,
    'remat': v.remat,
    'attention': v.attention,
    'text_length': v.text_length,
    'host_round_trip': v.round_trip,
  }
  program = suite.program(batch, v)
  baseline = suite.variant('baseline')
  shared = lever != 'baseline' and suite.program_key(batch, v) == suite.program_key(batch, baseline)
  record['compile_s'] = 0.0 if shared else program.compile_s
  if program.memory:
    record['memory_gib'] = program.total_bytes / GIB
  if program.skipped:
    return dict(record, status=SKIPPED, note=program.error)
  if program.error:
    return dict(record, status=OOM if program.oom else ERROR, note=program.error)
  if suite.memory_limit and program.total_bytes and program.total_bytes > suite.memory_limit:
    note = (
      f'XLA needs {program.total_bytes / GIB:.1f} GiB, the device allows '
      f'{suite.memory_limit / GIB:.1f} GiB: not run'
    )
    return dict(record, status=OOM, note=note)
  data = suite.batch(batch, v.text_length, v.augment)
  try:
    timing = time_steps(
      program.compiled,
      suite.fresh_state(),
      data,
      suite.mode.warmup_steps,
      suite.mode.steps,
      v.round_trip,
    )
  except Exception as error:  # pylint: disable=broad-except
    return dict(record, status=OOM if _is_oom(error) else ERROR, note=_short_error(error))
  samples = batch * suite.mode.steps / timing['total_s']
  flops_per_sample = suite.flops_per_sample(batch)
  notes = []
  if shared:
    notes.append("the baseline's program")
  if v.text_length < suite.context:
    notes.append(f'texts fed pre-cut; MFU counts {suite.context}-token texts')
  if not np.isfinite(timing['loss']):
    notes.append('non-finite loss (the step keeps the old weights; speed unaffected)')
  return dict(
    record,
    status=OK,
    samples_per_second=samples,
    mfu=samples * flops_per_sample / suite.peak if suite.peak else None,
    step_s=timing['step_s'],
    timed_steps=suite.mode.steps,
    warmup_s=timing['warmup_s'],
    loss=timing['loss'],
    flops_per_sample=flops_per_sample,
    note='; '.join(notes),
  )


def peer_case(suite: Suite, batch: int) -> dict:
  """peer/B: transformers' GroupViT train step at per-chip batch B (run by the worker)."""
  record = {'kind': 'peer', 'batch': batch}
  results = suite.torch_results()
  if results.get('status') != OK:
    return dict(record, status=results.get('status', ERROR), note=results.get('note', ''))
  train = results.get('train', {}).get(str(batch))
  if not train:
    note = 'the worker did not reach this batch' + results.get('stopped', '')
    return dict(record, status=SKIPPED, note=note)
  eager, compiled = train.get('eager', {}), train.get('compiled', {})
  best = None
  if compiled.get('samples_per_second'):
    best, mode = compiled, 'torch.compile'
  elif eager.get('samples_per_second'):
    best, mode = eager, 'eager'
  notes = [
    'one caption per image, image-text loss only (no multi-label loss, no drop path): '
    'less work than ours'
  ]
  if compiled.get('error'):
    notes.append(f'torch.compile failed: {compiled["error"]}')
  elif not compiled and suite.peer_compile:
    notes.append('torch.compile not finished within the time limit: eager')
  elif not suite.peer_compile:
    notes.append(f'torch.compile not tried ({suite.args.peer_compile} on {suite.platform})')
  if best is None:
    status = OOM if eager.get('oom') else ERROR
    return dict(record, status=status, note=eager.get('error', 'no result'), eager=eager)
  return dict(
    record,
    status=OK,
    mode=mode,
    samples_per_second=best['samples_per_second'],
    step_s=best['step_s'],
    timed_steps=best['steps'],
    compile_s=compiled.get('compile_s'),
    eager_samples_per_second=eager.get('samples_per_second'),
    compiled_samples_per_second=compiled.get('samples_per_second'),
    precision=results['precision'],
    torch_device=results['torch_device'],
    note='; '.join(notes),
  )


def segmentation_case(suite: Suite) -> dict:
  """segmentation: our Segmenter against the PyTorch network on the same windows."""
  import groupvit_jax  # pylint: disable=g-import-not-at-top
  from groupvit_jax import segmentation  # pylint: disable=g-import-not-at-top
  from groupvit_jax.evaluators import datasets  # pylint: disable=g-import-not-at-top

  m = suite.mode
  record = {
    'kind': 'segmentation',
    'images': m.seg_images,
    'image_hw': list(m.seg_hw),
    'window': m.seg_window,
  }
  if suite.remaining() < suite.expected_compile_s():
    return dict(record, status=SKIPPED, note='no time left in the budget to compile it')
  seg = ensure_seg_inputs(suite)
  model = groupvit_jax.load(seg['hf_dir'])
  start = time.perf_counter()
  segmenter = segmentation.Segmenter(
    model,
    datasets.VOC_CLASSES[1:],
    0.95,
    short_side=m.seg_short_side,
    window=m.seg_window,
    stride=m.seg_stride,
  )
  images = seg['images']

  def ours():
    for image in images:
      segmenter(image)

  ours()  # compile
  compile_s = time.perf_counter() - start
  rounds = []
  for _ in range(m.seg_repeats):
    t = time.perf_counter()
    ours()
    rounds.append(time.perf_counter() - t)
  ours_ips = len(images) / statistics.median(rounds)
  record.update(
    compile_s=compile_s,
    windows=seg['windows_per_image'],
    samples_per_second=ours_ips,
    ours_images_per_second=ours_ips,
  )
  theirs = suite.torch_results().get('segmentation') or {}
  if theirs.get('images_per_second'):
    record.update(
      status=OK,
      torch_images_per_second=theirs['images_per_second'],
      ratio=ours_ips / theirs['images_per_second'],
      note='ours: the whole protocol, label maps on the host; torch: the network alone',
    )
  else:
    note = theirs.get('error') or suite.torch_results().get('note') or 'no torch result'
    record.update(status=OK, torch_images_per_second=None, ratio=None, note=f'torch: {note}')
  return record


def max_batch_case(suite: Suite, chunks: int) -> dict:
  """max_batch/chunks=C: the largest per-chip batch whose step fits the device's memory."""
  record = {'kind': 'max_batch', 'contrastive_chunks': chunks}
  if suite.memory_limit is None:
    return dict(record, status=NA, note='the device reports no memory limit (CPU)')
  if chunks > 1 and not suite.has['contrastive_chunks']:
    return dict(record, status=NOT_AVAILABLE, note='this code has no contrastive_chunks')
  base = suite.variant('baseline')
  v = dataclasses.replace(base, chunks=chunks)
  limit = suite.memory_limit
  granularity = max(suite.mode.search_granularity, chunks)
  known = {}  # batch -> total bytes (None: did not compile)
  for key, program in suite.programs.items():
    if key[1:] == suite.program_key(0, v)[1:] and program.total_bytes is not None:
      known[key[0]] = program.total_bytes
  probes = []
  # Probes are never run, so they compile without GEMM autotuning on GPUs.
  options = {'xla_gpu_autotune_level': 0} if suite.platform == 'gpu' else suite.compile_options
  exact = False
  while True:
    lo, hi = search_bracket(known, limit)
    if hi is not None and hi - lo <= granularity:
      exact = True
      break
    if lo >= suite.mode.search_max_batch:
      break
    if suite.remaining() < suite.expected_compile_s():
      break
    picks = search_candidates(
      known, limit, granularity, suite.mode.compile_workers, suite.mode.search_max_batch
    )
    if not picks:
      break
    jobs = [(b, functools.partial(suite.lower, b, v)) for b in picks]
    failed = None
    for b, program in suite.compile_many(jobs, suite.mode.compile_workers, options):
      if program.skipped:
        continue
      total = program.total_bytes
      probes.append(
        {
          'batch': b,
          'total_gib': None if total is None else total / GIB,
          'compile_s': program.compile_s,
          'error': program.error,
        }
      )
      if total is not None:
        known[b] = total
      elif program.oom:
        known[b] = float('inf')  # the compiler itself ran out of memory: too large
      else:
        failed = program.error or 'no memory analysis'
    if failed:
      return dict(record, status=ERROR, probes=probes, note=failed)
  lo, hi = search_bracket(known, limit)
  note = 'XLA memory analysis of the compiled step (baseline model settings) vs bytes_limit'
  if not exact:
    note += '; a lower bound: the search stopped (time budget or the largest batch tried)'
  return dict(
    record,
    status=OK,
    max_batch=lo,
    exact=exact,
    first_too_large=hi,
    bytes_limit_gib=limit / GIB,
    known_gib={str(b): (t / GIB if t != float('inf') else None) for b, t in sorted(known.items())},
    probes=probes,
    note=note,
  )


def search_bracket(known: dict, limit: int) -> tuple[int, int | None]:
  """(largest batch known to fit or 0, smallest known not to fit or None)."""
  lo = max((b for b, t in known.items() if t <= limit), default=0)
  hi = min((b for b, t in known.items() if t > limit and b > lo), default=None)
  return lo, hi


def _fit_guess(known: dict, limit: int, granularity: int) -> int | None:
  """The batch where memory reaches `limit` by a straight line through two measurements: the
  bracket's ends when there is one, else the two largest batches that fit (extrapolating at
  most 4x beyond them); a multiple of `granularity`."""
  lo, hi = search_bracket(known, limit)
  fits = sorted(b for b, t in known.items() if t <= limit)
  if hi is not None and lo and known[hi] != float('inf'):
    (b1, t1), (b2, t2) = (lo, known[lo]), (hi, known[hi])
  elif hi is None and len(fits) >= 2:
    (b1, t1), (b2, t2) = [(b, known[b]) for b in fits[-2:]]
  else:
    return None
  if t2 <= t1:
    return None
  guess = b1 + (limit - t1) * (b2 - b1) / (t2 - t1)
  if hi is None:
    guess = min(guess, 4 * b2)
  return int(guess // granularity * granularity)


def search_candidates(known, limit, granularity, width, max_batch) -> list[int]:
  """Up to `width` batches to compile next, multiples of `granularity` strictly inside the
  bracket: around the straight-line guess of the largest that fits, plus the bracket's
  midpoint (bisection) when there is an upper end, else doubling."""
  lo, hi = search_bracket(known, limit)
  picks = []

  def add(b):
    inside = lo < b < hi if hi is not None else lo < b <= max_batch
    if inside and b % granularity == 0 and b not in known and b not in picks:
      if len(picks) < width:
        picks.append(b)

  guess = _fit_guess(known, limit, granularity)
  if guess is not None and hi is None:
    guess = min(guess, max_batch // granularity * granularity)
  if guess is not None:
    room = width - 1 if hi is not None and width > 1 else width  # a place for the midpoint
    for offset in (0, 1, -1, 2, -2, 3, -3):
      if len(picks) < room:
        add(guess + offset * granularity)
  if hi is not None:
    steps = (hi - lo) // granularity
    add(lo + max(1, steps // 2) * granularity)
    for i in range(1, width + 1):
      add(lo + max(1, round(i * steps / (width + 1))) * granularity)
  else:
    b = max(lo, granularity // 2) * 2
    while len(picks) < width and b <= max_batch:
      add(b)
      b *= 2
    add(max_batch // granularity * granularity)
  return sorted(picks)


# ----------------------------------------------------------------------------- PyTorch side


def ensure_seg_inputs(suite: Suite) -> dict:
  """The HF weights (tests/hf_reference.make_model, saved for both sides), the VOC-sized
  images and their windows as ours cuts them."""
  if suite._seg is None:
    from groupvit_jax import segmentation  # pylint: disable=g-import-not-at-top

    import hf_reference as ref  # pylint: disable=g-import-not-at-top  (tests/)

    m = suite.mode
    hf_dir = os.path.join(suite.tmp, 'hf_model')
    ref.make_model(seed=0, **hf_config_kwargs(suite.config.model.to_dict())).save_pretrained(hf_dir)
    images = ref.random_images(0, m.seg_images, *m.seg_hw)
    windows = []
    for image in images:
      resized = segmentation.rescale_images(image[None], m.seg_short_side)[0]
      boxes = segmentation.window_boxes(*resized.shape[:2], m.seg_window, m.seg_stride)
      windows += [resized[top:bottom, left:right] for top, left, bottom, right in boxes]
    windows = np.stack(windows)
    path = os.path.join(suite.tmp, 'windows.npy')
    np.save(path, windows)
    suite._seg = {
      'hf_dir': hf_dir,
      'images': images,
      'windows_path': path,
      'windows_per_image': len(windows) // len(images),
    }
  return suite._seg


def run_torch_worker(suite: Suite) -> dict:
  """Runs the PyTorch measurements in a subprocess, killed at the time limit (the results it
  wrote so far are kept)."""
  torch_device = {'gpu': 'cuda', 'cpu': 'cpu'}.get(suite.platform)
  if torch_device is None:
    return {'status': NA, 'note': f'PyTorch has no backend for {suite.platform} here'}
  wanted = suite.peer_batches
  spec = {
    'device': torch_device,
    'model': hf_config_kwargs(suite.config.model.to_dict()),
    'batches': list(wanted),
    'image_size': suite.image_size,
    'context': suite.context,
    'caption_tokens': suite.mode.caption_tokens,
    'warmup_steps': suite.mode.warmup_steps,
    'steps': suite.mode.steps,
    'compile': suite.peer_compile,
    'threads': 1 if suite.mode.name == 'tiny' else None,
    'seg_repeats': suite.mode.seg_repeats,
    'out': os.path.join(suite.tmp, 'torch_results.json'),
  }
  if suite.want_segmentation:
    seg = ensure_seg_inputs(suite)
    spec.update(hf_dir=seg['hf_dir'], windows=seg['windows_path'], images=len(seg['images']))
  spec_path = os.path.join(suite.tmp, 'torch_spec.json')
  with open(spec_path, 'w') as f:
    json.dump(spec, f)
  timeout = max(1.0, min(suite.mode.peer_timeout_s, suite.remaining()))
  log_path = os.path.join(suite.tmp, 'torch_worker.log')
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  with open(log_path, 'w') as log:
    proc = subprocess.Popen(
      [sys.executable, os.path.abspath(__file__), '--peer_worker', spec_path],
      stdout=log,
      stderr=subprocess.STDOUT,
      env=env,
      start_new_session=True,  # its own process group: torch.compile's workers end with it
    )
    stopped = ''
    try:
      proc.wait(timeout)
    except subprocess.TimeoutExpired:
      os.killpg(proc.pid, signal.SIGKILL)
      proc.wait()
      stopped = f' (the worker was stopped at its {timeout:.0f} s limit)'
    except BaseException:  # e.g. Ctrl-C: leave no worker behind
      os.killpg(proc.pid, signal.SIGKILL)
      raise
  results = {}
  if os.path.exists(spec['out']):
    with open(spec['out']) as f:
      results = json.load(f)
  if not results:
    with open(log_path) as f:
      tail = f.read()[-1500:]
    return {'status': ERROR, 'note': f'the torch worker wrote nothing{stopped}: {tail}'}
  results['stopped'] = stopped
  if proc.returncode not in (0, -signal.SIGKILL) and results.get('status') == OK:
    with open(log_path) as f:
      results['worker_log_tail'] = f.read()[-1500:]
  return results


def peer_worker(spec_path: str) -> None:
  """The subprocess: PyTorch only (no JAX). Writes its results after each measurement."""
  import torch  # pylint: disable=g-import-not-at-top

  with open(spec_path) as f:
    spec = json.load(f)
  out = {'status': OK, 'train': {}, 'segmentation': None}

  def save():
    tmp = spec['out'] + '.tmp'
    with open(tmp, 'w') as f:
      json.dump(out, f)
    os.replace(tmp, spec['out'])

  device = spec['device']
  if device == 'cuda' and not torch.cuda.is_available():
    out.update(status=NA, note=f'this torch ({torch.__version__}) has no CUDA device')
    save()
    return
  cuda = device == 'cuda'
  if cuda:
    torch.backends.cuda.matmul.allow_tf32 = True  # as XLA's default float32 matmuls on GPU
    torch.backends.cudnn.allow_tf32 = True
  else:
    torch.set_num_threads(spec['threads'] or len(os.sched_getaffinity(0)))
    out['threads'] = torch.get_num_threads()
  out['torch_device'] = torch.cuda.get_device_name() if cuda else 'cpu'
  out['precision'] = 'bfloat16 autocast' if cuda else 'float32'
  save()

  def sync():
    if cuda:
      torch.cuda.synchronize()

  def train(batch, compiled):
    entry = out['train'].setdefault(str(batch), {})
    mode = 'compiled' if compiled else 'eager'
    if compiled and not entry.get('eager', {}).get('samples_per_second'):
      return  # what does not run eagerly will not run compiled
    try:
      entry[mode] = torch_train(spec, batch, device, compiled, sync)
    except Exception as error:  # pylint: disable=broad-except
      oom_type = getattr(torch, 'OutOfMemoryError', torch.cuda.OutOfMemoryError)
      entry[mode] = {'error': _short_error(error), 'oom': isinstance(error, oom_type)}
      entry[mode]['oom'] |= _is_oom(error)
      traceback.print_exc()
    if cuda:
      torch.cuda.empty_cache()
    save()

  # Cheapest first, so that what the time limit cuts off is the compiled runs.
  for batch in spec['batches']:
    train(batch, compiled=False)
  if spec.get('hf_dir'):
    try:
      out['segmentation'] = torch_segmentation(spec, device, sync)
    except Exception as error:  # pylint: disable=broad-except
      out['segmentation'] = {'error': _short_error(error)}
    save()
  if spec['compile']:
    for batch in spec['batches']:
      train(batch, compiled=True)


def torch_train(spec: dict, batch: int, device: str, compiled: bool, sync) -> dict:
  """One peer train step: forward with return_loss, backward, clipping, AdamW; timed."""
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top

  cuda = device == 'cuda'
  torch.manual_seed(0)
  config = transformers.GroupViTConfig(**spec['model'])
  model = transformers.GroupViTModel(config).to(device).train()
  params = [p for p in model.parameters() if p.requires_grad]
  optimizer = torch.optim.AdamW(
    params, lr=1e-4, weight_decay=0.05, **({'fused': True} if cuda else {})
  )
  forward = torch.compile(model, dynamic=False) if compiled else model
  rng = np.random.default_rng(batch)
  size = spec['image_size']
  images = torch.from_numpy(rng.integers(0, 256, (batch, 3, size, size), np.uint8)).to(device)
  tokens = synthetic_tokens(rng, batch, 1, spec['context'], spec['caption_tokens'])[:, 0]
  ids = torch.from_numpy(tokens.astype(np.int64)).to(device)
  mean = torch.tensor([0.485, 0.456, 0.406], device=device).view(1, 3, 1, 1)
  std = torch.tensor([0.229, 0.224, 0.225], device=device).view(1, 3, 1, 1)

  def step():
    pixels = (images.float() / 255.0 - mean) / std
    with torch.autocast(device_type='cuda', dtype=torch.bfloat16, enabled=cuda):
      loss = forward(input_ids=ids, pixel_values=pixels, return_loss=True).loss
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 5.0)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss

  start = time.perf_counter()
  step()
  sync()
  first_s = time.perf_counter() - start
  for _ in range(max(2, spec['warmup_steps'])):  # the first eager steps are slow too
    step()
  sync()
  start = time.perf_counter()
  for _ in range(spec['steps']):
    loss = step()
  sync()
  total = time.perf_counter() - start
  result = {
    'samples_per_second': batch * spec['steps'] / total,
    'step_s': total / spec['steps'],
    'steps': spec['steps'],
    'first_step_s': first_s,
    'loss': float(loss.detach().float().cpu()),
  }
  if compiled:
    result['compile_s'] = first_s
  return result


def torch_segmentation(spec: dict, device: str, sync) -> dict:
  """transformers' vision tower and projection of the group tokens on each window, one at a
  time (as bench/bench_eval.py), float32, under inference_mode."""
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top

  model = transformers.GroupViTModel.from_pretrained(spec['hf_dir']).eval().to(device)
  embeddings = model.vision_model.embeddings
  forward = embeddings.forward  # windows larger than training: interpolated positions
  embeddings.forward = lambda pixels: forward(pixels, interpolate_pos_encoding=True)
  windows = np.load(spec['windows'])
  mean = np.array([0.485, 0.456, 0.406], np.float32)
  std = np.array([0.229, 0.224, 0.225], np.float32)
  pixels = [
    torch.from_numpy(
      ((w.astype(np.float32) / 255 - mean) / std).transpose(2, 0, 1)[None].copy()
    ).to(device)
    for w in windows
  ]

  def run():
    with torch.inference_mode():
      for p in pixels:
        out = model.vision_model(pixel_values=p, output_attentions=True)
        model.visual_projection(out.last_hidden_state[0])
    sync()

  run()  # warm up
  rounds = []
  for _ in range(spec['seg_repeats']):
    start = time.perf_counter()
    run()
    rounds.append(time.perf_counter() - start)
  return {'images_per_second': spec['images'] / statistics.median(rounds), 'precision': 'float32'}


# ----------------------------------------------------------------------------- registry, run


@dataclasses.dataclass
class Case:
  name: str
  kind: str
  run: Callable[[Suite], dict]
  batch: int | None = None
  lever: str | None = None


def build_cases(mode: Mode) -> list[Case]:
  """Every case, in the order they run: the PyTorch side first (it needs the chip's memory
  before JAX holds it), then per batch size the train cases, segmentation after the first
  batch size, and the memory search last (it only compiles)."""
  cases = [
    Case(f'peer/{b}', 'peer', functools.partial(peer_case, batch=b), batch=b) for b in mode.batches
  ]
  for i, b in enumerate(mode.batches):
    for lever in LEVERS:
      run = functools.partial(train_case, batch=b, lever=lever)
      cases.append(Case(f'train/{b}/{lever}', 'train', run, batch=b, lever=lever))
    if i == 0:
      cases.append(Case('segmentation', 'segmentation', segmentation_case))
  for chunks in (1, CHUNKS):
    run = functools.partial(max_batch_case, chunks=chunks)
    cases.append(Case(f'max_batch/chunks={chunks}', 'max_batch', run))
  return cases


def run_cases(suite: Suite, cases: list[Case]) -> None:
  for i, case in enumerate(cases, 1):
    print(f'[{i}/{len(cases)}] {case.name} ...', flush=True)
    start = time.perf_counter()
    if suite.remaining() <= 0:
      record = {'kind': case.kind, 'status': SKIPPED, 'note': 'time budget spent'}
    else:
      try:
        record = case.run(suite)
      except Exception as error:  # pylint: disable=broad-except
        traceback.print_exc()
        record = {'kind': case.kind, 'status': ERROR, 'note': _short_error(error)}
    record['case_s'] = time.perf_counter() - start
    suite.results[case.name] = record
    print(
      f'[{i}/{len(cases)}] {case.name}: {summary(record)} | case {record["case_s"]:.1f} s, '
      f'elapsed {suite.elapsed():.1f} s',
      flush=True,
    )


def add_ratios(results: dict) -> None:
  """Peer records get ours / theirs in samples/s, for our baseline and all-levers steps."""
  for record in results.values():
    if record.get('kind') != 'peer':
      continue
    theirs = record.get('samples_per_second')
    for lever in ('baseline', 'all'):
      ours = results.get(f'train/{record["batch"]}/{lever}', {}).get('samples_per_second')
      record[f'ratio_{lever}'] = ours / theirs if ours and theirs else None


def summary(record: dict) -> str:
  status = record.get('status')
  if status != OK:
    return f'{status}' + (f' ({record["note"]})' if record.get('note') else '')
  kind = record.get('kind')
  if kind == 'max_batch':
    bound = '' if record['exact'] else '>= '
    return f'max batch {bound}{record["max_batch"]} ({record["bytes_limit_gib"]:.1f} GiB limit)'
  parts = [
    f'{record["samples_per_second"]:.1f} {"images" if kind == "segmentation" else "samples"}/s'
  ]
  if record.get('mfu') is not None:
    parts.append(f'MFU {100 * record["mfu"]:.1f}%')
  if kind == 'peer':
    parts.append(record['mode'])
  if kind == 'segmentation' and record.get('ratio'):
    parts.append(
      f'torch {record["torch_images_per_second"]:.1f}/s, ours/torch {record["ratio"]:.2f}x'
    )
  return ', '.join(parts)


def _fmt(value, spec: str) -> str:
  return '' if value is None else format(value, spec)


def _table_note(r: dict) -> str:
  kind, ok = r.get('kind'), r.get('status') == OK
  note = r.get('setting', '')
  if kind == 'peer' and ok:
    ratios = ', '.join(
      f'ours {lever} / peer {r[f"ratio_{lever}"]:.2f}x'
      for lever in ('baseline', 'all')
      if r.get(f'ratio_{lever}')
    )
    note = f'{r["mode"]}, {r["precision"]}' + (f'; {ratios}' if ratios else '')
  elif kind == 'segmentation' and ok and r.get('ratio'):
    torch_ips = r['torch_images_per_second']
    note = f'images/s; torch network {torch_ips:.1f}/s, ours/torch {r["ratio"]:.2f}x'
  elif kind == 'segmentation' and ok:
    note = f'images/s; {r.get("note", "")}'
  elif kind == 'max_batch' and ok:
    note = summary(r)
  if r.get('note') and (not ok or kind == 'train'):
    note = f'{note} [{r["note"]}]' if note else r['note']
  return note if len(note) <= 120 else note[:117] + '...'


def table(suite: Suite) -> str:
  """One row per case: status, samples/s, MFU, step, compile, memory and a note."""
  header = ('case', 'status', 'samples/s', 'MFU', 'step ms', 'compile s', 'GiB', 'setting, note')
  rows = [header]
  for name, r in suite.results.items():
    gib = r.get('memory_gib')
    rows.append(
      (
        name,
        r.get('status', ''),
        _fmt(r.get('samples_per_second'), '.1f'),
        '' if r.get('mfu') is None else f'{100 * r["mfu"]:.1f}%',
        _fmt(r.get('step_s') and 1000 * r['step_s'], '.1f'),
        _fmt(r.get('compile_s'), '.1f'),
        _fmt(gib, '.2f' if gib is not None and gib < 10 else '.1f'),
        _table_note(r),
      )
    )
  widths = [max(len(row[i]) for row in rows) for i in range(len(header) - 1)]
  lines = []
  for row in rows:
    cells = [c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))]
    lines.append('  '.join(cells + [row[-1]]))
  lines.insert(1, '-' * len(lines[0]))
  return '\n'.join(lines)


def report(suite: Suite) -> dict:
  m = suite.mode
  return {
    'suite': 'bench/accelerator_suite.py',
    'schema_version': 1,
    'mode': m.name,
    'date': datetime.date.today().isoformat(),
    'device_kind': suite.device_kind,
    'platform': suite.platform,
    'chip': slug(suite.device_kind),
    'peak_key': suite.peak_key,
    'peak_bf16_flops': suite.peak,
    'memory_bytes_limit': suite.memory_limit,
    'versions': versions(),
    'environment': {
      k: os.environ[k]
      for k in (
        'XLA_PYTHON_CLIENT_PREALLOCATE',
        'XLA_PYTHON_CLIENT_MEM_FRACTION',
        'XLA_FLAGS',
        'JAX_COMPILATION_CACHE_DIR',
      )
      if k in os.environ
    },
    'setup': {
      'config': m.config,
      'model_dtype': suite.config.model.dtype,
      'image_size': suite.image_size,
      'texts_per_image': suite.texts,
      'context_length': suite.context,
      'trimmed_text_length': suite.trim_length,
      'batches': list(m.batches),
      'warmup_steps': m.warmup_steps,
      'timed_steps': m.steps,
      'compile_workers': m.compile_workers,
      'compile_options': suite.compile_options,
      'peer_compile': suite.peer_compile,
      'budget_s': m.budget_s,
      'levers_in_code': suite.has,
      'flops': 'bench/flops.py train_flops_per_sample, full-length texts',
    },
    'cases': suite.results,
    'compiles': suite.compile_log,
    'torch_worker': {
      k: v
      for k, v in (suite._torch or {}).items()
      if k in ('status', 'note', 'stopped', 'threads', 'torch_device', 'worker_log_tail')
    },
    'total_s': suite.elapsed(),
  }


def main(argv=None):
  args, mode = parse_args(argv)
  if args.peer_worker:
    peer_worker(args.peer_worker)
    return
  # Without preallocation JAX takes device memory as it needs it, which leaves the PyTorch
  # worker the chip's memory (it runs first); a run's own setting wins.
  os.environ.setdefault('XLA_PYTHON_CLIENT_PREALLOCATE', 'false')
  import jax  # pylint: disable=g-import-not-at-top

  if jax.devices()[0].platform == 'cpu' and not args.tiny and not args.batches:
    sys.exit('GroupViT-S at batch 256 on a CPU takes hours: use --tiny (or set --batches)')
  start = time.perf_counter()
  suite = Suite(args, mode)
  cases = build_cases(mode)
  if args.cases:
    cases = [c for c in cases if re.search(args.cases, c.name)]
    if not cases:
      sys.exit(f'--cases {args.cases!r} matches no case')
  for c in cases:
    if c.kind == 'train':
      suite.selected_levers.setdefault(c.batch, []).append(c.lever)
  suite.peer_batches = [c.batch for c in cases if c.kind == 'peer']
  suite.want_segmentation = any(c.kind == 'segmentation' for c in cases)
  print(
    f'{suite.device_kind} ({suite.platform}), {mode.name} suite: {len(cases)} cases, budget '
    f'{mode.budget_s:.0f} s; setup {time.perf_counter() - start:.1f} s',
    flush=True,
  )
  try:
    run_cases(suite, cases)
  finally:
    shutil.rmtree(suite.tmp, ignore_errors=True)
  add_ratios(suite.results)
  print()
  print(table(suite))
  out = args.out or os.path.join(
    REPO, 'bench', 'results', f'{slug(suite.device_kind)}-{datetime.date.today().isoformat()}.json'
  )
  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  with open(out, 'w') as f:
    json.dump(report(suite), f, indent=2, default=str)
  print(f'\nwrote {out} ({suite.elapsed():.0f} s)')


if __name__ == '__main__':
  main()
