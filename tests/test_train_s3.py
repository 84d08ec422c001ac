"""Shards streamed from object storage: a real S3 server on loopback (moto in server mode)."""

from __future__ import annotations

import json
import os

from helpers import s3_server, s3fs_client
from train_support import TINY, make_dataset, one_torch_thread, train_cli  # noqa: F401


def test_fit_and_eval_stream_shards_from_s3(tmp_path):
    local = tmp_path / "ds"
    make_dataset(local, {"train": 6, "val": 4}, samples_per_shard=2)
    with s3_server("data"):
        fs = s3fs_client()
        for path in sorted(local.rglob("*")):
            if path.is_file():
                fs.put_file(str(path), f"data/ds/{path.relative_to(local).as_posix()}")
        url = "s3://data/ds"
        out, cache = tmp_path / "run", tmp_path / "cache"
        train_cli(
            "fit", "--stage", "pose", "--data", url, "--out", out, *TINY,
            "--epochs", "1", "--workers", "1", "--cache-dir", cache,
        )  # fmt: skip
        cached = sorted(cache.rglob("*.tar"))
        # The pose stage fetched pose shards only, whole (byte for byte), one folder per split.
        assert cached and all(p.name.startswith("pose-") for p in cached)
        assert len({p.parent for p in cached}) == 2  # train and val
        for p in cached:
            assert p.read_bytes() in ((local / s / p.name).read_bytes() for s in ("train", "val"))
        assert not list(cache.rglob(".tmp-*"))
        # Evaluation straight from the bucket, no cache, a split URL as --data.
        report = tmp_path / "report.json"
        train_cli(
            "eval", "--checkpoint", out / "last.pt", "--data", f"{url}/val", "--out", report,
            "--clips", "2", "--workers", "0",
        )  # fmt: skip
        result = json.loads(report.read_text())
        assert result["num_videos"] == 4 and result["corrupt"] == 0
        assert os.path.exists(out / "best.pt")


def test_unreachable_object_storage_is_one_line(tmp_path):
    import socket

    from helpers import run_cli

    with socket.socket() as s:  # a port that was free a moment ago: no S3 server there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    for tool, *args in (
        ("pipeline", "inspect", "s3://data/ds"),
        ("train", "fit", "--stage", "pose", "--data", "s3://data/ds", "--out", tmp_path / "r"),
    ):
        proc = run_cli(tool, *args, env=env, check=False, timeout=180)
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
        assert lines[-1].startswith("Error: object storage not reachable (EndpointConnectionError")
    assert not (tmp_path / "r").exists()  # the failed run left no empty --out folder


def test_a_missing_remote_shard_is_skipped_with_or_without_a_cache(tmp_path):
    import warnings

    from train import data as D
    from train.clips import ClipSpec

    local = tmp_path / "ds"
    make_dataset(local, {"train": 2, "val": 6}, samples_per_shard=2)
    (local / "val" / "rgb-000001.tar").unlink()
    with s3_server("data"):
        fs = s3fs_client()
        for path in sorted(local.rglob("*")):
            if path.is_file():
                fs.put_file(str(path), f"data/ds/{path.relative_to(local).as_posix()}")
        split = D.open_split("s3://data/ds", "val")
        recipe = D.ClipRecipe(
            rgb=ClipSpec(2, 4), pose=ClipSpec(4, 2), input_size=16,
            frame_stride=split.info.frame_stride, layout=split.info.layout,
            raster=split.info.raster, pose_input="keypoints", train=False, num_clips=1,
        )  # fmt: skip
        for cache in (None, str(tmp_path / "cache")):
            keys, errors = [], []
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                # With a cache the shard is fetched before webdataset opens it: that fetch
                # failing must be skipped like a failed read, not end the epoch.
                for batch in D.make_loader(D.ClipDataset(split, recipe, 4, cache_dir=cache), 0):
                    keys += batch["key"]
                    errors += batch["errors"]
            assert len(keys) == 4, cache
            assert errors == [
                "missing shard s3://data/ds/val/rgb-000001.tar+pose-000001.tar: "
                "FileNotFoundError: rgb-000001.tar not found"
            ], cache
