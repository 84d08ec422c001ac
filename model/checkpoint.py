"""Checkpoint files shared by the trainer and evaluation, and stage-1 -> stage-2 assembly.

A checkpoint is one ``torch.save`` file holding a dict:

- ``format_version`` (int, :data:`FORMAT_VERSION`);
- ``model_config``: the :func:`model.build` keyword arguments (``variant``, ``num_classes``,
  ``pose_channels``, ``appearance_depth``, ``pose_depth``, ``clip_len``, ``pose_clip_len``);
- ``contract``: the data contract the model was trained with (see :data:`CONTRACT_KEYS`);
- ``state_dict``: the model's weights on CPU, without DDP's ``module.`` prefix;
- ``streams_frozen``: stage-2 models with frozen streams are rebuilt frozen;
- ``optimizer``, ``scheduler``: their ``state_dict()`` or ``None``;
- ``epoch`` (int), ``metrics`` (dict or ``None``), ``rng`` (e.g. :func:`capture_rng_state`),
  ``extra`` (anything picklable the caller wants back);
- ``saved_at`` (ISO 8601, UTC) and ``torch_version``.

Files are written to a temporary name in the target directory and renamed over the target, so a
killed run never leaves a truncated ``last.pt``.
"""

from __future__ import annotations

import inspect
import math
import os
import random
import tempfile
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from typing import Any

import numpy as np
import torch
from torch import nn

from model.integral import (
    DEFAULT_GATE_NORM,
    DEFAULT_GATE_SHAPE,
    STAGE2_VARIANTS,
    ActionModel,
    build,
)
from pipeline.errors import InvalidInput
from pipeline.storage import new_file_mode

__all__ = [
    "FORMAT_VERSION",
    "CONTRACT_KEYS",
    "STAGE1_REQUIRED_KEYS",
    "CheckpointError",
    "save_checkpoint",
    "load_checkpoint",
    "build_from_checkpoint",
    "check_contracts",
    "merge_stage1_contracts",
    "build_integral_from_stage1",
    "capture_rng_state",
    "restore_rng_state",
]

FORMAT_VERSION = 1

# What a checkpoint's data contract holds (docs/design.md, "Checkpoints").
CONTRACT_KEYS: tuple[str, ...] = (
    "layout",  # keypoint layout name, e.g. "coco17"
    "joint_names",  # K names
    "bones",  # [B, 2] directed joint pairs (the PAF channel order)
    "classes",  # class names in index order
    "raster",  # dict: sigma, paf_width, ... (how pose inputs are rendered)
    "input_size",  # RGB side; the pose raster side is a quarter of it
    "clip_len",  # T
    "stride",  # RGB frame stride, in source frames
    "pose_clip_len",  # T_P
    "pose_stride",  # pose frame stride, in source frames
    "frame_stride",  # the shards' build stride
    "normalisation",  # {"mean": [...], "std": [...], "scale": 1/255 or "imagenet"}
)
# An appearance checkpoint has no pose fields, so pairing two stage-1 checkpoints requires only
# these in both and compares every other contract field that both have.
STAGE1_REQUIRED_KEYS: tuple[str, ...] = ("classes", "input_size", "clip_len", "frame_stride")
# RGB normalisation legitimately differs between the stage-1 runs (the pose run has no RGB).
_STAGE1_COMPARED = tuple(k for k in CONTRACT_KEYS if k != "normalisation")
_REQUIRED = ("format_version", "model_config", "contract", "state_dict")


class CheckpointError(InvalidInput):
    """A checkpoint is missing, corrupt, or does not fit; the message is one line."""


PathLike = str | os.PathLike[str]
CheckpointLike = PathLike | Mapping[str, Any]


# ----------------------------------------------------------------------------------------------
# Saving and loading


def _unwrap(model: nn.Module) -> nn.Module:
    """The plain module inside DDP / DataParallel / ``torch.compile`` wrappers."""
    while True:
        if isinstance(model, nn.parallel.DistributedDataParallel | nn.DataParallel):
            model = model.module
        elif isinstance(getattr(model, "_orig_mod", None), nn.Module):
            model = model._orig_mod
        else:
            return model


def _state_of(obj: Any) -> Any:
    return obj.state_dict() if hasattr(obj, "state_dict") else obj


def save_checkpoint(
    path: PathLike,
    *,
    model: nn.Module,
    model_config: Mapping[str, Any],
    contract: Mapping[str, Any],
    optimizer: Any = None,
    scheduler: Any = None,
    epoch: int = 0,
    metrics: Mapping[str, Any] | None = None,
    rng: Any = None,
    extra: Any = None,
) -> None:
    """Write a checkpoint atomically (temporary file in the same directory + ``os.replace``).

    ``model`` may be wrapped in DDP; its plain state dict is saved. ``model_config`` is usually
    ``model.config`` (the :func:`model.build` arguments). ``optimizer`` / ``scheduler`` may be
    the objects or their state dicts.
    """
    if "variant" not in model_config:
        raise CheckpointError("model_config must hold the build() arguments, 'variant' first")
    net = _unwrap(model)
    state = {k: v.detach().cpu() for k, v in net.state_dict().items()}
    if state and all(k.startswith("module.") for k in state):
        state = {k.removeprefix("module."): v for k, v in state.items()}
    payload = {
        "format_version": FORMAT_VERSION,
        "model_config": dict(model_config),
        "contract": dict(contract),
        "state_dict": state,
        "streams_frozen": bool(getattr(net, "streams_frozen", False)),
        "optimizer": _state_of(optimizer),
        "scheduler": _state_of(scheduler),
        "epoch": int(epoch),
        "metrics": dict(metrics) if metrics is not None else None,
        "rng": rng,
        "extra": extra,
        "saved_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "torch_version": torch.__version__,
    }
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, new_file_mode())  # mkstemp's 0600 would hide it from others
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load_checkpoint(path: PathLike, *, mmap: bool = False) -> dict[str, Any]:
    """Read a checkpoint onto the CPU; :class:`CheckpointError` (one line) if it is missing,
    corrupt, not one of ours, or from a newer format.

    ``mmap``: map the tensors instead of reading them, for a look at the metadata only (its
    configs) that does not read hundreds of MB of weights and optimizer state.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint {path}: no such file")
    try:
        # weights_only=False: our own files also hold optimizer state, metrics and RNG states.
        ckpt = torch.load(path, map_location="cpu", weights_only=False, mmap=mmap)
    except Exception as exc:  # truncated zip, pickle errors, ...: many types, one message
        reason = str(exc).strip().splitlines()[0][:120] if str(exc).strip() else ""
        raise CheckpointError(
            f"checkpoint {path}: unreadable or corrupt ({type(exc).__name__}: {reason})"
        ) from None
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"checkpoint {path}: not a checkpoint of this project")
    missing = [k for k in _REQUIRED if k not in ckpt]
    if missing:
        raise CheckpointError(
            f"checkpoint {path}: not a checkpoint of this project (no {', '.join(missing)})"
        )
    if ckpt["format_version"] > FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint {path}: format version {ckpt['format_version']} is newer than this "
            f"code's {FORMAT_VERSION}"
        )
    return ckpt


_BUILD_ARGS = tuple(inspect.signature(build).parameters)


def _as_checkpoint(ckpt: CheckpointLike) -> tuple[dict[str, Any], str]:
    if isinstance(ckpt, Mapping):
        return dict(ckpt), "checkpoint"
    return load_checkpoint(ckpt), f"checkpoint {os.fspath(ckpt)}"


def _load_strict(module: nn.Module, state: Mapping[str, Any], what: str) -> None:
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    bad = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or bad:
        parts = []
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("shape", bad)):
            if keys:
                more = f", ... ({len(keys)} in all)" if len(keys) > 3 else ""
                parts.append(f"{label} keys {', '.join(keys[:3])}{more}")
        raise CheckpointError(f"{what}: weights do not fit the model: " + "; ".join(parts))
    module.load_state_dict(state, strict=True)


def build_from_checkpoint(ckpt: CheckpointLike) -> ActionModel:
    """Rebuild the model of a checkpoint (dict or path) and load its weights strictly.

    Keys of ``model_config`` that :func:`model.build` does not take are ignored. The returned
    model carries the checkpoint's ``contract`` as ``.contract`` and is frozen again if it was
    saved with frozen streams.
    """
    ckpt, what = _as_checkpoint(ckpt)
    config = {k: v for k, v in ckpt["model_config"].items() if k in _BUILD_ARGS}
    if "gate_norm" not in config and "cgb.bn.weight" in ckpt["state_dict"]:
        # Written before gate_norm was recorded, when the gate always had a BatchNorm.
        config["gate_norm"] = "batchnorm"
    try:
        net = build(**config)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{what}: model_config {config} does not build: {exc}") from None
    _load_strict(net, ckpt["state_dict"], what)
    if ckpt.get("streams_frozen"):
        net.freeze_streams()
    net.contract = dict(ckpt["contract"])
    return net


# ----------------------------------------------------------------------------------------------
# Data contracts


def _canon(value: Any) -> Any:
    """Plain-Python form for comparison: tuples/arrays/tensors -> lists, numpy scalars -> items."""
    if isinstance(value, torch.Tensor | np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Mapping):
        return {str(k): _canon(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_canon(v) for v in value]
    return value


def _equal(a: Any, b: Any) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        if isinstance(a, int | float) and isinstance(b, int | float):
            return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    return a == b


def _short(value: Any, limit: int = 60) -> str:
    if isinstance(value, list) and len(value) > 4:
        text = f"[{', '.join(repr(v) for v in value[:3])}, ... ({len(value)} items)]"
    else:
        text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _difference(a: Any, b: Any) -> str:
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        i = next(i for i, (x, y) in enumerate(zip(a, b, strict=True)) if not _equal(x, y))
        return f"first difference at index {i}: {_short(a[i], 40)} vs {_short(b[i], 40)}"
    return f"{_short(a)} vs {_short(b)}"


def check_contracts(
    a: Mapping[str, Any],
    b: Mapping[str, Any],
    keys: Iterable[str] = CONTRACT_KEYS,
    *,
    require: Iterable[str] = (),
    names: tuple[str, str] = ("a", "b"),
) -> None:
    """Raise a one-line ``ValueError`` where two data contracts disagree.

    Every key in ``keys`` that both contracts hold is compared (tuples equal lists, numpy equals
    Python); a key in ``require`` that either lacks is an error too; other absent keys are
    skipped (an appearance checkpoint has no pose fields).
    """
    for key in keys:
        in_a, in_b = key in a, key in b
        if not (in_a and in_b):
            if key in require:
                lacking = names[0] if not in_a else names[1]
                raise CheckpointError(f"data contracts: {lacking} has no {key!r}")
            continue
        va, vb = _canon(a[key]), _canon(b[key])
        if not _equal(va, vb):
            raise CheckpointError(
                f"data contracts disagree on {key!r} ({names[0]} vs {names[1]}): "
                f"{_difference(va, vb)}"
            )


def merge_stage1_contracts(
    appearance: Mapping[str, Any], pose: Mapping[str, Any]
) -> dict[str, Any]:
    """The stage-2 contract: the pose run's fields, plus the fields only the appearance run has,
    with the appearance run's RGB ``normalisation``. Call :func:`check_contracts` first."""
    merged = dict(pose)
    for key, value in appearance.items():
        if key not in merged or key == "normalisation":
            merged[key] = value
    return merged


def build_integral_from_stage1(
    appearance_ckpt: CheckpointLike,
    pose_ckpt: CheckpointLike,
    variant: str = "integral",
    *,
    freeze: bool = True,
    gate_norm: str = DEFAULT_GATE_NORM,
    gate_shape: str = DEFAULT_GATE_SHAPE,
) -> ActionModel:
    """Build a stage-2 model from an appearance-only and a pose-only stage-1 checkpoint.

    The stream weights (and, for ``score_average``, both classifiers) are copied; with
    ``freeze`` the streams get ``requires_grad=False`` and keep BatchNorm in eval mode through
    ``train()`` (section 3.5). Refused with a one-line ``ValueError`` (:class:`CheckpointError`)
    when a checkpoint is not the expected stage or the data contracts disagree (classes, input
    size, clip lengths and strides, frame stride; layout and raster where both record them).
    The result carries the merged contract as ``.contract``. ``gate_norm`` and ``gate_shape``
    are the gate's normalisation and shape (:func:`model.build`).
    """
    if variant not in STAGE2_VARIANTS:
        raise CheckpointError(
            f"stage-2 variant must be one of {', '.join(STAGE2_VARIANTS)}, got {variant!r}"
        )
    a_ckpt, a_what = _as_checkpoint(appearance_ckpt)
    p_ckpt, p_what = _as_checkpoint(pose_ckpt)
    a_cfg, p_cfg = a_ckpt["model_config"], p_ckpt["model_config"]
    for cfg, what, expected in ((a_cfg, a_what, "appearance"), (p_cfg, p_what, "pose")):
        if cfg.get("variant") != expected:
            raise CheckpointError(
                f"{what} is a model of variant {cfg.get('variant')!r}, expected a stage-1 "
                f"{expected!r} model"
            )
    for key in ("num_classes", "clip_len"):
        if a_cfg.get(key) != p_cfg.get(key):
            raise CheckpointError(
                f"stage-1 models disagree on {key}: appearance {a_cfg.get(key)}, "
                f"pose {p_cfg.get(key)}"
            )
    try:
        check_contracts(
            a_ckpt["contract"],
            p_ckpt["contract"],
            _STAGE1_COMPARED,
            require=STAGE1_REQUIRED_KEYS,
            names=("appearance", "pose"),
        )
    except ValueError as exc:
        raise CheckpointError(f"stage-1 checkpoints do not pair: {exc}") from None

    net = build(
        variant,
        num_classes=a_cfg["num_classes"],
        pose_channels=p_cfg["pose_channels"],
        appearance_depth=a_cfg["appearance_depth"],
        pose_depth=p_cfg["pose_depth"],
        clip_len=a_cfg["clip_len"],
        pose_clip_len=p_cfg["pose_clip_len"],
        gate_norm=gate_norm,
        gate_shape=gate_shape,
    )

    def part(state: Mapping[str, Any], prefix: str) -> dict[str, Any]:
        return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}

    _load_strict(net.appearance, part(a_ckpt["state_dict"], "appearance."), a_what)
    _load_strict(net.pose, part(p_ckpt["state_dict"], "pose."), p_what)
    if variant == "score_average":
        _load_strict(net.appearance_classifier, part(a_ckpt["state_dict"], "classifier."), a_what)
        _load_strict(net.pose_classifier, part(p_ckpt["state_dict"], "classifier."), p_what)
    if freeze:
        net.freeze_streams()
    net.contract = merge_stage1_contracts(a_ckpt["contract"], p_ckpt["contract"])
    return net


# ----------------------------------------------------------------------------------------------
# RNG state (for exact resumption)


def capture_rng_state() -> dict[str, Any]:
    """Python, NumPy, torch CPU (and CUDA, where present) generator states."""
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }


def restore_rng_state(state: Mapping[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state`; absent entries are left alone."""
    if state.get("python") is not None:
        random.setstate(state["python"])
    if state.get("numpy") is not None:
        np.random.set_state(state["numpy"])
    if state.get("torch") is not None:
        torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
