"""The generator the model's random draws use: torch's default one, or a CPU training worker's own.

Why: ``mt-train --cpu-workers N`` runs the shards of a batch in N threads at once (``mt.train.trainer``).
Draws from the one default generator would then interleave in an order that changes from run to run, so
each worker runs with a generator of its own, seeded from the default generator in the main thread (a fixed
order): a run stays reproducible and a checkpoint (which holds the default generator's state) resumes it
exactly. Every random draw of the model (dropout masks, MoE routing noise, EOM / FOM) goes through
``generator()``; outside a worker it is None, torch's default.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Iterator

import torch

_LOCAL = threading.local()


def generator() -> torch.Generator | None:
    """This thread's worker generator, or None (torch's default generator)."""
    return getattr(_LOCAL, "gen", None)


@contextmanager
def worker_generator(seed: int) -> Iterator[torch.Generator]:
    """Inside: this thread's model draws come from a CPU generator seeded with ``seed``."""
    prev, _LOCAL.gen = generator(), torch.Generator().manual_seed(seed)
    try:
        yield _LOCAL.gen
    finally:
        _LOCAL.gen = prev


def draw_seed() -> int:
    """A seed from ``generator()`` (in the main thread torch's default, so ``torch.manual_seed`` and a
    checkpoint's RNG state fix it): for a dropout mask, or for a worker's generator."""
    return int(torch.empty((), dtype=torch.int64).random_(generator=generator()))


def rand(shape: torch.Size | tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
    """``torch.rand`` in ``like``'s float dtype (float32 for others) and device, from ``generator()``."""
    dtype = like.dtype if like.is_floating_point() else torch.float32
    return torch.rand(shape, generator=generator(), dtype=dtype, device=like.device)
