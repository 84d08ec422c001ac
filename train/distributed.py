"""torch.distributed set-up for torchrun: one code path for 1 or N processes.

torchrun sets RANK, WORLD_SIZE and LOCAL_RANK; without them the run is a single process and
nothing is initialised. The backend follows the device: gloo on CPU, nccl on CUDA, each process
on cuda:LOCAL_RANK.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from pipeline.errors import InvalidInput

__all__ = ["Dist", "setup", "teardown", "pick_device"]


@dataclass(frozen=True)
class Dist:
    """Where this process stands in the job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def all_gather_object(self, obj: Any) -> list[Any]:
        """Every rank's ``obj``, in rank order (a one-element list when not distributed)."""
        if not self.enabled:
            return [obj]
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def all_reduce_sum(self, values: list[float]) -> list[float]:
        """Element-wise sum of a list of numbers over the ranks."""
        if not self.enabled:
            return list(values)
        t = torch.tensor(values, dtype=torch.float64, device=self._comm_device)
        dist.all_reduce(t)
        return t.tolist()

    def broadcast_buffers(self, module: torch.nn.Module) -> None:
        """Copy rank 0's buffers (BatchNorm statistics) to every rank.

        DDP broadcasts buffers before each forward, so after the last step each rank still
        holds the statistics of its own last batch; syncing at the end of an epoch makes
        validation and checkpoints identical everywhere.
        """
        if not self.enabled:
            return
        for buf in module.buffers():
            dist.broadcast(buf.data, src=0)

    @property
    def _comm_device(self) -> torch.device:
        return self.device if dist.get_backend() == "nccl" else torch.device("cpu")


def pick_device(requested: str, local_rank: int) -> torch.device:
    """``auto``: cuda:LOCAL_RANK when CUDA is available, else cpu; ``cuda`` gets LOCAL_RANK."""
    if requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    if requested.startswith("cuda"):
        if not torch.cuda.is_available():
            raise InvalidInput(f"--device {requested}: CUDA is not available on this machine")
        if requested == "cuda":
            requested = f"cuda:{local_rank}"
        device = torch.device(requested)
        torch.cuda.set_device(device)
        return device
    if requested != "cpu":
        raise InvalidInput(f"--device must be auto, cpu, cuda or cuda:N, got {requested!r}")
    return torch.device("cpu")


def setup(device: str = "auto") -> Dist:
    """Initialise the process group when launched by torchrun (WORLD_SIZE > 1)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = pick_device(device, local_rank)
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        kwargs = {"device_id": dev} if dev.type == "cuda" else {}
        dist.init_process_group(backend=backend, **kwargs)
    return Dist(rank=rank, world_size=world, local_rank=local_rank, device=dev)


def teardown(ctx: Dist) -> None:
    if ctx.enabled and dist.is_initialized():
        dist.destroy_process_group()
