"""Model throughput, parameters and FLOPs per clip (IntegralAction streams and full model).

    python benchmarks/model.py [--device cpu|cuda] [--write docs/benchmarks.md]

Sizes: the paper's (RGB 8 x 224 x 224, pose 32 x 55 x 56 x 56, i.e. coco17's K + 2B = 17 + 38;
section 4.1 and Table 1) and a small test size (RGB 2 x 64 x 64, pose 4 x 55 x 16 x 16).
Training throughput is forward + backward + SGD step of the IntegralAction loss; inference is a
no-grad forward in eval mode. FLOPs are counted with ``torch.utils.flop_counter.FlopCounterMode``
(a multiply-add counts 2). On CUDA each model is also timed with channels-last weights and with
bf16 autocast (channels-last).

``--write FILE`` replaces the text between ``<!-- model:begin -->`` and ``<!-- model:end -->``
(appending the markers if absent) and leaves the rest of the file alone.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import platform
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from report import cpu_model, positive_int, write_section  # noqa: E402

import model  # noqa: E402

POSE_CHANNELS = 55  # coco17: 17 heatmaps + 19 bones x 2 PAF channels
NUM_CLASSES = 400  # Kinetics-400


@dataclass
class Case:
    name: str
    variant: str
    appearance_depth: int
    pose_depth: int
    clip_len: int
    pose_clip_len: int
    size: int  # RGB side; the pose raster side is a quarter
    frozen: bool = False  # stage 2: streams frozen, only integration + classifier train

    def build(self) -> model.ActionModel:
        net = model.build(
            self.variant,
            NUM_CLASSES,
            POSE_CHANNELS,
            appearance_depth=self.appearance_depth,
            pose_depth=self.pose_depth,
            clip_len=self.clip_len,
            pose_clip_len=self.pose_clip_len,
        )
        if self.frozen:
            net.freeze_streams()
        return net

    def inputs(self, batch: int, device: str) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        s = self.size
        rgb = pose = None
        if self.variant != "pose":
            rgb = torch.randn(batch, self.clip_len, 3, s, s, device=device)
        if self.variant != "appearance":
            pose = torch.randn(batch, self.pose_clip_len, POSE_CHANNELS, s // 4, s // 4)
            pose = pose.to(device)
        return rgb, pose

    def describe_input(self) -> str:
        parts = []
        if self.variant != "pose":
            parts.append(f"RGB {self.clip_len}x{self.size}²")
        if self.variant != "appearance":
            parts.append(f"pose {self.pose_clip_len}x{POSE_CHANNELS}x{self.size // 4}²")
        return " + ".join(parts)


PAPER = [
    Case("appearance R18", "appearance", 18, 18, 8, 32, 224),
    Case("appearance R50", "appearance", 50, 18, 8, 32, 224),
    Case("pose R18", "pose", 18, 18, 8, 32, 224),
    Case("integral R50+R18", "integral", 50, 18, 8, 32, 224),
    Case("integral R50+R18, stage 2 (frozen)", "integral", 50, 18, 8, 32, 224, frozen=True),
]
SMALL = [
    Case("appearance R18 (small)", "appearance", 18, 18, 2, 4, 64),
    Case("pose R18 (small)", "pose", 18, 18, 2, 4, 64),
    Case("integral R50+R18 (small)", "integral", 50, 18, 2, 4, 64),
]


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _autocast(device: str, bf16: bool) -> contextlib.AbstractContextManager:
    if bf16:
        return torch.autocast(device_type=device, dtype=torch.bfloat16)
    return contextlib.nullcontext()


@dataclass
class Row:
    case: Case
    batch: int
    mode: str
    params: int
    trainable: int
    gflops_fwd: float | None
    gflops_train: float | None
    train_cps: float
    infer_cps: float


def _steps(
    net: model.ActionModel,
    rgb: torch.Tensor | None,
    pose: torch.Tensor | None,
    device: str,
    bf16: bool,
) -> tuple[Callable[[], None], Callable[[], None]]:
    target = torch.zeros(rgb.shape[0] if rgb is not None else pose.shape[0], dtype=torch.long)
    target = target.to(device)
    params = [p for p in net.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=1e-3, momentum=0.9)

    def train_step() -> None:
        net.train()
        with _autocast(device, bf16):
            total, _, _ = net.integral_loss(net(rgb, pose), target)
        opt.zero_grad(set_to_none=True)
        total.backward()
        opt.step()

    def infer_step() -> None:
        net.eval()
        with torch.no_grad(), _autocast(device, bf16):
            net(rgb, pose)

    return train_step, infer_step


def _rate(step: Callable[[], None], iters: int, clips: int, device: str) -> float:
    _sync(device)
    start = time.perf_counter()
    for _ in range(iters):
        step()
    _sync(device)
    return clips * iters / (time.perf_counter() - start)


def run_case(case: Case, batch: int, iters: int, device: str) -> Iterator[Row]:
    net = case.build().to(device)
    params = sum(p.numel() for p in net.parameters())
    trainable = sum(p.numel() for p in net.parameters() if p.requires_grad)
    rgb, pose = case.inputs(batch, device)
    one_rgb, one_pose = case.inputs(1, device)

    # FLOPs per clip (fp32); these passes double as warm-up.
    counter = FlopCounterMode(display=False)
    net.eval()
    with counter, torch.no_grad():
        net(one_rgb, one_pose)
    gflops_fwd = counter.get_total_flops() / 1e9
    train_step, infer_step = _steps(net, rgb, pose, device, bf16=False)
    counter = FlopCounterMode(display=False)
    with counter:
        train_step()
    gflops_train = counter.get_total_flops() / 1e9 / batch

    modes = [("fp32", False, False)]
    if device == "cuda":
        modes += [("fp32 channels-last", True, False), ("bf16 autocast channels-last", True, True)]
    for mode, channels_last, bf16 in modes:
        if channels_last:
            net = net.to(memory_format=torch.channels_last)
        train_step, infer_step = _steps(net, rgb, pose, device, bf16)
        if mode != "fp32":  # warm up the new kernels
            train_step()
        infer_step()
        yield Row(
            case,
            batch,
            mode,
            params,
            trainable,
            gflops_fwd if mode == "fp32" else None,
            gflops_train if mode == "fp32" else None,
            _rate(train_step, iters, batch, device),
            _rate(infer_step, iters, batch, device),
        )


def machine(device: str) -> str:
    text = (
        f"{cpu_model()}, {os.cpu_count()} cores visible, {torch.get_num_threads()} torch threads, "
        f"torch {torch.__version__}, Python {platform.python_version()}"
    )
    if device == "cuda":
        text += f", GPU {torch.cuda.get_device_name()}"
    return text


def render(
    rows: list[Row], command: str, device: str, seconds: float, load: tuple[float, float]
) -> str:
    def f(x: float | None, fmt: str) -> str:
        return "" if x is None else format(x, fmt)

    lines = [
        "## Model: throughput, parameters, FLOPs (`benchmarks/model.py`)",
        "",
        f"Command: `{command}`  ",
        f"Date: {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC; run time {seconds:.0f} s  ",
        f"Machine: {machine(device)}; 1-min load average {load[0]:.1f} at start, "
        f"{load[1]:.1f} at end",
        "",
        "| model | input per clip | batch | mode | params (M) | trainable (M) "
        "| GFLOPs/clip fwd | GFLOPs/clip train | train clips/s | inference clips/s |",
        "|---|---|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r.case.name} | {r.case.describe_input()} | {r.batch} | {r.mode} "
            f"| {r.params / 1e6:.2f} | {r.trainable / 1e6:.2f} | {f(r.gflops_fwd, '.1f')} "
            f"| {f(r.gflops_train, '.1f')} | {r.train_cps:.3g} | {r.infer_cps:.3g} |"
        )
    lines += [
        "",
        f"{NUM_CLASSES} classes; pose channels {POSE_CHANNELS} (coco17). Train = forward, "
        "backward and an SGD step of the IntegralAction loss; FLOPs from FlopCounterMode "
        "(one multiply-add = 2 FLOPs; train counts forward + backward). Stage 2 backpropagates "
        "only into the integration layers and the classifier. Throughput on a shared machine "
        "varies run to run; few iterations were timed.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--write", metavar="FILE", help="update this markdown file's section")
    parser.add_argument(
        "--batch", type=positive_int, help="batch at the paper size (cpu 1, cuda 8)"
    )
    parser.add_argument("--iters", type=positive_int, help="timed iterations at the paper size")
    parser.add_argument("--small-only", action="store_true", help="skip the paper sizes")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda but CUDA is not available", file=sys.stderr)
        return 2
    cuda = args.device == "cuda"
    batch = args.batch or (8 if cuda else 1)
    iters = args.iters or (10 if cuda else 1)
    torch.manual_seed(0)
    if cuda:
        torch.backends.cudnn.benchmark = True

    plan = [] if args.small_only else [(c, batch, iters) for c in PAPER]
    plan += [(c, 2, 3 * iters) for c in SMALL]
    start = time.perf_counter()
    load_start = os.getloadavg()[0]  # other jobs on the same cores slow everything down
    rows: list[Row] = []
    for case, b, n in plan:
        for row in run_case(case, b, n, args.device):
            rows.append(row)
            print(
                f"{case.name:38s} {row.mode:28s} b={b} train {row.train_cps:7.3g} clips/s  "
                f"infer {row.infer_cps:7.3g} clips/s",
                flush=True,
            )
        if cuda:
            torch.cuda.empty_cache()
    command = "python benchmarks/model.py " + " ".join(sys.argv[1:] if argv is None else argv)
    load = (load_start, os.getloadavg()[0])
    section = render(rows, command.strip(), args.device, time.perf_counter() - start, load)
    print()
    print(section)
    if args.write:
        write_section(args.write, "model", section)
        print(f"\nwrote the model section of {args.write}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
