"""The data contract between a dataset, a checkpoint and the clips fed to a model.

A checkpoint records the layout, bones, classes, raster parameters, input size, clip lengths and
strides, frame stride and RGB normalisation it was trained with (docs/design.md, "Command
line"). Here: building that record, checking a dataset against it (a model refuses data of
another layout), mapping classes by name across datasets, and turning it back into a
:class:`~train.data.ClipRecipe`.
"""

from __future__ import annotations

import csv
import os
from dataclasses import asdict, replace
from typing import Any

import numpy as np

from model import check_contracts
from pipeline.errors import InvalidInput
from pipeline.shards import DatasetInfo, RasterParams
from pipeline.skeletons import get_layout

from . import augment, clips
from .data import ClipRecipe

__all__ = [
    "uses_rgb",
    "uses_pose",
    "make_contract",
    "check_dataset",
    "recipe_from_contract",
    "pose_settings",
    "normalisation_of",
    "ClassMap",
    "class_map",
]


def uses_rgb(variant: str) -> bool:
    return variant != "pose"


def uses_pose(variant: str) -> bool:
    return variant != "appearance"


def make_contract(
    info: DatasetInfo,
    variant: str,
    clip: Any,
    normalisation: augment.Normalisation,
) -> dict[str, Any]:
    """The contract of a model of ``variant`` trained on ``info`` with resolved clip settings.

    An appearance-only model records no pose clip, a pose-only model no RGB stride: stage-2
    pairing compares only the fields both stage-1 runs have. ``clip_len`` is always there (the
    pose stream pools T_P to T frames).
    """
    layout = get_layout(info.layout)
    contract: dict[str, Any] = {
        "dataset": info.dataset,
        "layout": layout.name,
        "joint_names": list(layout.names),
        "bones": layout.bones.tolist(),
        "classes": list(info.classes),
        "raster": asdict(info.raster),
        "input_size": int(clip.input_size),
        "clip_len": int(clip.clip_len),
        "frame_stride": int(info.frame_stride),
        "normalisation": normalisation.to_json(),
    }
    if uses_rgb(variant):
        contract["stride"] = int(clip.stride)
    if uses_pose(variant):
        contract["pose_clip_len"] = int(clip.pose_clip_len)
        contract["pose_stride"] = int(clip.pose_stride)
        contract["pose_input"] = clip.pose_input
        contract["pose_crop"] = clip.pose_crop
        contract["pose_size"] = int(clip.pose_size)
        sigma = clip.pose_sigma if clip.pose_sigma is not None else info.raster.sigma
        contract["pose_sigma"] = float(sigma)
    return contract


def pose_settings(contract: dict[str, Any]) -> dict[str, Any]:
    """The pose input a contract asks for: crop, raster side and sigma, with the values of
    checkpoints written before they were options (frame crop, a quarter of the input size,
    the dataset's sigma)."""
    raster = contract.get("raster") or {}
    return {
        "pose_crop": contract.get("pose_crop", "frame"),
        "pose_size": int(contract.get("pose_size") or int(contract["input_size"]) // 4),
        "pose_sigma": float(contract.get("pose_sigma", raster.get("sigma", RasterParams().sigma))),
    }


def dataset_contract(info: DatasetInfo) -> dict[str, Any]:
    layout = get_layout(info.layout)
    return {
        "layout": layout.name,
        "joint_names": list(layout.names),
        "bones": layout.bones.tolist(),
        "classes": list(info.classes),
        "raster": asdict(info.raster),
        "frame_stride": int(info.frame_stride),
    }


def check_dataset(
    model_contract: dict[str, Any],
    info: DatasetInfo,
    variant: str,
    *,
    classes: bool = True,
    what: str = "model",
) -> None:
    """One-line ValueError when the dataset cannot feed the model.

    Every model refuses another keypoint layout (the contract); pose models also need the same
    raster parameters. The frame stride need not be equal, only divide the model's strides
    (checked when the recipe is made). ``classes=False`` when a class map bridges two class
    lists.
    """
    keys = ["layout", "joint_names", "bones"]
    if uses_pose(variant):
        keys.append("raster")
    if classes:
        keys.append("classes")
    try:
        check_contracts(model_contract, dataset_contract(info), keys, names=(what, "dataset"))
    except ValueError as exc:
        hint = ""
        if "'classes'" in str(exc):
            hint = " (pass --class-map name to match classes by name)"
        raise InvalidInput(f"{exc}{hint}") from None


def normalisation_of(contract: dict[str, Any]) -> augment.Normalisation:
    norm = contract.get("normalisation")
    return augment.Normalisation.from_json(norm) if norm else augment.UNIT


def recipe_from_contract(
    contract: dict[str, Any],
    variant: str,
    info: DatasetInfo,
    *,
    train: bool,
    num_clips: int = 1,
    pose_input: str | None = None,
) -> ClipRecipe:
    """The clips a model of ``variant`` with ``contract`` reads from the dataset ``info``.

    Refuses (:class:`~train.clips.StrideError`) strides the dataset's frame stride cannot serve.
    """
    rgb = clips.ClipSpec(contract["clip_len"], contract["stride"]) if uses_rgb(variant) else None
    pose = (
        clips.ClipSpec(contract["pose_clip_len"], contract["pose_stride"])
        if uses_pose(variant)
        else None
    )
    specs = {n: s for n, s in (("RGB clip", rgb), ("pose clip", pose)) if s is not None}
    clips.check_strides(specs, info.frame_stride)
    pose_input = pose_input or contract.get("pose_input", "keypoints")
    # Render with the parameters the model was trained with.
    raster = RasterParams(**contract.get("raster", asdict(info.raster)))
    settings = {}
    if pose is not None:
        settings = pose_settings(contract)
        if settings["pose_sigma"] != raster.sigma:
            if pose_input == "raster":
                raise InvalidInput(
                    f"--pose-sigma {settings['pose_sigma']:g} needs rasters rendered from "
                    f"keypoints: the stored rasters have sigma {raster.sigma:g} "
                    "(use --pose-input keypoints)"
                )
            raster = replace(raster, sigma=settings["pose_sigma"])
    return ClipRecipe(
        rgb=rgb,
        pose=pose,
        input_size=int(contract["input_size"]),
        frame_stride=info.frame_stride,
        layout=info.layout,
        raster=raster,
        pose_input=pose_input,
        train=train,
        num_clips=num_clips,
        pose_crop=settings.get("pose_crop", "frame"),
        pose_size=settings.get("pose_size"),
    )


# ----------------------------------------------------------------------------------------------
# Class maps


class ClassMap:
    """Dataset class index -> model class index (-1: the model does not know the class)."""

    def __init__(self, dataset_classes: list[str], model_classes: list[str], pairs: dict):
        self.dataset_classes = list(dataset_classes)
        self.model_classes = list(model_classes)
        self.to_model = np.full(len(dataset_classes), -1, dtype=np.int64)
        for d, m in pairs.items():
            self.to_model[d] = m

    @property
    def dropped(self) -> list[str]:
        """Dataset classes without a model class: their videos are not evaluated."""
        return [c for c, m in zip(self.dataset_classes, self.to_model, strict=True) if m < 0]

    @property
    def identity(self) -> bool:
        return self.dataset_classes == self.model_classes


def _norm_name(name: str) -> str:
    # Kinetics spells classes with spaces, others with underscores; case varies.
    return " ".join(name.replace("_", " ").replace("-", " ").lower().split())


def class_map(dataset_classes: list[str], model_classes: list[str], spec: str | None) -> ClassMap:
    """Map dataset classes to model classes.

    ``spec`` None: the lists must be equal. ``"name"``: match by normalised name (case,
    spaces/underscores). A file path: a CSV of ``dataset_class,model_class`` rows (names), for
    renamed classes; unlisted classes are matched by name.
    """
    if spec is None:
        if list(dataset_classes) != list(model_classes):
            raise InvalidInput(
                f"{_class_difference(dataset_classes, model_classes)}; pass --class-map name to "
                "match them by name"
            )
        return ClassMap(dataset_classes, model_classes, {i: i for i in range(len(model_classes))})
    by_name = {_norm_name(c): i for i, c in enumerate(model_classes)}
    explicit = {} if spec == "name" else _read_class_pairs(spec, dataset_classes, by_name)
    pairs = {}
    for i, c in enumerate(dataset_classes):
        name = explicit.get(_norm_name(c), _norm_name(c))
        if name in by_name:
            pairs[i] = by_name[name]
    if not pairs:
        raise InvalidInput("--class-map: no dataset class matches a model class by name")
    return ClassMap(dataset_classes, model_classes, pairs)


def _class_difference(dataset_classes: list[str], model_classes: list[str]) -> str:
    """Why two class lists are not the same list, naming a class."""
    unknown = [c for c in dataset_classes if c not in set(model_classes)]
    if unknown:
        return (
            f"the dataset's {len(dataset_classes)} classes differ from the model's "
            f"{len(model_classes)} (the model has no {unknown[0]!r}"
            + (f" and {len(unknown) - 1} more)" if len(unknown) > 1 else ")")
        )
    if len(dataset_classes) != len(model_classes):
        return f"the dataset has {len(dataset_classes)} of the model's {len(model_classes)} classes"
    i = next(
        i for i, (d, m) in enumerate(zip(dataset_classes, model_classes, strict=True)) if d != m
    )
    return (
        f"the dataset's classes are the model's in another order (class {i} is "
        f"{dataset_classes[i]!r} in the dataset, {model_classes[i]!r} in the model)"
    )


def _read_class_pairs(
    spec: str, dataset_classes: list[str], model_by_name: dict[str, int]
) -> dict[str, str]:
    """``dataset_class,model_class`` rows of a --class-map CSV (normalised names); a row that is
    not a pair, or names a class that neither side has, is an error, not silently unmatched."""
    if not os.path.isfile(spec):
        raise InvalidInput(f"--class-map {spec}: expected 'name' or a CSV file of name pairs")
    dataset_names = {_norm_name(c) for c in dataset_classes}
    pairs: dict[str, str] = {}
    with open(spec, newline="", encoding="utf-8") as f:
        for line, row in enumerate(csv.reader(f), 1):
            if not row or not "".join(row).strip() or row[0].startswith("#"):
                continue
            if len(row) != 2:
                raise InvalidInput(
                    f"--class-map {spec}:{line}: expected dataset_class,model_class, got {row}"
                )
            ours, theirs = _norm_name(row[0]), _norm_name(row[1])
            if ours not in dataset_names:
                raise InvalidInput(f"--class-map {spec}:{line}: the dataset has no {row[0]!r}")
            if theirs not in model_by_name:
                raise InvalidInput(f"--class-map {spec}:{line}: the model has no {row[1]!r}")
            pairs[ours] = theirs
    return pairs
