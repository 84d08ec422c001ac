"""Readers and writers of precomputed pose files.

- :mod:`~pipeline.formats.kinetics_skeleton`: ST-GCN's kinetics-skeleton JSON (OpenPose-18).
- :mod:`~pipeline.formats.ntu_skeleton`: NTU RGB+D ``.skeleton`` text files (Kinect v2, 25 joints).
- :mod:`~pipeline.formats.mmaction_pickle`: pyskl / mmaction2 annotation pickles.

Readers take a local path, an fsspec URL or an open file object, and raise
:class:`PoseFileError` (a ``ValueError``) with a one-line message naming the file on bad input.
"""

from pipeline.formats._io import PoseFileError
from pipeline.formats.kinetics_skeleton import (
    KineticsSkeleton,
    read_kinetics_skeleton,
    write_kinetics_skeleton,
)
from pipeline.formats.mmaction_pickle import read_mmaction_pickle, write_mmaction_pickle
from pipeline.formats.ntu_skeleton import (
    NtuBody,
    NtuName,
    NtuSkeleton,
    bodies_from_keypoints,
    parse_ntu_name,
    read_ntu_skeleton,
    write_ntu_skeleton,
)

__all__ = [
    "KineticsSkeleton",
    "NtuBody",
    "NtuName",
    "NtuSkeleton",
    "PoseFileError",
    "bodies_from_keypoints",
    "parse_ntu_name",
    "read_kinetics_skeleton",
    "read_mmaction_pickle",
    "read_ntu_skeleton",
    "write_kinetics_skeleton",
    "write_mmaction_pickle",
    "write_ntu_skeleton",
]
