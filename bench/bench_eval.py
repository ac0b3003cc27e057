"""Zero-shot evaluation speed: the whole protocol in groupvit_jax against the PyTorch network
alone on the same windows, in one run.

  python bench/bench_eval.py                     # 4 VOC-sized images, GroupViT-S, all cores
  python bench/bench_eval.py --images 8 --json out.json

What is timed, per round, on the same random uint8 images of VOC's most common size (375x500):

  ours:  `Segmenter(model, VOC's 20 classes, 0.95)(image)` one image at a time: resize to a 448
         shorter side, two 448x448 windows, the image tower, the group-to-class scores, window
         averaging, resize back and argmax, label map out. The segmentation protocol end to end.
  torch: transformers' GroupViTModel (the same weights) on the same two windows per image:
         its vision tower and projection of the group tokens, under inference_mode. The network
         alone: the protocol around it is not counted, which favours the reference.

ImageNet: ours = `Classifier` on 224x224 crops in batches of 64 (image tower, projection,
similarity with 1000 class embeddings); torch = get_image_features on the same batch. Class
embeddings are built once, before timing, on both sides.

GroupViT-S with the tests' perturbed random weights (the speed does not depend on them).
Rounds alternate ours, torch, ...; medians over --repeats; speedup = torch / ours time.
"""

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def parse_args():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--images', type=int, default=4, help='VOC-sized images per round')
  parser.add_argument('--batch', type=int, default=64, help='ImageNet crops per round')
  parser.add_argument('--repeats', type=int, default=3)
  parser.add_argument('--json', default=None)
  return parser.parse_args()


def median_time(fn, repeats):
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def main():
  args = parse_args()
  # pylint: disable=g-import-not-at-top
  import jax
  import numpy as np
  import torch

  sys.path.insert(0, os.path.join(REPO, 'tests'))
  sys.path.insert(0, REPO)
  import groupvit_jax
  from groupvit_jax import segmentation
  from groupvit_jax.evaluators import datasets
  from groupvit_jax.evaluators import zero_shot_classification as zsc

  import hf_reference as ref
  # pylint: enable=g-import-not-at-top

  torch.set_num_threads(len(os.sched_getaffinity(0)))
  hf = ref.make_model(seed=0)
  with tempfile.TemporaryDirectory() as directory:
    hf.save_pretrained(directory)
    model = groupvit_jax.load(directory)
  embeddings = hf.vision_model.embeddings
  forward = embeddings.forward  # 448 windows: interpolated positions, as on our side
  embeddings.forward = lambda pixels: forward(pixels, interpolate_pos_encoding=True)

  images = ref.random_images(0, args.images, 375, 500)
  segmenter = segmentation.Segmenter(model, datasets.VOC_CLASSES[1:], 0.95)
  resized = [np.asarray(segmentation.resize_images(im[None], (448, 597)))[0] for im in images]
  windows = [r[:, x : x + 448] for r in resized for x in (0, 597 - 448)]

  def ours_segment():
    for image in images:
      segmenter(image)

  def torch_segment():
    with torch.inference_mode():
      for window in windows:
        out = hf.vision_model(pixel_values=ref.pixel_values(window[None]), output_attentions=True)
        hf.visual_projection(out.last_hidden_state[0])

  crops = ref.random_images(1, args.batch, 224, 224)
  classifier = zsc.Classifier(model, ['class'] * 1000)

  def ours_classify():
    classifier(crops)

  def torch_classify():
    with torch.inference_mode():
      hf.get_image_features(pixel_values=ref.pixel_values(crops))

  start = time.perf_counter()
  ours_segment(), ours_classify()  # compile
  compile_s = time.perf_counter() - start
  torch_segment(), torch_classify()  # warm up
  results = {'device': jax.devices()[0].device_kind, 'threads': torch.get_num_threads()}
  seg_ours, seg_torch = [], []
  cls_ours, cls_torch = [], []
  for _ in range(args.repeats):
    seg_ours.append(median_time(ours_segment, 1))
    seg_torch.append(median_time(torch_segment, 1))
    cls_ours.append(median_time(ours_classify, 1))
    cls_torch.append(median_time(torch_classify, 1))
  for name, ours, theirs, count in (
    ('segmentation', seg_ours, seg_torch, args.images),
    ('imagenet', cls_ours, cls_torch, args.batch),
  ):
    ours, theirs = statistics.median(ours), statistics.median(theirs)
    results[name] = {
      'ours_images_per_s': count / ours,
      'torch_images_per_s': count / theirs,
      'speedup': theirs / ours,
    }
    print(
      f'{name}: ours {count / ours:.2f} images/s, torch network alone '
      f'{count / theirs:.2f} images/s, speedup {theirs / ours:.2f}x'
    )
  results['compile_s'] = compile_s
  print(f'first calls (compile) {compile_s:.1f} s on {results["device"]}')
  if args.json:
    with open(args.json, 'w') as f:
      json.dump(results, f, indent=2)


if __name__ == '__main__':
  main()
