"""Cluster scale: pose actors hold the GPU, shard tasks never do; docs and configs match the code.

The Ray tests start a real local Ray that declares one GPU (``ray.init(num_gpus=1)``). Ray then
hands GPU id 0 (and ``CUDA_VISIBLE_DEVICES=0``) to whoever asks for a GPU, which is all a pose
actor ever sees of one. The builds are the real ``pipeline.build.build`` (its ``run_shards`` creates
the actors and wraps ``build_shard`` itself); a spy on ``ray.remote`` only wraps the shard task
so that it records, from inside the task, the GPUs Ray gave it. The mmpose actor runs the real
backend with a stand-in model (mmcv does not install here; see tests/test_pose_mmpose.py): a
detector that finds nobody and records, from inside the actor, the GPU it holds.

The docs tests read every ``pipeline`` / ``train`` / ``torchrun`` command in docs/cluster.md and
the example configs and parse it with the real click commands (and torchrun's own parser), so
the docs cannot drift from the CLIs; and they check the Dockerfiles' install lines against the
README's.
"""

from __future__ import annotations

import contextlib
import importlib.util
import inspect
import json
import os
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import pytest
import ray
import yaml
from helpers import REPO, run_cli

from pipeline.build import BuildOptions, build, plan_shards, pose_actor_options, shard_task_options
from pipeline.build import runner as runner_module
from pipeline.cli import _parse_pose_options
from pipeline.cli import main as pipeline_cli
from pipeline.datasets import AdapterOptions, load_manifest
from pipeline.pose import resources
from pipeline.pose.mediapipe_backend import MediapipePoseEstimator
from pipeline.pose.mmpose_backend import MMPoseEstimator
from train.cli import main as train_cli

DOCS = REPO / "docs" / "cluster.md"
DOCKER = REPO / "docker"
SHARD_TASK = {"num_cpus": 1, "num_gpus": 0, "max_calls": 16}
# The Ray tests carry a timeout: a task or actor waiting for a GPU it cannot get hangs, not fails.

# --------------------------------------------------------------------------- Ray: resources


@contextlib.contextmanager
def _local_ray(num_gpus: int) -> Iterator[str]:
    """A real local Ray with 2 CPUs and ``num_gpus`` declared GPUs; yields its address."""
    if ray.is_initialized():  # left by another test module
        ray.shutdown()
    previous = os.environ.get("RAY_AUTH_MODE")
    os.environ["RAY_AUTH_MODE"] = "disabled"  # as tests/helpers.run_cli: no token files
    try:
        ray.init(
            num_cpus=2,
            num_gpus=num_gpus,
            include_dashboard=False,
            configure_logging=False,
            log_to_driver=False,
        )
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()
        if previous is None:
            os.environ.pop("RAY_AUTH_MODE", None)
        else:
            os.environ["RAY_AUTH_MODE"] = previous


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_mmpose_actor_asks_for_a_cpu_when_the_cluster_has_no_gpu() -> None:
    # Runs before the GPU cluster below exists (tests run in file order).
    with _local_ray(num_gpus=0):
        assert ray.cluster_resources().get("GPU", 0) == 0
        assert resources("mmpose") == {"num_cpus": 1}
        assert pose_actor_options("mmpose") == {"num_cpus": 1}
        assert pose_actor_options("mediapipe") == {"num_cpus": 1}


@pytest.fixture(scope="module")
def gpu_cluster() -> Iterator[str]:
    with _local_ray(num_gpus=1) as address:
        yield address


@pytest.fixture(scope="module")
def synth_raw(tmp_path_factory) -> Path:
    raw = tmp_path_factory.mktemp("cluster_raw")
    run_cli(
        "pipeline", "synth", "--dataset", "kinetics", "--out", raw, "--num-classes", "2",
        "--videos-per-class", "2", "--frames", "12", "--size", "64x48", "--seed", "1",
    )  # fmt: skip
    return raw


def _probe() -> Any:
    """A function for a Ray task that reports the GPUs Ray gave it (self-contained: it is
    pickled by value into the worker)."""

    def probe() -> dict[str, Any]:
        import os

        import ray

        return {
            "gpu_ids": [str(g) for g in ray.get_gpu_ids()],
            "assigned": ray.get_runtime_context().get_assigned_resources(),
            "cuda_visible": os.environ.get("CUDA_VISIBLE_DEVICES"),
        }

    return probe


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_the_setup_probe_knows_a_real_ray_cluster(gpu_cluster) -> None:
    # The GCS answers the probe's HTTP/2 opening as gRPC; a build may connect.
    runner_module.check_cluster_reachable(gpu_cluster, timeout=10)


def test_resources_on_a_cluster_with_a_gpu(gpu_cluster) -> None:
    # torch sees no CUDA on this machine, so a GPU request can only come from the Ray cluster.
    assert resources("mmpose") == {"num_gpus": 1}
    assert pose_actor_options("mmpose") == {"num_gpus": 1}
    assert pose_actor_options("mediapipe") == {"num_cpus": 1}
    assert shard_task_options(BuildOptions(dataset="kinetics", videos="v", out="o")) == SHARD_TASK

    # The probe tells a task that holds the GPU from one that does not.
    probe = _probe()
    holder = ray.get(ray.remote(num_cpus=1, num_gpus=1)(probe).remote())
    assert holder["gpu_ids"] == ["0"] and holder["assigned"].get("GPU") == 1.0
    assert holder["cuda_visible"] == "0"
    options = shard_task_options(BuildOptions(dataset="kinetics", videos="v", out="o"))
    shard_like = ray.get(ray.remote(**options)(probe).remote())
    assert shard_like["gpu_ids"] == [] and "GPU" not in shard_like["assigned"]
    assert shard_like["assigned"].get("CPU") == 1.0


def _recording_shard_task(func: Any, probe_dir: str) -> Any:
    """The shard task that first records, inside the Ray task, what Ray gave it."""

    def shard_task(spec, ctx, pose_actor=None, progress=None, retry=False):
        import json
        import os

        import ray

        info = {
            "gpu_ids": [str(g) for g in ray.get_gpu_ids()],
            "assigned": ray.get_runtime_context().get_assigned_resources(),
        }
        record = func(spec, ctx, pose_actor, progress, retry)
        # After the shard: by then a pose actor, if any, has served it (and holds its GPU).
        info["free_gpus"] = ray.available_resources().get("GPU", 0.0)
        info["samples"] = record["samples"]
        name = f"task-{spec.split}-{spec.number:06d}.json"
        with open(os.path.join(probe_dir, name), "w") as f:
            json.dump(info, f)
        return record

    return shard_task


def _spy_on_shard_task(monkeypatch, probe_dir: Path) -> list[dict[str, Any]]:
    """Patch ``ray.remote`` so that the options ``run_shards`` gives the shard task are kept and the
    task records its GPUs; everything else (actors, the progress counter) passes through."""
    real_remote = ray.remote
    seen: list[dict[str, Any]] = []

    def spy(*args: Any, **kwargs: Any) -> Any:
        if args:
            return real_remote(*args, **kwargs)
        decorate = real_remote(**kwargs)

        def apply(target: Any) -> Any:
            if target is runner_module._remote_shard:
                seen.append(dict(kwargs))
                return decorate(_recording_shard_task(target, str(probe_dir)))
            return decorate(target)

        return apply

    monkeypatch.setattr(ray, "remote", spy)
    return seen


def _standin_mmpose_options(probe_dir: Path) -> dict[str, Any]:
    """mmpose backend options with a stand-in model: a detector that finds nobody and writes,
    from inside the pose actor, which GPU the actor holds."""
    probe_dir = str(probe_dir)

    def inference_detector(model, imgs):
        import json
        import os
        import types

        import numpy as np
        import ray

        info = {
            "gpu_ids": [str(g) for g in ray.get_gpu_ids()],
            "assigned": ray.get_runtime_context().get_assigned_resources(),
            "cuda_visible": os.environ.get("CUDA_VISIBLE_DEVICES"),
        }
        with open(os.path.join(probe_dir, f"actor-{os.getpid()}.json"), "w") as f:
            json.dump(info, f)
        empty = types.SimpleNamespace(
            bboxes=np.zeros((0, 4), np.float32),
            scores=np.zeros(0, np.float32),
            labels=np.zeros(0, np.int64),
        )
        return [types.SimpleNamespace(pred_instances=empty) for _ in imgs]

    def inference_topdown(model, img, bboxes=None, bbox_format="xyxy"):
        raise AssertionError("the stand-in detector finds nobody: no pose model call")

    return {
        "detector": "stand-in detector",
        "pose_model": "stand-in pose model",
        "inference_detector": inference_detector,
        "inference_topdown": inference_topdown,
        "device": "cpu",
    }


def _build_options(raw: Path, out: Path, address: str, **extra: Any) -> BuildOptions:
    return BuildOptions(
        dataset="kinetics",
        videos=str(raw / "videos"),
        annotations=str(raw / "annotations.csv"),
        classes=str(raw / "classes.txt"),
        out=str(out),
        ray_address=address,  # the test's Ray: run_shards neither starts nor stops one
        num_workers=1,
        samples_per_shard=1,
        short_side=32,
        **extra,
    )


def _wait_for_free_gpu(timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while ray.available_resources().get("GPU", 0.0) < 1.0:
        assert time.monotonic() < deadline, "the GPU was not released"
        time.sleep(0.2)


def _planned_shards(options: BuildOptions) -> set[str]:
    manifest = load_manifest(
        "kinetics",
        AdapterOptions(
            videos=options.videos, annotations=options.annotations, classes_file=options.classes
        ),
    )
    plan = plan_shards(manifest, options.seed, options.samples_per_shard, options.limit)
    return {f"{split}-{spec.number:06d}" for split, specs in plan.items() for spec in specs}


def _task_probes(probe_dir: Path) -> dict[str, dict[str, Any]]:
    return {
        p.stem.removeprefix("task-"): json.loads(p.read_text())
        for p in probe_dir.glob("task-*.json")
    }


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_mmpose_build_gives_the_gpu_to_the_pose_actor_and_none_to_shard_tasks(
    gpu_cluster, synth_raw, tmp_path, monkeypatch
) -> None:
    probes = tmp_path / "probes"
    probes.mkdir()
    options = _build_options(
        synth_raw,
        tmp_path / "out",
        gpu_cluster,
        pose="mmpose",
        pose_options=_standin_mmpose_options(probes),
    )
    seen = _spy_on_shard_task(monkeypatch, probes)
    summary = build(options, show_progress=False)

    assert seen == [SHARD_TASK]  # the options run_shards gave the shard task
    assert summary.samples == summary.videos == 4 and not summary.errors_by_stage
    # The pose actor, created by run_shards as pose_actor_options("mmpose") says, holds the GPU.
    actors = [json.loads(p.read_text()) for p in probes.glob("actor-*.json")]
    assert len(actors) == 1  # --num-workers 1: one actor served every video
    assert actors[0]["gpu_ids"] == ["0"] and actors[0]["assigned"].get("GPU") == 1.0
    assert actors[0]["cuda_visible"] == "0"
    # Every shard task ran, and none held a GPU; the actor had the only one meanwhile.
    tasks = _task_probes(probes)
    assert set(tasks) == _planned_shards(options) and len(tasks) == 4
    assert sum(t["samples"] for t in tasks.values()) == 4
    for task in tasks.values():
        assert task["gpu_ids"] == [] and "GPU" not in task["assigned"], task
        assert task["assigned"].get("CPU") == 1.0
        assert task["free_gpus"] == 0.0


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_shard_tasks_hold_no_gpu_even_when_one_is_free(
    gpu_cluster, synth_raw, tmp_path, monkeypatch
) -> None:
    probes = tmp_path / "probes"
    probes.mkdir()
    _wait_for_free_gpu()  # a previous test's pose actor may still be shutting down
    options = _build_options(
        synth_raw,
        tmp_path / "out",
        gpu_cluster,
        pose="precomputed",
        poses=str(synth_raw / "skeletons"),
    )
    seen = _spy_on_shard_task(monkeypatch, probes)
    summary = build(options, show_progress=False)

    assert seen == [SHARD_TASK]
    assert summary.samples == 4 and not summary.errors_by_stage
    tasks = _task_probes(probes)
    assert set(tasks) == _planned_shards(options)
    for task in tasks.values():
        assert task["free_gpus"] == 1.0  # nothing holds the GPU: a task could have had it
        assert task["gpu_ids"] == [] and "GPU" not in task["assigned"], task


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_wait_for_resources_script(gpu_cluster) -> None:
    script = DOCKER / "wait_for_resources.py"
    env = os.environ | {"RAY_AUTH_MODE": "disabled"}
    common = [sys.executable, str(script), "--address", gpu_cluster, "--interval", "0.2"]
    ready = subprocess.run(
        [*common, "--gpus", "1", "--cpus", "2", "--timeout", "60"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert ready.returncode == 0, ready.stderr[-2000:]
    assert "cluster ready: 1 GPU, 2 CPU" in ready.stdout
    short = subprocess.run(
        [*common, "--gpus", "2", "--timeout", "1"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert short.returncode == 1
    assert "timed out after 1 s: the cluster offers 1 GPU" in short.stderr


# --------------------------------------------------------------------------- docs and configs

SEPARATORS = {"&&", "||", ";", "|", "&"}


def _tokens(line: str) -> list[str]:
    lex = shlex.shlex(line, posix=True, punctuation_chars=True)
    lex.whitespace_split = True
    lex.commenters = "#"
    return list(lex)


def _commands(text: str) -> list[tuple[str, list[str]]]:
    """(tool, arguments) of every pipeline / train / torchrun / wait_for_resources.py command in
    shell text; backslash-continued lines are joined, comments dropped, a quoted argument that
    holds a command is searched too."""
    found: list[tuple[str, list[str]]] = []
    for line in text.replace("\\\n", " ").splitlines():
        segment: list[str] = []
        for token in [*_tokens(line), ";"]:
            if token not in SEPARATORS:
                segment.append(token)
                continue
            while segment and segment[0] in ("exec", "nohup", "time"):
                segment = segment[1:]
            if segment:
                found += _tool(segment)
                found += [c for t in segment[1:] if " " in t for c in _commands(t)]
            segment = []
    return found


def _tool(segment: list[str]) -> list[tuple[str, list[str]]]:
    head, rest = segment[0], segment[1:]
    if head in ("pipeline", "train", "torchrun"):
        return [(head, rest)]
    if head in ("python", "python3") and rest[:2] == ["-m", "train"]:
        return [("train", rest[2:])]
    if head in ("python", "python3") and rest and rest[0].endswith("wait_for_resources.py"):
        return [("wait", rest[1:])]
    return []


def _wait_parser() -> Any:
    spec = importlib.util.spec_from_file_location(
        "wait_for_resources", DOCKER / "wait_for_resources.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.build_parser()


def _check_click(group: click.Group, tool: str, args: list[str], where: str) -> click.Context:
    name, *rest = args
    command = group.commands.get(name)
    assert command is not None, f"{where}: `{tool} {name}` is not a command"
    try:
        return command.make_context(f"{tool} {name}", list(rest))
    except click.UsageError as exc:
        message = exc.format_message()
        raise AssertionError(f"{where}: `{tool} {' '.join(args)}`: {message}") from None


def _check_command(tool: str, args: list[str], where: str) -> list[tuple[str, click.Context]]:
    """Parse one command as its CLI would; returns the click contexts of pipeline/train ones."""
    if tool == "pipeline":
        ctx = _check_click(pipeline_cli, "pipeline", args, where)
        if args[0] == "build":
            _check_pose_options(ctx, where)
        return [(f"pipeline {args[0]}", ctx)]
    if tool == "train":
        return [(f"train {args[0]}", _check_click(train_cli, "train", args, where))]
    if tool == "torchrun":
        from torch.distributed.run import get_args_parser

        try:
            ns = get_args_parser().parse_args(args)
        except SystemExit:
            raise AssertionError(f"{where}: torchrun rejects {args}") from None
        assert ns.module and ns.training_script == "train", f"{where}: not `-m train`"
        return _check_command("train", list(ns.training_script_args), where)
    try:
        _wait_parser().parse_args(args)
    except SystemExit:
        raise AssertionError(f"{where}: wait_for_resources.py rejects {args}") from None
    return [("wait", None)]


def _check_pose_options(ctx: click.Context, where: str) -> None:
    keys = set(_parse_pose_options(ctx.params["pose_option"]))
    backend = {"mmpose": MMPoseEstimator, "mediapipe": MediapipePoseEstimator}.get(
        ctx.params["pose"]
    )
    if backend is None:
        assert not keys, f"{where}: --pose-option without a pose model"
        return
    known = set(inspect.signature(backend.__init__).parameters) - {"self"}
    assert keys <= known, f"{where}: unknown {ctx.params['pose']} options {keys - known}"


def _doc_sources() -> dict[str, str]:
    blocks = re.findall(r"```(?:bash|sh|shell)\n(.*?)```", DOCS.read_text(), flags=re.S)
    rayjob = yaml.safe_load((DOCKER / "kuberay-rayjob.yaml").read_text())
    return {
        "docs/cluster.md": "\n".join(blocks),
        "docker/kuberay-rayjob.yaml": rayjob["spec"]["entrypoint"],
        "docker/torchrun-multinode.sh": (DOCKER / "torchrun-multinode.sh").read_text(),
    }


def _parsed() -> dict[str, list[tuple[str, click.Context | None]]]:
    return {
        where: [p for tool, args in _commands(text) for p in _check_command(tool, args, where)]
        for where, text in _doc_sources().items()
    }


def test_cluster_doc_and_config_commands_parse_with_the_real_clis() -> None:
    parsed = _parsed()
    names = {where: [name for name, _ in cmds] for where, cmds in parsed.items()}
    # The extraction found what the documents hold (so the checks above were not vacuous).
    assert names["docs/cluster.md"].count("pipeline build") == 2
    assert {"pipeline verify", "train fit", "wait"} <= set(names["docs/cluster.md"])
    assert names["docker/kuberay-rayjob.yaml"] == ["wait", "pipeline build"]
    assert names["docker/torchrun-multinode.sh"] == ["train fit"]

    doc_build = next(c for n, c in parsed["docs/cluster.md"] if n == "pipeline build")
    job_build = parsed["docker/kuberay-rayjob.yaml"][1][1]
    for ctx in (doc_build, job_build):
        assert ctx.params["pose"] == "mmpose" and ctx.params["ray_address"] == "auto"
        assert all(ctx.params[k].startswith("s3://") for k in ("videos", "annotations", "out"))
    # The RayJob runs the documented build.
    assert job_build.params["pose_option"] == doc_build.params["pose_option"]
    assert job_build.params["num_workers"] == doc_build.params["num_workers"]

    doc_fit = next(c for n, c in parsed["docs/cluster.md"] if n == "train fit")
    script_fit = parsed["docker/torchrun-multinode.sh"][0][1]
    script = (DOCKER / "torchrun-multinode.sh").read_text()
    assert doc_fit.params["data"].startswith("s3://")
    assert script_fit.params["data"] == "$DATA" and 'DATA="${DATA:-s3://' in script
    for ctx in (doc_fit, script_fit):
        assert ctx.params["cache_dir"] and ctx.params["resume"]
        assert ctx.params["batch_size"] is None  # the default: global 32 / processes


def test_pose_option_paths_are_in_the_pose_image() -> None:
    dockerfile = (DOCKER / "Dockerfile.gpu").read_text()
    fetched = {
        url.rsplit("/", 1)[1]
        for url in re.findall(r"^ADD \S+ (\S+) /opt/models/", dockerfile, re.M)
    }
    checked = set(re.findall(r"test -f (\S+)", dockerfile))
    ctx = next(c for n, c in _parsed()["docs/cluster.md"] if n == "pipeline build")
    options = _parse_pose_options(ctx.params["pose_option"])
    for key in ("det_checkpoint", "pose_checkpoint"):
        assert options[key].startswith("/opt/models/")
        assert options[key].removeprefix("/opt/models/") in fetched, key
    for key in ("det_config", "pose_config"):
        assert options[key] in checked, key
    # OpenMMLab names checkpoints after their sha256 prefix, which the image checks.
    for name in fetched:
        prefix = re.search(r"-([0-9a-f]{8})(?:_\d{8})?\.pth$", name).group(1)
        assert f'echo "{prefix}" "$(sha256sum {name})"' in dockerfile


def test_cluster_launcher_config_passes_rays_schema() -> None:
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = prepare_config(yaml.safe_load((DOCKER / "ray-cluster.yaml").read_text()))
    validate_config(config)
    types = config["available_node_types"]
    assert types[config["head_node_type"]]["resources"] == {"CPU": 0}  # driver only
    gpu = [t for t in types.values() if t["resources"].get("GPU")]
    cpu = [t for name, t in types.items() if name != config["head_node_type"] and t not in gpu]
    assert len(gpu) == 1 and len(cpu) == 1
    # Fixed-size GPU group (the build decides at start whether actors take GPUs), and as many
    # pose actors as GPUs.
    assert gpu[0]["min_workers"] == gpu[0]["max_workers"]
    gpus = gpu[0]["max_workers"] * gpu[0]["resources"]["GPU"]
    ctx = next(c for n, c in _parsed()["docs/cluster.md"] if n == "pipeline build")
    assert ctx.params["num_workers"] == gpus
    # One image on every node (numpy pickles must load on both sides), the pose image.
    assert config["docker"]["image"].endswith(":gpu-pose")
    assert not any("docker" in t for t in types.values())
    assert "worker_image" not in config["docker"] and "head_image" not in config["docker"]


def test_rayjob_manifest() -> None:
    job = yaml.safe_load((DOCKER / "kuberay-rayjob.yaml").read_text())
    assert (job["apiVersion"], job["kind"]) == ("ray.io/v1", "RayJob")
    cluster = job["spec"]["rayClusterSpec"]
    pins = dict(
        line.split("==")
        for line in (REPO / "requirements" / "constraints.txt").read_text().splitlines()
        if "==" in line and not line.startswith("#")
    )
    assert cluster["rayVersion"] == pins["ray"]
    groups = [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]
    images = {c["image"] for g in groups for c in g["template"]["spec"]["containers"]}
    assert len(images) == 1 and images.pop().endswith(":gpu-pose")
    for group in groups:
        assert group["template"]["spec"]["securityContext"]["runAsNonRoot"] is True
    assert cluster["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    gpu_groups = [
        g
        for g in cluster["workerGroupSpecs"]
        if "nvidia.com/gpu" in g["template"]["spec"]["containers"][0]["resources"]["limits"]
    ]
    assert len(gpu_groups) == 1
    group = gpu_groups[0]
    per_pod = group["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"]
    gpus = group["replicas"] * per_pod
    assert group["minReplicas"] == group["maxReplicas"] == group["replicas"]
    (wait, wait_args), (tool, build_args) = _commands(job["spec"]["entrypoint"])
    assert (wait, tool) == ("wait", "pipeline")
    assert _wait_parser().parse_args(wait_args).gpus == gpus
    assert build_args[build_args.index("--num-workers") + 1] == str(gpus)


# --------------------------------------------------------------------------- Dockerfiles


def _pip_lines(text: str) -> list[list[str]]:
    """`pip install` commands, as tokens without --no-cache-dir and -e (the image installs, it
    does not develop); RUN continuation lines joined, && chains split."""
    lines = []
    for line in text.replace("\\\n", " ").splitlines():
        line = line.strip().removeprefix("RUN ").strip()
        tokens = _tokens(line)
        segment: list[str] = []
        for token in [*tokens, "&&"]:
            if token not in SEPARATORS:
                segment.append(token)
                continue
            if segment[:2] == ["pip", "install"]:
                lines.append([t for t in segment if t not in ("--no-cache-dir", "-e")])
            segment = []
    return lines


def _readme_pip_lines() -> list[list[str]]:
    blocks = re.findall(r"```bash\n(.*?)```", (REPO / "README.md").read_text(), flags=re.S)
    return _pip_lines("\n".join(blocks))


def _stages(dockerfile: str) -> dict[str, str]:
    parts = re.split(r"^FROM ", dockerfile, flags=re.M)[1:]
    return {(re.match(r"\S+(?: AS (\S+))?", p).group(1) or "final"): p for p in parts}


def test_dockerfile_install_lines_are_the_readmes() -> None:
    readme = _readme_pip_lines()
    cpu_torch = next(t for t in readme if "requirements/cpu.txt" in t)
    project = [t for t in readme if "requirements/constraints.txt" in t]
    gpu_torch = next(t for t in readme if any(a.startswith("torch==") for a in t))
    assert "https://download.pytorch.org/whl/cpu" in cpu_torch
    assert len(project) == 2 and project[0] == project[1]  # CPU and GPU install the same way

    cpu_image = _pip_lines((DOCKER / "Dockerfile.cpu").read_text())
    assert cpu_image == [cpu_torch, project[0]]
    stages = _stages((DOCKER / "Dockerfile.gpu").read_text())
    assert _pip_lines(stages["train"]) == [gpu_torch, project[0]]
    torch_pin = (REPO / "requirements" / "cpu.txt").read_text().split("torch==")[1].split()[0]
    assert f"torch=={torch_pin}" in gpu_torch


def test_pose_image_pins() -> None:
    stages = _stages((DOCKER / "Dockerfile.gpu").read_text())
    pose = stages["pose"]
    pins = dict(
        line.split("==")
        for line in (DOCKER / "pose-constraints.txt").read_text().splitlines()
        if "==" in line and not line.startswith("#")
    )
    project = {
        line.split("==")[0].lower()
        for line in (REPO / "requirements" / "constraints.txt").read_text().splitlines()
        if "==" in line and not line.startswith("#")
    }
    # What the pose image drops from the project's constraints is exactly what it re-pins.
    dropped = set(re.search(r"grep -vE '\^\(([^)]*)\)=='", pose).group(1).split("|"))
    assert dropped == {p.lower() for p in pins} & project == {"torch", "numpy"}
    torch_line = next(t for t in _pip_lines(pose) if any(a.startswith("torch==") for a in t))
    assert f"torch=={pins['torch']}" in torch_line
    assert f"torchvision=={pins['torchvision']}" in torch_line
    major_minor = ".".join(pins["torch"].split(".")[:2])
    assert "https://download.pytorch.org/whl/cu121" in torch_line
    assert f"/mmcv/dist/cu121/torch{major_minor}/index.html" in pose
    assert pins["mmcv"] == "2.1.0" and pins["numpy"].startswith("1.")
    assert "--only-binary=mmcv" in pose and "--no-deps mmpose" in pose


def test_images_run_as_a_numeric_non_root_user() -> None:
    cpu = {"final": (DOCKER / "Dockerfile.cpu").read_text()}
    gpu = _stages((DOCKER / "Dockerfile.gpu").read_text())
    assert "useradd --create-home --uid 1000" in cpu["final"] + gpu["base"]
    for stage in (cpu["final"], gpu["train"], gpu["pose"]):
        users = re.findall(r"^USER (\S+)", stage, flags=re.M)
        assert users and users[-1] == "1000:1000"
