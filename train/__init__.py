"""Streaming DDP trainer and evaluation for IntegralAction (Moon et al., CVPRW 2021).

Modules, one job each:

- :mod:`train.config`: typed settings with the paper's defaults, YAML file + CLI overrides;
- :mod:`train.clips`: which frames a clip reads (strides in source frames, padding);
- :mod:`train.augment`: one crop/flip applied to frames, keypoints and rasters;
- :mod:`train.data`: shards -> samples -> clips -> batches (resampled for training, split
  exactly once for evaluation), local or fsspec URLs, corrupt shards skipped;
- :mod:`train.contract`: the data contract a checkpoint carries, class maps;
- :mod:`train.distributed`: torchrun / DDP set-up;
- :mod:`train.fit`: ``train fit``; :mod:`train.evaluate`: ``train eval``;
- :mod:`train.progress`: progress bar, metrics.csv, TensorBoard; :mod:`train.cli`: the CLI.
"""
