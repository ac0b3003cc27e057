"""Input pipelines for GroupViT training and evaluation.

- `synthetic`: the embedded default, captioned images of coloured, textured shapes with
  pixel-exact masks, generated on the fly with no download.
- `webdataset`, `image_transforms`, `nouns`, `web_pipeline`: grain over img2dataset webdataset
  shards of CC3M, CC12M, YFCC14M and RedCaps12M, with the released recipe's transform, caption
  and prompted-word tokens, per-host sharding, damage counts and exact resume.
- `train_data.create_iterator`: the trainer's one entry point over both.
- `python -m input_pipeline.inspect --shards PATTERN`: speed, damage and captions of shards.
"""

from input_pipeline.nouns import extract_nouns

__all__ = ['extract_nouns']
