"""Where the gate opens, per class group, on the in-context test videos of an experiment run.

    python experiments/gate_by_class.py --work /tmp/integralaction-ooc [--run RUN_FOLDER]

For each seed of an ``experiments/out_of_context.py`` run it reads the IntegralAction (lambda
1.5) checkpoint (``--run``: the headline frame-gate run, or another stage-2 run folder) and the
val split's cached stream features, and prints, for the classes only
the scene tells apart (0, 1) and those only motion tells apart (4, 5): the mean gate over all
channels (what docs/results.md's Table 5 analogue reports), the gate weighted by the channels
the classifier uses to separate the scene-only pair, the size of each stream's contribution to
the fused features, and top-1 of the same head with the gate forced to 0, 0.5 or 1. It answers
"does the classifier need the gate to open to read the scene?".

It also prints, per class, the mean gate and the mean norm of the pose features F_P that drive
it, on the videos whose person is visible and on those where it is hidden (synth.json), and the
correlation over visible videos between a video's mean gate and log ||F_P||. The gate is a
linear function of the raw F_P, so L_gate closes it most where F_P is largest: "does the gate
follow what pose can decide, or only how strongly the pose stream responds?".
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

# The script's folder is on sys.path: the experiment's own class groups, not a copy.
from out_of_context import CLASSIFIER_DECAY_STAGE2, missing_run, stage2_tag
from out_of_context import MOTION_ONLY_CLASSES as MOTION_ONLY
from out_of_context import SCENE_ONLY_CLASSES as SCENE_ONLY

from model import build_from_checkpoint, load_checkpoint
from model.integral import frame_average_log_probs

HEADLINE_RUN = stage2_tag("integral", 1.5, "none", "frame", 1.0, CLASSIFIER_DECAY_STAGE2)
CHANNEL_RUN = stage2_tag("integral", 1.5, "none", "channel", 0.0, CLASSIFIER_DECAY_STAGE2)


def val_features(seed_dir: Path) -> dict:
    """The val split's feature cache: the smaller of the two files (one view, 30 videos)."""
    files = sorted((seed_dir / "features").glob("*.pt"), key=lambda p: p.stat().st_size)
    return torch.load(files[0], weights_only=False)


def hidden_person(seed_dir: Path, keys: list[str]) -> torch.Tensor:
    """Per cached video: True where the synthetic video hides or cuts off its person."""
    meta = json.loads((seed_dir.parent / "raw_in_context" / "synth.json").read_text())
    hidden = {v["key"]: v["hidden"] is not None for v in meta["videos"]}
    return torch.tensor([hidden[k] for k in keys])


def gate_and_pose_norm(seed_dir: Path, g: torch.Tensor, f_p: torch.Tensor, y, keys) -> None:
    """Per class: mean gate and mean ||F_P|| (visible persons; hidden pooled), and how the gate
    of visible videos follows log ||F_P||."""
    hidden = hidden_person(seed_dir, keys)
    visible = ~hidden
    g_video, norm = g.mean((1, 2)), f_p.norm(dim=-1).mean(1)
    cells = []
    for c in range(int(y.max()) + 1):
        m = (y == c) & visible
        cells.append(f"{c}: {g_video[m].mean():.2f} / {norm[m].mean():.0f}")
    r = torch.corrcoef(torch.stack([g_video[visible], norm[visible].log()]))[0, 1]
    print(
        f"    per class, visible person: mean G / ||F_P||  {'  '.join(cells)}  | hidden "
        f"{g_video[hidden].mean():.2f} / {norm[hidden].mean():.1f}  | corr(G, log ||F_P||) "
        f"over visible videos {r:+.2f}"
    )


def probe(seed_dir: Path, run: str) -> None:
    cache = val_features(seed_dir)
    f_a, f_p, y = cache["f_a"].float()[:, 0], cache["f_p"].float()[:, 0], cache["labels"]
    net = build_from_checkpoint(load_checkpoint(seed_dir / run / "last.pt")).eval()
    scene = (y == SCENE_ONLY[0]) | (y == SCENE_ONLY[1])
    motion = (y == MOTION_ONLY[0]) | (y == MOTION_ONLY[1])
    with torch.no_grad():
        a, p = net.tcb_a(f_a), net.tcb_p(f_p)
        g = torch.sigmoid(net.cgb(f_p))  # [N, T, C], or [N, T, 1] for a gate per frame
        w = net.classifier.weight
        sep = (w[SCENE_ONLY[0]] - w[SCENE_ONLY[1]]).abs()
        sep = sep / sep.sum()
        g_sep = (g * sep).sum(-1)
        app = (g * a).norm(dim=-1).mean(1)
        pose = ((1 - g) * p).norm(dim=-1).mean(1)
        print(
            f"{seed_dir.name}: mean G scene-only {g[scene].mean():.3f} motion-only "
            f"{g[motion].mean():.3f} | G on the scene pair's channels {g_sep[scene].mean():.3f} / "
            f"{g_sep[motion].mean():.3f} | |G A'| {app[scene].mean():.1f} / "
            f"{app[motion].mean():.1f} | |(1-G) P'| {pose[scene].mean():.1f} / "
            f"{pose[motion].mean():.1f}"
        )
        gate_and_pose_norm(seed_dir, g, f_p, y, cache["keys"])
        for name, fused in (
            ("learnt gate", g * a + (1 - g) * p),
            ("G = 0", p),
            ("G = 0.5", 0.5 * (a + p)),
            ("G = 1", a),
        ):
            right = (frame_average_log_probs(net.classifier(fused)).argmax(-1) == y).float()
            print(
                f"    {name:<12} top-1 all {100 * right.mean():5.1f}  scene-only "
                f"{100 * right[scene].mean():5.1f}  motion-only {100 * right[motion].mean():5.1f}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/integralaction-ooc"))
    parser.add_argument(
        "--run",
        default=HEADLINE_RUN,
        help=f"stage-2 run folder in each seed (default {HEADLINE_RUN}, the headline; "
        f"{CHANNEL_RUN}: the official code's gate)",
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    for seed_dir in sorted(args.work.glob("seed*")):
        if not (seed_dir / args.run / "last.pt").is_file():
            raise missing_run(seed_dir, args.run, "last.pt")
        probe(seed_dir, args.run)


if __name__ == "__main__":
    main()
