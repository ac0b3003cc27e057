"""Input pipelines for GroupViT training and evaluation.

`input_pipeline.synthetic` is the embedded default: captioned images of coloured, textured
shapes with pixel-exact masks, generated on the fly with no download, on which a tiny GroupViT
trains on a CPU and learns zero-shot segmentation from its captions alone.

The web-data pipeline (grain over img2dataset webdataset shards of CC3M, CC12M, YFCC14M and
RedCaps12M: decoding, DeiT augmentation, caption and prompted-noun tokenisation with
`groupvit_jax.tokenize`, per-host sharding and exact resume) arrives with issue 4.
"""
