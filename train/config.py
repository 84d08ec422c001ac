"""Training configuration: typed dataclasses, paper defaults, a YAML file and CLI overrides.

Precedence: dataclass defaults (the paper's) < ``--config FILE`` (YAML, sections as below) <
command-line options. Nothing here is global: ``fit`` receives one :class:`FitConfig`.

YAML layout (every key optional)::

    data:  {data: "", split: train, val_split: val, workers: 2, shuffle_buffer: 64,
            cache_dir: null, max_read_error_fraction: 0.05}
    clips: {clip_len: 8, stride: 8, pose_clip_len: 32, pose_stride: 2, input_size: 224,
            pose_input: keypoints, pose_crop: frame, pose_size: 56, pose_sigma: 0.5,
            val_clips: 1}
    model: {variant: integral, appearance_depth: 50, pose_depth: 18, gate_weight: 1.5,
            gate_norm: none, gate_shape: channel, pretrained: null, init_appearance: null,
            init_pose: null}
    optim: {schedule: kinetics, epochs: null, lr_steps: null, lr: null, momentum: 0.9,
            weight_decay: 1.0e-4, classifier_weight_decay: null, batch_size: null,
            gate_warmup: 0.0}
    run:   {out: "", seed: 0, device: auto, precision: auto, channels_last: true,
            val_every: 1, log_every: 20, resume: false, precise_bn: 0, progress: null,
            cache_features: 0, feature_cache: null, feature_dtype: float32,
            keep_checkpoints: 0}

Values are checked against each field's type (an int is taken where a float is asked for).
"""

from __future__ import annotations

import copy
import dataclasses
import types
import typing
from dataclasses import dataclass, field
from typing import Any

import yaml

from model import (
    DEFAULT_GATE_NORM,
    DEFAULT_GATE_SHAPE,
    GATE_LOSS_VARIANTS,
    GATE_NORMS,
    GATE_SHAPES,
    GATED_VARIANTS,
    STAGE2_VARIANTS,
)
from model.resnet import RESNET_SPECS
from pipeline.errors import InvalidInput

from .augment import POSE_CROPS

__all__ = [
    "STAGES",
    "STAGE_VARIANTS",
    "INTEGRAL_VARIANTS",
    "POSE_INPUTS",
    "POSE_CROPS",
    "PRECISIONS",
    "Schedule",
    "SCHEDULES",
    "DataConfig",
    "ClipConfig",
    "ModelConfig",
    "OptimConfig",
    "RunConfig",
    "FitConfig",
    "ConfigError",
    "build_fit_config",
    "config_to_dict",
    "PAPER_GLOBAL_BATCH",
]

STAGES = ("appearance", "pose", "integral")
# Stage 2 variants the paper compares (Tables 4 and 6); score_average has nothing to train.
INTEGRAL_VARIANTS = tuple(v for v in STAGE2_VARIANTS if v != "score_average")
STAGE_VARIANTS: dict[str, tuple[str, ...]] = {
    "appearance": ("appearance",),
    "pose": ("pose",),
    "integral": INTEGRAL_VARIANTS,
}
POSE_INPUTS = ("keypoints", "raster")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
# Global batch of the paper (section 4.1); --batch-size defaults to this over the processes.
PAPER_GLOBAL_BATCH = 32


RESNET_DEPTHS = tuple(sorted(RESNET_SPECS))


class ConfigError(InvalidInput):
    """Invalid configuration; the message is one line for the user."""


@dataclass(frozen=True)
class Schedule:
    """Step learning-rate schedule: lr, x ``gamma`` at each milestone epoch, ``epochs`` in all."""

    lr: float
    milestones: tuple[int, ...]
    epochs: int
    gamma: float = 0.1


# Paper sections 3.5 and 4 (the official code's configs): SGD, lr x0.1 at the milestones.
SCHEDULES: dict[str, Schedule] = {
    "kinetics": Schedule(1e-2, (30, 60), 70),  # Kinetics-400, stage 1
    "kinetics50": Schedule(1e-2, (20, 30), 40),  # Kinetics50 (for Mimetics), stage 1
    "ntu": Schedule(1e-2, (20, 30), 40),  # NTU RGB+D, stage 1
    "stage2": Schedule(1e-3, (10, 15), 20),  # stage 2: integration on frozen streams
}
DEFAULT_SCHEDULE = {"appearance": "kinetics", "pose": "kinetics", "integral": "stage2"}


@dataclass
class DataConfig:
    data: str = ""  # dataset root or split folder (local path or fsspec URL)
    split: str = "train"
    val_split: str = "val"
    workers: int = 2  # DataLoader processes per rank
    shuffle_buffer: int = 64  # videos (their encoded bytes) held for shuffling, per worker
    cache_dir: str | None = None  # local copy of remote shards
    # Samples of an epoch that may fail to read (damaged shards) before fit stops: like the
    # build's --max-error-fraction, a few are skipped and counted, more mean broken data.
    max_read_error_fraction: float = 0.05


@dataclass
class ClipConfig:
    """Clip lengths and strides (strides count source frames). None: the stage's default."""

    clip_len: int | None = None  # T = 8 (paper Table 1)
    stride: int | None = None  # 8 (paper Table 1)
    pose_clip_len: int | None = None  # T_P = 32 (paper Table 1)
    pose_stride: int | None = None  # 2 (paper Table 1)
    input_size: int | None = None  # 224 (paper section 4.1)
    pose_input: str | None = None  # keypoints: render from augmented keypoints (exact); raster
    # Pose input crop: "frame" (the RGB crop, as the paper's code) or "person" (PoseC3D's
    # PoseCompact box around the clip's keypoints); docs/training.md, "Pose input".
    pose_crop: str | None = None  # frame (the paper's)
    pose_size: int | None = None  # raster side; a quarter of input_size (paper section 3.2)
    pose_sigma: float | None = None  # heatmap sigma in raster pixels; the dataset's (0.5, 3.2)
    val_clips: int = 1  # clips per video when validating during fit (train eval: --clips)

    PAPER = {"clip_len": 8, "stride": 8, "pose_clip_len": 32, "pose_stride": 2, "input_size": 224}
    # Values that stage 2 takes from its stage-1 checkpoints when not given.
    INHERITED = ("pose_input", "pose_crop", "pose_size", "pose_sigma")

    def resolved(self, defaults: dict[str, Any] | None = None) -> ClipConfig:
        """Unset values from ``defaults`` (e.g. the stage-1 checkpoints), then the paper's."""
        defaults = defaults or {}
        values: dict[str, Any] = {}
        for name, paper in self.PAPER.items():
            value = getattr(self, name)
            if value is None:
                value = defaults.get(name, paper)
            values[name] = value
        for name in self.INHERITED:
            value = getattr(self, name)
            values[name] = value if value is not None else defaults.get(name)
        values["pose_input"] = values["pose_input"] or "keypoints"
        values["pose_crop"] = values["pose_crop"] or "frame"
        values["pose_size"] = values["pose_size"] or values["input_size"] // 4
        # pose_sigma None: the dataset's raster sigma (filled in by the data contract).
        return dataclasses.replace(self, **values)


@dataclass
class ModelConfig:
    variant: str | None = None  # default: the stage's (appearance, pose, integral)
    appearance_depth: int = 50  # ResNet-50 (paper section 4.1)
    pose_depth: int = 18  # ResNet-18 (paper section 4.1)
    gate_weight: float = 1.5  # lambda of L_gate (paper section 3.4)
    # The gate's normalisation: none (the official code's linear gate) or batchnorm (the
    # paper's text, section 3.3, which pins the mean gate in training; docs/model.md).
    gate_norm: str = DEFAULT_GATE_NORM
    # One gate per channel (the paper's G in [0, 1]^{T x C'}, section 3.3) or one per frame
    # (docs/model.md, "Measured: a gate per frame").
    gate_shape: str = DEFAULT_GATE_SHAPE
    pretrained: str | None = None  # torchvision-format ResNet weights for the appearance stream
    init_appearance: str | None = None  # stage 2: stage-1 appearance checkpoint
    init_pose: str | None = None  # stage 2: stage-1 pose checkpoint


@dataclass
class OptimConfig:
    schedule: str | None = None  # default: kinetics for stage 1, stage2 for integral
    epochs: int | None = None  # alone: scales the schedule's milestones
    lr_steps: list[int] | None = None  # explicit milestones (epochs)
    lr: float | None = None  # default: the schedule's
    momentum: float = 0.9  # SGD momentum (paper section 4.1)
    weight_decay: float = 1e-4  # (paper section 4.1)
    # The final classifier's own weight decay (None: --weight-decay, the paper's). A project
    # addition: it bounds how far the classifier can scale up what a narrow gate lets through,
    # so reading the scene takes a wider gate (docs/model.md, "Measured: the classifier's
    # weight decay").
    classifier_weight_decay: float | None = None
    batch_size: int | None = None  # per process; default: global 32 / processes (paper 4.1)
    # Stage 2: the fraction of the epochs over which lambda rises linearly from 0 to
    # --gate-weight; 0 (the paper's) applies it in full from the first step.
    gate_warmup: float = 0.0

    def resolve(self, stage: str) -> Schedule:
        """The schedule to run: named (or the stage default), with --epochs / --lr-steps / --lr.

        ``--epochs`` alone scales the milestones by epochs / the schedule's length, so that a
        shortened run decays the learning rate at the same fractions of training.
        """
        name = self.schedule or DEFAULT_SCHEDULE[stage]
        if name not in SCHEDULES:
            raise ConfigError(f"unknown schedule {name!r}; choose one of {', '.join(SCHEDULES)}")
        base = SCHEDULES[name]
        epochs = self.epochs if self.epochs is not None else base.epochs
        if epochs < 1:
            raise ConfigError(f"--epochs must be >= 1, got {epochs}")
        if self.lr_steps is not None:
            milestones = tuple(sorted(int(m) for m in self.lr_steps))
        elif self.epochs is not None:
            milestones = tuple(
                sorted({max(1, round(m * epochs / base.epochs)) for m in base.milestones})
            )
            milestones = tuple(m for m in milestones if m < epochs)
        else:
            milestones = base.milestones
        if any(m < 1 for m in milestones):
            raise ConfigError(f"--lr-steps must be positive epochs, got {list(milestones)}")
        lr = self.lr if self.lr is not None else base.lr
        if lr <= 0:
            raise ConfigError(f"--lr must be positive, got {lr}")
        return Schedule(lr, milestones, epochs, base.gamma)


@dataclass
class RunConfig:
    out: str = ""
    seed: int = 0
    device: str = "auto"  # auto: cuda (LOCAL_RANK) when available, else cpu
    precision: str = "auto"  # auto: bf16 autocast on cuda when supported, else fp16; cpu fp32
    channels_last: bool = True  # on cuda only
    val_every: int = 1  # validate every N epochs (and after the last)
    log_every: int = 20  # steps between progress updates in non-interactive logs
    resume: bool = False
    # Batches over which BatchNorm statistics are recomputed after each epoch (0: off, the
    # paper's setting); helps short runs whose running averages still hold their start values.
    precise_bn: int = 0
    progress: bool | None = None  # None: a progress bar when stderr is a terminal
    rank_report: str | None = None  # debugging: each rank writes what it saw here
    # Stage 2: compute the frozen streams' pooled features for this many augmented clips per
    # training video once, and train the integration on them (0: stream every step).
    cache_features: int = 0
    feature_cache: str | None = None  # folder of feature caches; default OUT/features
    feature_dtype: str = "float32"  # float16 halves the cache (Kinetics: ~10 GB per view)
    # epoch_NNN.pt files kept (the most recent ones); 0 keeps every epoch. best.pt and last.pt
    # are always kept.
    keep_checkpoints: int = 0


@dataclass
class FitConfig:
    stage: str
    data: DataConfig = field(default_factory=DataConfig)
    clips: ClipConfig = field(default_factory=ClipConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)
    # (section, field) of the settings the command line or --config file gave, for --resume;
    # None for a FitConfig made in code. Not a setting: not saved with the run.
    given: set[tuple[str, str]] | None = field(default=None, repr=False, compare=False)

    @property
    def variant(self) -> str:
        return self.model.variant or ("integral" if self.stage == "integral" else self.stage)


SECTIONS = {
    "data": DataConfig,
    "clips": ClipConfig,
    "model": ModelConfig,
    "optim": OptimConfig,
    "run": RunConfig,
}
# Command-line option (its Python name) -> (section, field).
OPTION_FIELDS: dict[str, tuple[str, str]] = {
    f.name: (section, f.name) for section, cls in SECTIONS.items() for f in dataclasses.fields(cls)
}


def _apply(section_obj: Any, values: dict[str, Any], where: str) -> None:
    hints = typing.get_type_hints(type(section_obj))
    names = {f.name for f in dataclasses.fields(section_obj)}
    for key, value in values.items():
        if key not in names:
            raise ConfigError(
                f"{where}: unknown setting {key!r}; known: {', '.join(sorted(names))}"
            )
        setattr(section_obj, key, _typed(value, hints[key], f"{where}: {key}"))


def _typed(value: Any, hint: Any, what: str) -> Any:
    """``value`` as the field's type (an int where a float is asked for becomes a float): a YAML
    file is not checked by click, and a wrong type would surface as a traceback far away."""
    options = typing.get_args(hint) if typing.get_origin(hint) is types.UnionType else (hint,)
    if value is None:
        if type(None) in options:
            return None
        raise ConfigError(f"{what} cannot be empty")
    for option in options:
        if option is bool and isinstance(value, bool):
            return value
        if isinstance(value, bool):
            continue  # YAML's true/false is no number
        if option is int and isinstance(value, int):
            return value
        if option is float and isinstance(value, int | float):
            return float(value)
        if option is str and isinstance(value, str):
            return value
        if typing.get_origin(option) is list and isinstance(value, list):
            (item,) = typing.get_args(option)
            return [_typed(v, item, what) for v in value]
    wanted = " or ".join(
        str(o) if typing.get_origin(o) else o.__name__ for o in options if o is not type(None)
    )
    raise ConfigError(f"{what} must be {wanted}, got {value!r}")


def load_yaml(path: str) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f) or {}
    except FileNotFoundError:
        raise ConfigError(f"config file {path}: no such file") from None
    except yaml.YAMLError as exc:
        reason = str(exc).splitlines()[0]
        raise ConfigError(f"config file {path}: not valid YAML ({reason})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: expected a mapping of sections")
    return data


def build_fit_config(
    stage: str, options: dict[str, Any], config_file: str | None = None
) -> FitConfig:
    """Defaults < YAML file < ``options`` (CLI values; None means "not given")."""
    if stage not in STAGES:
        raise ConfigError(f"unknown stage {stage!r}; choose one of {', '.join(STAGES)}")
    cfg = FitConfig(stage=stage)
    given: set[tuple[str, str]] = set()
    if config_file:
        data = load_yaml(config_file)
        file_stage = data.pop("stage", None)
        if file_stage is not None and file_stage != stage:
            raise ConfigError(f"config file {config_file} is for stage {file_stage}, not {stage}")
        for section, values in data.items():
            if section not in SECTIONS:
                raise ConfigError(
                    f"config file {config_file}: unknown section {section!r}; "
                    f"known: {', '.join(SECTIONS)}"
                )
            if not isinstance(values, dict):
                raise ConfigError(f"config file {config_file}: section {section} is not a mapping")
            _apply(getattr(cfg, section), values, f"config file {config_file}, {section}")
            given |= {(section, key) for key in values}
    for name, value in options.items():
        if value is None:
            continue
        if name not in OPTION_FIELDS:
            raise ConfigError(f"unknown option {name!r}")
        section, fname = OPTION_FIELDS[name]
        setattr(getattr(cfg, section), fname, value)
        given.add((section, fname))
    cfg.given = given
    if not cfg.run.resume:  # a resumed run is checked once merged with its saved settings
        validate(cfg)
    return cfg


def unused_gate_options(cfg: FitConfig) -> list[str]:
    """One line per gate setting the command or YAML gave, away from its default, that the
    variant does not use: a gate option on a model without a gate, or an L_gate option on one
    without L_gate. Warned, not refused, so that one command line can sweep the variants."""
    given = cfg.given or set()
    gated = cfg.variant in GATED_VARIANTS
    with_loss = cfg.variant in GATE_LOSS_VARIANTS
    defaults = FitConfig(stage=cfg.stage)
    lines = []
    for section, name, used in (
        ("model", "gate_shape", gated),
        ("model", "gate_norm", gated),
        ("model", "gate_weight", with_loss),
        ("optim", "gate_warmup", with_loss),
    ):
        value = getattr(getattr(cfg, section), name)
        if (
            used
            or (section, name) not in given
            or value == getattr(getattr(defaults, section), name)
        ):
            continue
        lacks = "no gate" if not gated else "no L_gate"
        lines.append(
            f"--{name.replace('_', '-')} {value} has no effect on variant {cfg.variant} ({lacks})"
        )
    return lines


def validate(cfg: FitConfig, resumed: bool = False) -> None:
    """Checks that need no data: variant vs stage, option ranges. ``resumed``: the settings of
    a run that already trained, which stay loadable under checks added since."""
    variant = cfg.variant
    init = (cfg.model.init_appearance, cfg.model.init_pose)
    allowed = STAGE_VARIANTS[cfg.stage]
    if variant not in allowed:
        if variant == "score_average":
            raise ConfigError(
                "variant score_average has nothing to train: evaluate the two stage-1 "
                "checkpoints with `train eval --checkpoint A --checkpoint B --combine mean`"
            )
        raise ConfigError(
            f"stage {cfg.stage} trains variant {' or '.join(allowed)}, not {variant!r}"
        )
    for name in ("appearance_depth", "pose_depth"):
        if getattr(cfg.model, name) not in RESNET_DEPTHS:
            raise ConfigError(
                f"--{name.replace('_', '-')} must be one of "
                f"{', '.join(map(str, RESNET_DEPTHS))}, got {getattr(cfg.model, name)}"
            )
    if cfg.clips.pose_input is not None and cfg.clips.pose_input not in POSE_INPUTS:
        raise ConfigError(f"--pose-input must be one of {', '.join(POSE_INPUTS)}")
    if cfg.clips.pose_crop is not None and cfg.clips.pose_crop not in POSE_CROPS:
        raise ConfigError(f"--pose-crop must be one of {', '.join(POSE_CROPS)}")
    if cfg.clips.pose_size is not None and cfg.clips.pose_size < 4:
        raise ConfigError(f"--pose-size must be >= 4 raster pixels, got {cfg.clips.pose_size}")
    if cfg.clips.pose_sigma is not None and not cfg.clips.pose_sigma > 0:
        raise ConfigError(f"--pose-sigma must be > 0, got {cfg.clips.pose_sigma}")
    if cfg.model.gate_norm not in GATE_NORMS:
        raise ConfigError(f"--gate-norm must be one of {', '.join(GATE_NORMS)}")
    if cfg.model.gate_shape not in GATE_SHAPES:
        raise ConfigError(f"--gate-shape must be one of {', '.join(GATE_SHAPES)}")
    if not 0.0 <= cfg.optim.gate_warmup <= 1.0:
        raise ConfigError(
            f"--gate-warmup is a fraction of the epochs, 0 to 1, got {cfg.optim.gate_warmup}"
        )
    for name in ("weight_decay", "classifier_weight_decay"):
        value = getattr(cfg.optim, name)
        if value is not None and value < 0:
            raise ConfigError(f"--{name.replace('_', '-')} must be >= 0, got {value}")
    if cfg.run.feature_dtype not in ("float32", "float16"):
        raise ConfigError("--feature-dtype must be float32 or float16")
    if cfg.run.cache_features < 0:
        raise ConfigError(f"--cache-features must be >= 0, got {cfg.run.cache_features}")
    if cfg.run.feature_cache and not cfg.run.cache_features and not resumed:
        raise ConfigError("--feature-cache is where --cache-features N keeps its features: give N")
    if cfg.run.cache_features and cfg.stage != "integral":
        raise ConfigError("--cache-features is for stage integral (frozen streams)")
    if cfg.run.cache_features and not cfg.model.init_appearance:
        raise ConfigError(
            "--cache-features needs --init-appearance and --init-pose: only frozen stage-1 "
            "streams give features that can be computed once"
        )
    if cfg.run.precision not in PRECISIONS:
        raise ConfigError(f"--precision must be one of {', '.join(PRECISIONS)}")
    for name in ("clip_len", "stride", "pose_clip_len", "pose_stride", "input_size"):
        value = getattr(cfg.clips, name)
        if value is not None and value < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    if cfg.clips.input_size is not None and cfg.clips.input_size % 4 and not cfg.clips.pose_size:
        raise ConfigError(
            f"--input-size {cfg.clips.input_size} is not a multiple of 4 "
            "(the pose raster is a quarter of it unless --pose-size is given)"
        )
    if variant != "appearance" and not (cfg.stage == "integral" and any(init)):
        # With stage-1 checkpoints the unset values come from them, checked when they pair.
        clip = cfg.clips.resolved()
        if clip.pose_clip_len % clip.clip_len:
            raise ConfigError(
                f"--pose-clip-len ({clip.pose_clip_len}) must be a multiple of --clip-len "
                f"({clip.clip_len}): the pose stream pools its frames down to the RGB clip's"
            )
        if clip.pose_size < 4:
            raise ConfigError(
                f"--input-size {clip.input_size} gives a {clip.pose_size} px pose raster (a "
                "quarter of it); use --input-size >= 16 or --pose-size >= 4"
            )
    if cfg.optim.batch_size is not None and cfg.optim.batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1, got {cfg.optim.batch_size}")
    if cfg.data.workers < 0:
        raise ConfigError(f"--workers must be >= 0, got {cfg.data.workers}")
    if cfg.run.precise_bn < 0:
        raise ConfigError(f"--precise-bn must be >= 0, got {cfg.run.precise_bn}")
    if cfg.data.shuffle_buffer < 0:
        raise ConfigError(f"--shuffle-buffer must be >= 0, got {cfg.data.shuffle_buffer}")
    if cfg.run.log_every < 0:
        raise ConfigError(f"--log-every must be >= 0 (0: no step lines), got {cfg.run.log_every}")
    if cfg.run.val_every < 0:
        raise ConfigError(f"--val-every must be >= 0, got {cfg.run.val_every}")
    if not 0.0 <= cfg.data.max_read_error_fraction <= 1.0:
        raise ConfigError(
            f"--max-read-error-fraction must be between 0 and 1, got "
            f"{cfg.data.max_read_error_fraction}"
        )
    if cfg.clips.val_clips < 1:
        raise ConfigError(f"--val-clips must be >= 1, got {cfg.clips.val_clips}")
    if cfg.model.gate_weight < 0:
        raise ConfigError(f"--gate-weight must be >= 0, got {cfg.model.gate_weight}")
    if cfg.stage != "integral" and any(init):
        raise ConfigError("--init-appearance / --init-pose are for stage integral")
    if cfg.stage == "integral" and sum(x is not None for x in init) == 1:
        raise ConfigError("stage integral needs both --init-appearance and --init-pose (or none)")
    schedule = cfg.optim.resolve(cfg.stage)  # raises on a bad schedule
    if not resumed and any(m >= schedule.epochs for m in schedule.milestones):
        raise ConfigError(
            f"--lr-steps {','.join(map(str, schedule.milestones))}: a step at or after the last "
            f"epoch ({schedule.epochs}) never lowers the rate"
        )


# Settings a resumed run may take from the new command: where things are and how the run is
# shown, not what it trains (the hardware ones because a run may resume on another machine).
RESUME_FREE = {
    ("data", "data"), ("data", "workers"), ("data", "cache_dir"), ("run", "out"),
    ("run", "resume"), ("run", "progress"), ("run", "log_every"), ("run", "keep_checkpoints"),
    ("run", "device"), ("run", "precision"), ("run", "channels_last"), ("run", "rank_report"),
    ("run", "feature_cache"), ("model", "init_appearance"), ("model", "init_pose"),
    ("model", "pretrained"), ("data", "max_read_error_fraction"), ("run", "val_every"),
}  # fmt: skip


# Taken from the command even when it leaves them out: the device is chosen (process group,
# CUDA device) before the saved run is read, and is a property of the machine, not the run.
RESUME_FROM_COMMAND = {("run", "device")}


def resume_config(cfg: FitConfig, saved: dict[str, Any], where: str) -> FitConfig:
    """The settings of the run saved in ``where`` with the :data:`RESUME_FREE` ones from
    ``cfg``. A setting the command leaves unset takes the run's; one it sets to another value
    is refused: the restored optimiser and scheduler would not follow it, and config.json would
    record what did not happen."""
    merged = copy.deepcopy(cfg)
    given = cfg.given if cfg.given is not None else _set_fields(cfg)
    changed = []
    for section in SECTIONS:
        ours, theirs = getattr(merged, section), saved.get(section) or {}
        defaults = SECTIONS[section]()
        for f in dataclasses.fields(ours):
            if (section, f.name) in RESUME_FROM_COMMAND:
                continue
            # A setting added after the run was saved: the run trained with its default.
            mine, run = getattr(ours, f.name), theirs.get(f.name, getattr(defaults, f.name))
            derived = _derived(section, f.name, saved, cfg.stage) if run is None else None
            if derived is not None and mine == derived:
                continue  # the value the run derived (e.g. its schedule's lr), given explicitly
            if (section, f.name) not in given or mine == run:
                setattr(ours, f.name, run)  # free ones too: --precision fp32 stays fp32
            elif (section, f.name) not in RESUME_FREE:
                was = _shown(run) if derived is None else f"{_shown(derived)}, from its schedule"
                changed.append(f"--{f.name.replace('_', '-')} {_shown(mine)} (the run: {was})")
    if changed:
        more = f" and {len(changed) - 3} more" if len(changed) > 3 else ""
        raise ConfigError(
            f"--resume with settings other than the run's in {where}: {', '.join(changed[:3])}"
            f"{more}; resume with its own (its config.json) or train into another --out"
        )
    validate(merged, resumed=True)
    return merged


def _derived(section: str, name: str, saved: dict[str, Any], stage: str) -> Any:
    """The value a run used for a schedule setting it left unset (``--lr`` from its schedule,
    the schedule's name from the stage), or None where nothing is derived."""
    if section != "optim" or name not in ("schedule", "lr", "epochs", "lr_steps"):
        return None
    known = {f.name for f in dataclasses.fields(OptimConfig)}
    optim = OptimConfig(**{k: v for k, v in (saved.get("optim") or {}).items() if k in known})
    if name == "schedule":
        return optim.schedule or DEFAULT_SCHEDULE[stage]
    schedule = optim.resolve(stage)
    return {"lr": schedule.lr, "epochs": schedule.epochs, "lr_steps": list(schedule.milestones)}[
        name
    ]


def _set_fields(cfg: FitConfig) -> set[tuple[str, str]]:
    """Without a record of what the command gave (a FitConfig made in code): what is not None."""
    return {
        (section, f.name)
        for section in SECTIONS
        for f in dataclasses.fields(getattr(cfg, section))
        if getattr(getattr(cfg, section), f.name) is not None
    }


def _shown(value: Any) -> str:
    if value is None:
        return "unset"
    return ",".join(map(str, value)) if isinstance(value, list | tuple) else str(value)


def config_to_dict(cfg: FitConfig) -> dict[str, Any]:
    """Plain data (YAML/JSON-ready), as stored in checkpoints and printed at start."""
    data = dataclasses.asdict(cfg)
    data.pop("given", None)
    return data
