"""Expert buffering (Huang et al. 2023, "Towards MoE deployment", arXiv 2303.06182): at most K experts of an
MoE layer resident on the compute device, the others brought in when a batch routes tokens to them.

``ExpertCache`` is an MoE layer's ``runner`` (``mt.models.moe``): called with the token rows grouped by
(local) expert and the row counts, it runs each expert that has rows on its rows. The resident experts
live in K slots, stacked tensors on the compute device in the compute dtype (bf16 with ``--bf16``:
converted once, when brought in). The cold experts (``source``: per expert its fc1/fc2 weights and
biases) stay in host memory (pinned, for GPU copies) or memory-mapped from the checkpoint file.

Per call: the experts already resident run first (hits), then each missing one is copied into the
least-recently-used slot and runs at once, so K = 1 works for a batch that needs every expert. A hit or a
miss is counted per (call, expert with rows); the first use of an expert is a miss (cold start), except
with K >= E, where every expert is brought in up front. For a memory-mapped source the layer's mapped
pages are dropped from the process after each call that loaded something (``mt.common.pagemem``), so
what an expert costs in memory is its slot, not its pages.

``ExpertCache.resident`` wraps experts that are already on the device (no source, no offload): the
default when no cache is asked for; it still makes the compute-dtype copy once instead of casting every
expert's weights at every decoder step.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Sequence

import torch

from mt.common import pagemem
from mt.models.moe import pad_segments

ExpertWeights = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]  # fc1_w (f,d), fc1_b, fc2_w (d,f), fc2_b


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    loaded_bytes: int = 0  # bytes read from the cold store (source dtype)
    load_seconds: float = 0.0

    @property
    def hit_rate(self) -> float | None:
        n = self.hits + self.misses
        return self.hits / n if n else None

    def add(self, other: "CacheStats") -> None:
        self.hits += other.hits
        self.misses += other.misses
        self.loaded_bytes += other.loaded_bytes
        self.load_seconds += other.load_seconds


class ExpertCache:
    """K resident experts of one MoE layer with LRU replacement; call it like ``Experts``: ``(x, counts)``."""

    def __init__(
        self,
        source: Sequence[ExpertWeights],
        capacity: int,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        mapped: bool = False,
        release_pages: bool = True,
    ) -> None:
        if not source:
            raise ValueError("an expert cache needs at least one expert")
        self.source = list(source)
        E = len(self.source)
        self.capacity = E if capacity <= 0 else min(capacity, E)
        self.device, self.dtype = torch.device(device), dtype
        self.mapped, self.release_pages = mapped, release_pages
        self.slots = [
            torch.empty((self.capacity,) + tuple(t.shape), dtype=dtype, device=self.device) for t in self.source[0]
        ]
        self.where: OrderedDict[int, int] = OrderedDict()  # expert -> slot, least recently used first
        self.free = list(range(self.capacity - 1, -1, -1))
        self._kept_bytes = 0
        self.stats = CacheStats()
        self.expert_bytes = sum(t.numel() * t.element_size() for t in self.source[0])  # in the cold store
        self._ranges = [[pagemem.tensor_range(t) for t in w] for w in self.source]
        self._pinned = self.device.type == "cuda" and all(t.is_pinned() for t in self.source[0])
        if mapped:
            if not pagemem.file_backed([r for rs in self._ranges for r in rs]):
                raise ValueError("mapped=True but the expert weights are not in a file mapping")
            pagemem.advise([r for rs in self._ranges for r in rs], pagemem.MADV_RANDOM)
        if self.capacity == E:  # everything fits: bring it all in now (not counted as misses)
            for e in range(E):
                self._load(e, self.free.pop())
            self.stats = CacheStats(loaded_bytes=self.stats.loaded_bytes, load_seconds=self.stats.load_seconds)
            self._release()

    @classmethod
    def resident(cls, stacked: Sequence[torch.Tensor], dtype: torch.dtype) -> "ExpertCache":
        """All E experts of stacked (E, ...) tensors, kept where they are (cast once to ``dtype`` if needed)."""
        self = cls.__new__(cls)
        E = stacked[0].size(0)
        self.source, self.capacity = [], E
        self.device, self.dtype = stacked[0].device, dtype
        self.mapped, self.release_pages, self._pinned, self._ranges = False, False, False, []
        self.slots = [t.detach() if t.dtype == dtype else t.detach().to(dtype) for t in stacked]
        # a compute-dtype copy leaves the originals in the model: they still take memory
        self._kept_bytes = sum(t.numel() * t.element_size() for t in stacked) if stacked[0].dtype != dtype else 0
        self.where = OrderedDict((e, e) for e in range(E))
        self.free = []
        self.stats = CacheStats()
        self.expert_bytes = sum(t[0].numel() * t.element_size() for t in stacked)
        return self

    @property
    def num_experts(self) -> int:
        return len(self.source) or self.capacity

    def resident_bytes(self) -> int:
        """Bytes of the slots (resident expert weights in the compute dtype)."""
        return sum(t.numel() * t.element_size() for t in self.slots)

    def mapped_bytes(self) -> int:
        """Bytes of the memory-mapped cold store present in this process (0 when not mapped)."""
        if not self.mapped:
            return 0
        return pagemem.present_bytes([r for rs in self._ranges for r in rs]) or 0

    def host_bytes(self) -> int:
        """Bytes of expert weights held besides the slots and not mapped: a host-memory cold store (all E
        experts), or the original weights a ``resident`` cache made a compute-dtype copy of."""
        if not self.source:
            return self._kept_bytes
        return 0 if self.mapped else self.expert_bytes * len(self.source)

    def resident_experts(self) -> list[int]:
        return list(self.where)

    # --- bringing experts in -------------------------------------------------------------------------
    def _load(self, e: int, slot: int) -> None:
        t0 = time.perf_counter()
        if self.mapped:
            pagemem.advise(self._ranges[e], pagemem.MADV_WILLNEED)  # one read of exactly its bytes
        for dst, src in zip(self.slots, self.source[e]):
            dst[slot].copy_(src, non_blocking=self._pinned)
        self.where[e] = slot
        self.stats.loaded_bytes += self.expert_bytes
        self.stats.load_seconds += time.perf_counter() - t0

    def _slot(self, e: int) -> int:
        if e in self.where:
            self.where.move_to_end(e)
            return self.where[e]
        if self.free:
            slot = self.free.pop()
        else:
            _, slot = self.where.popitem(last=False)
        self._load(e, slot)
        return slot

    def _release(self) -> None:
        if self.mapped and self.release_pages:
            pagemem.advise([r for rs in self._ranges for r in rs], pagemem.MADV_DONTNEED)

    # --- running ------------------------------------------------------------------------------------------
    def __call__(self, x: torch.Tensor, counts: list[int]) -> torch.Tensor:
        """Rows ``x`` grouped by expert, ``counts[e]`` each -> expert outputs in ``x``'s dtype.

        Under CPU bf16 each expert's rows are zero-padded to a multiple of 64 (``pad_segments``, as the training
        experts): oneDNN compiles a kernel per GEMM shape, and decoding gives each expert a new row count at
        nearly every step. Pad rows are dropped from the output, so the result is the unpadded one."""
        needed = [e for e, n in enumerate(counts) if n]
        hits = [e for e in needed if e in self.where]
        misses = [e for e in needed if e not in self.where]
        self.stats.hits += len(hits)
        self.stats.misses += len(misses)
        w1, b1, w2, b2 = self.slots
        xc = x if x.dtype == self.dtype else x.to(self.dtype)
        xp, padded, pos = pad_segments(xc, counts)
        starts, at = [], 0
        for n in padded:
            starts.append(at)
            at += n
        y = x.new_empty(xp.size(0), w2.size(1))
        with torch.autocast(x.device.type, enabled=False):
            for e in hits + misses:
                s = self._slot(e)
                sl = slice(starts[e], starts[e] + padded[e])
                h = torch.addmm(b1[s], xp[sl], w1[s].t()).relu_()
                y[sl] = torch.addmm(b2[s], h, w2[s].t())
        if misses:
            self._release()
        return y if pos is None else y.index_select(0, pos)
