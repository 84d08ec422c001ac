"""``train fit``: one stage of IntegralAction training, on 1 or N processes.

Stage 1 trains an appearance-only or a pose-only model from scratch (or ImageNet weights);
stage 2 (``integral``) builds the integration model on the two frozen stage-1 streams and trains
the integration and classifier (paper section 3.5). SGD with the paper's step schedules,
checkpoints every epoch (``last.pt``, ``epoch_NNN.pt``, ``best.pt`` by validation top-1), exact
resumption, AMP and channels-last on CUDA, DDP under torchrun.

Every rank runs ``ceil(videos / global batch)`` steps per epoch from its own resampled shard
stream (seeded by seed, epoch, rank and worker), so no rank waits for another at the end of an
epoch; validation splits the shards over ranks and gathers by key.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import sys
import time
import warnings
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

import model as models
from pipeline.errors import InvalidInput, describe, one_line
from pipeline.progress import progress_bar
from pipeline.shards import Split
from pipeline.skeletons import get_layout

from . import contract as contracts
from . import distributed
from .augment import IMAGENET, UNIT
from .config import (
    PAPER_GLOBAL_BATCH,
    ConfigError,
    FitConfig,
    OptimConfig,
    config_to_dict,
    resume_config,
    unused_gate_options,
    validate,
)
from .data import (
    ClipDataset,
    eval_recipe,
    make_loader,
    open_split,
    sibling_split,
    steps_per_epoch,
    warm_up_renderer,
)
from .evaluate import EvalModel, autocast, model_inputs, predict, predict_features, summarise
from .features import FeatureSet, cache_key, cached_features, compute_features, feature_batches
from .progress import MetricsLog, StepMeter

__all__ = ["FitResult", "fit", "resolve_precision", "state_checksum"]


@dataclass
class FitResult:
    out: str
    epochs: int
    best_top1: float | None
    best_epoch: int | None
    history: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0


def resolve_precision(requested: str, device: torch.device) -> str:
    """auto: bf16 on CUDA when supported, else fp16; CPU always trains in fp32."""
    if device.type != "cuda":
        if requested in ("bf16", "fp16"):
            warnings.warn(f"--precision {requested} needs CUDA; training in fp32", stacklevel=2)
        return "fp32"
    if requested == "auto":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return requested


def state_checksum(module: nn.Module) -> str:
    """sha256 of a module's state dict (names, dtypes and bytes), for comparing ranks and runs."""
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(str(t.dtype).encode())
        h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


@torch.no_grad()
def recompute_batchnorm(
    net: nn.Module,
    batches,
    num_batches: int,
    inputs,
    device: torch.device,
    precision: str,
    forward=None,
) -> int:
    """Precise BN (Wu & Johnson 2021, as in pycls/SlowFast): replace the running statistics of
    every BatchNorm in training mode by their average over ``num_batches`` more training
    batches with the final weights. Frozen (eval-mode) BatchNorm is left alone.

    Running averages updated with momentum 0.1 still carry about 0.9^n of their initial
    values after n steps, which in a short run (a smoke test, a small fine-tuning set) can
    dwarf the real statistics and wreck evaluation. ``forward`` (default ``net``) is called
    with ``inputs(batch)``, e.g. ``net.head`` on cached features. Returns the batches used.
    """
    forward = forward or net
    bns = [
        m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training
    ]
    if not bns:
        return 0
    momenta = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the batches below
    used = 0
    try:
        for batch in batches:
            if not batch["key"]:
                continue
            rgb, pose = inputs(batch)
            with autocast(device, precision):
                forward(rgb, pose)
            used += 1
            if used == num_batches:
                break
    finally:
        for m, momentum in zip(bns, momenta, strict=True):
            m.momentum = momentum
    return used


def _say(dist: distributed.Dist, message: str) -> None:
    if dist.is_main:
        print(message, flush=True)


# ----------------------------------------------------------------------------------------------
# Model and contract


def _clip_defaults(contract: dict[str, Any]) -> dict[str, Any]:
    keys = ("clip_len", "stride", "pose_clip_len", "pose_stride", "input_size", "pose_input")
    values = {k: contract[k] for k in keys if k in contract}
    if "pose_clip_len" in contract:  # a model with a pose stream: its pose input settings
        values.update(contracts.pose_settings(contract))
    return values


def _differs_from_stage1(name: str, given: Any, value: Any, why: str) -> ConfigError:
    return ConfigError(
        f"--{name.replace('_', '-')} {given} differs from the stage-1 checkpoints' {value}: {why}"
    )


def _check_clip_overrides(cfg: FitConfig, stage1: dict[str, Any]) -> None:
    for name, value in _clip_defaults(stage1).items():
        given = getattr(cfg.clips, name)
        if given is not None and given != value:
            raise _differs_from_stage1(
                name, given, value, f"the frozen streams were trained with {value}"
            )


def _take_stage1_depths(cfg: FitConfig, stage1: dict[str, Any]) -> None:
    """Stage 2 on stage-1 checkpoints: their ResNet depths, refusing a depth given otherwise,
    and recorded in ``cfg`` so that config.json says what was built (not the defaults)."""
    given = cfg.given or set()
    for name in ("appearance_depth", "pose_depth"):
        value = getattr(cfg.model, name)
        if ("model", name) in given and value != stage1[name]:
            raise _differs_from_stage1(
                name, value, stage1[name], f"the frozen streams are ResNet-{stage1[name]}"
            )
        setattr(cfg.model, name, stage1[name])


def build_model(cfg: FitConfig, data: Split) -> tuple[models.ActionModel, dict, Any]:
    """(model, data contract, resolved clip config) for a fresh run of ``cfg``."""
    info = data.info
    variant = cfg.variant
    if cfg.stage == "integral" and cfg.model.init_appearance:
        net = models.build_integral_from_stage1(
            cfg.model.init_appearance,
            cfg.model.init_pose,
            variant=variant,
            gate_norm=cfg.model.gate_norm,
            gate_shape=cfg.model.gate_shape,
        )
        stage1 = dict(net.contract)
        _check_clip_overrides(cfg, stage1)
        _take_stage1_depths(cfg, net.config)
        contracts.check_dataset(stage1, info, variant, what="stage-1 checkpoints")
        clip = cfg.clips.resolved(_clip_defaults(stage1))
        contract = {**stage1, "frame_stride": info.frame_stride, "pose_input": clip.pose_input}
        return net, contract, clip
    if cfg.stage == "integral":
        warnings.warn(
            "stage integral without --init-appearance/--init-pose trains both streams from "
            "scratch; the paper freezes trained stage-1 streams (section 3.5)",
            stacklevel=2,
        )
    clip = cfg.clips.resolved()
    net = models.build(
        variant,
        num_classes=len(info.classes),
        pose_channels=get_layout(info.layout).num_channels,
        appearance_depth=cfg.model.appearance_depth,
        pose_depth=cfg.model.pose_depth,
        clip_len=clip.clip_len,
        pose_clip_len=clip.pose_clip_len,
        gate_norm=cfg.model.gate_norm,
        gate_shape=cfg.model.gate_shape,
    )
    norm = UNIT
    if cfg.model.pretrained:
        if not contracts.uses_rgb(variant):
            raise ConfigError("--pretrained loads ImageNet weights into the appearance stream")
        try:
            models.load_imagenet_weights(net.appearance, cfg.model.pretrained)
        except ValueError as exc:  # the file the user named: missing, not weights, other depth
            raise ConfigError(f"--pretrained: {one_line(exc)}") from None
        norm = IMAGENET  # the statistics the weights were trained with
    return net, contracts.make_contract(info, variant, clip, norm), clip


# ----------------------------------------------------------------------------------------------
# The run


def ramped_gate_weight(full: float, warmup: float, epochs_done: float, epochs: int) -> float:
    """lambda after ``epochs_done`` (fractional) of ``epochs``: ``full``, ramped up linearly from
    0 over the first ``warmup`` fraction of the epochs (--gate-warmup; 0: in full throughout).

    With a gate per frame, L_gate at full weight from the first step shuts every visible
    person's gate before the classifier has learnt to read the scene; ramped in, the gate stays
    open where the classifier needs appearance (docs/model.md, "Measured: a gate per frame").
    """
    if warmup <= 0:
        return full
    return full * min(1.0, epochs_done / (warmup * epochs))


def parameter_groups(net: nn.Module, optim: OptimConfig) -> list[dict[str, Any]]:
    """The trainable parameters as SGD parameter groups: one group (the optimiser's
    ``weight_decay``) unless ``--classifier-weight-decay`` gives the final classifier its own.

    One group when the option is unset keeps the optimiser state of runs saved before it
    existed loadable by ``--resume``.
    """
    trainable = [p for p in net.parameters() if p.requires_grad]
    classifier = getattr(net, "classifier", None)
    if optim.classifier_weight_decay is None or classifier is None:
        return [{"params": trainable}] if trainable else []
    own = {id(p) for p in classifier.parameters()}
    groups = [
        {"params": [p for p in trainable if id(p) not in own]},
        {
            "params": [p for p in trainable if id(p) in own],
            "weight_decay": optim.classifier_weight_decay,
        },
    ]
    return [g for g in groups if g["params"]]


class _Run:
    """State of one fit: model, optimiser, data, logs. Split into steps for readability."""

    def __init__(self, cfg: FitConfig, dist: distributed.Dist) -> None:
        self.cfg = cfg
        self.dist = dist
        self.out = cfg.run.out
        self.last_path = os.path.join(self.out, "last.pt")
        resume = self._resume_checkpoint()
        if resume is not None:  # the run's own settings, not the defaults of what was omitted
            saved = (resume.get("extra") or {}).get("config", {})
            self.cfg = cfg = resume_config(cfg, saved, self.out)
            if resume["model_config"]["variant"] != cfg.variant:
                raise ConfigError(
                    f"{self.last_path} trains variant {resume['model_config']['variant']}, "
                    f"not {cfg.variant}"
                )
        elif cfg.run.resume:
            validate(cfg)  # --resume without a run yet: a fresh start, checked as one
        if resume is None:
            for option in unused_gate_options(cfg):
                warnings.warn(option, stacklevel=2)
        self.schedule = cfg.optim.resolve(cfg.stage)
        self.precision = resolve_precision(cfg.run.precision, dist.device)
        self.train_data = open_split(cfg.data.data, cfg.data.split)
        self.val_data = sibling_split(self.train_data, cfg.data.val_split)
        if self.val_data is not None and self.val_data.name == self.train_data.name:
            warnings.warn(
                f"training and validating on the same split {self.train_data.name!r}: "
                "best.pt and val top-1 say nothing about other videos",
                stacklevel=2,
            )
        if resume is not None:
            self.net = models.build_from_checkpoint(resume)
            self.contract = dict(resume["contract"])
            contracts.check_dataset(self.contract, self.train_data.info, self.variant)
            self.clip = cfg.clips.resolved(_clip_defaults(self.contract))
        else:
            torch.manual_seed(cfg.run.seed)  # identical initial weights on every rank
            self.net, self.contract, self.clip = build_model(cfg, self.train_data)
        self.recipe = contracts.recipe_from_contract(
            self.contract,
            self.variant,
            self.train_data.info,
            train=True,
            pose_input=self.clip.pose_input,
        )
        self.norm = contracts.normalisation_of(self.contract)
        self.eval_model = EvalModel(self.net, self.variant, self.norm)
        world = dist.world_size
        self.batch_size = cfg.optim.batch_size or max(1, math.ceil(PAPER_GLOBAL_BATCH / world))
        self.steps = steps_per_epoch(len(self.train_data.index), self.batch_size, world)

        self.net.to(dist.device)
        if dist.device.type == "cuda" and cfg.run.channels_last:
            self.net.to(memory_format=torch.channels_last)
        groups = parameter_groups(self.net, cfg.optim)
        if not groups:
            raise ConfigError(f"variant {self.variant} has no trainable parameters here")
        self.optimizer = torch.optim.SGD(
            groups,
            lr=self.schedule.lr,
            momentum=cfg.optim.momentum,
            weight_decay=cfg.optim.weight_decay,
        )
        self.scheduler = torch.optim.lr_scheduler.MultiStepLR(
            self.optimizer, milestones=list(self.schedule.milestones), gamma=self.schedule.gamma
        )
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.precision == "fp16")
        self.start_epoch = 0
        self.best_top1: float | None = None
        self.best_epoch: int | None = None
        self.history: list[dict[str, Any]] = []
        if resume is not None:
            self._restore(resume)
        # With cached features only the head runs in training; DDP wraps what runs.
        self.cached = bool(cfg.run.cache_features)
        trained = _Head(self.net) if self.cached else self.net
        self.ddp = (
            DistributedDataParallel(
                trained, device_ids=[dist.device] if dist.device.type == "cuda" else None
            )
            if dist.enabled
            else trained
        )
        self.train_features: FeatureSet | None = None
        self.val_features: FeatureSet | None = None
        self.rank_steps: list[int] = []
        self.val_keys: list[str] = []

    @property
    def variant(self) -> str:
        return self.cfg.variant

    # -- resume ------------------------------------------------------------------------------

    def _resume_checkpoint(self) -> dict[str, Any] | None:
        exists = os.path.exists(self.last_path)
        if not self.cfg.run.resume:
            if exists:
                raise ConfigError(
                    f"{self.out} already holds a run (last.pt): pass --resume to continue it "
                    "or choose another --out"
                )
            return None
        if not exists:
            _say(self.dist, f"--resume: no {self.last_path} yet; starting from scratch")
            return None
        ckpt = models.load_checkpoint(self.last_path)
        saved = (ckpt.get("extra") or {}).get("config", {})
        if saved.get("stage") not in (None, self.cfg.stage):
            raise ConfigError(
                f"{self.last_path} is a stage {saved['stage']} run, not {self.cfg.stage}"
            )
        return ckpt

    def _restore(self, ckpt: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        extra = ckpt.get("extra") or {}
        if extra.get("scaler"):
            self.scaler.load_state_dict(extra["scaler"])
        self.start_epoch = int(ckpt["epoch"])
        self.best_top1 = extra.get("best_top1")
        self.best_epoch = extra.get("best_epoch")
        self.history = list(extra.get("history", []))
        if ckpt.get("rng"):
            models.restore_rng_state(ckpt["rng"])
        _say(self.dist, f"resumed {self.last_path} after epoch {self.start_epoch}")

    # -- one epoch ---------------------------------------------------------------------------

    def _inputs(self, batch: dict[str, Any]) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        return model_inputs(batch, self.eval_model, self.dist.device)

    def train_epoch(self, dataset: ClipDataset, epoch: int) -> dict[str, Any]:
        dist, cfg = self.dist, self.cfg
        dataset.set_epoch(epoch)
        loader = make_loader(dataset, cfg.data.workers, pin_memory=dist.device.type == "cuda")
        batches = iter(loader)
        self.ddp.train()
        meter = StepMeter(self.batch_size * dist.world_size)
        show = cfg.run.progress if dist.is_main else False
        bar = progress_bar(self.steps, f"epoch {epoch + 1}", "step", show)
        sums = _EpochSums(dist.device)
        errors: list[str] = []
        lost = read = done = 0
        start = time.perf_counter()
        while done < self.steps:
            batch = next(batches)
            errors += batch["errors"]
            lost += batch["lost"]
            read += batch["read"]
            if not batch["key"]:
                continue
            meter.got_batch()
            rgb, pose = self._inputs(batch)
            target = batch["label"].to(dist.device, non_blocking=True)
            loss = self._step(
                lambda rgb=rgb, pose=pose: self.ddp(rgb, pose), target, sums, epoch, done
            )
            done += 1
            meter.step_done()
            self._show_step(bar, epoch, done, loss, meter)
        if cfg.run.precise_bn:
            recompute_batchnorm(
                self.net, batches, cfg.run.precise_bn, self._inputs, dist.device, self.precision
            )
        del batches, loader  # ends this epoch's workers
        return self._end_epoch(bar, done, sums, errors, epoch, start, meter, lost, read)

    def train_epoch_cached(self, epoch: int) -> dict[str, Any]:
        """One epoch of the head on cached stream features: as many steps and clips as an
        uncached epoch, each clip one of its video's cached views."""
        dist, cfg = self.dist, self.cfg
        self.ddp.train()
        meter = StepMeter(self.batch_size * dist.world_size)
        show = cfg.run.progress if dist.is_main else False
        bar = progress_bar(self.steps, f"epoch {epoch + 1}", "step", show)
        sums = _EpochSums(dist.device)
        done = 0
        start = time.perf_counter()
        batches = feature_batches(
            self.train_features, self.batch_size, self.steps, cfg.run.seed, epoch, dist.rank
        )
        for f_a, f_p, target in batches:
            meter.got_batch()
            f_a, f_p = f_a.to(dist.device), f_p.to(dist.device)
            target = target.to(dist.device)
            loss = self._step(
                lambda f_a=f_a, f_p=f_p: self.ddp(f_a, f_p), target, sums, epoch, done
            )
            done += 1
            meter.step_done()
            self._show_step(bar, epoch, done, loss, meter)
        if cfg.run.precise_bn:
            again = feature_batches(
                self.train_features, self.batch_size, cfg.run.precise_bn, cfg.run.seed,
                epoch + 1_000_000, dist.rank,
            )  # fmt: skip
            recompute_batchnorm(
                self.net,
                ({"key": [0], "f": fb} for fb in again),
                cfg.run.precise_bn,
                lambda b: (b["f"][0].to(dist.device), b["f"][1].to(dist.device)),
                dist.device,
                self.precision,
                forward=self.net.head,
            )
        return self._end_epoch(bar, done, sums, [], epoch, start, meter)

    def gate_weight(self, epoch: int, step: int) -> float:
        """lambda at this step of this epoch (both counted from 0)."""
        return ramped_gate_weight(
            self.cfg.model.gate_weight,
            self.cfg.optim.gate_warmup,
            epoch + step / self.steps,
            self.schedule.epochs,
        )

    def _step(
        self, forward, target: torch.Tensor, sums: _EpochSums, epoch: int, step: int
    ) -> torch.Tensor:
        """One SGD step on the output of ``forward()``; adds to the epoch's sums."""
        self.optimizer.zero_grad(set_to_none=True)
        with autocast(self.dist.device, self.precision):
            out = forward()
        loss, ce, gate_term = self.net.integral_loss(out, target, self.gate_weight(epoch, step))
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        sums.add(out, target, loss, ce, gate_term)
        return loss

    def _show_step(self, bar, epoch: int, done: int, loss: torch.Tensor, meter) -> None:
        cfg = self.cfg
        if not bar.disable:
            bar.update(1)
            bar.set_postfix_str(
                f"loss {loss.item():.3f} {meter.clips_per_s:.1f} clips/s "
                f"wait {100 * meter.wait_fraction:.0f}%"
            )
        elif self.dist.is_main and cfg.run.log_every and done % cfg.run.log_every == 0:
            print(
                f"  epoch {epoch + 1} step {done}/{self.steps} loss {loss.item():.4f} "
                f"{meter.clips_per_s:.1f} clips/s data wait {100 * meter.wait_fraction:.0f}%",
                flush=True,
            )

    def _end_epoch(
        self,
        bar,
        done: int,
        sums: _EpochSums,
        errors: list[str],
        epoch: int,
        start,
        meter,
        lost: int = 0,
        read: int = 0,
    ) -> dict[str, Any]:
        """``errors``: what the reader logged; ``lost``: the samples lost with them; ``read``:
        the samples the reader read whole over the same shard draws."""
        dist = self.dist
        bar.close()
        self.rank_steps.append(done)
        # BatchNorm statistics: rank 0's everywhere (DDP leaves each rank with its own).
        dist.broadcast_buffers(self.net)
        totals = dist.all_reduce_sum([*sums.values(), lost, read])
        seconds = time.perf_counter() - start
        n = max(totals[4], 1)
        # Resampling meets a damaged shard many times an epoch: each one said once.
        for e in list(dict.fromkeys(errors))[:5]:
            warnings.warn(f"epoch {epoch + 1}: skipped {e}", RuntimeWarning, stacklevel=2)
        check_read_errors(
            int(totals[6]),
            int(totals[7]),
            self.cfg.data.max_read_error_fraction,
            f"epoch {epoch + 1}",
            errors,
        )
        row = {
            "train_loss": totals[0] / n,
            "train_ce": totals[1] / n,
            "train_gate": totals[2] / n,
            "train_top1": 100.0 * totals[3] / n,
            "clips_per_s": totals[4] / max(seconds, 1e-9),
            "data_wait": meter.wait_fraction,
            "epoch_seconds": seconds,
            "read_errors": int(totals[6]),
        }
        if self.net.has_gate:
            row["train_mean_gate"] = totals[5] / n
        return row

    def validate(self) -> dict[str, Any] | None:
        if self.val_data is None:
            return None
        if self.cached:
            preds = predict_features(self.net, self.val_features, self.dist.device, self.dist)
            return self._val_metrics(preds)
        recipe = eval_recipe(self.recipe, self.clip.val_clips)
        dataset = ClipDataset(
            self.val_data,
            recipe,
            self.batch_size,
            rank=self.dist.rank,
            world_size=self.dist.world_size,
            cache_dir=self.cfg.data.cache_dir,
        )
        loader = make_loader(dataset, self.cfg.data.workers, self.dist.device.type == "cuda")
        preds = predict(
            [self.eval_model],
            loader,
            self.dist.device,
            self.dist,
            self.precision,
        )
        return self._val_metrics(preds)

    def _val_metrics(self, preds) -> dict[str, Any]:
        self.val_keys = preds.local_keys
        report = summarise(preds.videos, list(self.contract["classes"]), with_predictions=False)
        out = {"val_top1": report["top1"], "val_top5": report["top5"], "report": report}
        if "mean_gate" in report:
            out["val_mean_gate"] = report["mean_gate"]
        return out

    # -- feature caches (stage 2, --cache-features N) ----------------------------------------

    def prepare_features(self) -> None:
        """Load or compute the cached stream features of the training views and of the
        validation clips (docs/training.md, "Feature cache")."""
        cfg, dist = self.cfg, self.dist
        folder = cfg.run.feature_cache or os.path.join(self.out, "features")
        views = replace(self.recipe, train=False, views=cfg.run.cache_features, seed=cfg.run.seed)
        limit = cfg.data.max_read_error_fraction
        jobs = [("train", self.train_data, views)]
        if self.val_data is not None and cfg.run.val_every:
            jobs.append(("val", self.val_data, eval_recipe(self.recipe, self.clip.val_clips)))
        for name, data, recipe in jobs:
            key = cache_key(
                self.net,
                data,
                recipe,
                self.norm,
                data.index.label_of(),
                dtype=cfg.run.feature_dtype,
                rank=dist.rank,
                world_size=dist.world_size,
            )

            where = f"{name} features ({data.name})"

            def compute(data=data, recipe=recipe) -> FeatureSet:
                return compute_features(
                    self.net,
                    data,
                    recipe,
                    self.norm,
                    dist,
                    batch_size=self.batch_size,
                    workers=cfg.data.workers,
                    cache_dir=cfg.data.cache_dir,
                    dtype=cfg.run.feature_dtype,
                )

            feats, loaded = cached_features(
                folder,
                key,
                compute,
                say=lambda m: _say(dist, m),
                what=where,
            )
            # Every rank holds a share: the whole split's damage decides, on all ranks at once.
            lost, read = (int(x) for x in dist.all_reduce_sum([feats.lost, len(feats)]))
            try:
                check_read_errors(lost, read, limit, where, feats.errors)
            except InvalidInput:
                if not loaded:  # a damaged split must not become a cache later runs reuse
                    with contextlib.suppress(OSError):
                        os.remove(os.path.join(folder, f"{key}.pt"))
                raise
            if name == "train":
                self.train_features = feats
            else:
                self.val_features = feats
        dist.barrier()

    # -- checkpoints -------------------------------------------------------------------------

    def save(self, epoch: int, metrics: dict[str, Any], improved: bool) -> None:
        """last.pt (atomic), and epoch_NNN.pt / best.pt as hard links to it (no extra disk)."""
        extra = {
            "config": config_to_dict(self.cfg),
            "best_top1": self.best_top1,
            "best_epoch": self.best_epoch,
            "history": self.history,
            "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else None,
            "world_size": self.dist.world_size,
            "batch_size": self.batch_size,
            "steps_per_epoch": self.steps,
        }
        models.save_checkpoint(
            self.last_path,
            model=self.net,
            model_config=self.net.config,
            contract=self.contract,
            optimizer=self.optimizer,
            scheduler=self.scheduler,
            epoch=epoch,
            metrics={k: v for k, v in metrics.items() if k != "report"},
            rng=models.capture_rng_state(),
            extra=extra,
        )
        _link(self.last_path, os.path.join(self.out, f"epoch_{epoch:03d}.pt"))
        if improved:
            _link(self.last_path, os.path.join(self.out, "best.pt"))
        keep = self.cfg.run.keep_checkpoints
        if keep and epoch > keep:
            # Each epoch file is its own copy once last.pt moves on: a 120-epoch stage 2 would
            # otherwise keep 120 checkpoints. best.pt and last.pt are separate links and stay.
            stale = os.path.join(self.out, f"epoch_{epoch - keep:03d}.pt")
            if os.path.exists(stale):
                os.remove(stale)

    # -- main loop ---------------------------------------------------------------------------

    def run(self) -> FitResult:
        cfg, dist = self.cfg, self.dist
        begin = time.perf_counter()
        log = MetricsLog(self.out, self.start_epoch) if dist.is_main else None
        if dist.is_main:
            with open(os.path.join(self.out, "config.json"), "w") as f:
                json.dump(config_to_dict(cfg), f, indent=1)
        self._banner()
        warm_up_renderer(self.recipe)
        if self.cached:
            self.prepare_features()
        dataset = ClipDataset(
            self.train_data,
            self.recipe,
            self.batch_size,
            seed=cfg.run.seed,
            rank=dist.rank,
            world_size=dist.world_size,
            shuffle_buffer=cfg.data.shuffle_buffer,
            cache_dir=cfg.data.cache_dir,
            # Each epoch takes `steps` batches, then precise BN takes its own.
            batches_per_epoch=self.steps + cfg.run.precise_bn,
        )
        if self.val_data is None:
            _say(dist, f"no {cfg.data.val_split!r} split: no validation, no best.pt")
        if self.start_epoch >= self.schedule.epochs:
            _say(dist, f"the run in {self.out} has trained all its {self.schedule.epochs} epochs")
        for epoch in range(self.start_epoch, self.schedule.epochs):
            lr = self.optimizer.param_groups[0]["lr"]
            trained = (
                self.train_epoch_cached(epoch) if self.cached else self.train_epoch(dataset, epoch)
            )
            metrics = {"epoch": epoch + 1, "lr": lr, **trained}
            self.scheduler.step()
            last = epoch + 1 == self.schedule.epochs
            every = cfg.run.val_every
            if every and ((epoch + 1) % every == 0 or last):
                val = self.validate()
                if val is not None:
                    metrics.update(val)
            improved = False
            if metrics.get("val_top1") is not None and (
                self.best_top1 is None or metrics["val_top1"] > self.best_top1
            ):
                self.best_top1, self.best_epoch, improved = metrics["val_top1"], epoch + 1, True
            row = {k: v for k, v in metrics.items() if k != "report"}
            self.history.append(row)
            if dist.is_main:
                self.save(epoch + 1, metrics, improved)
                log.write(row)
                self._epoch_line(row)
        if log is not None:
            log.close()
        result = FitResult(
            self.out,
            self.schedule.epochs,
            self.best_top1,
            self.best_epoch,
            self.history,
            time.perf_counter() - begin,
        )
        self._rank_report()
        dist.barrier()
        if dist.is_main:
            self._summary(result)
        return result

    # -- output ------------------------------------------------------------------------------

    def _banner(self) -> None:
        d = self.train_data
        rgb = f"RGB {self.recipe.rgb.length}x{self.recipe.rgb.stride}" if self.recipe.rgb else ""
        pose = (
            f"pose {self.recipe.pose.length}x{self.recipe.pose.stride} ({self.recipe.pose_input})"
            if self.recipe.pose
            else ""
        )
        _say(
            self.dist,
            f"train {self.cfg.stage}/{self.variant} on {d.root} [{d.name}: "
            f"{len(d.index)} videos, {len(d.index.shard_numbers())} shards"
            f"{'' if self.val_data is None else f'; {self.val_data.name}: {len(self.val_data.index)}'}"
            f"] {' + '.join(x for x in (rgb, pose) if x)} at {self.recipe.input_size}px | "
            f"{self.dist.world_size} x {self.batch_size} clips/step, {self.steps} steps/epoch, "
            f"{self._epochs_left()}, lr {self.schedule.lr:g} "
            f"x{self.schedule.gamma:g} at {list(self.schedule.milestones)} | "
            f"{self.dist.device} {self.precision}",
        )

    def _epochs_left(self) -> str:
        first, last = self.start_epoch + 1, self.schedule.epochs
        return f"epochs {first}-{last}" if first <= last else f"all {last} epochs done"

    def _epoch_line(self, row: dict[str, Any]) -> None:
        val = (
            f" val top-1 {row['val_top1']:.2f}% top-5 {row['val_top5']:.2f}%"
            if row.get("val_top1") is not None
            else ""
        )
        gate = ""
        if self.variant in models.GATED_VARIANTS:
            gate = f" gate {row['train_gate']:.4f}, mean G {row.get('train_mean_gate', 0):.3f}"
            if row.get("val_mean_gate") is not None:
                gate += f" (val {row['val_mean_gate']:.3f})"
        errs = f" | {row['read_errors']} samples unreadable" if row["read_errors"] else ""
        print(
            f"epoch {row['epoch']}/{self.schedule.epochs} lr {row['lr']:.2g} loss "
            f"{row['train_loss']:.4f} (ce {row['train_ce']:.4f}{gate}) train top-1 "
            f"{row['train_top1']:.1f}%{val} | {row['clips_per_s']:.1f} clips/s, data wait "
            f"{100 * row['data_wait']:.0f}%, {row['epoch_seconds']:.1f}s{errs}",
            flush=True,
        )

    def _summary(self, result: FitResult) -> None:
        from rich.console import Console
        from rich.table import Table

        table = Table(title=f"train fit {self.cfg.stage}/{self.variant}", show_header=False)
        table.add_column()
        table.add_column(justify="right")
        last = result.history[-1] if result.history else {}
        table.add_row("epochs", f"{result.epochs}")
        if result.best_top1 is not None:
            table.add_row("best val top-1 %", f"{result.best_top1:.2f} (epoch {result.best_epoch})")
        if last.get("val_top5") is not None:
            table.add_row(
                "last val top-1 / top-5 %", f"{last['val_top1']:.2f} / {last['val_top5']:.2f}"
            )
        if last:
            table.add_row("last train loss", f"{last['train_loss']:.4f}")
            table.add_row("clips/s (last epoch)", f"{last['clips_per_s']:.1f}")
            table.add_row("data wait (last epoch)", f"{100 * last['data_wait']:.0f}%")
        read_errors = sum(int(h.get("read_errors", 0)) for h in result.history)
        if read_errors:
            table.add_row("samples unreadable", str(read_errors))
        table.add_row("time", f"{result.seconds:.1f}s")
        names = "{last,best,epoch_NNN}" if self.val_data is not None else "{last,epoch_NNN}"
        table.add_row("checkpoints", os.path.join(self.out, f"{names}.pt"))
        Console(file=sys.stdout).print(table)

    def _rank_report(self) -> None:
        """Debugging aid (--rank-report DIR): what this rank trained on and ended with."""
        if not self.cfg.run.rank_report:
            return
        os.makedirs(self.cfg.run.rank_report, exist_ok=True)
        path = os.path.join(self.cfg.run.rank_report, f"rank{self.dist.rank}.json")
        with open(path, "w") as f:
            json.dump(
                {
                    "rank": self.dist.rank,
                    "world_size": self.dist.world_size,
                    "train_steps": self.rank_steps,
                    "batch_size": self.batch_size,
                    "val_keys": self.val_keys,
                    "checksum": state_checksum(self.net),
                },
                f,
            )


class _Head(nn.Module):
    """The part of a stage-2 model that trains on cached features: ``net.head(f_a, f_p)``."""

    def __init__(self, net: models.ActionModel) -> None:
        super().__init__()
        self.net = net

    def forward(self, f_a: torch.Tensor, f_p: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.net.head(f_a, f_p)


def check_read_errors(failed: int, read: int, limit: float, where: str, errors: list[str]) -> None:
    """InvalidInput when more than ``limit`` of the samples an epoch (or a feature cache) drew
    from its shards could not be read: training on what is left of badly damaged shards would
    only look like a result. ``failed`` counts samples, not errors: a damaged shard loses all it
    had left; ``read``: the samples read whole over the same draws (a resampled stream draws a
    shard many times an epoch, and its shuffle buffers read more than the steps use)."""
    if failed and failed / (failed + read) > limit:
        first = f"; first: {errors[0]}" if errors else ""
        raise InvalidInput(
            f"{where}: {failed} of {failed + read} samples drawn from the shards could not be "
            "read, more than "
            f"--max-read-error-fraction {limit:g} (`pipeline verify` lists the damage){first}"
        )


class _EpochSums:
    """Running sums of one epoch (on the training device, so no step waits for a copy)."""

    def __init__(self, device: torch.device) -> None:
        self.t = torch.zeros(6, device=device, dtype=torch.float64)

    def add(self, out, target, loss, ce, gate_term) -> None:
        n = target.shape[0]
        gate = out["gate"].detach().double().mean() * n if "gate" in out else 0.0
        correct = (out["logits"].detach().argmax(1) == target).sum()
        self.t += torch.stack(
            [
                loss.detach().double() * n,
                ce.detach().double() * n,
                gate_term.detach().double() * n,
                correct.double(),
                torch.tensor(float(n), device=self.t.device, dtype=torch.float64),
                torch.as_tensor(gate, device=self.t.device, dtype=torch.float64),
            ]
        )

    def values(self) -> list[float]:
        return self.t.tolist()


def _link(src: str, dst: str) -> None:
    """Make ``dst`` the same file as ``src`` (hard link; a copy where links are unsupported)."""
    tmp = f"{dst}.tmp-{os.getpid()}"
    if os.path.exists(tmp):
        os.remove(tmp)
    try:
        os.link(src, tmp)
    except OSError:
        import shutil

        shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


def fit(cfg: FitConfig) -> FitResult:
    """Run ``train fit`` with a resolved configuration (under torchrun: on every rank)."""
    if not cfg.data.data:
        raise ConfigError("--data is required")
    if not cfg.run.out:
        raise ConfigError("--out is required")
    if os.path.exists(cfg.run.out) and not os.path.isdir(cfg.run.out):
        raise ConfigError(f"--out {cfg.run.out} is a file; give a folder for the run")
    dist = distributed.setup(cfg.run.device)
    created = not os.path.exists(cfg.run.out)
    try:
        if dist.is_main:
            try:
                os.makedirs(cfg.run.out, exist_ok=True)
            except OSError as exc:
                raise ConfigError(f"--out {cfg.run.out} cannot be made: {describe(exc)}") from None
        dist.barrier()
        return _Run(cfg, dist).run()
    except BaseException:
        # A run that failed before writing anything (unreadable data, a bad checkpoint) leaves
        # no empty folder behind; one with files keeps them for --resume.
        if dist.is_main and created:
            with contextlib.suppress(OSError):
                os.rmdir(cfg.run.out)  # only succeeds on an empty folder
        raise
    finally:
        distributed.teardown(dist)
