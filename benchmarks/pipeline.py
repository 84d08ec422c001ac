"""Throughput of `pipeline build`, and decode speed against the decode limit.

    python benchmarks/pipeline.py [--videos 24] [--frames 90] [--write docs/benchmarks.md]

Measures, on this machine:
- decode: our decoder (decord at the build stride with decode-time resizing; PyAV fallback)
  against `ffmpeg -threads 1 -f null` on the same files (the decode limit, a peer that does no
  resizing, no colour conversion and no copy to Python);
- build with precomputed poses (a `pipeline synth` Kinetics-style set at 340x256): the same
  per-video work run sequentially in one process without Ray (the reference), and the Ray build
  at 1 and 2 workers;
- build with mediapipe pose (the real footage in tests/data/real) at 1 and 2 workers;
- bytes per video of rgb, pose and raster shards.
Every build includes Ray start-up (about 4 s here); videos/s is videos / wall time.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# This script is named like the package it measures: the checkout's root goes first on the
# import path and this folder last, so `pipeline` is the package (an editable install's finder
# runs after the path search, which would otherwise find this file) and `report` the benchmarks'
# helper module.
HERE = Path(__file__).resolve().parent
sys.path[:] = [str(REPO)] + [p for p in sys.path if Path(p or ".").resolve() != HERE] + [str(HERE)]
REAL = REPO / "tests" / "data" / "real"


def time_ffmpeg(path: Path) -> float:
    start = time.perf_counter()
    subprocess.run(
        ["ffmpeg", "-v", "error", "-threads", "1", "-i", str(path), "-f", "null", "-"],
        check=True,
    )
    return time.perf_counter() - start


def decode_table(videos: list[Path], repeat: int) -> list[list[str]]:
    from pipeline.video import decode_video, probe

    rows = []
    for path in videos:
        n, _, h, w = probe(str(path))
        ours = min(_timed(lambda p=path: decode_video(str(p), 2, 256)) for _ in range(repeat))
        limit = (
            min(time_ffmpeg(path) for _ in range(repeat))
            if shutil.which("ffmpeg")
            else float("nan")
        )
        rows.append(
            [
                path.name,
                f"{w}x{h}",
                str(n),
                f"{n / ours:.0f}",
                f"{n / limit:.0f}",
                f"{limit / ours:.2f}",
            ]
        )
    return rows


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def sequential_reference(options) -> float:
    """The build's per-video work, one process, no Ray: the cost the Ray build distributes.

    The public ``build_shard`` over the build's own plan and context, shard after shard.
    """
    from pipeline.build import build_shard, load_build_manifest, plan_shards, shard_context

    manifest = load_build_manifest(options)
    ctx = shard_context(options, manifest)
    plan = plan_shards(manifest, options.seed, options.samples_per_shard, options.limit)
    start = time.perf_counter()
    for specs in plan.values():
        for spec in specs:
            build_shard(spec, ctx)
    return time.perf_counter() - start


def machine_busy_seconds() -> float:
    """CPU-seconds all processes of the machine have used (Ray's workers are not our children),
    from /proc/stat; NaN where there is none."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    except OSError:
        return float("nan")
    user, nice, system, _idle, _iowait, irq, softirq = (int(v) for v in fields[:7])
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


def run_build(options) -> tuple[float, float, dict[str, int], int]:
    from pipeline.build import build

    busy, start = machine_busy_seconds(), time.perf_counter()
    summary = build(options, show_progress=False)
    seconds = time.perf_counter() - start
    return seconds, machine_busy_seconds() - busy, summary.bytes_by_kind, summary.samples


def build_row(pose: str, how: str, videos: int, seconds: float, busy: float) -> list[str]:
    return [pose, how, str(videos), f"{seconds:.1f}", f"{videos / seconds:.2f}",
            f"{busy / seconds:.2f}"]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=96, help="synthetic videos for the build")
    parser.add_argument(
        "--samples-per-shard",
        type=int,
        default=6,
        help="shard size of the synthetic builds (enough shards, so tasks for every worker)",
    )
    parser.add_argument("--frames", type=int, default=90, help="frames per synthetic video")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--skip-mediapipe", action="store_true")
    parser.add_argument("--write", type=Path, help="markdown file to update (docs/benchmarks.md)")
    args = parser.parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")

    from report import cpu_model, markdown_table, write_section

    from pipeline.build import BuildOptions
    from pipeline.report import human_bytes
    from pipeline.synth import make_dataset

    work = Path(tempfile.mkdtemp(prefix="bench-pipeline-"))
    try:
        raw = work / "raw"
        classes = 4
        make_dataset(
            raw,
            "kinetics",
            num_classes=classes,
            videos_per_class=max(1, args.videos // classes),
            frames=args.frames,
            width=340,
            height=256,
            seed=0,
        )
        synth_videos = sorted((raw / "videos").glob("*.mp4"))
        n_synth = len(synth_videos)
        real_videos = sorted(p for p in REAL.iterdir() if p.suffix in (".mp4", ".avi"))

        print("decode ...", flush=True)
        decode_rows = decode_table(real_videos + synth_videos[:1], args.repeat)

        def precomputed(out: str, workers: int) -> BuildOptions:
            return BuildOptions(
                dataset="kinetics",
                videos=str(raw / "videos"),
                annotations=str(raw / "annotations.csv"),
                classes=str(raw / "classes.txt"),
                pose="precomputed",
                poses=str(raw / "skeletons"),
                out=out,
                num_workers=workers,
                samples_per_shard=args.samples_per_shard,
                overwrite=True,
            )

        build_rows = []
        print("sequential reference ...", flush=True)
        busy = machine_busy_seconds()
        seconds = sequential_reference(precomputed(str(work / "seq"), 1))
        busy = machine_busy_seconds() - busy
        build_rows.append(
            build_row("precomputed", "reference: 1 process, no Ray", n_synth, seconds, busy)
        )
        sizes = {}
        for workers in (1, 2):
            print(f"precomputed build, {workers} worker(s) ...", flush=True)
            seconds, busy, sizes, samples = run_build(
                precomputed(str(work / f"pre{workers}"), workers)
            )
            build_rows.append(
                build_row("precomputed", f"pipeline build, {workers} worker(s)", samples, seconds,
                          busy)
            )  # fmt: skip
        size_rows = [
            [f"synthetic 340x256, {args.frames} frames (precomputed)"]
            + [human_bytes(sizes.get(k, 0) / max(1, n_synth)) for k in ("rgb", "pose", "raster")]
        ]
        if not args.skip_mediapipe:
            csv_path = work / "real.csv"
            csv_path.write_text(
                "path,label\n" + "".join(f"{p.name},{p.stem}\n" for p in real_videos)
            )
            for workers in (1, 2):
                print(f"mediapipe build, {workers} worker(s) ...", flush=True)
                seconds, busy, sizes, samples = run_build(
                    BuildOptions(
                        dataset="generic",
                        videos=str(REAL),
                        annotations=str(csv_path),
                        pose="mediapipe",
                        out=str(work / f"mp{workers}"),
                        num_workers=workers,
                        samples_per_shard=1,  # 5 videos: one shard each, work for 2 workers
                        overwrite=True,
                    )
                )
                build_rows.append(
                    build_row("mediapipe", f"pipeline build, {workers} worker(s)", samples,
                              seconds, busy)
                )  # fmt: skip
            size_rows.append(
                ["real footage, mean of 5 (mediapipe)"]
                + [
                    human_bytes(sizes.get(k, 0) / max(1, len(real_videos)))
                    for k in ("rgb", "pose", "raster")
                ]
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)

    command = "python benchmarks/pipeline.py " + " ".join(sys.argv[1:])
    text = "\n\n".join(
        [
            "## Pipeline: build throughput and decode speed",
            f"`{command.strip()}` on {datetime.date.today()}, {cpu_model()}, "
            f"{os.cpu_count()} cores, Python {platform.python_version()}. Stride 2, short side 256. "
            "Decode: frames/s of the whole source video; ours keeps every 2nd frame, resized at "
            "decode time; the ffmpeg limit decodes every frame at source size into nothing.",
            markdown_table(
                [
                    "video",
                    "size",
                    "frames",
                    "ours (frames/s)",
                    "ffmpeg -f null (frames/s)",
                    "ours / limit",
                ],
                decode_rows,
            ),
            f"Builds (wall time includes Ray start-up, about 4 s; synthetic builds in shards of "
            f"{args.samples_per_shard} videos, the real footage one video per shard, so that "
            "every worker has tasks):",
            markdown_table(
                ["pose", "how", "videos", "seconds", "videos/s", "cores busy (machine CPU-s / s)"],
                build_rows,
            ),
            "Bytes per video:",
            markdown_table(["data", "rgb", "pose", "raster"], size_rows),
        ]
    )
    print(text)
    if args.write:
        write_section(args.write, "pipeline", text)


if __name__ == "__main__":
    main()
