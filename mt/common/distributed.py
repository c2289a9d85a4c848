"""torch.distributed setup for ``mt-train``: launched by torchrun (env vars), gloo on CPU, nccl on GPU.

A single process (no ``WORLD_SIZE`` or ``WORLD_SIZE=1``) never initialises a process group, so every
helper here is a no-op there. Only rank 0 writes files and prints.

torchrun starts its workers in their own session, so killing only the launcher (``kill -9``) does not
reach them: ``watch_launcher`` asks the kernel for a SIGTERM when the launcher dies (Linux), and
``launcher_gone`` is the polling fallback the training loop checks every update.
"""

from __future__ import annotations

import os
import signal
import sys
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from mt.common.errors import UserError


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_master(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def setup(cpu: bool = False) -> DistInfo:
    """Pick the device (CUDA unless ``cpu`` or none is present) and join the torchrun process group."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() and not cpu
    if use_cuda:
        if local_rank >= torch.cuda.device_count():
            raise UserError(
                f"LOCAL_RANK {local_rank} but only {torch.cuda.device_count()} GPUs: "
                "lower --nproc_per_node or pass --cpu"
            )
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return DistInfo(rank, world, local_rank, device)


def watch_launcher() -> int | None:
    """Under torchrun, make this worker stop when its launcher dies; returns the launcher's pid (else None).

    The parent of a torchrun worker is the launcher itself (its elastic agent). On Linux the kernel sends
    SIGTERM when it dies (``PR_SET_PDEATHSIG``), which mt-train handles like any SIGTERM: finish the
    update, save ``checkpoint_last.pt``, exit. Elsewhere ``launcher_gone`` is polled.
    """
    if "TORCHELASTIC_RUN_ID" not in os.environ:
        return None
    parent = os.getppid()
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            pr_set_pdeathsig = 1
            ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, int(signal.SIGTERM), 0, 0, 0)
        except (OSError, AttributeError):  # no prctl (an unusual libc): the polling fallback remains
            pass
    return parent


def launcher_gone(parent: int | None) -> bool:
    """Whether the launcher ``watch_launcher`` returned has died (this process was handed to another parent)."""
    return parent is not None and os.getppid() != parent


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def all_gather_object(obj: Any) -> list[Any]:
    if not (dist.is_available() and dist.is_initialized()):
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, src: int = 0) -> Any:
    if not (dist.is_available() and dist.is_initialized()):
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
