"""Raster rendering speed on one core: numba kernel vs numpy reference vs mmaction2 vs memset.

    python benchmarks/rasters.py [--repeat N] [--skip-peer] [--write docs/benchmarks.md]

Every method renders the same seeded clips: 32 frames, 5 persons, coco17 (17 heatmaps + 19
bones = 55 channels), plausible moving bodies, at 56x56 (224x224 source) and 64x85 (256x340
source), a quarter of the source side. The kernel writes into a preallocated ``out``; the
zero-fill row times ``out.fill(0)`` on the same float32 array, the physical floor.

A second table per size times what the build stores (uint8 heatmaps, int8 PAFs): the quantised
kernel ``render_clip_quantized`` into preallocated arrays, against its reference
``quantize_raster(render_clip(...))`` (the float kernel into a preallocated ``out``, then
rint/clip/astype over the whole raster) and the zero-fill of the uint8 and int8 arrays, its
floor. The two paths' outputs are checked equal before timing.

Every row reports wall time (``time.perf_counter``) and CPU time of this process
(``time.process_time``; one thread), the latter less disturbed by other work on a shared machine.

The peer is mmaction2's ``GeneratePoseTarget`` (PoseC3D), heatmaps only and with limb maps (the
same 19 bones), default sigma 0.6. It needs numpy<2, so it runs in its own virtual environment,
created on first use under ~/.cache/integralaction/bench-mmaction (numpy<2: its PoseCompact uses np.Inf); the
poses go to it as an .npy file and it prints its timings as JSON.
"""

from __future__ import annotations

import os

# One core: set before numpy and numba are imported, so their thread pools start at one thread.
for _var in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import datetime  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

import numba  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from report import cpu_model, load_note, positive_int, write_section  # noqa: E402

from pipeline.raster import quantize_raster, render_clip, render_clip_quantized  # noqa: E402
from pipeline.raster_reference import render_clip_reference  # noqa: E402
from pipeline.skeletons import get_layout  # noqa: E402

FRAMES, PERSONS, SCALE, SEED = 32, 5, 0.25, 0
# (raster height, raster width) -> source (height, width)
SIZES = {(56, 56): (224, 224), (64, 85): (256, 340)}
PEER_VENV = Path.home() / ".cache" / "integralaction" / "bench-mmaction"
PEER_PACKAGES = [
    "torch==2.13.0",
    "numpy<2",
    "mmcv-lite==2.1.0",
    "mmengine",
    "einops",
    "opencv-python-headless",
    "scipy",  # imported by mmaction's pose_transforms
]
PEER_NODEPS = ["mmaction2==1.2.0"]

# A standing coco17 body facing the camera, (x, y) in units of its height; the person's left is
# the image's right.
_BODY = np.array(
    [
        (0.0, 0.06), (0.02, 0.045), (-0.02, 0.045), (0.045, 0.055), (-0.045, 0.055),
        (0.11, 0.19), (-0.11, 0.19), (0.14, 0.33), (-0.14, 0.33), (0.15, 0.46), (-0.15, 0.46),
        (0.07, 0.52), (-0.07, 0.52), (0.08, 0.74), (-0.08, 0.74), (0.08, 0.96), (-0.08, 0.96),
    ]
)  # fmt: skip
_ARMS = [7, 8, 9, 10]  # elbows and wrists swing


def make_poses(source_hw: tuple[int, int], seed: int = SEED) -> np.ndarray:
    """Seeded keypoints float32 [FRAMES, PERSONS, 17, 3] of people walking about a frame."""
    rng = np.random.default_rng(seed)
    src_h, src_w = source_hw
    kp = np.zeros((FRAMES, PERSONS, len(_BODY), 3), dtype=np.float32)
    t = np.arange(FRAMES)[:, None]
    for p in range(PERSONS):
        height = rng.uniform(0.35, 0.9) * src_h
        top = rng.uniform(-0.05, 1.0 - height / src_h) * src_h
        x0 = rng.uniform(0.1, 0.9) * src_w
        vx = rng.uniform(-1.5, 1.5)  # source pixels per frame
        swing = np.sin(t * rng.uniform(0.1, 0.4) + rng.uniform(0, 2 * np.pi))
        offset = np.zeros((FRAMES, len(_BODY), 2))
        offset[:, _ARMS, 0] = 0.08 * swing
        jitter = rng.normal(0.0, 0.01, (FRAMES, len(_BODY), 2))
        xy = (_BODY[None] + offset + jitter) * height
        kp[:, p, :, 0] = xy[..., 0] + x0 + vx * t
        kp[:, p, :, 1] = xy[..., 1] + top
        kp[:, p, :, 2] = rng.uniform(0.3, 1.0, (FRAMES, len(_BODY)))
    return kp


def time_call(fn: Callable[[], object], repeat: int) -> dict[str, float]:
    """Best and median seconds of ``repeat`` calls after one warm-up call: wall time, and CPU
    time of this process (``cpu_best``, ``cpu_median``)."""
    fn()
    runs, cpu_runs = [], []
    for _ in range(repeat):
        start, cpu_start = time.perf_counter(), time.process_time()
        fn()
        cpu_runs.append(time.process_time() - cpu_start)
        runs.append(time.perf_counter() - start)
    return {
        "best": min(runs),
        "median": statistics.median(runs),
        "cpu_best": min(cpu_runs),
        "cpu_median": statistics.median(cpu_runs),
    }


@numba.njit(cache=True)
def _memset(out: np.ndarray) -> None:
    # LLVM turns this into one memset call: glibc's fastest zeroing (streaming stores for
    # arrays larger than the last-level cache), faster here than numpy's fill.
    out[...] = 0.0


@numba.njit(cache=True)
def _memset_pair(heatmaps: np.ndarray, pafs: np.ndarray) -> None:
    # The quantised kernel's own zeroing of its two outputs.
    heatmaps[...] = 0
    pafs[...] = 0


def bench_local(repeat: int) -> dict[str, dict[str, dict[str, float]]]:
    """Seconds per clip of the kernel, the reference and the zero fill, per raster size."""
    bones = get_layout("coco17").bones
    results: dict[str, dict[str, float]] = {}
    for (h, w), src_hw in SIZES.items():
        kp = make_poses(src_hw)
        out = np.empty((FRAMES, 17 + 2 * len(bones), h, w), dtype=np.float32)

        def kernel(kp=kp, out=out, h=h, w=w) -> None:
            render_clip(kp, bones, (h, w), scale=SCALE, out=out)

        def reference(kp=kp, out=out, h=h, w=w) -> None:
            render_clip_reference(kp, bones, (h, w), scale=SCALE, out=out)

        heat = np.empty((FRAMES, 17, h, w), dtype=np.uint8)
        paf = np.empty((FRAMES, 2 * len(bones), h, w), dtype=np.int8)

        def quantized(kp=kp, heat=heat, paf=paf, h=h, w=w) -> None:
            render_clip_quantized(kp, bones, (h, w), scale=SCALE, heatmaps=heat, pafs=paf)

        def quantized_fresh(kp=kp, h=h, w=w) -> None:
            render_clip_quantized(kp, bones, (h, w), scale=SCALE)

        def float_then_quantize(kp=kp, out=out, h=h, w=w) -> tuple[np.ndarray, np.ndarray]:
            return quantize_raster(render_clip(kp, bones, (h, w), scale=SCALE, out=out), 17)

        def fill_pair(heat=heat, paf=paf) -> None:
            heat.fill(0)
            paf.fill(0)

        quantized()
        want_heat, want_paf = float_then_quantize()
        if not (np.array_equal(heat, want_heat) and np.array_equal(paf, want_paf)):
            raise AssertionError(f"{h}x{w}: render_clip_quantized differs from quantize_raster")

        results[f"{h}x{w}"] = {
            "kernel": time_call(kernel, repeat),
            # The reference is about a thousand times slower; a few runs pin it down.
            "reference": time_call(reference, max(1, min(repeat, 3))),
            "fill": time_call(lambda out=out: out.fill(0), repeat),
            "memset": time_call(lambda out=out: _memset(out), repeat),
            "quantized": time_call(quantized, repeat),
            "quantized_fresh": time_call(quantized_fresh, repeat),
            "float_then_quantize": time_call(float_then_quantize, repeat),
            "quantized_fill": time_call(fill_pair, repeat),
            "quantized_memset": time_call(lambda h=heat, p=paf: _memset_pair(h, p), repeat),
        }
    return results


_PEER_SCRIPT = r"""
import json, os, statistics, sys, time
import numpy as np
from mmaction.datasets.transforms.pose_transforms import GeneratePoseTarget

args = json.loads(sys.argv[1])
result = {}
for size, spec in args["sizes"].items():
    kp = np.load(spec["poses"])  # [F, P, K, 3]
    sample = {
        "keypoint": np.ascontiguousarray(kp[..., :2].transpose(1, 0, 2, 3)),  # [M, T, V, 2]
        "keypoint_score": np.ascontiguousarray(kp[..., 2].transpose(1, 0, 2)),  # [M, T, V]
        "img_shape": tuple(spec["source_hw"]),
    }
    result[size] = {}
    for name, with_limb in (("heatmaps", False), ("limbs", True)):
        op = GeneratePoseTarget(with_kp=True, with_limb=with_limb,
                                skeletons=[tuple(b) for b in args["bones"]],
                                scaling=args["scale"])
        shape = op.transform(dict(sample))["imgs"].shape
        assert shape[2:] == tuple(spec["raster_hw"]), shape
        runs = []
        for _ in range(args["repeat"]):
            start = time.perf_counter()
            op.transform(dict(sample))
            runs.append(time.perf_counter() - start)
        result[size][name] = {"best": min(runs), "median": statistics.median(runs)}
print(json.dumps(result))
"""


def _peer_python() -> Path:
    return PEER_VENV / "bin" / "python"


def ensure_peer_venv() -> Path:
    """The peer environment's python, creating and installing it on first use."""
    python = _peer_python()
    probe = [str(python), "-c", "import mmaction.datasets.transforms.pose_transforms"]
    if python.exists() and subprocess.run(probe, capture_output=True).returncode == 0:
        return python
    print(f"creating the mmaction2 environment in {PEER_VENV} (once) ...", file=sys.stderr)
    PEER_VENV.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(PEER_VENV)], check=True)
    pip = [str(python), "-m", "pip", "install", "--quiet"]
    for cmd in (pip + PEER_PACKAGES, pip + ["--no-deps"] + PEER_NODEPS, probe):
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")
    return python


def bench_peer(repeat: int) -> dict[str, dict[str, dict[str, float]]]:
    """Seconds per clip of mmaction2's GeneratePoseTarget, run in its own environment."""
    python = ensure_peer_venv()
    with tempfile.TemporaryDirectory() as tmp:
        sizes = {}
        for (h, w), src_hw in SIZES.items():
            path = Path(tmp) / f"poses_{h}x{w}.npy"
            np.save(path, make_poses(src_hw))
            sizes[f"{h}x{w}"] = {"poses": str(path), "source_hw": src_hw, "raster_hw": (h, w)}
        args = {
            "sizes": sizes,
            "bones": get_layout("coco17").bones.tolist(),
            "scale": SCALE,
            "repeat": max(1, min(repeat, 30)),
        }
        proc = subprocess.run(
            [str(python), "-c", _PEER_SCRIPT, json.dumps(args)],
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONPATH": ""},
        )
    if proc.returncode != 0:
        raise RuntimeError(f"the mmaction2 peer failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _row(name: str, timing: dict[str, float], kernel: dict[str, float]) -> str:
    best, median = timing["best"], timing["median"]
    cpu = (
        f" {timing['cpu_best'] * 1e3:.3f} | {timing['cpu_best'] / kernel['cpu_best']:,.2f} |"
        if "cpu_best" in timing
        else " | |"  # the peer reports wall time only
    )
    return (
        f"| {name} | {best * 1e3:.3f} | {median * 1e3:.3f} | {1.0 / best:,.0f} "
        f"| {best / kernel['best']:,.2f} |{cpu}"
    )


_HEADER = [
    "| method | ms/clip (best) | ms/clip (median) | clips/s (best) | time / {0} "
    "| CPU ms/clip (best) | CPU time / {0} |",
    "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
]


def format_table(local: dict, peer: dict | None) -> str:
    """A markdown table per raster size, and a line of ratios (of best times) under each."""
    lines = []
    for size, res in local.items():
        kernel = res["kernel"]
        floor = min(res["memset"]["best"], res["fill"]["best"])
        lines += [
            f"**{size} raster** ({FRAMES} frames x {17 + 2 * 19} channels, float32)",
            "",
            _HEADER[0].format("kernel"),
            _HEADER[1],
            _row("numba kernel `render_clip` (preallocated `out`)", kernel, kernel),
            _row("numpy reference `render_clip_reference`", res["reference"], kernel),
        ]
        if peer is not None:
            lines += [
                _row("mmaction2 GeneratePoseTarget, heatmaps only", peer[size]["heatmaps"], kernel),
                _row("mmaction2 GeneratePoseTarget, heatmaps + limbs", peer[size]["limbs"], kernel),
            ]
        lines += [
            _row("zero-fill: memset (numba `out[...] = 0`)", res["memset"], kernel),
            _row("zero-fill: numpy `out.fill(0)`", res["fill"], kernel),
            "",
        ]
        best = kernel["best"]
        ratios = [f"Kernel {res['reference']['best'] / best:,.0f}x faster than the reference"]
        if peer is not None:
            ratios.append(f"{peer[size]['heatmaps']['best'] / best:,.1f}x than the peer's heatmaps")
            ratios.append(f"{peer[size]['limbs']['best'] / best:,.1f}x than the peer with limbs")
        ratios.append(f"kernel time = {best / floor:.2f}x the faster zero-fill")
        lines += ["; ".join(ratios) + ".", ""]

        quantized = res["quantized"]
        stored_floor = {
            key: min(res["quantized_memset"][key], res["quantized_fill"][key])
            for key in ("best", "cpu_best")
        }
        lines += [
            f"**{size} raster, stored dtypes** ({FRAMES} frames x 17 uint8 heatmaps + 38 int8 "
            "PAF channels)",
            "",
            _HEADER[0].format("quantised kernel"),
            _HEADER[1],
            _row("quantised kernel `render_clip_quantized` (preallocated)", quantized, quantized),
            _row("quantised kernel, new arrays each call", res["quantized_fresh"], quantized),
            _row(
                "reference: `quantize_raster(render_clip(..., out=out))`",
                res["float_then_quantize"],
                quantized,
            ),
            _row(
                "zero-fill: memset of the uint8 + int8 arrays", res["quantized_memset"], quantized
            ),
            _row("zero-fill: numpy `fill(0)` of both", res["quantized_fill"], quantized),
            "",
        ]
        ref = res["float_then_quantize"]
        lines += [
            f"Quantised kernel {ref['best'] / quantized['best']:.2f}x faster than the reference "
            f"(CPU time: {ref['cpu_best'] / quantized['cpu_best']:.2f}x); its time = "
            f"{quantized['best'] / stored_floor['best']:.2f}x the faster zero-fill of the "
            f"stored arrays (CPU time: {quantized['cpu_best'] / stored_floor['cpu_best']:.2f}x).",
            "",
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=positive_int, default=50, help="timed runs per method")
    parser.add_argument("--skip-peer", action="store_true", help="do not run mmaction2")
    parser.add_argument("--write", type=Path, help="markdown file whose rasters section to replace")
    args = parser.parse_args(argv)

    load_before = os.getloadavg()[0]
    local = bench_local(args.repeat)
    peer = None if args.skip_peer else bench_peer(args.repeat)
    load_after = os.getloadavg()[0]
    table = format_table(local, peer)
    print(table)
    if args.write:
        command = "python benchmarks/rasters.py " + " ".join(sys.argv[1:])
        body = "\n".join(
            [
                "## Raster rendering (one core)",
                "",
                f"`{command.strip()}` on {datetime.date.today().isoformat()}, {cpu_model()} "
                f"({os.cpu_count()} cores visible; one thread used), Python "
                f"{platform.python_version()}, numpy {np.__version__}, numba {numba.__version__}; "
                f"{load_note(load_before, load_after, 1)}.",
                "",
                "Same seeded clips for every method: 32 frames, 5 persons, coco17, "
                "scale 0.25 from a 224x224 and a 256x340 source. Best and median of the timed "
                f"runs (the reference: {max(1, min(args.repeat, 3))} runs"
                f"{'' if peer is None else '; the peer: at most 30'}); ratios use the best runs, "
                "the least disturbed on a shared machine. "
                "The peer is mmaction2 1.2.0 `GeneratePoseTarget` (default sigma 0.6, the same "
                "19 bones as limbs), in its own environment with numpy<2."
                if peer is not None
                else "The peer (mmaction2) was not run (--skip-peer).",
                "",
                "The kernel zeroes `out` with one memset, then touches only the pixels near "
                "keypoints and bones. glibc's memset switches to streaming stores somewhere "
                "between 22 and 38 MB here, so the 38 MB 64x85 output zeroes about twice as "
                "fast per byte as the 22 MB 56x56 one, and the cache lines the kernel then draws "
                "on come back from memory: drawing the same Gaussians and segments into one "
                "cache-resident plane took about 0.7 ms per clip, the rest of the kernel's time "
                "above the floor is memory latency (hidden in part by prefetching the next "
                "frame's lines).",
                "",
                "The second table per size times what shards store (uint8 heatmaps, int8 PAFs): "
                "`render_clip_quantized`, which draws quantised values straight into "
                "preallocated arrays, against `quantize_raster(render_clip(...))` (the float "
                "kernel into a preallocated `out`, then rint, clip and astype over the whole "
                "raster), with the same outputs checked equal first; its floor is zeroing the "
                "two small arrays. CPU columns are `time.process_time` of this one-thread "
                "process.",
                "",
                table,
            ]
        )
        write_section(args.write, "rasters", body)
        print(f"wrote {args.write}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
