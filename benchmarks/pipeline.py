"""Throughput of `pipeline build` against its floor, and decode speed against the decode limit.

    python benchmarks/pipeline.py [--videos 96] [--frames 90] [--write docs/benchmarks.md]

Measures, in one run, on the same videos:
- decode: our decoder (decord at the build stride with decode-time resizing; PyAV fallback)
  against `ffmpeg -threads 1 -f null` (the decode limit, a peer that does no resizing, no colour
  conversion and no copy to Python; single-thread PyAV decoding without conversion where the
  ffmpeg binary is not installed);
- a precomputed-pose build of a `pipeline synth` Kinetics-style set (340x256):
  - the floor: the steps a video cannot do without, each timed alone in CPU seconds (our decode
    at the build's stride and size, reading the pose file, rendering the rasters, JPEG encoding,
    raster compression), summed;
  - the one-process path: the build's public ``build_shard`` over its own plan, no Ray;
  - `pipeline build` on Ray at 1 and 2 workers, Ray started beforehand (start-up apart);
  and the ratios between them;
- a mediapipe build of the real footage (tests/data/real): the pose model's own frames/s on the
  frames the build gives it, against the build's at one worker; the landmarker's set-up per
  video (fresh against reused); what estimating at source resolution costs;
- bytes per video of rgb, pose and raster shards.
One thread per library everywhere (OMP/MKL/numba), so that one worker is one core.
"""

from __future__ import annotations

import argparse
import datetime
import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import platform  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
# This script is named like the package it measures: the checkout's root goes first on the
# import path and this folder last, so `pipeline` is the package (an editable install's finder
# runs after the path search, which would otherwise find this file) and `report` the benchmarks'
# helper module.
HERE = Path(__file__).resolve().parent
sys.path[:] = [str(REPO)] + [p for p in sys.path if Path(p or ".").resolve() != HERE] + [str(HERE)]
REAL = REPO / "tests" / "data" / "real"


# ---------------------------------------------------------------------------------- decode


def time_ffmpeg(path: Path) -> float:
    start = time.perf_counter()
    subprocess.run(
        ["ffmpeg", "-v", "error", "-threads", "1", "-i", str(path), "-f", "null", "-"],
        check=True,
    )
    return time.perf_counter() - start


def time_pyav(path: Path) -> float:
    """Every frame decoded by libavcodec through PyAV, one thread, frames left in the decoder's
    own format (no conversion): the limit where the ffmpeg binary is not installed."""
    import av

    start = time.perf_counter()
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "NONE"
        stream.codec_context.thread_count = 1
        for _ in container.decode(stream):
            pass
    return time.perf_counter() - start


def decode_limit() -> tuple[str, Callable[[Path], float]]:
    if shutil.which("ffmpeg"):
        return "ffmpeg -f null", time_ffmpeg
    return "PyAV, no conversion", time_pyav


def decode_table(
    videos: list[Path], repeat: int, time_limit: Callable[[Path], float]
) -> list[list[str]]:
    from pipeline.video import decode_video, probe

    rows = []
    for path in videos:
        n, _, h, w = probe(str(path))
        ours = min(_wall(lambda p=path: decode_video(str(p), 2, 256)) for _ in range(repeat))
        limit = min(time_limit(path) for _ in range(repeat))
        rows.append(
            [path.name, f"{w}x{h}", str(n), f"{n / ours:.0f}", f"{n / limit:.0f}",
             f"{limit / ours:.2f}"]
        )  # fmt: skip
    return rows


def _wall(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _cpu(fn) -> tuple[float, object]:
    start = time.process_time()
    out = fn()
    return time.process_time() - start, out


# ------------------------------------------------------------------------- precomputed build


FLOOR_STEPS = ("decode", "pose file", "rasters", "JPEG", "compression")


def floor_seconds(options) -> dict[str, float]:
    """CPU seconds of each necessary step over every planned video, each step timed alone."""
    from pipeline.build import load_build_manifest, plan_shards, shard_context
    from pipeline.persons import select_persons
    from pipeline.pose.precomputed import load_precomputed
    from pipeline.raster import render_clip_quantized
    from pipeline.shards import encode_raster, encode_rgb
    from pipeline.skeletons import convert_keypoints, get_layout
    from pipeline.video import decode_video

    manifest = load_build_manifest(options)
    ctx = shard_context(options, manifest)
    plan = plan_shards(manifest, options.seed, options.samples_per_shard, options.limit)
    layout = get_layout(ctx.layout)
    params = ctx.raster
    steps = dict.fromkeys(FLOOR_STEPS, 0.0)
    for specs in plan.values():
        for spec in specs:
            for item in spec.items:
                t, video = _cpu(lambda i=item: decode_video(i.source, 2, 256))
                steps["decode"] += t
                h, w = video.frames.shape[1:3]
                t, (kp, source, tracked) = _cpu(
                    lambda i=item, v=video, hw=(h, w): load_precomputed(
                        i,
                        kept_indices=v.frame_indices,
                        source_frames=v.source_frames,
                        fps=v.fps,
                        source_hw=(v.source_height, v.source_width),
                        stored_hw=hw,
                    )
                )
                steps["pose file"] += t
                kp = select_persons(
                    convert_keypoints(kp, source, layout.name), 5, tracked, params.score_threshold
                )
                t, (heat, paf) = _cpu(
                    lambda k=kp, hw=(h // 4, w // 4): render_clip_quantized(
                        k, layout.bones, hw, scale=params.scale
                    )
                )
                steps["rasters"] += t
                t, _ = _cpu(lambda v=video: encode_rgb(v.frames, v.frame_indices))
                steps["JPEG"] += t
                t, _ = _cpu(lambda a=heat, b=paf: encode_raster(a, b))
                steps["compression"] += t
    return steps


def one_process_seconds(options) -> tuple[float, float]:
    """(CPU, wall) seconds of the build's public ``build_shard`` over its plan, no Ray."""
    from pipeline.build import build_shard, load_build_manifest, plan_shards, shard_context

    manifest = load_build_manifest(options)
    ctx = shard_context(options, manifest)
    plan = plan_shards(manifest, options.seed, options.samples_per_shard, options.limit)
    specs = [s for v in plan.values() for s in v]
    cpu, wall = time.process_time(), time.perf_counter()
    for spec in specs:
        build_shard(spec, ctx)
    return time.process_time() - cpu, time.perf_counter() - wall


def machine_busy_seconds() -> float:
    """CPU-seconds all processes of the machine have used (Ray's workers are not our children),
    from /proc/stat; NaN where there is none."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    except OSError:
        return float("nan")
    user, nice, system, _idle, _iowait, irq, softirq = (int(v) for v in fields[:7])
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


def ray_build(options, cpus: int) -> tuple[float, float, dict[str, int], int]:
    """(wall s, machine CPU-s, bytes per kind, samples) of `pipeline build` on a Ray started
    beforehand with ``cpus`` CPUs (its start-up is not timed; its workers start cold)."""
    import ray

    from pipeline.build import build

    ray.init(num_cpus=cpus, include_dashboard=False, configure_logging=False,
             log_to_driver=False)  # fmt: skip
    try:
        busy, start = machine_busy_seconds(), time.perf_counter()
        summary = build(options, show_progress=False)
        seconds = time.perf_counter() - start
        busy = machine_busy_seconds() - busy
    finally:
        ray.shutdown()
    return seconds, busy, summary.bytes_by_kind, summary.samples


# --------------------------------------------------------------------------------- mediapipe


def mediapipe_rows(
    work: Path, repeat: int, builds: int
) -> tuple[list[list[str]], str, dict[str, int]]:
    """The pose model alone on the build's frames against a one-worker build of the same clips."""
    import numpy as np
    import ray

    from pipeline.build import BuildOptions, build
    from pipeline.pose import create_estimator
    from pipeline.video import decode_video

    clips = sorted(p for p in REAL.iterdir() if p.suffix in (".mp4", ".avi"))
    # The frames the build gives the model (source size where the stored ones are upscaled).
    native_cpu, videos = _cpu(lambda: [decode_video(str(c), 2, 256, True) for c in clips])
    stored_cpu, _ = _cpu(lambda: [decode_video(str(c), 2, 256, False) for c in clips])
    frames = sum(len(v.frame_indices) for v in videos)
    estimator = create_estimator("mediapipe")
    estimator.estimate(videos[0].pose_frames[:2])  # the model bundle and a first landmarker
    model = min(_cpu(lambda: [estimator.estimate(v.pose_frames) for v in videos])[0]
                for _ in range(repeat))  # fmt: skip
    # Set-up per video: a one-frame video through a fresh landmarker and a reused one.
    black = np.zeros((1, 256, 340, 3), np.uint8)
    fresh = create_estimator("mediapipe", reuse_landmarker=False)
    fresh.estimate(black)
    setup_fresh = np.median([_cpu(lambda: fresh.estimate(black))[0] for _ in range(10)])
    setup_reused = np.median([_cpu(lambda: estimator.estimate(black))[0] for _ in range(10)])

    csv_path = work / "real.csv"
    csv_path.write_text("path,label\n" + "".join(f"{p.name},{p.stem}\n" for p in clips))
    # One shard, as in a real build: the task decodes video i + 1 while the actor estimates i.
    options = BuildOptions(
        dataset="generic",
        videos=str(REAL),
        annotations=str(csv_path),
        pose="mediapipe",
        out=str(work / "mp1"),
        num_workers=1,
        samples_per_shard=len(clips),
        overwrite=True,
    )
    walls = []
    for _ in range(builds):
        ray.init(num_cpus=2, include_dashboard=False, configure_logging=False, log_to_driver=False)
        try:
            start = time.perf_counter()
            summary = build(options, show_progress=False)
            walls.append(time.perf_counter() - start)
        finally:
            ray.shutdown()
    build_wall = float(np.median(walls))
    spread = f" (runs: {', '.join(f'{model / w:.2f}' for w in walls)})" if builds > 1 else ""
    rows = [
        ["pose model alone, CPU time (tracking and rules included)", f"{frames / model:.1f}", "1.00"],
        [f"pipeline build --pose mediapipe, 1 worker, wall (Ray started), median of {builds}",
         f"{frames / build_wall:.1f}", f"{model / build_wall:.2f}{spread}"],
    ]  # fmt: skip
    note = (
        f"{frames} kept frames of {len(clips)} real clips. Landmarker set-up per video (CPU ms, "
        f"median of 10, one-frame video): fresh {1000 * setup_fresh:.0f}, reused (black-frame "
        f"reset) {1000 * setup_reused:.0f}. Decoding the source-size frames too where the stored "
        f"ones are upscaled: {native_cpu:.2f} s CPU for the five clips against {stored_cpu:.2f} s "
        f"without ({100 * (native_cpu - stored_cpu) / max(model, 1e-9):.1f} % of the model's "
        "time)."
    )
    return rows, note, summary.bytes_by_kind


# ------------------------------------------------------------------------------------ main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=96, help="synthetic videos for the build")
    parser.add_argument(
        "--samples-per-shard",
        type=int,
        default=12,
        help="shard size of the synthetic builds (enough shards for every worker)",
    )
    parser.add_argument("--frames", type=int, default=90, help="frames per synthetic video")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--ray-repeat",
        type=int,
        default=3,
        help="Ray and mediapipe builds per configuration; the median is reported",
    )
    parser.add_argument("--skip-mediapipe", action="store_true")
    parser.add_argument("--write", type=Path, help="markdown file to update (docs/benchmarks.md)")
    args = parser.parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")

    from report import cpu_model, load_note, markdown_table, write_section

    from pipeline.build import BuildOptions
    from pipeline.report import human_bytes
    from pipeline.synth import make_dataset

    load_before = os.getloadavg()[0]
    work = Path(tempfile.mkdtemp(prefix="bench-pipeline-"))
    try:
        raw = work / "raw"
        classes = 4
        make_dataset(raw, "kinetics", num_classes=classes,
                     videos_per_class=max(1, args.videos // classes), frames=args.frames,
                     width=340, height=256, seed=0)  # fmt: skip
        synth_videos = sorted((raw / "videos").glob("*.mp4"))
        n = len(synth_videos)
        real_videos = sorted(p for p in REAL.iterdir() if p.suffix in (".mp4", ".avi"))

        print("decode ...", flush=True)
        limit_name, time_limit = decode_limit()
        decode_rows = decode_table(real_videos + synth_videos[:1], args.repeat, time_limit)

        def precomputed(out: str, workers: int) -> BuildOptions:
            return BuildOptions(
                dataset="kinetics", videos=str(raw / "videos"),
                annotations=str(raw / "annotations.csv"), classes=str(raw / "classes.txt"),
                pose="precomputed", poses=str(raw / "skeletons"), out=out,
                num_workers=workers, samples_per_shard=args.samples_per_shard, overwrite=True,
            )  # fmt: skip

        print("warm-up (numba kernels, imports) ...", flush=True)
        one_process_seconds(precomputed(str(work / "warm"), 1))
        print("floor ...", flush=True)
        steps = floor_seconds(precomputed(str(work / "floor"), 1))
        floor = sum(steps.values())
        # Marginal cost per video: the same build on all videos and on a quarter of them
        # (--limit), so that fixed costs (worker start-up and imports, the first shard's numba
        # cache load, Ray's scheduling of the first task) cancel, as the issue measured.
        small = max(1, args.videos // 8)  # per split: train and val are half each

        def limited(options: BuildOptions) -> BuildOptions:
            options.limit = small
            return options

        print("one-process path ...", flush=True)
        one_cpu, one_wall = one_process_seconds(precomputed(str(work / "seq"), 1))
        one_small_cpu, one_small_wall = one_process_seconds(
            limited(precomputed(str(work / "seq_small"), 1))
        )
        n_small = 2 * small
        one_marginal = (one_wall - one_small_wall) / (n - n_small)
        ray_rows, sizes = [], {}
        marginal = {}
        for workers in (1, 2):
            # Repeated: one Ray build's wall time varies by a fifth from run to run here, and the
            # marginal cost is a difference of two of them; the median of the runs is reported.
            runs = []
            for attempt in range(args.ray_repeat):
                print(f"Ray build, {workers} worker(s), run {attempt + 1} ...", flush=True)
                seconds, busy, sizes, samples = ray_build(
                    precomputed(str(work / f"r{workers}"), workers), 2
                )
                small_seconds, _, _, small_samples = ray_build(
                    limited(precomputed(str(work / f"r{workers}s"), workers)), 2
                )
                runs.append((seconds, busy, (seconds - small_seconds) / (samples - small_samples)))
            seconds, busy, marginal[workers] = sorted(runs, key=lambda r: r[2])[len(runs) // 2]
            spread = f" ({1000 * min(r[2] for r in runs):.0f}-{1000 * max(r[2] for r in runs):.0f})"
            ray_rows.append([f"pipeline build, {workers} worker(s), wall (Ray started)",
                             f"{1000 * seconds / samples:.0f}",
                             f"{1000 * marginal[workers]:.0f}" + (spread if len(runs) > 1 else ""),
                             f"{busy / seconds:.2f}"])  # fmt: skip
        floor_rows = [[name, f"{1000 * sec / n:.1f}"] for name, sec in steps.items()]
        floor_rows.append(["**floor (sum)**", f"**{1000 * floor / n:.1f}**"])
        path_rows = [
            ["floor: the steps above, summed (CPU)", f"{1000 * floor / n:.0f}", "", ""],
            ["one process, build_shard, CPU", f"{1000 * one_cpu / n:.0f}",
             f"{1000 * (one_cpu - one_small_cpu) / (n - n_small):.0f}", ""],
            ["one process, build_shard, wall", f"{1000 * one_wall / n:.0f}",
             f"{1000 * one_marginal:.0f}", ""],
            *ray_rows,
        ]  # fmt: skip
        ratios = [
            ["one process (CPU) / floor, per video", f"{one_cpu / floor:.2f}", "<= 1.25"],
            ["Ray 1 worker / one process, marginal rate", f"{one_marginal / marginal[1]:.2f}",
             ">= 0.95"],
            ["Ray 2 workers / Ray 1 worker, marginal rate", f"{marginal[1] / marginal[2]:.2f}",
             ">= 1.7"],
        ]  # fmt: skip
        size_rows = [
            [f"synthetic 340x256, {args.frames} frames (precomputed)"]
            + [human_bytes(sizes.get(k, 0) / max(1, n)) for k in ("rgb", "pose", "raster")]
        ]
        mp_rows: list[list[str]] = []
        mp_note = ""
        if not args.skip_mediapipe:
            print("mediapipe ...", flush=True)
            mp_rows, mp_note, mp_sizes = mediapipe_rows(work, args.repeat, args.ray_repeat)
            size_rows.append(
                ["real footage, mean of 5 (mediapipe)"]
                + [
                    human_bytes(mp_sizes.get(k, 0) / max(1, len(real_videos)))
                    for k in ("rgb", "pose", "raster")
                ]  # fmt: skip
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    load_after = os.getloadavg()[0]

    command = "python benchmarks/pipeline.py " + " ".join(sys.argv[1:])
    parts = [
        "## Pipeline: build throughput and decode speed",
        f"`{command.strip()}` on {datetime.date.today()}, {cpu_model()}, {os.cpu_count()} "
        f"cores, Python {platform.python_version()}; {load_note(load_before, load_after, 2)}. "
        "Stride 2, short side 256, one thread per library. Decode: frames/s of the whole "
        "source video; ours keeps every 2nd frame, resized at decode time; the limit "
        f"({limit_name}, single thread) decodes every frame at source size into nothing.",
        markdown_table(
            [
                "video",
                "size",
                "frames",
                "ours (frames/s)",
                f"{limit_name} (frames/s)",
                "ours / limit",
            ],
            decode_rows,
        ),  # fmt: skip
        f"Precomputed-pose build of {n} synthetic 340x256 videos of {args.frames} frames, "
        f"shards of {args.samples_per_shard}. The floor: each necessary step timed alone, CPU "
        "ms per video:",
        markdown_table(["step", "ms per video"], floor_rows),
        "The build against it. ms per video over all videos, and marginal: (time for all "
        f"videos - time for {2 * max(1, args.videos // 8)} of them) / the difference, so that "
        "fixed costs cancel (worker start-up, imports). Ray is started before each timed build "
        "(its start-up apart), its workers cold; cores busy = the machine's CPU-seconds per "
        f"second. The Ray rows are the median of {args.ray_repeat} runs by marginal cost "
        "(range in brackets):",
        markdown_table(
            ["path", "ms per video", "marginal ms per video", "cores busy"], path_rows
        ),  # fmt: skip
        markdown_table(["ratio", "measured", "target (issue 15)"], ratios),
    ]
    if mp_rows:
        parts += [
            "mediapipe: the pose model alone on the frames the build gives it, against the build "
            "(kept frames per second):",
            markdown_table(["what", "frames/s", "ratio to the model"], mp_rows),
            mp_note,
        ]
    parts += ["Bytes per video:", markdown_table(["data", "rgb", "pose", "raster"], size_rows)]
    text = "\n\n".join(parts)
    print(text)
    if args.write:
        write_section(args.write, "pipeline", text)


if __name__ == "__main__":
    main()
