"""Evaluation: multi-clip testing, gathering by key across ranks, and the metrics of the paper.

- :func:`predict` runs one or more models over a loader of test clips and averages, per video,
  the class probabilities over its clips (and over the models: the score-average baseline);
  with DDP each rank predicts its share and the results are gathered by key.
- :func:`summarise` turns per-video results into top-1/top-5, per-class accuracy, the
  confusion matrix and, for gated models, the mean gate overall and per class (paper Table 5);
  :func:`gate_statistics` the distribution of the per-video mean gate (paper Figure 4): over
  all videos, per class, and split by whether a person was found (``person_fraction`` in the
  index) and, for synthetic data, whether the person was hidden.
- :func:`evaluate` is ``train eval``: checkpoints + dataset -> the JSON report.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
from torch import nn

from model import build_from_checkpoint, check_contracts, load_checkpoint
from pipeline import storage
from pipeline.errors import InputNotFound, InvalidInput
from pipeline.progress import progress_bar
from pipeline.shards import Split, make_key

from . import contract as contracts
from .augment import Normalisation, normalise_rgb
from .data import ClipRecipe, eval_loader, open_split
from .distributed import Dist
from .features import FeatureSet, cache_key, cached_features, compute_features

__all__ = [
    "EvalModel",
    "VideoResult",
    "Predictions",
    "merge_recipes",
    "model_inputs",
    "predict",
    "predict_features",
    "summarise",
    "distribution",
    "gate_statistics",
    "load_video_info",
    "protocol_skips",
    "load_eval_models",
    "evaluate",
    "print_report",
    "autocast",
]


@dataclass
class EvalModel:
    """A model with what it needs to be fed: its variant and RGB normalisation."""

    module: nn.Module
    variant: str
    normalisation: Normalisation

    @property
    def uses_rgb(self) -> bool:
        return contracts.uses_rgb(self.variant)

    @property
    def uses_pose(self) -> bool:
        return contracts.uses_pose(self.variant)


@dataclass
class VideoResult:
    label: int  # model class index
    probs: np.ndarray  # float32 [num_classes], mean over clips (and models)
    clips: int
    padded: bool
    has_pose: bool
    gate: float | None = None  # mean of G over clips, frames and channels


@dataclass
class Predictions:
    videos: dict[str, VideoResult] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    local_keys: list[str] = field(default_factory=list)  # what this rank predicted
    seconds: float = 0.0
    clips: int = 0


def autocast(device: torch.device, precision: str):
    """bf16/fp16 autocast on CUDA; nothing elsewhere (CPU runs in fp32)."""
    if device.type != "cuda" or precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast("cuda", dtype=dtype)


def model_inputs(
    batch: dict[str, Any], m: EvalModel, device: torch.device
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    rgb = pose = None
    if m.uses_rgb:
        rgb = normalise_rgb(batch["rgb"].to(device, non_blocking=True), m.normalisation)
    if m.uses_pose:
        pose = batch["pose"].to(device, non_blocking=True)
    return rgb, pose


def merge_recipes(recipes: Sequence[ClipRecipe]) -> ClipRecipe:
    """One recipe that feeds every model: RGB clips from the RGB models, pose from the pose ones.

    Models combined in one evaluation must agree where they overlap (same RGB clip, same pose
    clip, same input size), since one clip start and one crop serve them all.
    """
    first = recipes[0]
    rgb = pose = None
    for r in recipes:
        if r.input_size != first.input_size:
            raise InvalidInput(
                f"models disagree on input size: {first.input_size} vs {r.input_size}"
            )
        for name in ("rgb", "pose"):
            spec = getattr(r, name)
            have = rgb if name == "rgb" else pose
            if spec is not None and have is not None and spec != have:
                raise InvalidInput(f"models disagree on the {name} clip: {have} vs {spec}")
        rgb = rgb or r.rgb
        pose = pose or r.pose
        if r.pose is not None and first.pose is not None and r.pose_input != first.pose_input:
            raise InvalidInput("models disagree on --pose-input")
    pose_input = next((r.pose_input for r in recipes if r.pose is not None), first.pose_input)
    return replace(first, rgb=rgb, pose=pose, pose_input=pose_input)


@torch.no_grad()
def predict(
    models: Sequence[EvalModel],
    batches: Iterable[dict[str, Any]],
    device: torch.device,
    dist: Dist,
    precision: str = "fp32",
    progress=None,
) -> Predictions:
    """Per-video mean class probabilities over clips and models, gathered across ranks.

    Every rank must call this (it gathers). A key predicted by two ranks (it cannot happen with
    :meth:`pipeline.shards.Split.pipeline`, but a duplicated video in the data could) is kept once.
    """
    for m in models:
        m.module.eval()
    acc: dict[str, dict[str, Any]] = {}
    errors: list[str] = []
    start = time.perf_counter()
    clips = 0
    for batch in batches:
        errors += batch["errors"]
        n = len(batch["key"])
        if n == 0:
            continue
        probs = None
        gate = None
        for m in models:
            rgb, pose = model_inputs(batch, m, device)
            with autocast(device, precision):
                out = m.module(rgb, pose)
            p = out["logits"].float().exp()
            probs = p if probs is None else probs + p
            if gate is None and "gate" in out:
                gate = out["gate"].float().mean(dim=(1, 2)).cpu().numpy()
        probs = (probs / len(models)).cpu().numpy()
        for i, key in enumerate(batch["key"]):
            a = acc.get(key)
            if a is None:
                a = acc[key] = {
                    "label": int(batch["label"][i]),
                    "probs": np.zeros(probs.shape[1], dtype=np.float64),
                    "clips": 0,
                    "padded": bool(batch["padded"][i]),
                    "has_pose": bool(batch["has_pose"][i]),
                    "gate": 0.0 if gate is not None else None,
                }
            a["probs"] += probs[i]
            a["clips"] += 1
            if gate is not None:
                a["gate"] += float(gate[i])
        clips += n
        if progress is not None:
            progress(n)
    local = {
        key: VideoResult(
            label=a["label"],
            probs=(a["probs"] / a["clips"]).astype(np.float32),
            clips=a["clips"],
            padded=a["padded"],
            has_pose=a["has_pose"],
            gate=None if a["gate"] is None else a["gate"] / a["clips"],
        )
        for key, a in acc.items()
    }
    return _gather(local, errors, clips, dist, time.perf_counter() - start)


def _gather(
    local: dict[str, VideoResult], errors: list[str], clips: int, dist: Dist, seconds: float
) -> Predictions:
    result = Predictions(local_keys=sorted(local), seconds=seconds)
    for part, errs, n in dist.all_gather_object((local, errors, clips)):
        for key, video in part.items():
            result.videos.setdefault(key, video)
        result.errors += errs
        result.clips += n
    return result


@torch.no_grad()
def predict_features(
    net: nn.Module, feats: FeatureSet, device: torch.device, dist: Dist, batch_size: int = 64
) -> Predictions:
    """:func:`predict` for a stage-2 model on cached stream features (``net.head``): per
    video, the mean class probabilities (and gate) over its cached clips; gathered by key."""
    net.eval()
    start = time.perf_counter()
    local: dict[str, VideoResult] = {}
    views = feats.views
    for i in range(0, len(feats), batch_size):
        f_a = feats.f_a[i : i + batch_size].float().to(device)
        f_p = feats.f_p[i : i + batch_size].float().to(device)
        b = f_a.shape[0]
        out = net.head(f_a.flatten(0, 1), f_p.flatten(0, 1))
        probs = out["logits"].float().exp().view(b, views, -1).mean(1).cpu().numpy()
        gate = None
        if "gate" in out:
            gate = out["gate"].float().mean(dim=(1, 2)).view(b, views).mean(1).cpu().numpy()
        for j in range(b):
            k = i + j
            local[feats.keys[k]] = VideoResult(
                label=int(feats.labels[k]),
                probs=probs[j].astype(np.float32),
                clips=views,
                padded=bool(feats.padded[k]),
                has_pose=bool(feats.has_pose[k]),
                gate=None if gate is None else float(gate[j]),
            )
    clips = len(feats) * views
    return _gather(local, list(feats.errors), clips, dist, time.perf_counter() - start)


def _percent(x: float) -> float:
    return round(100.0 * float(x), 4)


def summarise(
    videos: dict[str, VideoResult], class_names: Sequence[str], with_predictions: bool = True
) -> dict[str, Any]:
    """Top-1/top-5 (percent), per-class top-1, confusion matrix, gates; predictions per key."""
    n_cls = len(class_names)
    keys = sorted(videos)
    report: dict[str, Any] = {"num_videos": len(keys)}
    if not keys:
        report.update(top1=0.0, top5=0.0, per_class={}, mean_class_accuracy=0.0)
        report["confusion"] = {"classes": list(class_names), "matrix": []}
        return report
    probs = np.stack([videos[k].probs for k in keys])
    labels = np.asarray([videos[k].label for k in keys])
    order = np.argsort(-probs, axis=1, kind="stable")
    pred = order[:, 0]
    top5 = order[:, : min(5, n_cls)]
    hit1 = pred == labels
    hit5 = (top5 == labels[:, None]).any(axis=1)
    confusion = np.zeros((n_cls, n_cls), dtype=np.int64)
    np.add.at(confusion, (labels, pred), 1)
    per_class = {
        class_names[c]: _percent(hit1[labels == c].mean())
        for c in range(n_cls)
        if (labels == c).any()
    }
    report.update(
        top1=_percent(hit1.mean()),
        top5=_percent(hit5.mean()),
        mean_class_accuracy=round(float(np.mean(list(per_class.values()))), 4),
        num_padded=int(sum(videos[k].padded for k in keys)),
        num_without_pose=int(sum(not videos[k].has_pose for k in keys)),
        per_class=per_class,
        confusion={"classes": list(class_names), "matrix": confusion.tolist()},
    )
    gates = [videos[k].gate for k in keys]
    if all(g is not None for g in gates):
        g = np.asarray(gates, dtype=np.float64)
        report["mean_gate"] = round(float(g.mean()), 6)
        report["gate_per_class"] = {
            class_names[c]: round(float(g[labels == c].mean()), 6)
            for c in range(n_cls)
            if (labels == c).any()
        }
    if with_predictions:
        report["predictions"] = {
            k: {
                "label": class_names[labels[i]],
                "pred": class_names[pred[i]],
                "correct": bool(hit1[i]),
                "score": round(float(probs[i, pred[i]]), 6),
                "top5": [class_names[j] for j in top5[i]],
                "clips": videos[k].clips,
                "padded": videos[k].padded,
                **({"gate": round(videos[k].gate, 6)} if videos[k].gate is not None else {}),
            }
            for i, k in enumerate(keys)
        }
    return report


def distribution(values: Sequence[float]) -> dict[str, float]:
    """``n``, ``mean``, ``sd`` (population) and the 10/50/90 percentiles of ``values``."""
    v = np.asarray(list(values), dtype=np.float64)
    if v.size == 0:
        return {"n": 0}
    p10, p50, p90 = np.percentile(v, [10, 50, 90])
    return {
        "n": int(v.size),
        "mean": round(float(v.mean()), 6),
        "sd": round(float(v.std()), 6),
        "p10": round(float(p10), 6),
        "p50": round(float(p50), 6),
        "p90": round(float(p90), 6),
    }


# Videos count as "person found" when at least this fraction of their kept frames has one.
PERSON_FOUND = 0.5


def gate_statistics(
    videos: dict[str, VideoResult],
    class_names: Sequence[str],
    person_fraction: dict[str, float],
    video_info: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The per-video mean gate and its distribution (paper Figure 4, Table 5).

    ``per_video``: key -> mean G over its clips, frames and channels; ``all``: its
    :func:`distribution`; ``per_class``: one per class; ``by_person``: split by
    ``person_fraction >= 0.5`` (the index's fraction of kept frames with a person);
    ``by_hidden``: split by the synthetic data's hidden flag, when ``video_info`` has it.
    """
    keys = sorted(k for k, v in videos.items() if v.gate is not None)
    gate = {k: float(videos[k].gate) for k in keys}
    out: dict[str, Any] = {
        "per_video": {k: round(g, 6) for k, g in gate.items()},
        "all": distribution(gate.values()),
        "per_class": {
            class_names[c]: distribution(gate[k] for k in keys if videos[k].label == c)
            for c in range(len(class_names))
            if any(videos[k].label == c for k in keys)
        },
    }
    found = [k for k in keys if person_fraction.get(k, 0.0) >= PERSON_FOUND]
    lost = [k for k in keys if person_fraction.get(k, 0.0) < PERSON_FOUND]
    out["by_person"] = {
        f"person_fraction>={PERSON_FOUND}": distribution(gate[k] for k in found),
        f"person_fraction<{PERSON_FOUND}": distribution(gate[k] for k in lost),
    }
    if video_info and any("hidden" in video_info.get(k, {}) for k in keys):
        hidden = [k for k in keys if video_info.get(k, {}).get("hidden")]
        visible = [k for k in keys if k in video_info and not video_info[k].get("hidden")]
        out["by_hidden"] = {
            "hidden": distribution(gate[k] for k in hidden),
            "visible": distribution(gate[k] for k in visible),
        }
    return out


def _subset_accuracy(
    videos: dict[str, VideoResult], video_info: dict[str, dict[str, Any]]
) -> dict[str, dict[str, float]]:
    """Top-1 on the videos each stream alone could decide (synthetic data's ``decided_by``),
    on the videos whose person is visible or hidden, and the share of each subset."""
    keys = sorted(k for k in videos if k in video_info)
    correct = {k: int(np.argmax(videos[k].probs)) == videos[k].label for k in keys}
    groups: dict[str, list[str]] = {}

    def add(pair: tuple[str, str], first: bool, key: str) -> None:
        # Both sides of a split are always reported, an empty one with n = 0 and top1 None.
        for name in pair:
            groups.setdefault(name, [])
        groups[pair[0] if first else pair[1]].append(key)

    for k in keys:
        info = video_info[k]
        for stream, decides in (info.get("decided_by") or {}).items():
            add((f"{stream}_decides", f"{stream}_cannot_decide"), decides, k)
        if "hidden" in info:
            add(("hidden", "visible"), info["hidden"], k)
    return {
        name: {
            "n": len(ks),
            "fraction": round(len(ks) / max(len(keys), 1), 6),
            "top1": _percent(np.mean([correct[k] for k in ks])) if ks else None,
        }
        for name, ks in sorted(groups.items())
    }


def load_video_info(path: str | None) -> dict[str, dict[str, Any]]:
    """Per-video facts from the synthetic dataset's ``synth.json`` (or the folder holding it):
    key -> ``hidden`` (bool) and ``decided_by`` ({"pose": bool, "scene": bool}, when the file
    has it). Keys are the build's keys (the video file's stem, ``.`` replaced by ``_``)."""
    if not path:
        return {}
    if storage.exists(storage.join(path, "synth.json")):
        path = storage.join(path, "synth.json")
    if not storage.exists(path):
        raise InputNotFound(f"--video-info {path}: no such file (expected synth.json)")
    try:
        with storage.open_file(path, "rb") as f:
            meta = json.loads(f.read())
        records = meta["videos"]
    except (ValueError, KeyError, TypeError) as exc:
        raise InvalidInput(f"--video-info {path}: not a synth.json ({exc})") from None
    out = {}
    for r in records:
        key = make_key(r["key"])
        info: dict[str, Any] = {"hidden": r.get("hidden") is not None}
        if "decided_by" in r:
            info["decided_by"] = dict(r["decided_by"])
        out[key] = info
    return out


def protocol_skips(data: Split, span: int, protocol: str) -> dict[str, set[str]]:
    """Videos the protocol drops, by reason (from the index, before reading any shard).

    ``official`` drops videos with no detected person in any kept frame and videos shorter
    than the clip span, as the paper's code does; ``all`` keeps everything (short videos are
    padded by repeating their last frame).
    """
    if protocol == "all":
        return {}
    idx = data.index
    covered = (idx.num_frames - 1) * data.info.frame_stride + 1
    no_pose = {k for k, f in zip(idx.keys, idx.person_fraction, strict=True) if not f > 0}
    short = {k for k, c in zip(idx.keys, covered, strict=True) if c < span} - no_pose
    return {"no_pose": no_pose, "short": short}


def load_eval_models(paths: Sequence[str], device: torch.device) -> list[tuple[EvalModel, dict]]:
    out = []
    for path in paths:
        ckpt = load_checkpoint(path)
        net = build_from_checkpoint(ckpt).to(device)
        variant = ckpt["model_config"]["variant"]
        norm = contracts.normalisation_of(ckpt["contract"])
        out.append((EvalModel(net, variant, norm), ckpt))
    return out


def evaluate(
    checkpoints: Sequence[str],
    data_url: str,
    split: str | None,
    dist: Dist,
    *,
    clips: int = 10,
    class_map: str | None = None,
    protocol: str = "all",
    combine: str = "mean",
    batch_size: int = 16,
    workers: int = 2,
    cache_dir: str | None = None,
    precision: str = "fp32",
    progress: bool = False,
    video_info: str | None = None,
    feature_cache: str | None = None,
) -> dict[str, Any]:
    """``train eval``: the report for checkpoints on a split (every rank returns it).

    ``video_info``: a synthetic dataset's synth.json, for gate statistics split by hidden
    person and accuracy on the videos each stream could decide. ``feature_cache``: a folder
    where a stage-2 model's stream features of the test clips are cached (keyed like the
    training cache), so that models sharing frozen streams compute them once.
    """
    if not checkpoints:
        raise InvalidInput("give at least one --checkpoint")
    if len(checkpoints) > 1 and combine != "mean":
        raise InvalidInput(f"--combine {combine}: only 'mean' (score average) is supported")
    if clips < 1:
        raise InvalidInput(f"--clips must be >= 1, got {clips}")
    data = open_split(data_url, split)
    loaded = load_eval_models(checkpoints, dist.device)
    first_contract = loaded[0][1]["contract"]
    for (_, ckpt), path in zip(loaded[1:], checkpoints[1:], strict=True):
        try:
            check_contracts(
                first_contract,
                ckpt["contract"],
                ("classes", "layout", "input_size", "frame_stride"),
                names=(checkpoints[0], path),
            )
        except ValueError as exc:
            raise InvalidInput(f"--combine: {exc}") from None
    model_classes = list(first_contract["classes"])
    for (m, ckpt), path in zip(loaded, checkpoints, strict=True):
        contracts.check_dataset(
            ckpt["contract"], data.info, m.variant, classes=False, what=f"checkpoint {path}"
        )
    cmap = contracts.class_map(list(data.info.classes), model_classes, class_map)
    recipes = [
        contracts.recipe_from_contract(
            ckpt["contract"], m.variant, data.info, train=False, num_clips=clips
        )
        for m, ckpt in loaded
    ]
    recipe = merge_recipes(recipes)

    labels = {}
    not_in_model = 0
    for key, label in zip(data.index.keys, data.index.labels, strict=True):
        mapped = int(cmap.to_model[label])
        if mapped < 0:
            not_in_model += 1
        else:
            labels[key] = mapped
    skips = protocol_skips(data, recipe.span, protocol)
    skip = set().union(*skips.values()) if skips else set()
    expected = set(labels) - skip

    info = load_video_info(video_info)
    if info and not any(k in info for k in labels):
        raise InvalidInput(
            f"--video-info {video_info} describes none of the {len(labels)} videos of split "
            f"{data.name!r}: the synth.json of another dataset?"
        )
    bar = progress_bar(len(expected) * clips, "eval", "clip", progress and dist.is_main)
    update = bar.update
    single = loaded[0][0] if len(loaded) == 1 else None
    if (
        feature_cache
        and single is not None
        and hasattr(single.module, "head")
        and all(getattr(single.module, s, None) is not None for s in ("appearance", "pose"))
    ):
        preds = _predict_cached(
            single, data, recipe, labels, frozenset(skip), feature_cache, dist,
            batch_size=batch_size, workers=workers, cache_dir=cache_dir, progress=update,
        )  # fmt: skip
    else:
        loader = eval_loader(
            data, recipe, batch_size, rank=dist.rank, world_size=dist.world_size,
            workers=workers, cache_dir=cache_dir, labels=labels, skip=skip,
            pin_memory=dist.device.type == "cuda",
        )  # fmt: skip
        if precision != "fp32" and dist.device.type != "cuda":
            warnings.warn(f"--precision {precision} needs CUDA; evaluating in fp32", stacklevel=2)
        preds = predict(
            [m for m, _ in loaded], loader, dist.device, dist, precision, progress=update
        )
    bar.close()
    report = summarise(preds.videos, model_classes)
    fractions = dict(zip(data.index.keys, data.index.person_fraction.tolist(), strict=True))
    for key, row in report.get("predictions", {}).items():
        row["person_fraction"] = round(float(fractions.get(key, 0.0)), 4)
        if key in info:
            row["hidden"] = info[key]["hidden"]
            if "decided_by" in info[key]:
                row["decided_by"] = info[key]["decided_by"]
    if any(v.gate is not None for v in preds.videos.values()):
        report["gate"] = gate_statistics(preds.videos, model_classes, fractions, info)
    if info:
        report["subsets"] = _subset_accuracy(preds.videos, info)
    missing = sorted(expected - set(preds.videos))
    report = {
        "checkpoints": [os.fspath(p) for p in checkpoints],
        "variants": [m.variant for m, _ in loaded],
        "combine": combine if len(checkpoints) > 1 else None,
        "data": data.root,
        "split": data.name,
        "protocol": protocol,
        "clips": clips,
        "top1": report["top1"],
        "top5": report["top5"],
        "num_videos": report["num_videos"],
        "num_padded": report.get("num_padded", 0),
        "num_dropped": {
            "class_not_in_model": not_in_model,
            **{reason: len(keys & set(labels)) for reason, keys in skips.items()},
        },
        "dropped_classes": cmap.dropped,
        "num_missing": len(missing),
        "missing": missing[:100],
        "corrupt": len(preds.errors),
        "errors": preds.errors[:100],
        "clips_per_second": round(preds.clips / max(preds.seconds, 1e-9), 2),
        **{k: v for k, v in report.items() if k not in ("top1", "top5", "num_videos")},
    }
    return report


def _predict_cached(
    m: EvalModel,
    data: Split,
    recipe: ClipRecipe,
    labels: dict[str, int],
    skip: frozenset[str],
    folder: str,
    dist: Dist,
    *,
    batch_size: int,
    workers: int,
    cache_dir: str | None,
    progress=None,
) -> Predictions:
    """:func:`predict` through a cache of the test clips' stream features."""
    key = cache_key(
        m.module,
        data,
        recipe,
        m.normalisation,
        {k: v for k, v in labels.items() if k not in skip},
        rank=dist.rank,
        world_size=dist.world_size,
    )

    def compute() -> FeatureSet:
        return compute_features(
            m.module, data, recipe, m.normalisation, dist, labels=labels, skip=skip,
            batch_size=batch_size, workers=workers, cache_dir=cache_dir, progress=progress,
        )  # fmt: skip

    feats, _ = cached_features(folder, key, compute, say=lambda _: None)
    return predict_features(m.module, feats, dist.device, dist)


def write_report(report: dict[str, Any], out: str) -> None:
    storage.write_bytes_atomic(out, (json.dumps(report, indent=1) + "\n").encode())


def print_report(report: dict[str, Any], console=None, max_classes: int = 20) -> None:
    """A one-screen table: overall figures, then the worst classes (and their gate)."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    head = Table(title=f"{report['split']}: {', '.join(report['variants'])}", show_header=False)
    head.add_column(justify="left")
    head.add_column(justify="right")
    head.add_row("videos", str(report["num_videos"]))
    head.add_row("top-1 %", f"{report['top1']:.2f}")
    head.add_row("top-5 %", f"{report['top5']:.2f}")
    head.add_row("mean class top-1 %", f"{report.get('mean_class_accuracy', 0.0):.2f}")
    head.add_row("clips per video", str(report["clips"]))
    head.add_row("padded (short) videos", str(report["num_padded"]))
    for reason, n in report["num_dropped"].items():
        if n:
            head.add_row(f"dropped: {reason.replace('_', ' ')}", str(n))
    if report["num_missing"] or report["corrupt"]:
        head.add_row("missing / read errors", f"{report['num_missing']} / {report['corrupt']}")
    if "mean_gate" in report:
        head.add_row("mean gate (appearance weight)", f"{report['mean_gate']:.3f}")
    gate = report.get("gate") or {}
    groups = [("per video", gate.get("all"))]
    for split in ("by_person", "by_hidden"):
        groups += list((gate.get(split) or {}).items())
    for name, d in groups:
        if d and d.get("n"):
            head.add_row(
                f"gate, {name.replace('_', ' ')} ({d['n']})",
                f"{d['mean']:.3f} ± {d['sd']:.3f} [{d['p10']:.2f} {d['p50']:.2f} {d['p90']:.2f}]",
            )
    for name, sub in (report.get("subsets") or {}).items():
        if sub["n"]:
            head.add_row(f"top-1 %, {name.replace('_', ' ')} ({sub['n']})", f"{sub['top1']:.2f}")
    console.print(head)
    per_class = report.get("per_class", {})
    if per_class:
        table = Table(title=f"per class (lowest {min(max_classes, len(per_class))})")
        table.add_column("class")
        table.add_column("top-1 %", justify="right")
        gates = report.get("gate_per_class")
        if gates:
            table.add_column("gate", justify="right")
        for name, acc in sorted(per_class.items(), key=lambda kv: (kv[1], kv[0]))[:max_classes]:
            row = [name, f"{acc:.1f}"]
            if gates:
                row.append(f"{gates[name]:.3f}")
            table.add_row(*row)
        console.print(table)
