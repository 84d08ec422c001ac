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
