"""Builds a data engineer can trust: setup failures stop the build before anything is written and
name their root cause; failed videos are retried alone and the result equals a clean build; a
pose-only copy verifies; an empty split does not; a local build prints no Ray start-up noise."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from helpers import BIN, read_tar, run_cli
from test_build import SYNTH_SMALL, _annotations, _kinetics_build_args

from pipeline.build import EXIT_FAILED, EXIT_OK, EXIT_PARTIAL
from pipeline.shards import INDEX_SCHEMA, write_table

pytestmark = pytest.mark.slow

ANSI = "\x1b["


@pytest.fixture(scope="module")
def raw(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("trust_raw")
    run_cli("pipeline", "synth", "--dataset", "kinetics", "--out", out, *SYNTH_SMALL)
    return out


def _generic_csv(raw: Path, path: Path) -> Path:
    rows = _annotations(raw)
    stems = [f"{r['youtube_id']}_{int(r['time_start']):06d}_{int(r['time_end']):06d}" for r in rows]
    path.write_text(
        "path,label,split\n"
        + "".join(f"{s}.mp4,{r['label']},{r['split']}\n" for s, r in zip(stems, rows, strict=True))
    )
    return path


@pytest.mark.parametrize(
    ("pose", "options", "cause"),
    [
        # mmpose is not installed here: the actor's import fails.
        ("mmpose", [], "ImportError: pose backend 'mmpose' needs the 'mm"),
        # A misspelt backend option (num_poses is the real one).
        ("mediapipe", ["--pose-option", "num_pose=3"], "ValueError: unknown option(s) num_pose"),
    ],
)
def test_a_pose_backend_that_cannot_start_stops_the_build_before_anything_is_written(
    tmp_path, raw, pose, options, cause
):
    out = tmp_path / "out"
    started = time.monotonic()
    proc = run_cli(
        "pipeline", "build", "--dataset", "generic", "--videos", raw / "videos",
        "--annotations", _generic_csv(raw, tmp_path / "list.csv"), "--pose", pose, *options,
        "--out", out, "--num-workers", "1", "--quiet",
        check=False,
    )  # fmt: skip
    assert time.monotonic() - started < 60
    assert proc.returncode == 1, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), proc.stderr
    assert f"pose backend {pose!r} cannot start: {cause}" in lines[0]
    assert "Traceback" not in proc.stderr and ANSI not in proc.stderr
    assert "ActorDiedError" not in proc.stderr and "RayTaskError" not in proc.stderr
    assert not out.exists()  # nothing written, not even the output folder


def test_an_output_that_cannot_be_written_stops_the_build(tmp_path, raw):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    proc = run_cli(
        "pipeline", *_kinetics_build_args(raw, blocker / "out"), check=False
    )  # fmt: skip
    assert proc.returncode == 1
    assert "cannot be written" in proc.stderr and "Traceback" not in proc.stderr


def _break_inputs(raw: Path) -> list[str]:
    """Make two training videos fail (decode, pose) without changing the shard plan."""
    rows = [r for r in _annotations(raw) if r["split"] == "train"]
    stems = [f"{r['youtube_id']}_{int(r['time_start']):06d}_{int(r['time_end']):06d}" for r in rows]
    (raw / "videos" / f"{stems[0]}.mp4").write_bytes(b"")
    (raw / "skeletons" / f"{stems[1]}.json").write_text('{"data": [ {"frame_index": 1, ')
    return stems[:2]


def test_retry_errors_after_fixing_the_cause_equals_a_clean_build(tmp_path, raw):
    broken = tmp_path / "broken_raw"
    shutil.copytree(raw, broken)
    failed = _break_inputs(broken)
    out = tmp_path / "out"
    args = ["--samples-per-shard", "2"]
    first = run_cli("pipeline", *_kinetics_build_args(broken, out, *args), check=False)
    assert first.returncode in (EXIT_PARTIAL, EXIT_FAILED)
    errors = pq.read_table(out / "train" / "errors.parquet").to_pylist()
    assert sorted(e["key"] for e in errors) == sorted(failed)
    for e in errors:  # plain root causes: no wrapper, no colour codes
        assert ANSI not in e["reason"] and "RayTaskError" not in e["reason"]
    # A plain rerun resumes: the failed videos stay failed.
    again = run_cli("pipeline", *_kinetics_build_args(broken, out, *args), check=False)
    assert again.returncode == first.returncode and "already done" in again.stdout

    # Fix the cause, then retry: only the shards that hold the failed videos are rewritten.
    shutil.rmtree(broken)
    shutil.copytree(raw, broken)
    records = [json.loads(p.read_text()) for p in (out / "_build" / "train").glob("*.json")]
    holding = {r["shard"] for r in records if r["errors"]}
    before = {p.relative_to(out): p.stat().st_mtime_ns for p in out.rglob("*.tar")}
    retry = run_cli("pipeline", *_kinetics_build_args(broken, out, *args, "--retry-errors"))
    assert retry.returncode == EXIT_OK
    assert "videos retried (--retry-errors)" in retry.stdout
    changed = {
        p.relative_to(out)
        for p in out.rglob("*.tar")
        if p.stat().st_mtime_ns != before[p.relative_to(out)]
    }
    assert changed, "the shards of the failed videos were rewritten"
    assert {path.parent.name for path in changed} == {"train"}
    numbers = {int(path.name.split("-")[1][:6]) for path in changed}
    assert numbers == holding and len(changed) == 3 * len(holding)

    clean = tmp_path / "clean"
    run_cli("pipeline", *_kinetics_build_args(broken, clean, *args))  # same paths as out
    for split in ("train", "val"):
        names = sorted(p.name for p in (clean / split).glob("*.tar"))
        assert names == sorted(p.name for p in (out / split).glob("*.tar"))
        for name in names:  # same keys, same member bytes, same tar bytes
            assert read_tar(clean / split / name) == read_tar(out / split / name), name
            assert (clean / split / name).read_bytes() == (out / split / name).read_bytes()
        for table in ("index.parquet", "errors.parquet", "filtered.parquet"):
            assert (
                pq.read_table(clean / split / table).to_pylist()
                == pq.read_table(out / split / table).to_pylist()
            ), table
    run_cli("pipeline", "verify", out)


def test_verify_a_pose_only_copy_and_refuse_an_empty_split(tmp_path, raw):
    out = tmp_path / "out"
    run_cli("pipeline", *_kinetics_build_args(raw, out))
    pose_only = tmp_path / "pose_only"
    shutil.copytree(out, pose_only, ignore=shutil.ignore_patterns("rgb-*.tar", "raster-*.tar"))
    full = run_cli("pipeline", "verify", pose_only, check=False)
    assert full.returncode == 1 and "rgb-000000.tar: missing" in full.stdout
    ok = run_cli("pipeline", "verify", pose_only, "--only", "pose")
    assert ok.returncode == 0 and "OK" in ok.stdout

    empty = tmp_path / "empty"
    shutil.copytree(out, empty)
    for tar in (empty / "val").glob("*.tar"):
        tar.unlink()
    write_table(str(empty / "val" / "index.parquet"), [], INDEX_SCHEMA)
    proc = run_cli("pipeline", "verify", empty, "--split", "val", check=False)
    assert proc.returncode == 1 and "no samples" in proc.stdout


def test_a_local_build_prints_no_ray_start_up_noise(tmp_path, raw):
    env = {k: v for k, v in os.environ.items() if k != "RAY_AUTH_MODE"}
    env["PYTHONUNBUFFERED"] = "1"
    proc = subprocess.run(
        [str(BIN / "pipeline"), *map(str, _kinetics_build_args(raw, tmp_path / "out"))],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert proc.returncode == EXIT_OK, proc.stderr
    assert "Token authentication" not in proc.stderr
    assert "Started a local Ray instance" not in proc.stderr
    assert proc.stderr.strip() == "", proc.stderr


_WORKER_PRIORITY = """
import os

import ray

from pipeline.build import BuildOptions
from pipeline.build.runner import ShardRunner

os.nice(3)  # as under `nice -n 3 pipeline build ...`
runner = ShardRunner(BuildOptions(dataset="kinetics", videos="v", out="o", num_workers=1))
runner.start()
try:
    worker = ray.get(ray.remote(num_cpus=1)(lambda: os.nice(0)).remote())
    print(os.nice(0), worker)
finally:
    runner.close()
"""


@pytest.mark.parametrize(("ray_env", "expected"), [({}, 3), ({"RAY_worker_niceness": "15"}, 18)])
def test_a_local_build_runs_its_workers_at_the_priority_it_was_started_with(
    tmp_path, ray_env, expected
):
    # Ray's default starts workers 15 niceness steps below their driver; the local Ray of a
    # build keeps the driver's (a one-worker build then runs as fast as one process), unless
    # the user sets Ray's own variable.
    env = os.environ | {"RAY_AUTH_MODE": "disabled", "PYTHONUNBUFFERED": "1"} | ray_env
    proc = subprocess.run(
        [str(BIN / "python"), "-c", _WORKER_PRIORITY],
        capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    driver, worker = map(int, proc.stdout.split()[-2:])
    assert (driver, worker) == (3, expected)


@pytest.mark.parametrize("interval", [0.0, 0.5, 10.0])
def test_progress_ticks_batch_within_an_interval_and_lose_no_video(interval):
    from pipeline.build.runner import ProgressTicks

    now = [0.0]
    sent: list[tuple[float, int]] = []
    ticks = ProgressTicks(lambda n: sent.append((now[0], n)), interval, clock=lambda: now[0])
    for _ in range(37):  # a video every 0.13 s
        now[0] += 0.13
        ticks()
    ticks.flush()
    ticks.flush()  # nothing left: no empty update
    assert sum(n for _, n in sent) == 37
    assert all(n > 0 for _, n in sent)
    times = [t for t, _ in sent]
    # At most one update per interval (the final flush aside); one per video at interval 0.
    assert all(b - a >= interval - 1e-9 for a, b in zip(times[:-2], times[1:-1], strict=True))
    assert len(sent) == {0.0: 37, 0.5: 10, 10.0: 1}[interval]


def test_the_progress_bar_of_a_ray_build_counts_every_video(tmp_path, raw, monkeypatch):
    """The shard tasks send their counts in batches; the bar still ends at the total."""
    from pipeline.build import BuildOptions, build
    from pipeline.build import runner as runner_module

    closed: list[tuple[int, int]] = []
    make_bar = runner_module.progress_bar

    def recording_bar(*args, **kwargs):
        bar = make_bar(*args, **kwargs)
        close = bar.close

        def close_and_record() -> None:
            closed.append((bar.n, bar.total))
            close()

        bar.close = close_and_record
        return bar

    monkeypatch.setattr(runner_module, "progress_bar", recording_bar)
    # In this process, as every in-process Ray of the tests: Ray keeps the first auth mode it saw.
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    options = BuildOptions(
        dataset="kinetics", videos=str(raw / "videos"), annotations=str(raw / "annotations.csv"),
        classes=str(raw / "classes.txt"), pose="precomputed", poses=str(raw / "skeletons"),
        out=str(tmp_path / "out"), num_workers=2, samples_per_shard=2, short_side=64,
    )  # fmt: skip
    summary = build(options, show_progress=True)
    videos = len(_annotations(raw))
    assert summary.samples == videos
    assert closed and set(closed) == {(videos, videos)}


def test_reading_an_index_starts_no_arrow_thread_pool(tmp_path):
    """A short-lived command (``pipeline verify`` on an empty split) aborted at exit in about 1 of
    20 runs: "terminate called without an active exception", exit -6, as Arrow's reader pool was
    torn down (apache/arrow#34314). Index reads now start no Arrow thread; with pq.read_table
    (even at use_threads=False) the first read starts a pool thread and this test fails."""
    script = textwrap.dedent(
        f"""
        import os
        from pipeline.shards.schema import INDEX_SCHEMA, read_table, write_table
        url = {str(tmp_path / "index.parquet")!r}
        write_table(url, [], INDEX_SCHEMA)
        before = len(os.listdir("/proc/self/task"))
        read_table(url, INDEX_SCHEMA)
        print(before, len(os.listdir("/proc/self/task")))
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    before, after = map(int, proc.stdout.split())
    assert after == before, f"reading an index started {after - before} thread(s)"
