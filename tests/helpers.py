"""Shared test utilities: running the CLIs, reading built datasets, a loopback S3 server."""

from __future__ import annotations

import contextlib
import io
import json
import os
import socket
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
REAL = REPO / "tests" / "data" / "real"
BIN = Path(sys.executable).parent


def real_video(name: str) -> Path:
    """A real sample video from tests/data/real (see its README and NOTICE)."""
    path = REAL / name
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing from the checkout (tests/data/real)")
    return path


def run_cli(
    tool: str, *args: str, env: dict[str, str] | None = None, timeout: float = 600, check=True
) -> subprocess.CompletedProcess:
    """Run ``pipeline`` or ``train`` as a user would, in a fresh process."""
    full_env = os.environ.copy() | {"PYTHONUNBUFFERED": "1", "RAY_AUTH_MODE": "disabled"}
    full_env.pop("RAY_ADDRESS", None)  # a build uses it as --ray-address; tests start their own
    if env:
        full_env |= env
    proc = subprocess.run(
        [str(BIN / tool), *map(str, args)],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{tool} {' '.join(map(str, args))} exited {proc.returncode}\n"
            f"stdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-5000:]}"
        )
    return proc


def read_tar(path: str | Path) -> list[tuple[str, bytes]]:
    with tarfile.open(path) as tar:
        return [(m.name, tar.extractfile(m).read()) for m in tar.getmembers() if m.isfile()]


def samples_of(split_dir: Path, kind: str) -> dict[str, dict[str, bytes]]:
    """key -> {extension: bytes} over every shard of a kind in a split folder."""
    out: dict[str, dict[str, bytes]] = {}
    for tar in sorted(split_dir.glob(f"{kind}-*.tar")):
        for name, data in read_tar(tar):
            key, _, ext = name.partition(".")
            out.setdefault(key, {})[ext] = data
    return out


def tar_groups(path: str | Path) -> list[tuple[str, dict[str, bytes]]]:
    """(key, {extension: bytes}) of one tar, in member order (tarfile: independent of the
    project's reader)."""
    groups: list[tuple[str, dict[str, bytes]]] = []
    for name, data in read_tar(path):
        key, _, ext = name.partition(".")
        if not groups or groups[-1][0] != key:
            groups.append((key, {}))
        groups[-1][1][ext] = data
    return groups


def write_tar_groups(path: str | Path, groups: list[tuple[str, dict[str, bytes]]]) -> None:
    """Write (key, members) groups as a plain tar, members in the given order."""
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        for key, members in groups:
            for ext, data in members.items():
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))


def load_npy(data: bytes) -> np.ndarray:
    return np.load(io.BytesIO(data), allow_pickle=False)


def dataset_json(root: Path) -> dict:
    return json.loads((root / "dataset.json").read_text())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def s3_server(bucket: str = "data") -> Iterator[dict[str, str]]:
    """A real S3 server on loopback (moto in server mode) and the env that points at it."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    env = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "FSSPEC_S3_ENDPOINT_URL": f"http://127.0.0.1:{port}",
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        import requests

        # moto keeps its buckets in process-wide state that outlives a server: start empty.
        requests.post(f"{env['AWS_ENDPOINT_URL']}/moto-api/reset", timeout=30).raise_for_status()
        fs = s3fs_client()
        fs.mkdir(bucket)
        yield env
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        server.stop()


def s3fs_client():
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()
    return s3fs.S3FileSystem(client_kwargs={"endpoint_url": os.environ["AWS_ENDPOINT_URL"]})
