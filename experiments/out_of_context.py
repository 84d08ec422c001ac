"""A small in-context / out-of-context experiment: does IntegralAction's claim hold in our stack?

    python experiments/out_of_context.py --work /tmp/ooc --write docs
    python experiments/out_of_context.py --tuning --work /tmp/ooc_tuning   # defaults chosen here

The paper (Moon et al., CVPRW 2021, Table 4) trains on Kinetics50 and tests on Kinetics50 (in
context) and Mimetics (out of context): an appearance model collapses out of context, a pose
model is more robust but weaker in context, and pose-driven integration keeps the best of both;
its gate opens to appearance where pose cannot decide (Figure 4, Table 5). Real Kinetics cannot
be downloaded here, so this builds an analogue with `pipeline synth`:

- classes told apart by motion only (two share one scene), and a pair of classes with the same
  motion told apart only by their scene object, so neither stream alone suffices in context;
- a fraction of videos whose person is hidden or cut off (pose estimation "fails");
- an out-of-context test set: the same classes over scenes drawn at random (Mimetics analogue).

It goes through the real tools: `pipeline synth`, `pipeline build` (precomputed poses),
`train fit` (stage 1 appearance-only and pose-only, once per seed; stage 2 variants on the
frozen streams, trained on cached stream features) and `train eval` (with the synthetic data's
synth.json, so that the reports split the gate by hidden person and score the videos each
stream could decide). Protocol of the paper's ablations at small size: ResNet-18 streams,
T = stride = 8 for both streams.

Defaults were chosen with ``--tuning`` (another synthetic dataset, seeds 10 and 11, and its own
out-of-context set), never on the test sets (docs/results.md, "How the defaults were chosen").
It writes results.json (one record per run, the targets of issue 12 checked), results.md
(Table 4 and Table 5 analogues, per-seed tables, each test set's ceiling per stream) and
results_gate.png (the Figure 4 analogue).
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

from model import GATE_LOSS_VARIANTS, GATED_VARIANTS

BIN = Path(sys.executable).parent

# Dataset analogue (see module docstring). Classes 0 and 1 share a motion ("waving hand") and
# differ by their scene object; classes 4 and 5 share a scene and differ by motion; classes 2
# and 3 differ in both. Hidden videos have no usable pose.
SYNTH = {
    "--num-classes": "6",
    "--context-pairs": "1",
    "--shared-context": "2",
    "--hidden-fraction": "0.2",
    "--frames": "72",
    "--size": "128x96",
}
SCENE_ONLY_CLASSES = (0, 1)  # only the scene tells them apart
MOTION_ONLY_CLASSES = (4, 5)  # only the motion tells them apart
TEST_VIDEOS_PER_CLASS = 8
# Synth seeds of (in-context train/val, out-of-context test): the final data and the tuning data.
DATA_SEEDS = {"final": (0, 1), "tuning": (10, 11)}

# Paper 4.3/4.4 ablation protocol, at small size: ResNet-18 streams, T = stride = 8.
MODEL = [
    "--appearance-depth", "18", "--pose-depth", "18", "--input-size", "64",
    "--clip-len", "8", "--stride", "8", "--pose-clip-len", "8", "--pose-stride", "8",
]  # fmt: skip

# The headline rows use one gate per frame with L_gate ramped in over stage 2, chosen on the
# tuning data (TUNING_NOTES); the paper's text and its official code gate each channel, and
# those rows are kept beside it. None in the gate-shape slot: the --gate-shape argument. Every
# stage-2 run gives its classifier the weight decay --classifier-weight-decay-stage2 (also chosen
# on the tuning data), except the row that keeps the paper's single weight decay for comparison.
STAGE2 = [
    # (model name, variant, lambda, gate norm, gate shape, L_gate warm-up, classifier decay)
    ("no gate", "no_gate", 0.0, "none", None, False, True),
    ("feature fuse", "feature_fuse", 0.0, "none", None, False, True),
    ("no L_gate", "no_gate_loss", 0.0, "none", None, False, True),
    ("IntegralAction", "integral", 1.5, "none", None, True, True),
    ("IntegralAction", "integral", 5.0, "none", None, True, True),
    (PAPER_DECAY := "IntegralAction, paper's weight decay", "integral", 1.5,
     "none", None, True, False),
    ("IntegralAction, channel gate (official code)", "integral", 1.5, "none", "channel", False,
     True),
    ("IntegralAction, BatchNorm gate (paper's text)", "integral", 1.5, "batchnorm", "channel",
     False, True),
]  # fmt: skip
ORDER = ["appearance-only", "pose-only", "score average", "no gate", "feature fuse",
         "no L_gate", "IntegralAction", PAPER_DECAY,
         "IntegralAction, channel gate (official code)",
         "IntegralAction, BatchNorm gate (paper's text)"]  # fmt: skip
CHANNEL_GATE = "IntegralAction, channel gate (official code)"
# The stage-2 classifier's own weight decay (--classifier-weight-decay-stage2's default).
CLASSIFIER_DECAY_STAGE2 = 0.03


def stage2_tag(
    variant: str, lam: float, norm: str, shape: str, warmup: float, classifier_decay: float | None
) -> str:
    """The run folder's name: every setting that differs between the STAGE2 rows (the gate's
    shape only where there is a gate; the classifier's weight decay where it has its own)."""
    tag = f"{variant}_{lam:g}" + (f"_{shape}" if variant in GATED_VARIANTS else "")
    tag += "_bn" if norm == "batchnorm" else ""
    tag += f"_wu{warmup:g}" if warmup else ""
    return tag + (f"_cwd{classifier_decay:g}" if classifier_decay is not None else "")


def missing_run(seed_dir: Path, run: str, file: str) -> SystemExit:
    """The error of the analysis scripts when ``--run`` names no stage-2 run of the seed: which
    run folders there are (their names change with the settings, ``stage2_tag``)."""
    runs = sorted(p.parent.name for p in seed_dir.glob(f"integral_*/{file}"))
    return SystemExit(
        f"error: {seed_dir / run / file} not found: is --work an out_of_context.py run, and --run "
        f"one of its stage-2 runs ({', '.join(runs) or 'none in ' + str(seed_dir)})?"
    )


def run(tool: str, *args: str, log: Path) -> None:
    cmd = [str(BIN / tool), *map(str, args)]
    with open(log, "a") as f:
        f.write("$ " + " ".join(cmd) + "\n")
        f.flush()
        proc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=os.environ.copy())
    if proc.returncode != 0:
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(cmd)}; see {log}")


def prepare_data(work: Path, args, log: Path) -> dict[str, Path]:
    """Synthesise and build the in-context (train + val) and out-of-context (test) sets."""
    seed_in, seed_out = DATA_SEEDS["tuning" if args.tuning else "final"]
    synth = [a for kv in SYNTH.items() for a in kv]
    paths = {
        "raw_in": work / "raw_in_context",
        "raw_out": work / "raw_out_of_context",
        "in": work / "shards_in_context",
        "out": work / "shards_out_of_context",
    }
    if not (paths["in"] / "dataset.json").exists():
        raw = paths["raw_in"]
        run("pipeline", "synth", "--dataset", "kinetics", "--out", raw, *synth,
            "--videos-per-class", str(args.videos_per_class), "--val-fraction",
            str(args.val_per_class / args.videos_per_class), "--seed", str(seed_in),
            "--overwrite", log=log)  # fmt: skip
        run("pipeline", "build", "--dataset", "kinetics", "--videos", raw / "videos",
            "--annotations", raw / "annotations.csv", "--classes", raw / "classes.txt",
            "--pose", "precomputed", "--poses", raw / "skeletons", "--short-side", "96",
            "--out", paths["in"], "--quiet", log=log)  # fmt: skip
    if not (paths["out"] / "dataset.json").exists():
        raw = paths["raw_out"]
        run("pipeline", "synth", "--dataset", "mimetics", "--out", raw, *synth,
            "--videos-per-class", str(TEST_VIDEOS_PER_CLASS), "--context", "out",
            "--seed", str(seed_out), "--overwrite", log=log)  # fmt: skip
        run("pipeline", "build", "--dataset", "mimetics", "--videos", raw / "videos",
            "--annotations", raw / "annotations.csv", "--classes",
            paths["raw_in"] / "classes.txt", "--pose", "precomputed", "--poses",
            raw / "skeletons", "--short-side", "96", "--out", paths["out"], "--quiet",
            log=log)  # fmt: skip
    return paths


def finished_epochs(out: Path) -> int:
    metrics = out / "metrics.csv"
    if not metrics.exists():
        return 0
    with open(metrics) as f:
        return max((int(row["epoch"]) for row in csv.DictReader(f)), default=0)


def pose_args(args) -> list[str]:
    return ["--pose-crop", args.pose_crop, "--pose-size", str(args.pose_size),
            "--pose-sigma", str(args.pose_sigma)]  # fmt: skip


def fit(stage: str, data: Path, out: Path, args, seed: int, log: Path, *extra: str) -> Path:
    if stage == "integral":
        epochs, lr = args.epochs_stage2, args.lr_stage2
        schedule = ["--schedule", "stage2", "--cache-features", str(args.views),
                    "--feature-cache", str(out.parent / "features")]  # fmt: skip
    else:
        epochs = args.epochs_appearance if stage == "appearance" else args.epochs_pose
        lr, schedule = args.lr_stage1, ["--precise-bn", "4", "--val-every", "0"]
        if stage == "pose":
            extra = (*pose_args(args), "--lr-steps", args.lr_steps_pose,
                     "--weight-decay", str(args.weight_decay_pose), *extra)  # fmt: skip
    if finished_epochs(out) < epochs:
        # --resume continues a run this script was interrupted in (or starts one from scratch).
        run("train", "fit", "--stage", stage, "--data", data, "--out", out, *MODEL,
            "--epochs", str(epochs), "--lr", str(lr), "--batch-size", "8", "--workers", "1",
            "--seed", str(seed), "--no-progress", "--resume", "--keep-checkpoints", "1",
            *schedule, *extra,
            log=log)  # fmt: skip
        for path in out.glob("epoch_*.pt"):  # only last.pt is used
            path.unlink()
    # The last epoch's weights, not best.pt: the in-context test set is the val split, and
    # choosing an epoch on it would select on the test set.
    return out / "last.pt"


def evaluate(
    checkpoints: list[Path], data: Path, split: str, out: Path, args, raw: Path, log: Path,
    cache: Path | None = None,
) -> dict:  # fmt: skip
    if not out.exists():
        ckpt_args = [a for c in checkpoints for a in ("--checkpoint", str(c))]
        combine = ["--combine", "mean"] if len(checkpoints) > 1 else []
        cached = ["--feature-cache", str(cache)] if cache else []
        run("train", "eval", *ckpt_args, *combine, "--data", data, "--split", split,
            "--class-map", "name", "--clips", str(args.clips), "--workers", "1", "--quiet",
            "--video-info", raw / "synth.json", *cached, "--out", out, log=log)  # fmt: skip
    return json.loads(out.read_text())


def stage2_history(out: Path) -> list[dict]:
    """Mean gate (train and val) and val top-1 per epoch of a stage-2 run."""
    with open(out / "metrics.csv") as f:
        rows = list(csv.DictReader(f))

    def num(x: str) -> float | None:
        return float(x) if x not in ("", None) else None

    return [
        {
            "epoch": int(r["epoch"]),
            "train_mean_gate": num(r.get("train_mean_gate")),
            "val_mean_gate": num(r.get("val_mean_gate")),
            "val_top1": num(r.get("val_top1")),
            "train_loss": num(r.get("train_loss")),
        }
        for r in rows
    ]


# ----------------------------------------------------------------------------------------------
# Records and summaries


def _gate_part(report: dict) -> dict | None:
    gate = report.get("gate")
    if not gate:
        return None
    # Per class over visible persons only, and the hidden videos per class (from the report's
    # per-video predictions, which carry the synth metadata of --video-info).
    visible: dict[str, list[float]] = {}
    hidden: dict[str, int] = {}
    for p in report["predictions"].values():
        if p.get("hidden"):
            hidden[p["label"]] = hidden.get(p["label"], 0) + 1
        else:
            visible.setdefault(p["label"], []).append(p["gate"])
    return {
        "all": gate["all"],
        "per_class": {k: v.get("mean") for k, v in gate["per_class"].items()},
        "per_class_visible": {k: mean(v) for k, v in visible.items()},
        "hidden_per_class": hidden,
        "by_hidden": gate.get("by_hidden"),
        "by_person": gate.get("by_person"),
        "per_video": gate["per_video"],
    }


def record(model: str, lam: float | None, seed: int, in_ctx: dict, out_ctx: dict) -> dict:
    def part(report: dict) -> dict:
        out = {"top1": report["top1"], "top5": report["top5"], "num_videos": report["num_videos"]}
        out["subsets"] = report.get("subsets", {})
        if "mean_gate" in report:
            out["mean_gate"] = report["mean_gate"]
            out["gate"] = _gate_part(report)
        return out

    return {
        "model": model,
        "lambda": lam,
        "seed": seed,
        "in_context": part(in_ctx),
        "out_of_context": part(out_ctx),
        "mean_gate": {
            "in_context": in_ctx.get("mean_gate"),
            "out_of_context": out_ctx.get("mean_gate"),
        },
    }


def ceilings(raw: Path) -> dict:
    """What each stream could get on a test set, from synth.json alone: the share of videos it
    can decide, and its best top-1 if it is right on those, splits an ambiguous pair evenly and
    guesses among all classes on the rest."""
    meta = json.loads((raw / "synth.json").read_text())
    videos = meta["videos"]
    n_cls = len(meta["classes"])
    motions: dict[str, int] = {}
    contexts: dict[int, int] = {}
    for c in meta["classes"]:
        motions[c["motion"]] = motions.get(c["motion"], 0) + 1
        contexts[c["context"]] = contexts.get(c["context"], 0) + 1
    out = {}
    for stream in ("pose", "scene"):
        decided = [v for v in videos if v["decided_by"][stream]]
        best = 0.0
        for v in videos:
            own = meta["classes"][v["label_index"]]
            if v["decided_by"][stream]:
                best += 1.0
            elif stream == "pose" and v["hidden"] is None:
                best += 1.0 / motions[own["motion"]]  # visible, motion shared by a pair
            elif (
                stream == "scene"
                and contexts.get(v["context"], 0) > 1
                and any(
                    c["context"] == v["context"] and c["index"] == v["label_index"]
                    for c in meta["classes"]
                )
            ):
                best += 1.0 / contexts[v["context"]]  # its own scene, shared by a pair
            else:
                best += 1.0 / n_cls
        out[stream] = {
            "decides_percent": round(100.0 * len(decided) / len(videos), 2),
            "best_top1": round(100.0 * best / len(videos), 2),
        }
    either = sum(v["decided_by"]["pose"] or v["decided_by"]["scene"] for v in videos)
    out["either_decides_percent"] = round(100.0 * either / len(videos), 2)
    out["videos"] = len(videos)
    return out


def mean(values: list[float]) -> float:
    return statistics.mean(values) if values else float("nan")


def mean_spread(values: list[float], scale: float = 1.0, digits: int = 1) -> str:
    values = [scale * v for v in values if v is not None]
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def _groups(records: list[dict]) -> dict[tuple[str, float | None], list[dict]]:
    groups: dict[tuple[str, float | None], list[dict]] = {}
    for r in records:
        groups.setdefault((r["model"], r["lambda"]), []).append(r)
    return dict(sorted(groups.items(), key=lambda kv: (ORDER.index(kv[0][0]), kv[0][1] or 0.0)))


def _class_gate(
    r: dict, part: str, classes: list[str], which: tuple[int, ...], field: str = "per_class"
) -> float:
    """Mean of the classes' mean gates; ``field="per_class_visible"`` for visible persons only."""
    per_class = r[part]["gate"][field]
    return mean([per_class[classes[c]] for c in which if classes[c] in per_class])


def check_targets(records: list[dict], classes: list[str]) -> list[dict]:
    """Issue 12's "Done when" targets, on the means over seeds (and per seed where asked)."""
    g = _groups(records)

    def m(model: str, lam: float | None, part: str, key: str = "top1") -> float:
        return mean([r[part][key] for r in g.get((model, lam), [])])

    ia, app, pose = ("IntegralAction", 1.5), ("appearance-only", None), ("pose-only", None)
    nogl, nogate = ("no L_gate", None), ("no gate", None)
    out_ = "out_of_context"
    targets = []

    def add(name: str, value: float, threshold: float, at_most: bool = False) -> None:
        margin = threshold - value if at_most else value - threshold
        targets.append(
            {
                "target": name,
                "value": round(value, 3),
                "threshold": round(threshold, 3),
                "direction": "<=" if at_most else ">=",
                "met": bool(margin >= -1e-9),
                "margin": round(margin, 3),
            }
        )

    add("out of context: IntegralAction >= appearance-only + 15", m(*ia, out_), m(*app, out_) + 15)
    add("out of context: IntegralAction >= pose-only - 5", m(*ia, out_), m(*pose, out_) - 5)
    add("out of context: IntegralAction >= no L_gate + 5", m(*ia, out_), m(*nogl, out_) + 5)
    add("out of context: IntegralAction >= no gate + 5", m(*ia, out_), m(*nogate, out_) + 5)
    add(
        "in context: IntegralAction >= appearance-only - 3",
        m(*ia, "in_context"),
        m(*app, "in_context") - 3,
    )
    pose_sub = [r["in_context"]["subsets"].get("pose_decides", {}).get("top1") for r in g[pose]]
    add("pose-only >= 85 % on in-context videos its motion decides", mean(pose_sub), 85.0)
    for part, label in (("in_context", "in context"), ("out_of_context", "out of context")):
        gate_ia = m(*ia, part, "mean_gate")
        gate_nogl = m(*nogl, part, "mean_gate")
        add(
            f"{label}: mean G(lambda 1.5) <= mean G(no L_gate) - 0.15",
            gate_ia,
            gate_nogl - 0.15,
            at_most=True,
        )
    for r in sorted(g[ia], key=lambda r: r["seed"]):
        scene = _class_gate(r, "in_context", classes, SCENE_ONLY_CLASSES)
        motion = _class_gate(r, "in_context", classes, MOTION_ONLY_CLASSES)
        add(
            f"seed {r['seed']}, in context: mean G of scene-only classes >= motion-only "
            "classes + 0.05",
            scene,
            motion + 0.05,
        )
    return targets


def _hidden_videos(r: dict, part: str, classes: list[str], which: tuple[int, ...]) -> int:
    """How many of the classes' test videos hide their person."""
    return sum(r[part]["gate"]["hidden_per_class"].get(classes[c], 0) for c in which)


def table5_by_seed(
    records: list[dict], classes: list[str], model: str = "IntegralAction"
) -> list[dict]:
    """Per seed, ``model`` (lambda 1.5) in context: the Table 5 target's reading (scene-only
    minus motion-only classes over all their videos) beside the same over visible persons only.
    A hidden person's gate (about sigmoid(b)) is several times a visible one's, so with a few
    test videos per class the all-videos reading also counts how the hidden persons fell."""
    rows = []
    for r in sorted(_groups(records).get((model, 1.5), []), key=lambda r: r["seed"]):
        row: dict = {"seed": r["seed"]}
        for side, which in (("scene", SCENE_ONLY_CLASSES), ("motion", MOTION_ONLY_CLASSES)):
            row[f"{side}_all"] = round(_class_gate(r, "in_context", classes, which), 4)
            visible = _class_gate(r, "in_context", classes, which, "per_class_visible")
            row[f"{side}_visible"] = round(visible, 4)
            row[f"{side}_hidden_videos"] = _hidden_videos(r, "in_context", classes, which)
        rows.append(row)
    return rows


def pooled_hidden_gate(records: list[dict]) -> dict:
    """Mean per-video gate of hidden vs visible persons, pooled over both test sets and seeds."""
    out = {}
    for key in _groups(records):
        if key[0] in ("appearance-only", "pose-only", "score average", "no gate", "feature fuse"):
            continue
        pools: dict[str, list[float]] = {"hidden": [], "visible": []}
        for r in _groups(records)[key]:
            for part in ("in_context", "out_of_context"):
                by = (r[part].get("gate") or {}).get("by_hidden") or {}
                for flag in pools:
                    d = by.get(flag) or {}
                    if d.get("n"):
                        pools[flag] += [d["mean"]] * d["n"]
        out[f"{key[0]}|{key[1]}"] = {
            flag: {"n": len(v), "mean": round(mean(v), 4)} for flag, v in pools.items()
        }
    return out


def markdown(records: list[dict], meta: dict) -> str:
    groups = _groups(records)
    classes = meta["class_names"]
    lam = lambda k: "-" if k[1] is None else f"{k[1]:g}"  # noqa: E731
    lines = [
        "# In-context / out-of-context experiment (analogue of the paper's Table 4)",
        "",
        f"Command: `{meta['command']}`  ",
        f"Date: {meta['date']}; {meta['machine']}; wall time {meta['minutes']:.1f} min"
        + _invocations(meta["time_per_invocation"])
        + f", CPU time of all processes {meta['cpu_minutes']:.1f} min; load average at the start "
        f"{meta['load_start']:.1f}, at the end {meta['load_end']:.1f} "
        f"({'shared with other work' if meta['shared'] else 'quiet'}).  ",
        f"Seeds: {', '.join(map(str, meta['seeds']))}; mean ± standard deviation over seeds.",
        "",
        "Data (`pipeline synth`, then `pipeline build` with precomputed poses): "
        f"{meta['classes']} classes; in context: {meta['train_videos']} train / "
        f"{meta['val_videos']} test videos (the val split); out of context: "
        f"{meta['ooc_videos']} test videos, scenes drawn at random (the Mimetics analogue). "
        f"'{classes[0]}' and '{classes[1]}' share a motion and differ only by their scene "
        f"object; '{classes[4]}' and '{classes[5]}' share a scene and differ only by motion; "
        "20 % of videos hide or cut off the person.",
        "",
        f"Training: {meta['training']}",
        "",
        "## Table 4 analogue (top-1 / top-5 %)",
        "",
        "| model | lambda | in context top-1 | in context top-5 | out of context top-1 "
        "| out of context top-5 |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for key, rs in groups.items():
        cells = [
            mean_spread([r[part][metric] for r in rs])
            for part in ("in_context", "out_of_context")
            for metric in ("top1", "top5")
        ]
        lines.append(f"| {key[0]} | {lam(key)} | " + " | ".join(cells) + " |")
    chance = 100.0 / meta["classes"]
    lines += ["", f"Chance: top-1 {chance:.1f} %, top-5 {min(100.0, 5 * chance):.1f} %.", ""]

    lines += [
        "## Each test set's ceiling per stream (from synth.json)",
        "",
        "A stream *decides* a video when it alone could tell the class: pose, when the person is "
        "visible and no other class has the same motion; the scene, when the video shows its "
        "class's own scene and no other class has that scene. *Best top-1* assumes the stream "
        "is right on those, splits an ambiguous pair evenly and guesses on the rest.",
        "",
        "| test set | videos | pose decides | pose best top-1 | scene decides | scene best "
        "top-1 | either decides |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, c in meta["ceilings"].items():
        lines.append(
            f"| {name} | {c['videos']} | {c['pose']['decides_percent']:.1f} % | "
            f"{c['pose']['best_top1']:.1f} % | {c['scene']['decides_percent']:.1f} % | "
            f"{c['scene']['best_top1']:.1f} % | {c['either_decides_percent']:.1f} % |"
        )
    lines += [
        "",
        "Top-1 on the videos each stream decides (mean over seeds):",
        "",
        "| model | lambda | in context: pose decides | in context: scene decides | "
        "out of context: pose decides | out of context: hidden person |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for key, rs in groups.items():

        def sub(part: str, name: str, rs=rs) -> str:
            return mean_spread([r[part]["subsets"].get(name, {}).get("top1") for r in rs])

        lines.append(
            f"| {key[0]} | {lam(key)} | {sub('in_context', 'pose_decides')} | "
            f"{sub('in_context', 'scene_decides')} | {sub('out_of_context', 'pose_decides')} | "
            f"{sub('out_of_context', 'hidden')} |"
        )

    lines += [
        "",
        "## Gate (Figure 4 analogue)",
        "",
        "Per-video mean gate G (the weight of the appearance features; 0 = pose only), "
        "mean over seeds of each seed's mean, and its spread over videos (sd, 10/50/90 "
        "percentiles, pooled over seeds):",
        "",
        "| model | lambda | in context | out of context | in context p10 / p50 / p90 | "
        "out of context p10 / p50 / p90 |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for key, rs in groups.items():
        if rs[0]["mean_gate"]["in_context"] is None:
            continue
        cells = [
            mean_spread([r["mean_gate"][part] for r in rs], digits=3)
            for part in ("in_context", "out_of_context")
        ]
        for part in ("in_context", "out_of_context"):
            pooled = sorted(g for r in rs for g in r[part]["gate"]["per_video"].values())
            q = [pooled[int(p * (len(pooled) - 1))] for p in (0.1, 0.5, 0.9)]
            cells.append(" / ".join(f"{x:.2f}" for x in q))
        lines.append(f"| {key[0]} | {lam(key)} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "![Distribution of the per-video mean gate](results_gate.png)",
        "",
        "Hidden vs visible person, per-video mean G pooled over both test sets and all seeds:",
        "",
        "| model | lambda | hidden (videos) | visible (videos) |",
        "|---|---:|---:|---:|",
    ]
    for key, v in meta["hidden_gate"].items():
        name, lam_ = key.split("|")
        lam_ = "-" if lam_ == "None" else f"{float(lam_):g}"
        lines.append(
            f"| {name} | {lam_} | {v['hidden']['mean']:.3f} ({v['hidden']['n']}) | "
            f"{v['visible']['mean']:.3f} ({v['visible']['n']}) |"
        )
    lines += [
        "",
        "## Table 5 analogue: mean G per class",
    ]
    for part, label in (("in_context", "In context:"), ("out_of_context", "Out of context:")):
        lines += ["", label, "", "| model | lambda | " + " | ".join(classes) + " |",
                  "|---|---:|" + "---:|" * len(classes)]  # fmt: skip
        for key, rs in groups.items():
            if rs[0]["mean_gate"]["in_context"] is None:
                continue
            cells = [
                mean_spread([r[part]["gate"]["per_class"].get(c) for r in rs], digits=3)
                for c in classes
            ]
            lines.append(f"| {key[0]} | {lam(key)} | " + " | ".join(cells) + " |")

    for model, key in (("IntegralAction", "table5_by_seed"),
                       (PAPER_DECAY, "table5_by_seed_paper_decay"),
                       (CHANNEL_GATE, "table5_by_seed_channel")):  # fmt: skip
        if not meta.get(key):
            continue
        lines += [
            "",
            f"In context, {model} (lambda 1.5), scene-only classes "
            f"({', '.join(classes[c] for c in SCENE_ONLY_CLASSES)}) against motion-only classes "
            f"({', '.join(classes[c] for c in MOTION_ONLY_CLASSES)}): the target's reading over "
            "all their videos, and over visible persons only (a hidden person's gate is several "
            "times a visible one's, so the first also counts where the few hidden test videos "
            "fell):",
            "",
            "| seed | all videos: scene-only / motion-only (difference) | hidden videos: "
            "scene-only / motion-only | visible persons: scene-only / motion-only "
            "(difference) |",
            "|---|---:|---:|---:|",
        ]
        for t in meta[key]:
            lines.append(
                f"| {t['seed']} | {t['scene_all']:.3f} / {t['motion_all']:.3f} "
                f"({t['scene_all'] - t['motion_all']:+.3f}) | {t['scene_hidden_videos']} / "
                f"{t['motion_hidden_videos']} | {t['scene_visible']:.3f} / "
                f"{t['motion_visible']:.3f} ({t['scene_visible'] - t['motion_visible']:+.3f}) |"
            )
    seeds = sorted({r["seed"] for r in records})
    lines += [
        "",
        "## Per seed",
        "",
        "Top-1, in context / out of context (mean gate in brackets for gated models):",
        "",
        "| model | lambda | " + " | ".join(f"seed {s}" for s in seeds) + " |",
        "|---|---:|" + "---:|" * len(seeds),
    ]
    for key, rs in groups.items():
        by_seed = {r["seed"]: r for r in rs}
        cells = []
        for s in seeds:
            r = by_seed.get(s)
            if r is None:
                cells.append("-")
                continue
            text = f"{r['in_context']['top1']:.1f} / {r['out_of_context']['top1']:.1f}"
            if r["mean_gate"]["in_context"] is not None:
                text += (
                    f" ({r['mean_gate']['in_context']:.2f} / "
                    f"{r['mean_gate']['out_of_context']:.2f})"
                )
            cells.append(text)
        lines.append(f"| {key[0]} | {lam(key)} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Stage 2 (IntegralAction, lambda 1.5): mean gate on the training views per epoch:",
        "",
        "| seed | " + " | ".join(f"ep {e}" for e in meta["gate_epochs_shown"]) + " |",
        "|---|" + "---:|" * len(meta["gate_epochs_shown"]),
    ]
    for seed, hist in sorted(meta["gate_per_epoch"].items()):
        by_epoch = {h["epoch"]: h for h in hist}
        cells = [
            f"{by_epoch[e]['train_mean_gate']:.3f}" if e in by_epoch else "-"
            for e in meta["gate_epochs_shown"]
        ]
        lines.append(f"| {seed} | " + " | ".join(cells) + " |")
    lines += ["", "## Targets (issue 12)", "",
              "Means over seeds (top-1 in %, gates as fractions):", "",
              "| target | value | must be | met |", "|---|---:|---:|---|"]  # fmt: skip
    for t in meta["targets"]:
        digits = 3 if "G" in t["target"] else 2
        lines.append(
            f"| {t['target']} | {t['value']:.{digits}f} | {t['direction']} "
            f"{t['threshold']:.{digits}f} | "
            f"{'yes' if t['met'] else 'no, by ' + format(-t['margin'], f'.{digits}f')} |"
        )
    lines += ["", REPRODUCIBILITY_NOTE, "", TUNING_NOTES]
    return "\n".join(lines)


REPRODUCIBILITY_NOTE = (
    "This experiment repeats bit for bit on one machine, not across CPUs. How far these "
    "figures hold on another machine and over more seeds: docs/reproducibility.md."
)


# Measured on the tuning data (`--tuning`: synth seeds 10/11, its own out-of-context set), seed 0,
# with stage 1 at this script's defaults; no test set was read. Each row: one stage-2 run on the
# same cached streams, evaluated on the tuning val / tuning out-of-context sets.
TUNING_NOTES = """## How the defaults were chosen

All choices were made on the tuning data (`--tuning`: `pipeline synth` seeds 10 and 11, with its
own out-of-context set), never on the test sets of this page.

- Pose input: the paper's whole-frame crop at a quarter of the 64 px input leaves the person
  about 9 x 4 raster pixels; a person-centred crop (`--pose-crop person`, PoseC3D's PoseCompact)
  at the same 16 px raised pose-only top-1 on the tuning val split from 47 / 30 % to 60 / 70 %
  (2 seeds, 120 steps), and 70 % with sigma 1.0 (issue 12's measurement). 45 pose epochs with
  the rate cut at 35 and 42 let the stream converge (train top-1 about 70 % at the end).
- Pose stream weight decay 5e-2 instead of the paper's 1e-4 (`--weight-decay-pose`): over 540
  steps 1e-4 does nothing, 5e-2 shrinks the weights about as much as the paper's 1e-4 does over
  Kinetics. On the tuning data (6 seeds, the tuning run's appearance streams, pose stream and
  IntegralAction retrained) IntegralAction's top-1 out of context rose in every seed, from 69.8
  to 73.6 on average, and pose-only's in context from 63.9 to 67.2. It does not fix the Table 5
  analogue (met in 4 of 6 tuning seeds, 5 of 6 with 1e-4): docs/model.md, "Measured: the pose
  stream's weight decay".
- Stage 2 length and rate, one seed, with the channel gate (measured before the frame gate was
  chosen), top-1 in / out of context and mean gate in / out:

| stage-2 run (tuning data) | in | out | mean G in / out |
|---|---:|---:|---:|
| IntegralAction, 120 epochs, lr 0.01 | 96.7 | 60.4 | 0.197 / 0.168 |
| IntegralAction, 60 epochs, lr 0.03 (default) | 96.7 | 66.7 | 0.179 / 0.148 |
| IntegralAction, 60 epochs, lr 0.05 | 96.7 | 66.7 | 0.158 / 0.127 |
| IntegralAction lambda 5, 60 epochs, lr 0.03 | 96.7 | 68.8 | 0.128 / 0.098 |
| no L_gate, 60 epochs, lr 0.03 | 96.7 | 37.5 | 0.513 / 0.514 |
| no gate, 60 epochs, lr 0.03 | 96.7 | 39.6 | - |
| BatchNorm gate (paper's text), 60 epochs, lr 0.03 | 96.7 | 37.5 | 0.469 / 0.468 |

- Cached views (`--cache-features N`), 60 epochs at lr 0.01: 1 view 96.7 / 60.4, 2 views
  96.7 / 60.4, 4 views 96.7 / 62.5, streaming fresh clips (no cache) 96.7 / 64.6; the mean gate
  is the same to 0.001 (0.232 / 0.206). 4 views are one out-of-context video (2.1 points) below
  streaming at a fraction of its cost; the default is 4.
- Gate: one gate per frame with L_gate ramped in over all of stage 2 (`--gate-shape frame
  --gate-warmup 1`) for the IntegralAction and no L_gate rows; the official code's gate, one per
  channel, and the paper's BatchNorm gate run beside them. With one gate per channel the
  classifier reads the scene through a few open channels and L_gate ranks the classes by how
  loudly the pose stream answers them, so the Table 5 reading changes sign from seed to seed:
  on the tuning data +0.053 / +0.081 / +0.065 / +0.115 / -0.025 / +0.017 (seeds 0-5). With one
  gate per frame and the warm-up, +0.103 / +0.094 / +0.108 / +0.107 / +0.092 / +0.101, with top-1
  out of context 74.3 against 73.6. Without the warm-up, or with half of it, the frame gate
  shuts for every visible person in 4 (or 1) of 6 seeds and the scene-only pair is lost in
  context (docs/model.md, "Measured: a gate per frame"). Other gate inputs tried head-only
  (`experiments/gate_head_variants.py`: centred input, direction and presence inputs, head
  weight decay, dropout) did not meet the target in every tuning seed, or lost 2-10 points out
  of context (docs/model.md, "Tried: head-only variants of the gate").
- Stage-2 classifier weight decay 3e-2 (`--classifier-weight-decay`, every stage-2 row but
  the one that keeps the paper's 1e-4 beside the headline): chosen after the frame gate missed
  the Table 5 target in one seed of the final data, on the tuning data only, by a rule fixed
  beforehand (the largest worst-seed Table 5 reading among settings within 1 point of the frame
  gate's top-1). Head-only over tuning seeds 0-11, the worst seed's reading rose from +0.083 to
  +0.117 with top-1 93.0 / 73.8 against 93.9 / 74.0, and the motion-only classes' gates stayed
  at 0.01 or below; a decay on the whole head, longer training, a constant-lambda tail and
  label smoothing did less (docs/model.md, "Measured: the classifier's weight decay"). The final
  data was then run once with it: because the miss that started the search was seen on the test
  sets, this page is their second look, and the row "paper's weight decay" is the first.
- With the channel gate, stage-2 length, rate, lambda and the classification loss do not change
  which classes get the wider gate: a gate trained by L_gate alone, with no gradient from the
  classification loss, ends within 0.01 of the default in every class and tuning seed, and a
  third of the default's lr x lambda x steps, whichever factor is cut, gives the same per-class
  gates (docs/model.md, "Measured: what sets the gate's class pattern").
"""


def plot_gates(records: list[dict], path: Path) -> None:
    from train.report import plot_gate_distributions

    series = []
    for part, panel in (("in_context", "in context"), ("out_of_context", "out of context")):
        for key, rs in _groups(records).items():
            if rs[0]["mean_gate"]["in_context"] is None:
                continue
            label = key[0] if key[1] is None else f"{key[0]}, lambda {key[1]:g}"
            series.append(
                (panel, label, [g for r in rs for g in r[part]["gate"]["per_video"].values()])
            )
    plot_gate_distributions(
        series, str(path), title="Per-video mean gate (all seeds pooled); G weighs appearance"
    )


class Jobs:
    """Runs named jobs on ``workers`` threads, each job once its dependencies are done.

    Every job starts one single-threaded process, so two workers keep the two cores busy.
    """

    def __init__(self, workers: int):
        self.workers = workers
        self.jobs: dict[str, tuple[list[str], object, tuple]] = {}
        self.priority: dict[str, tuple[int, int]] = {}

    def add(self, name: str, deps: list[str], fn, *args, priority: int = 1) -> None:
        """Jobs with a lower ``priority`` start first among those ready (then in added order)."""
        self.jobs[name] = (deps, fn, args)
        self.priority[name] = (priority, len(self.priority))

    def run(self) -> dict[str, object]:
        import threading

        results: dict[str, object] = {}
        pending = list(self.jobs)
        lock = threading.Condition()
        failure: list[BaseException] = []

        def worker() -> None:
            while True:
                with lock:
                    while True:
                        if failure or not pending:
                            return
                        ready = [n for n in pending if all(d in results for d in self.jobs[n][0])]
                        if ready:
                            name = min(ready, key=self.priority.__getitem__)
                            pending.remove(name)
                            break
                        lock.wait()
                deps, fn, args = self.jobs[name]
                print(f"[{time.strftime('%H:%M:%S')}] {name}", flush=True)
                try:
                    value = fn(*args)
                except BaseException as exc:  # stop the others, report after join
                    with lock:
                        failure.append(exc)
                        lock.notify_all()
                    return
                with lock:
                    results[name] = value
                    lock.notify_all()

        threads = [threading.Thread(target=worker) for _ in range(self.workers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if failure:
            raise failure[0]
        return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/integralaction-ooc"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument(
        "--tuning", action="store_true", help="the tuning data (synth seeds 10, 11), not the tests"
    )
    parser.add_argument("--videos-per-class", type=int, default=20, help="in-context videos")
    parser.add_argument("--val-per-class", type=int, default=5, help="of which in the val split")
    parser.add_argument("--epochs-appearance", type=int, default=10)
    parser.add_argument("--epochs-pose", type=int, default=45)
    parser.add_argument(
        "--lr-steps-pose", default="35,42", help="pose stage 1: epochs where lr drops x0.1"
    )
    parser.add_argument("--lr-stage1", type=float, default=0.01)
    # The paper's 1e-4 over Kinetics' 10^5-10^6 steps shrinks the weights by about e^-0.1 to
    # e^-0.3 (lr x decay x steps); over this experiment's 540 pose steps it does nothing
    # (e^-0.0004). 5e-2 is of the paper's order here (e^-0.2). (Momentum 0.9 multiplies each
    # exponent by about 10, on both sides.) Chosen on the tuning data:
    # docs/model.md, "Measured: the pose stream's weight decay".
    parser.add_argument(
        "--weight-decay-pose", type=float, default=0.05, help="pose stage 1 weight decay"
    )
    parser.add_argument("--pose-crop", default="person", choices=["frame", "person"])
    parser.add_argument("--pose-size", type=int, default=16)
    parser.add_argument("--pose-sigma", type=float, default=1.0)
    parser.add_argument("--epochs-stage2", type=int, default=60, help="stage2 schedule shape")
    parser.add_argument("--lr-stage2", type=float, default=0.03)
    # One gate per frame with L_gate ramped in over all of stage 2: chosen on the tuning data
    # (TUNING_NOTES, docs/model.md "Measured: a gate per frame"); the official code's channel
    # gate runs beside it.
    parser.add_argument(
        "--gate-shape", default="frame", choices=["channel", "frame"], help="headline rows' gate"
    )
    parser.add_argument(
        "--gate-warmup", type=float, default=1.0, help="headline rows' L_gate warm-up fraction"
    )
    # The classifier's own weight decay in stage 2: it limits how far the classifier can scale
    # up what a narrow gate lets through. Chosen on the tuning data (docs/model.md, "Measured:
    # the classifier's weight decay"); 1e-4 gives every run the paper's single weight decay.
    parser.add_argument(
        "--classifier-weight-decay-stage2",
        type=float,
        default=CLASSIFIER_DECAY_STAGE2,
        help="stage-2 classifier weight decay (every run but the paper's-decay row)",
    )
    parser.add_argument("--views", type=int, default=4, help="cached views per training video")
    parser.add_argument("--clips", type=int, default=3, help="test clips per video")
    parser.add_argument("--jobs", type=int, default=2, help="runs at a time (one core each)")
    parser.add_argument("--write", type=Path, help="folder for results.json, .md and the PNG")
    parser.add_argument(
        "--stage1-only",
        action="store_true",
        help="train the stage-1 streams and stop (a later "
        "run with the same --work resumes from them)",
    )
    args = parser.parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # one BLAS thread per process (2 cores)
    started = time.monotonic()
    load_start = os.getloadavg()[0]
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    log = work / "log.txt"
    paths = prepare_data(work, args, log)
    tests = (("in", paths["in"], "val", paths["raw_in"]),
             ("out", paths["out"], "test", paths["raw_out"]))  # fmt: skip
    jobs = Jobs(args.jobs)
    evaluations = []  # (seed, model, lambda, eval job names)
    histories = {}
    for seed in args.seeds:
        runs = work / f"seed{seed}"
        app, pose = runs / "appearance" / "last.pt", runs / "pose" / "last.pt"
        jobs.add(f"s{seed}/appearance", [], fit, "appearance", paths["in"], runs / "appearance",
                 args, seed, log)  # fmt: skip
        # The pose stream trains longest: start those first (the critical path).
        jobs.add(f"s{seed}/pose", [], fit, "pose", paths["in"], runs / "pose", args, seed, log,
                 priority=0)  # fmt: skip
        models = [("appearance-only", None, [app], [f"s{seed}/appearance"], None),
                  ("pose-only", None, [pose], [f"s{seed}/pose"], None),
                  ("score average", None, [app, pose], [f"s{seed}/appearance", f"s{seed}/pose"],
                   None)]  # fmt: skip
        first = None
        for name, variant, lam, norm, shape, ramp, own_decay in STAGE2:
            shape = shape or args.gate_shape
            warmup = args.gate_warmup if ramp else 0.0
            decay = args.classifier_weight_decay_stage2 if own_decay else None
            tag = stage2_tag(variant, lam, norm, shape, warmup, decay)
            job = f"s{seed}/{tag}"
            # The first stage-2 run computes the seed's feature cache; the others read it.
            deps = [f"s{seed}/appearance", f"s{seed}/pose"] + ([first] if first else [])
            # Gate options only where the variant has the gate (or L_gate) they set.
            gate = ["--gate-norm", norm, "--gate-shape", shape] if variant in GATED_VARIANTS else []
            if variant in GATE_LOSS_VARIANTS:
                gate += ["--gate-weight", str(lam), "--gate-warmup", str(warmup)]
            if decay is not None:
                gate += ["--classifier-weight-decay", str(decay)]
            jobs.add(job, deps, fit, "integral", paths["in"], runs / tag, args, seed, log,
                     "--variant", variant, *gate,
                     "--init-appearance", str(app), "--init-pose", str(pose))  # fmt: skip
            first = first or job
            ckpt = runs / tag / "last.pt"
            models.append((name, lam if variant == "integral" else None, [ckpt], [job], runs))
            if (name, lam) == ("IntegralAction", 1.5):
                histories[seed] = runs / tag
        first_eval = {}
        for name, lam, ckpts, deps, cache_root in models:
            # Stage-2 evals are named after their run folder, which names every setting: an
            # eval left by a run with other settings is never taken for this one's.
            tag = ckpts[0].parent.name if cache_root else name.replace(" ", "_").replace(",", "")
            pair = []
            for test, data, split, raw in tests:
                job = f"s{seed}/eval {tag} {test}"
                out = runs / f"eval_{tag}_{test}.json"
                cache = cache_root / f"eval_features_{test}" if cache_root else None
                eval_deps = list(deps)
                if cache is not None:  # the first stage-2 eval of a test set fills the cache
                    eval_deps += [first_eval[test]] if test in first_eval else []
                    first_eval.setdefault(test, job)
                jobs.add(job, eval_deps, evaluate, ckpts, data, split, out, args, raw, log,
                         cache)  # fmt: skip
                pair.append(job)
            evaluations.append((seed, name, lam, pair))
    if args.stage1_only:
        jobs.jobs = {n: j for n, j in jobs.jobs.items() if n.endswith(("/appearance", "/pose"))}
    try:
        results = jobs.run()
    finally:
        # Wall and CPU time per invocation, also when one fails: a run that was interrupted
        # and resumed reports all its parts.
        minutes, cpu_minutes, parts = _ledger(work, started, load_start)
    if args.stage1_only:
        print(f"stage 1 done in {minutes:.1f} min ({cpu_minutes:.1f} min CPU)")
        return
    records = [
        record(name, lam, seed, results[pair[0]], results[pair[1]])
        for seed, name, lam, pair in evaluations
    ]

    info_in = json.loads((paths["in"] / "dataset.json").read_text())
    info_out = json.loads((paths["out"] / "dataset.json").read_text())
    classes = list(info_in["classes"])
    gate_per_epoch = {seed: stage2_history(out) for seed, out in histories.items()}
    shown = sorted(
        {1, 2, 5, 10, 20, 30, args.epochs_stage2} & set(range(1, args.epochs_stage2 + 1))
    )
    loads = [p["load_start"] for p in parts] + [p["load_end"] for p in parts]
    meta = {
        "command": "python experiments/out_of_context.py " + " ".join(sys.argv[1:]),
        "date": datetime.date.today().isoformat(),
        "machine": machine(),
        "minutes": sum(p["wall_minutes"] for p in parts),
        "cpu_minutes": sum(p["cpu_minutes"] for p in parts),
        "time_per_invocation": parts,
        "load_start": parts[0]["load_start"],
        "load_end": parts[-1]["load_end"],
        # More runnable processes than cores at any sampled moment: others shared the machine.
        "shared": max(loads) > (os.cpu_count() or 1) + 0.5,
        "seeds": args.seeds,
        "tuning": args.tuning,
        "data_seeds": DATA_SEEDS["tuning" if args.tuning else "final"],
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "classes": len(classes),
        "class_names": classes,
        "train_videos": info_in["splits"]["train"]["samples"],
        "val_videos": info_in["splits"]["val"]["samples"],
        "ooc_videos": info_out["splits"]["test"]["samples"],
        "ceilings": {
            "in context (val)": ceilings(paths["raw_in"]) | {},
            "out of context": ceilings(paths["raw_out"]),
        },
        "gate_per_epoch": gate_per_epoch,
        "gate_epochs_shown": shown,
        "training": (
            f"ResNet-18 streams, input 64 px, T = stride = 8 for both streams; pose input: "
            f"{args.pose_crop} crop, {args.pose_size} px raster, sigma {args.pose_sigma:g}; "
            f"stage 1 appearance {args.epochs_appearance} epochs (kinetics schedule shape: x0.1 "
            f"at 3/7 and 6/7) and pose {args.epochs_pose} epochs (x0.1 at epochs "
            f"{args.lr_steps_pose}, weight decay {args.weight_decay_pose:g}) at lr "
            f"{args.lr_stage1}, BatchNorm statistics recomputed "
            f"after each epoch (--precise-bn 4), no validation during training; stage 2 on the "
            f"frozen streams: "
            f"IntegralAction and no L_gate with one gate per {args.gate_shape}"
            + (
                f", the weight of L_gate ramped up from 0 over the first "
                f"{100 * args.gate_warmup:.0f} % of the epochs"
                if args.gate_warmup
                else ""
            )
            + " (docs/model.md, 'Measured: a gate per frame'); "
            f"stage2 schedule shape (x0.1 at 50 % and 75 %) over {args.epochs_stage2} epochs "
            f"at lr {args.lr_stage2}, trained on {args.views} cached augmented views per video "
            f"(--cache-features {args.views}); batch 8, SGD momentum 0.9, weight decay 1e-4 "
            f"except where given; stage-2 classifier weight decay "
            f"{args.classifier_weight_decay_stage2:g} (--classifier-weight-decay) except in the "
            f"row that keeps the paper's (docs/model.md, 'Measured: the classifier's weight "
            f"decay'); "
            f"{args.clips} test clips per video; every model is its run's last epoch (no "
            f"selection on the test sets)."
        ),
    }
    # synth.json of the in-context set covers train and val; its ceiling is the val split's.
    meta["ceilings"]["in context (val)"] = _val_ceiling(paths["raw_in"])
    meta["targets"] = check_targets(records, classes)
    meta["hidden_gate"] = pooled_hidden_gate(records)
    meta["table5_by_seed"] = table5_by_seed(records, classes)
    meta["table5_by_seed_paper_decay"] = table5_by_seed(records, classes, PAPER_DECAY)
    meta["table5_by_seed_channel"] = table5_by_seed(records, classes, CHANNEL_GATE)
    text = markdown(records, meta)
    print(text)
    if args.write:
        args.write.mkdir(parents=True, exist_ok=True)
        slim = [_slim(r) for r in records]
        (args.write / "results.json").write_text(
            json.dumps({"meta": meta, "records": slim}, indent=1) + "\n"
        )
        (args.write / "results.md").write_text(text)
        plot_gates(records, args.write / "results_gate.png")


def machine() -> str:
    """The CPU model and the instruction set torch's kernels use on it.

    Training here is bit-for-bit repeatable on one machine, not across CPUs whose kernels differ
    (docs/reproducibility.md): the report says which the run had.
    """
    import torch

    from pipeline.report import cpu_model

    return (
        f"{cpu_model()}, {os.cpu_count()} cores, CPU "
        f"(torch kernels for {torch.backends.cpu.get_cpu_capability()})"
    )


def _ledger(work: Path, started: float, load_start: float) -> tuple[float, float, list]:
    minutes = round((time.monotonic() - started) / 60, 2)
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_minutes = round((usage.ru_utime + usage.ru_stime) / 60, 2)
    ledger = work / "time_ledger.json"
    parts = json.loads(ledger.read_text()) if ledger.exists() else []
    if minutes >= 0.5 or not parts:  # not a rerun that found everything done
        parts.append({"wall_minutes": minutes, "cpu_minutes": cpu_minutes,
                      "load_start": load_start, "load_end": os.getloadavg()[0]})  # fmt: skip
    ledger.write_text(json.dumps(parts) + "\n")
    return minutes, cpu_minutes, parts


def _invocations(parts: list[dict]) -> str:
    """Where the time was spent over several invocations of the script (a resumed run, or rows
    added to a finished one, which reuse its stage-1 streams): each one's wall time."""
    if len(parts) < 2:
        return ""
    each = " + ".join(f"{p['wall_minutes']:.1f}" for p in parts)
    return f" over {len(parts)} invocations ({each} min; a later one reuses what an earlier made)"


def _val_ceiling(raw: Path) -> dict:
    """:func:`ceilings` of the val split only (the in-context test videos)."""
    import shutil
    import tempfile

    meta = json.loads((raw / "synth.json").read_text())
    meta["videos"] = [v for v in meta["videos"] if v.get("split") == "val"]
    folder = Path(tempfile.mkdtemp())
    try:
        (folder / "synth.json").write_text(json.dumps(meta))
        return ceilings(folder)
    finally:
        shutil.rmtree(folder)


def _slim(r: dict) -> dict:
    """A record for results.json: per-video gates kept (they make the figure), nothing else
    per video."""
    return r


if __name__ == "__main__":
    main()
