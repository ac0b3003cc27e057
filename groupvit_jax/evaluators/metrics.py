"""mmsegmentation-style segmentation metrics from a confusion matrix accumulated over a split."""

from typing import Sequence

import numpy as np

# Optional metrics beside mIoU (evaluators/boundary.py, evaluators/group_metrics.py).
EXTRA_METRICS = ('boundary', 'oracle', 'mask_probing')


def confusion_matrix(pred, label, num_classes: int, ignore_index: int = 255) -> np.ndarray:
  """int64 [C, C] counts, rows = ground truth, columns = prediction.

  Pixels labelled `ignore_index` (or outside [0, C), which mmseg's histogram drops) are skipped.
  """
  pred = np.asarray(pred).reshape(-1).astype(np.int64)
  label = np.asarray(label).reshape(-1).astype(np.int64)
  if pred.shape != label.shape:
    raise ValueError(f'pred and label differ in size: {pred.shape} vs {label.shape}')
  keep = (label != ignore_index) & (label >= 0) & (label < num_classes)
  pred, label = pred[keep], label[keep]
  if pred.size and (pred.min() < 0 or pred.max() >= num_classes):
    raise ValueError(f'predictions must lie in [0, {num_classes})')
  counts = np.bincount(label * num_classes + pred, minlength=num_classes * num_classes)
  return counts.reshape(num_classes, num_classes)


def segmentation_metrics(conf: np.ndarray, class_names: Sequence[str]) -> dict:
  """mIoU, mAcc, aAcc (fractions), per-class IoU and accuracy from a summed confusion matrix.

  As in mmseg, a class's IoU is NaN when it is absent from both prediction and ground truth,
  its accuracy NaN when absent from the ground truth; means skip NaNs.
  """
  conf = np.asarray(conf, np.float64)
  if conf.shape != (len(class_names), len(class_names)):
    raise ValueError(f'confusion matrix {conf.shape} does not match {len(class_names)} classes')
  tp = np.diag(conf)
  labelled = conf.sum(axis=1)  # TP + FN
  predicted = conf.sum(axis=0)  # TP + FP
  with np.errstate(invalid='ignore', divide='ignore'):
    iou = tp / (labelled + predicted - tp)
    acc = tp / labelled
  total = labelled.sum()
  return {
    'miou': float(np.nanmean(iou)) if np.isfinite(iou).any() else float('nan'),
    'macc': float(np.nanmean(acc)) if np.isfinite(acc).any() else float('nan'),
    'aacc': float(tp.sum() / total) if total else float('nan'),
    'per_class': {name: float(v) for name, v in zip(class_names, iou)},
    'per_class_acc': {name: float(v) for name, v in zip(class_names, acc)},
  }


def extra_metric_names(names: str | Sequence[str] | None) -> tuple[str, ...]:
  """'boundary,oracle' (or a list of names, or None for none) -> the names, each one of
  EXTRA_METRICS (ValueError otherwise), in the order given, without repeats."""
  if names is None:
    return ()
  if isinstance(names, str):
    names = [name.strip() for name in names.split(',')] if names.strip() else []
  unknown = [name for name in names if name not in EXTRA_METRICS]
  if unknown:
    raise ValueError(f'unknown metric {unknown[0]!r}: choose from {", ".join(EXTRA_METRICS)}')
  return tuple(dict.fromkeys(names))
