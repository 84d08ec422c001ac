"""`train`: fit IntegralAction stages on streamed shards, and evaluate checkpoints.

    train fit --stage {appearance,pose,integral} --data URL --out DIR [options]
    train eval --checkpoint CKPT [--checkpoint CKPT2 --combine mean] --data URL --split NAME \
        --out results.json

Under torchrun (``torchrun --nproc_per_node N -m train fit ...``) the same commands run DDP.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from model.resnet import RESNET_SPECS
from pipeline import __version__
from pipeline.errors import cli_errors, plain_warnings

from .config import (
    DEFAULT_GATE_NORM,
    DEFAULT_GATE_SHAPE,
    GATE_NORMS,
    GATE_SHAPES,
    POSE_CROPS,
    POSE_INPUTS,
    PRECISIONS,
    SCHEDULES,
    SECTIONS,
    STAGE_VARIANTS,
    STAGES,
    ClipConfig,
)
from .features import FEATURE_DTYPES

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


DEPTHS = [str(d) for d in sorted(RESNET_SPECS)]


def shown(section: str, name: str) -> str:
    """``  [default: X]`` for a fit option, read from the config dataclass (the paper's values)."""
    if section == "clips" and name in ClipConfig.PAPER:
        value = ClipConfig.PAPER[name]
    else:
        value = SECTIONS[section].__dataclass_fields__[name].default
    return f"  [default: {value}]"


# A user's mistake (bad option, missing data, mismatched checkpoint: pipeline.errors.UserError)
# -> one line and exit status 1; anything else is a bug and keeps its traceback (--debug shows
# it for user errors too).
user_errors = cli_errors("interrupted; `train fit ... --resume` continues from last.pt")


@click.group(context_settings=CONTEXT)
@click.version_option(__version__, prog_name="train")
def main() -> None:
    """Train IntegralAction (Moon et al., CVPRW 2021) on sharded WebDataset data."""
    plain_warnings()


# Every fit option defaults to None ("not given") so that a --config file can set it; the
# defaults shown are the paper's, applied by train.config.
@main.command(context_settings=CONTEXT)
@click.option(
    "--stage",
    required=True,
    type=click.Choice(STAGES),
    help="Stage 1 stream (appearance, pose) or stage 2 (integral).",
)
@click.option(
    "--data",
    metavar="URL",
    help="Dataset root (where dataset.json is) or a split folder; local or s3://.",
)
@click.option(
    "--out", metavar="DIR", help="Run folder: last.pt, best.pt, epoch_NNN.pt, metrics.csv."
)
@click.option(
    "--config",
    "config_file",
    metavar="FILE",
    type=click.Path(dir_okay=False),
    help="YAML file of settings (sections data, clips, model, optim, run); options override it.",
)
@click.option(
    "--split",
    help="Training split (ignored when --data names a split folder)." + shown("data", "split"),
)
@click.option(
    "--val-split", help="Validation split (skipped when absent)." + shown("data", "val_split")
)
@click.option(
    "--variant",
    help=f"Model variant; stage integral: {', '.join(STAGE_VARIANTS['integral'])}.  "
    "[default: the stage's]",
)
@click.option(
    "--gate-weight",
    type=float,
    help="lambda of L_gate (paper 3.4)." + shown("model", "gate_weight"),
)
@click.option(
    "--gate-norm",
    type=click.Choice(GATE_NORMS),
    help="The gate's normalisation: none (the official code's linear gate) or batchnorm (the "
    f"paper's text; it pins the mean gate, docs/model.md).  [default: {DEFAULT_GATE_NORM}]",
)
@click.option(
    "--gate-shape",
    type=click.Choice(GATE_SHAPES),
    help="One gate per channel (the paper's) or one per frame for all channels (docs/model.md)."
    f"  [default: {DEFAULT_GATE_SHAPE}]",
)
@click.option(
    "--gate-warmup",
    type=float,
    metavar="FRACTION",
    help="Stage 2: raise lambda linearly from 0 over this fraction of the epochs."
    + shown("optim", "gate_warmup"),
)
@click.option(
    "--schedule",
    type=click.Choice(list(SCHEDULES)),
    help="Paper schedule.  [default: kinetics for stage 1, stage2 for integral]",
)
@click.option("--epochs", type=int, help="Epochs; alone, scales the schedule's milestones.")
@click.option(
    "--lr-steps", metavar="E1,E2,...", help="Epochs at which the learning rate drops x0.1."
)
@click.option("--lr", type=float, help="Initial learning rate.  [default: the schedule's]")
@click.option("--momentum", type=float, help="SGD momentum." + shown("optim", "momentum"))
@click.option("--weight-decay", type=float, help="Weight decay." + shown("optim", "weight_decay"))
@click.option(
    "--classifier-weight-decay",
    type=float,
    help="Weight decay of the final classifier layer.  [default: --weight-decay]",
)
@click.option(
    "--batch-size", type=int, help="Clips per step per process.  [default: 32 / processes]"
)
@click.option(
    "--appearance-depth",
    type=click.Choice(DEPTHS),
    help="Appearance ResNet depth." + shown("model", "appearance_depth"),
)
@click.option(
    "--pose-depth",
    type=click.Choice(DEPTHS),
    help="Pose ResNet depth." + shown("model", "pose_depth"),
)
@click.option("--input-size", type=int, help="RGB side in pixels." + shown("clips", "input_size"))
@click.option("--clip-len", type=int, help="RGB frames per clip T." + shown("clips", "clip_len"))
@click.option(
    "--stride", type=int, help="RGB frame stride in source frames." + shown("clips", "stride")
)
@click.option(
    "--pose-clip-len",
    type=int,
    help="Pose frames per clip T_P." + shown("clips", "pose_clip_len"),
)
@click.option(
    "--pose-stride",
    type=int,
    help="Pose frame stride in source frames." + shown("clips", "pose_stride"),
)
@click.option(
    "--pose-input",
    type=click.Choice(POSE_INPUTS),
    help=f"Render rasters from augmented keypoints, or crop the stored rasters.  "
    f"[default: {POSE_INPUTS[0]}]",
)
@click.option(
    "--pose-crop",
    type=click.Choice(POSE_CROPS),
    help="Pose input crop: the RGB crop (frame, the paper's) or a box around the clip's "
    "keypoints (person, PoseC3D's PoseCompact).  [default: frame]",
)
@click.option(
    "--pose-size",
    type=int,
    help="Pose raster side in pixels.  [default: a quarter of --input-size (the paper's)]",
)
@click.option(
    "--pose-sigma",
    type=float,
    help="Heatmap sigma in raster pixels.  [default: the dataset's (0.5, the paper's)]",
)
@click.option(
    "--val-clips", type=int, help="Clips per video when validating." + shown("clips", "val_clips")
)
@click.option(
    "--workers", type=int, help="DataLoader processes per process." + shown("data", "workers")
)
@click.option(
    "--shuffle-buffer",
    type=int,
    help="Videos in each worker's shuffle buffer." + shown("data", "shuffle_buffer"),
)
@click.option("--cache-dir", metavar="DIR", help="Keep local copies of remote shards here.")
@click.option(
    "--max-read-error-fraction",
    type=float,
    metavar="F",
    help="Stop when more than this fraction of an epoch's samples cannot be read (damaged "
    "shards; fewer are skipped and counted)." + shown("data", "max_read_error_fraction"),
)
@click.option(
    "--seed", type=int, help="Seed of weights, data order and augmentation." + shown("run", "seed")
)
@click.option(
    "--init-appearance",
    metavar="CKPT",
    type=click.Path(dir_okay=False),
    help="Stage integral: the stage-1 appearance checkpoint.",
)
@click.option(
    "--init-pose",
    metavar="CKPT",
    type=click.Path(dir_okay=False),
    help="Stage integral: the stage-1 pose checkpoint.",
)
@click.option(
    "--pretrained",
    metavar="PATH",
    type=click.Path(dir_okay=False),
    help="torchvision-format ResNet weights for the appearance stream (ImageNet mean/std input).",
)
@click.option(
    "--resume", is_flag=True, default=None, help="Continue the run in --out from last.pt."
)
@click.option("--device", help="auto, cpu, cuda or cuda:N." + shown("run", "device"))
@click.option(
    "--precision",
    type=click.Choice(PRECISIONS),
    help="Autocast on CUDA.  [default: auto (bf16 where supported)]",
)
@click.option(
    "--channels-last/--no-channels-last",
    default=None,
    help="channels-last memory format on CUDA.  [default: on]",
)
@click.option(
    "--val-every",
    type=int,
    help="Validate every N epochs and after the last (0: never, and no best.pt)."
    + shown("run", "val_every"),
)
@click.option(
    "--precise-bn",
    type=int,
    metavar="BATCHES",
    help="Recompute BatchNorm statistics over this many training batches after each epoch "
    "(0: off, as the paper; helps short runs)." + shown("run", "precise_bn"),
)
@click.option(
    "--cache-features",
    type=int,
    metavar="N",
    help="Stage integral: compute the frozen streams' features of N augmented clips per "
    "training video once and train the integration on them (0: stream every step)."
    + shown("run", "cache_features"),
)
@click.option(
    "--feature-cache",
    metavar="DIR",
    help="Folder of feature caches (shareable between runs of the same streams).  "
    "[default: OUT/features]",
)
@click.option(
    "--feature-dtype",
    type=click.Choice(list(FEATURE_DTYPES)),
    help="Storage type of cached features." + shown("run", "feature_dtype"),
)
@click.option(
    "--keep-checkpoints",
    type=click.IntRange(min=0),
    metavar="N",
    help="Keep only the N most recent epoch_NNN.pt (0: all; best.pt and last.pt stay)."
    + shown("run", "keep_checkpoints"),
)
@click.option(
    "--log-every",
    type=int,
    help="Steps between log lines without a progress bar." + shown("run", "log_every"),
)
@click.option(
    "--progress/--no-progress", default=None, help="Progress bar.  [default: on a terminal]"
)
@click.option(
    "--rank-report",
    metavar="DIR",
    hidden=True,
    help="Debugging: each rank writes what it trained on and its weight checksum.",
)
@user_errors
def fit(stage: str, config_file: str | None, **options: Any) -> None:
    """Train one stage of IntegralAction."""
    from .config import build_fit_config
    from .fit import fit as run_fit

    if options.get("lr_steps") is not None:
        try:
            options["lr_steps"] = [int(x) for x in options["lr_steps"].split(",") if x.strip()]
        except ValueError:
            raise click.BadParameter(
                "expected epochs like 30,60", param_hint="--lr-steps"
            ) from None
    for name in ("appearance_depth", "pose_depth"):
        if options.get(name) is not None:
            options[name] = int(options[name])
    cfg = build_fit_config(stage, options, config_file)
    run_fit(cfg)


@main.command("eval", context_settings=CONTEXT)
@click.option(
    "--checkpoint",
    "checkpoints",
    required=True,
    multiple=True,
    metavar="CKPT",
    type=click.Path(dir_okay=False),
    help="Checkpoint to evaluate; twice with --combine mean for the score average.",
)
@click.option(
    "--combine",
    type=click.Choice(["mean"]),
    default="mean",
    show_default=True,
    help="How two checkpoints' class probabilities are combined.",
)
@click.option(
    "--data", required=True, metavar="URL", help="Dataset root or split folder; local or s3://."
)
@click.option(
    "--split",
    default="val",
    show_default=True,
    help="Split to evaluate (ignored when --data is a split folder).",
)
@click.option("--out", metavar="FILE", help="Write the JSON report here.")
@click.option(
    "--clips",
    type=click.IntRange(min=1),
    default=10,
    show_default=True,
    help="Clips per video, evenly spaced.",
)
@click.option(
    "--class-map",
    metavar="name|CSV",
    help="Match dataset classes to the model's by name, or by a CSV of dataset_class,model_class.",
)
@click.option(
    "--protocol",
    type=click.Choice(["all", "official"]),
    default="all",
    show_default=True,
    help="official: drop videos without pose or shorter than the clip span.",
)
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=16,
    show_default=True,
    help="Clips per forward pass.",
)
@click.option(
    "--workers",
    type=click.IntRange(min=0),
    default=2,
    show_default=True,
    help="DataLoader processes.",
)
@click.option("--cache-dir", metavar="DIR", help="Keep local copies of remote shards here.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option(
    "--precision",
    type=click.Choice([p for p in PRECISIONS if p != "auto"]),
    default="fp32",
    show_default=True,
    help="Autocast on CUDA.",
)
@click.option(
    "--video-info",
    metavar="SYNTH_JSON",
    help="Synthetic data: the synth.json of `pipeline synth` (or its folder), to split gate "
    "statistics by hidden person and score the videos each stream could decide.",
)
@click.option(
    "--feature-cache",
    metavar="DIR",
    help="Stage-2 models: cache the test clips' stream features here, so that models "
    "sharing their frozen streams compute them once.",
)
@click.option(
    "--plot",
    metavar="PNG",
    help="Gated models: draw the distribution of the per-video mean gate (paper Figure 4).",
)
@click.option("--quiet", is_flag=True, help="No progress bar or table.")
@user_errors
def eval_(
    checkpoints: tuple[str, ...],
    out: str | None,
    quiet: bool,
    device: str,
    plot: str | None,
    **kwargs: Any,
) -> None:
    """Evaluate checkpoints with multi-clip testing; print a table, write the JSON report."""
    from pipeline.storage import check_output_file

    from . import distributed
    from .evaluate import evaluate, print_report, write_report

    if len(checkpoints) > 2:
        raise click.UsageError("--checkpoint: give one model, or two with --combine mean")
    # Before the evaluation, not after it: the outputs can be written, --plot has a gate to draw.
    check_output_file(out, "--out")
    check_output_file(plot, "--plot")
    if plot and not any(_is_gated(c) for c in checkpoints):
        raise click.UsageError("--plot: the model has no gate (not a gated stage-2 model)")
    data, split = kwargs.pop("data"), kwargs.pop("split")
    dist = distributed.setup(device)
    try:
        report = evaluate(
            list(checkpoints),
            data,
            split,
            dist,
            progress=not quiet and sys.stderr.isatty(),
            **kwargs,
        )
        if dist.is_main:
            if out:
                write_report(report, out)
            if plot:
                _plot_one(report, plot)
            if not quiet:
                print_report(report)
                if out:
                    click.echo(f"report: {out}")
                if plot:
                    click.echo(f"gate plot: {plot}")
    finally:
        distributed.teardown(dist)


def _is_gated(checkpoint: str) -> bool:
    import model as models

    config = models.load_checkpoint(checkpoint, mmap=True)["model_config"]
    return config["variant"] in models.GATED_VARIANTS


def _plot_one(report: dict[str, Any], path: str) -> None:
    """One report's gate distribution: all videos, and split by person found / hidden."""
    from .report import plot_gate_distributions

    gate = report.get("gate")
    if not gate:
        raise click.UsageError("--plot: the model has no gate (not a gated stage-2 model)")
    per_video = gate["per_video"]
    series = [(report["split"], "all videos", list(per_video.values()))]
    fractions = {k: p.get("person_fraction", 0.0) for k, p in report["predictions"].items()}
    found = [g for k, g in per_video.items() if fractions.get(k, 0.0) >= 0.5]
    lost = [g for k, g in per_video.items() if fractions.get(k, 0.0) < 0.5]
    series += [("by person found", "person_fraction >= 0.5", found)] if found else []
    series += [("by person found", "person_fraction < 0.5", lost)] if lost else []
    hidden = {k: p["hidden"] for k, p in report["predictions"].items() if "hidden" in p}
    if hidden:
        for flag, label in ((True, "person hidden"), (False, "person visible")):
            gates = [g for k, g in per_video.items() if hidden.get(k) is flag]
            if gates:
                series.append(("by hidden person", label, gates))
    plot_gate_distributions(series, path, title=", ".join(report["variants"]))


@main.command("report", context_settings=CONTEXT)
@click.option(
    "--series",
    "series",
    multiple=True,
    required=True,
    nargs=3,
    metavar="PANEL LABEL REPORT",
    help="A gated model's `train eval` JSON REPORT, drawn as LABEL in panel PANEL (e.g. a "
    "test set); repeat for each model and test set.",
)
@click.option("--plot", metavar="PNG", help="Draw the distributions (paper Figure 4).")
@click.option("--title", help="Title of the plot.")
@click.option("--json", "json_out", metavar="FILE", help="Write the table as JSON.")
@user_errors
def report(
    series: tuple[tuple[str, str, str], ...],
    plot: str | None,
    title: str | None,
    json_out: str | None,
) -> None:
    """The per-video mean gate's distribution across models and test sets (paper Figure 4).

    \b
    train report --plot fig4.png \\
        --series "in context" "lambda 1.5" runs/int/in.json \\
        --series "in context" "no L_gate" runs/nogl/in.json \\
        --series "out of context" "lambda 1.5" runs/int/out.json \\
        --series "out of context" "no L_gate" runs/nogl/out.json
    """
    import json

    from rich.console import Console
    from rich.table import Table

    from pipeline.storage import check_output_file

    from .report import gate_table, load_report, per_video_gates, plot_gate_distributions

    check_output_file(plot, "--plot")
    check_output_file(json_out, "--json")
    loaded = [
        (panel, label, per_video_gates(load_report(path), path)) for panel, label, path in series
    ]
    rows = gate_table(loaded)
    table = Table(title="per-video mean gate G (weight of appearance)")
    for name in ("test set", "model", "videos", "mean", "sd", "p10", "p50", "p90"):
        table.add_column(name, justify="left" if name in ("test set", "model") else "right")
    for r in rows:
        stats = [f"{r[k]:.3f}" if k in r else "-" for k in ("mean", "sd", "p10", "p50", "p90")]
        table.add_row(r["panel"], r["label"], str(r["n"]), *stats)
    Console().print(table)
    if json_out:
        with open(json_out, "w") as f:
            json.dump(rows, f, indent=1)
    if plot:
        plot_gate_distributions(loaded, plot, title=title)
        click.echo(f"gate plot: {plot}")


if __name__ == "__main__":
    main()
