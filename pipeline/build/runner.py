"""Running shard tasks on Ray: a local Ray or a cluster, pose actors, bounded concurrency,
progress.

One Ray CPU task per shard runs :func:`pipeline.build.work.build_shard` (or
:func:`~pipeline.build.work.retry_shard`); pose models live in Ray actors, loaded once and reused
(mediapipe on a CPU core, mmpose on a GPU), so decode, raster and write never hold a GPU.

:meth:`ShardRunner.start` is the build's setup check: it starts Ray and one pose actor with its
real resources and waits until the actor answers, so that a backend that cannot start (a missing
package, a bad option, no GPU to run on) stops the build with its root cause before any shard is
scheduled or any file written.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable
from typing import Any

from .. import storage
from ..errors import describe, one_line
from ..progress import progress_bar
from .options import BuildError, BuildOptions
from .plan import ShardSpec
from .work import ShardContext, build_shard, retry_shard

__all__ = [
    "ShardRunner",
    "shard_task_options",
    "pose_actor_options",
    "RayPose",
    "local_ray_system_config",
    "ProgressTicks",
]

# Loggers whose start-up messages a user of a local build does not need (Ray's notice that it
# turned token authentication on for the local instance, its "Started a local Ray instance").
_QUIET_LOGGERS = ("ray", "ray._private", "ray._private.authentication.authentication_token_setup")


def local_ray_system_config() -> dict[str, Any]:
    """Ray system config of the local Ray a build starts for itself: its workers keep the
    driver's priority.

    Ray starts workers 15 niceness steps below the process that starts them, so that busy
    workers cannot starve the raylet on a shared node. A local Ray started by one build runs only
    that build, and its raylet needs a few percent of a core; at nice 15 the shard tasks lost CPU
    to everything else on the machine, Ray's own daemons included, and a one-worker build ran
    5-10 % slower than the same shards in one process (docs/benchmarks.md, "Pipeline"). At the
    driver's priority, ``nice pipeline build ...`` still makes a whole build yield to other work.
    ``RAY_worker_niceness`` in the environment, when set, is Ray's to apply and wins.
    """
    if "RAY_worker_niceness" in os.environ:
        return {}
    return {"worker_niceness": 0}


def shard_task_options(options: BuildOptions) -> dict[str, Any]:
    """Ray options of the per-shard task: one CPU and never a GPU (decode, raster, write)."""
    return {"num_cpus": 1, "num_gpus": 0, "max_calls": options.max_calls}


def pose_actor_options(name: str) -> dict[str, Any]:
    """Ray options of a pose actor of backend ``name``: :func:`pipeline.pose.resources`."""
    from ..pose import resources

    return resources(name)


# An HTTP/2 client's opening (RFC 9113 section 3.4) and an empty SETTINGS frame. Ray's GCS and
# its client server speak gRPC, so they answer with a SETTINGS frame of their own (frame type 4).
_HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])
_HTTP2_SETTINGS = 4


def check_cluster_reachable(address: str, timeout: float) -> None:
    """BuildError at once unless a ``HOST:PORT`` (or ``ray://HOST:PORT``) Ray address answers as
    a gRPC server: ray.init retries an unreachable cluster, or a port where something else
    listens, without end. ``auto`` and other forms are left to Ray."""
    host, sep, port = address.split("://", 1)[-1].rpartition(":")
    if not sep or not host or not port.isdigit():
        return
    try:
        conn = socket.create_connection((host.strip("[]"), int(port)), timeout=min(timeout, 30.0))
    except OSError as exc:
        raise BuildError(
            f"--ray-address {address}: no Ray cluster answers there ({describe(exc)})"
        ) from None
    with conn:
        if os.environ.get("RAY_USE_TLS", "0").lower() in ("1", "true"):
            return  # a TLS cluster answers only after a handshake
        try:
            conn.sendall(_HTTP2_PREFACE)
            reply = conn.recv(9)
        except OSError:  # closed on us, or silent until the timeout
            reply = b""
    if len(reply) < 4 or reply[3] != _HTTP2_SETTINGS:
        raise BuildError(
            f"--ray-address {address}: something listens there but it is not a Ray cluster "
            "(no gRPC answer); give the head's GCS address (HOST:6379) or ray://HOST:10001"
        )


class RayPose:
    """A :class:`pipeline.build.work.PoseClient` over a pose actor."""

    def __init__(self, actor: Any) -> None:
        self.actor = actor

    def submit(self, frames: Any) -> Any:
        return self.actor.estimate.remote(frames)

    def result(self, handle: Any) -> Any:
        import ray

        return ray.get(handle)


class ProgressTicks:
    """A shard task's videos-done counter: ``send(n)`` (the progress actor's ``add.remote``) at
    most once per ``interval`` seconds, and for what is left on :meth:`flush`.

    One actor call per video cost the worker 0.3 ms and the actor 0.55 ms of CPU (a local Ray,
    2,000 calls), against about 155 ms of work per 340x256 video. With two workers on two cores
    that CPU comes out of the workers; a progress bar needs no more than a few updates a second.
    """

    def __init__(
        self,
        send: Callable[[int], Any],
        interval: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.send = send
        self.interval = interval
        self.clock = clock
        self.pending = 0
        self.sent_at = clock()

    def __call__(self) -> None:
        self.pending += 1
        if self.clock() - self.sent_at >= self.interval:
            self.flush()

    def flush(self) -> Any:
        """Send what is pending; returns what ``send`` returned (None when nothing was)."""
        sent = self.send(self.pending) if self.pending else None
        self.pending = 0
        self.sent_at = self.clock()
        return sent


def _remote_shard(
    spec: ShardSpec, ctx: ShardContext, actor: Any, progress: Any, retry: bool = False
) -> dict[str, Any]:
    """The shard task: build (or retry) one shard with the actor as pose client."""
    import ray

    from .state import read_record

    pose = RayPose(actor) if actor is not None else None
    tick = ProgressTicks(progress.add.remote)
    previous = read_record(ctx.out, spec.split, spec.number) if retry else None
    if previous is not None:
        record = retry_shard(spec, ctx, previous, pose, on_video=tick)
    else:
        record = build_shard(spec, ctx, pose, on_video=tick)
    last = tick.flush()
    if last is not None:
        ray.get(last)  # counted before the task returns: the driver's count has the whole shard
    return {
        "split": record.split,
        "shard": record.shard,
        "samples": len(record.index),
        "errors": len(record.errors),
    }


def _progress_actor() -> Any:
    import ray

    @ray.remote(num_cpus=0)
    class Progress:
        def __init__(self) -> None:
            self.n = 0

        def add(self, n: int) -> None:
            self.n += n

        def count(self) -> int:
            return self.n

    return Progress.remote()


class ShardRunner:
    """Ray for one build: :meth:`start` (setup checks), :meth:`run`, :meth:`close`."""

    def __init__(self, options: BuildOptions) -> None:
        self.options = options
        self.workers = options.num_workers or os.cpu_count() or 1
        self.uses_actor = options.pose in ("mediapipe", "mmpose")
        self.actors: list[Any] = []
        self._started_ray = False

    def start(self) -> None:
        """Start (or join) Ray and the pose actors; wait for the first one to be ready.

        BuildError with the backend's root cause when it cannot start.
        """
        self._init_ray()
        if not self.uses_actor:
            return
        import ray

        from ..pose import make_pose_actor_class

        name, options = self.options.pose, self.options
        actor_options = pose_actor_options(name)
        self._check_resources(actor_options)
        actor_cls = make_pose_actor_class(**actor_options)
        first = actor_cls.remote(name, options.pose_options)
        try:
            ray.get(first.info.remote(), timeout=options.setup_timeout)
        except ray.exceptions.GetTimeoutError:
            self.close()
            raise BuildError(
                f"pose backend {name!r} did not start within {options.setup_timeout:.0f} s "
                f"(its actor asks for {actor_options}); is the cluster able to run it?"
            ) from None
        except Exception as exc:  # the actor's __init__ raised: report its root cause
            self.close()
            raise BuildError(f"pose backend {name!r} cannot start: {describe(exc)}") from None
        self.actors = [first] + [
            actor_cls.remote(name, options.pose_options) for _ in range(self.workers - 1)
        ]

    def _check_resources(self, actor_options: dict[str, Any]) -> None:
        """A local Ray cannot grow: refuse an actor it has no room for, at once."""
        if self.options.ray_address:
            return  # a cluster may add nodes (autoscaling); the readiness wait decides
        import ray

        total = ray.cluster_resources()
        for resource, key in (("GPU", "num_gpus"), ("CPU", "num_cpus")):
            want = float(actor_options.get(key) or 0)
            if want > total.get(resource, 0.0):
                self.close()
                raise BuildError(
                    f"pose backend {self.options.pose!r} needs {want:g} {resource} per pose "
                    f"actor; this machine's Ray has {total.get(resource, 0.0):g}"
                )

    def _init_ray(self) -> None:
        import ray

        if ray.is_initialized():
            return
        options = self.options
        env = {"env_vars": storage.storage_env()} if storage.storage_env() else None
        common = {"log_to_driver": options.verbose, "runtime_env": env}
        if options.ray_address:
            check_cluster_reachable(options.ray_address, options.setup_timeout)
            try:
                ray.init(address=options.ray_address, **common)
            except (ConnectionError, ValueError) as exc:  # no cluster for "auto", a bad address
                raise BuildError(f"--ray-address {options.ray_address}: {one_line(exc)}") from None
        else:
            levels = {name: logging.getLogger(name).level for name in _QUIET_LOGGERS}
            if not options.verbose:
                for name in _QUIET_LOGGERS:
                    logging.getLogger(name).setLevel(logging.ERROR)
            # A local Ray gets exactly the CPUs the workers ask for, so --num-workers bounds
            # the work done at once; shard tasks wait on pose actors, so both get room.
            try:
                ray.init(
                    # "local": a new Ray even where `ray start` left a cluster on this machine
                    address="local",
                    num_cpus=self.workers * (2 if self.uses_actor else 1),
                    include_dashboard=False,
                    configure_logging=False,
                    _system_config=local_ray_system_config(),
                    **common,
                )
            finally:
                for name, level in levels.items():
                    logging.getLogger(name).setLevel(level)
        self._started_ray = True

    def run(
        self,
        todo: list[ShardSpec],
        ctx: ShardContext,
        show_progress: bool,
        retry: frozenset[tuple[str, int]] = frozenset(),
        videos: int | None = None,
    ) -> None:
        """Build ``todo`` (retrying the shards in ``retry``), at most ``workers`` at once.

        A shard task that dies (e.g. out of memory) is reported and left for the next run; the
        others go on.
        """
        import ray

        progress = _progress_actor()
        task = ray.remote(**shard_task_options(self.options))(_remote_shard)
        refs: dict[Any, ShardSpec] = {}
        queue = list(todo)

        def submit() -> None:
            spec = queue.pop(0)
            actor = self.actors[spec.number % len(self.actors)] if self.actors else None
            again = (spec.split, spec.number) in retry
            refs[task.remote(spec, ctx, actor, progress, again)] = spec

        # At most `workers` shard tasks in flight, on a cluster too (where Ray would run any
        # queued extra at once on a free CPU).
        for _ in range(min(len(queue), self.workers)):
            submit()
        total = videos if videos is not None else sum(len(s.items) for s in todo)
        bar = progress_bar(total, "build", "video", show_progress)
        seen = 0
        try:
            while refs:
                ready, _ = ray.wait(list(refs), num_returns=1, timeout=0.5)
                count = ray.get(progress.count.remote())
                bar.update(count - seen)
                seen = count
                for ref in ready:
                    spec = refs.pop(ref)
                    try:
                        ray.get(ref)
                    except ray.exceptions.RayError as exc:
                        bar.write(f"shard {spec.split}/{spec.number:06d} failed: {describe(exc)}")
                    if queue:
                        submit()
        finally:
            bar.close()

    def close(self) -> None:
        import ray

        self.actors = []
        if self._started_ray and not self.options.ray_address and ray.is_initialized():
            ray.shutdown()
        self._started_ray = False
