"""Raw action-recognition videos -> sharded WebDataset training data (RGB, keypoints, rasters)."""

__version__ = "0.1.0"
