"""Sparse-MoE inference for ``Translator`` and the CLIs (Huang et al. 2023, "Towards MoE deployment:
mitigating inefficiencies in Mixture-of-Expert (MoE) inference", arXiv 2303.06182).

Three things, each a flag of mt-generate / mt-translate / mt-interactive and a ``Translator`` argument:

- gating (``--moe-inference-gating``): ``dynamic`` (default) gives each expert exactly the tokens routed
  to it, with no capacity; ``static`` is the fairseq / GShard baseline: capacity
  ``ceil(--moe-eval-capacity-token-fraction * tokens)`` (default: the checkpoint's, 1.0) and every expert
  running on its padded capacity (``mt.models.moe``). Same ``top2_route`` decisions in both.
- expert buffering (``--expert-cache K``): at most K experts per MoE layer resident on the compute device
  (``mt.generate.expert_cache``); the others stay in host memory (``--expert-offload host``, the default
  on GPU) or memory-mapped from the checkpoint file (``mmap``, the default on CPU: a model larger than RAM
  still translates). K = 0: all experts resident, as a normal load. Cache hits and memory are reported.
- expert-parallel inference (under ``torchrun``): every rank loads only its experts (memory-mapped, so
  the others are never read), decodes the same batches, and each MoE layer routes a 1/W share of the
  token rows to the ranks holding their experts with all-to-all (``MoELayer._replicated``). The experts
  of each rank come from ``--expert-placement placement.json`` (``mt-moe-stats --num-ranks W``), default
  contiguous blocks. Rank 0 writes the outputs.

Expert memory, as reported: bytes of expert weights resident in this process = the cache slots (compute
dtype) + the pages of the memory-mapped checkpoint that are mapped into the process (``mt.common.pagemem``;
after each load they are dropped again) + a host-memory cold store when there is one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch

from mt.common import pagemem
from mt.common.errors import UserError
from mt.common.flags import arg
from mt.generate.expert_cache import CacheStats, ExpertCache
from mt.generate.quantize import Int8Experts
from mt.models.moe import MoELayer, expert_parallel_, placement_order, read_placement, set_inference_gating

GATINGS = ("dynamic", "static")
OFFLOADS = ("auto", "host", "mmap")


_MOE = "sparse MoE inference (MoE checkpoints only)"


@dataclass
class MoEInferenceConfig:
    """Field names are ``Translator``'s keyword arguments (``Translator(..., **asdict(cfg))``)."""

    moe_gating: str = arg(
        "dynamic",
        "dynamic: each expert runs on exactly its tokens, no capacity (default); static: the padded "
        "fairseq/GShard baseline, every expert runs on capacity slots",
        name="--moe-inference-gating",
        choices=list(GATINGS),
        show_default=False,
        group=_MOE,
    )
    # static gating's capacity; None: the checkpoint's
    moe_eval_capacity_token_fraction: float | None = arg(
        None,
        "static gating: expert capacity = ceil(F * tokens), tokens over it are dropped; <= 0: the "
        "training capacity (default: the checkpoint's, usually 1.0: nothing dropped)",
        metavar="F",
        group=_MOE,
    )
    expert_cache: int = arg(
        0,
        "keep at most K experts per MoE layer on the compute device, bring the others in on demand "
        "(0: all resident, default); hit rate and expert memory are reported on stderr",
        metavar="K",
        group=_MOE,
    )
    # where cold experts live: auto (host on GPU, mmap on CPU) | host | mmap
    expert_offload: str = arg(
        "auto",
        "where experts outside the cache live: host memory, or memory-mapped from the checkpoint "
        "(default auto: host with a GPU, mmap on CPU)",
        choices=list(OFFLOADS),
        show_default=False,
        group=_MOE,
    )
    expert_placement: str = arg(
        "",
        "under torchrun (expert-parallel inference): the experts of each rank, from "
        "mt-moe-stats --num-ranks W (default: contiguous blocks)",
        metavar="JSON",
        group=_MOE,
    )

    def check(self) -> "MoEInferenceConfig":
        if self.moe_gating not in GATINGS:
            raise UserError(f"--moe-inference-gating must be dynamic or static, got {self.moe_gating!r}")
        f = self.moe_eval_capacity_token_fraction
        if f is not None and not (f <= 0 or f > 0):
            raise UserError(f"--moe-eval-capacity-token-fraction must be a number, got {f!r}")
        if self.expert_cache < 0:
            raise UserError(f"--expert-cache must be >= 0 (0: all experts resident), got {self.expert_cache}")
        if self.expert_offload not in OFFLOADS:
            raise UserError(f"--expert-offload must be auto, host or mmap, got {self.expert_offload!r}")
        if self.expert_placement and not os.path.isfile(self.expert_placement):
            raise UserError(
                f"{self.expert_placement}: expert placement not found (write one with mt-moe-stats --num-ranks W)"
            )
        return self

    def lazy(self, world: int) -> bool:
        """Load the model without its experts (memory-mapped, brought in by the runners)?"""
        return self.expert_cache > 0 or self.expert_offload != "auto" or world > 1

    def offload(self, device: torch.device) -> str:
        if self.expert_offload != "auto":
            return self.expert_offload
        return "host" if device.type == "cuda" else "mmap"


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def device_for(device: str | torch.device, world: int) -> torch.device:
    """Under torchrun a bare ``cuda`` means this rank's GPU (``LOCAL_RANK``)."""
    dev = torch.device(device)
    if world > 1 and dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return dev


def _mb(n: float) -> str:
    return f"{n / 2**20:.1f} MB" if n < 2**30 else f"{n / 2**30:.2f} GB"


class MoEInference:
    """The MoE layers of a loaded model as set up for inference, with their caches and statistics."""

    def __init__(
        self,
        layers: list[tuple[str, MoELayer]],
        cfg: MoEInferenceConfig,
        offload: str,
        rank: int,
        world: int,
        mapped_files: list,
        full_expert_bytes: int,
    ) -> None:
        self.layers, self.cfg, self.offload, self.rank, self.world = layers, cfg, offload, rank, world
        self.mapped_files = list(mapped_files)
        self.full_expert_bytes = full_expert_bytes  # all experts of all layers in the checkpoint's dtype

    def caches(self) -> dict[str, ExpertCache]:
        return {name: m.runner for name, m in self.layers if isinstance(m.runner, ExpertCache)}

    def reset_stats(self) -> None:
        for c in self.caches().values():
            c.stats = CacheStats()

    def stats(self) -> dict[str, Any]:
        """Per layer and in total: cache hits / misses / hit rate, bytes brought in, expert memory."""
        layers, total = {}, CacheStats()
        resident = mapped = host = 0
        for name, c in self.caches().items():
            s = c.stats
            total.add(s)
            r, m, h = c.resident_bytes(), c.mapped_bytes(), c.host_bytes()
            resident, mapped, host = resident + r, mapped + m, host + h
            layers[name] = {
                "experts": c.num_experts,
                "resident_slots": c.capacity,
                "hits": s.hits,
                "misses": s.misses,
                "hit_rate": s.hit_rate,
                "loaded_bytes": s.loaded_bytes,
                "load_seconds": s.load_seconds,
                "resident_bytes": r,
                "mapped_bytes": m,
                "host_bytes": h,
            }
        resident += sum(m.runner.bytes for _, m in self.layers if isinstance(m.runner, Int8Experts))
        mapped_rss = [pagemem.smaps_rss(f) for f in self.mapped_files]
        return {
            "gating": self.cfg.moe_gating,
            "expert_cache": self.cfg.expert_cache,
            "offload": self.offload,
            "rank": self.rank,
            "world": self.world,
            "hits": total.hits,
            "misses": total.misses,
            "hit_rate": total.hit_rate,
            "loaded_bytes": total.loaded_bytes,
            "load_seconds": total.load_seconds,
            "resident_bytes": resident,
            "mapped_bytes": mapped,
            "host_bytes": host,
            "expert_memory_bytes": resident + mapped + host,
            "full_expert_bytes": self.full_expert_bytes,
            "mapped_file_rss_bytes": sum(x or 0 for x in mapped_rss) if self.mapped_files else None,
            "layers": layers,
        }

    def summary(self) -> str:
        s = self.stats()
        E = max((c.num_experts for c in self.caches().values()), default=0)
        parts = [f"MoE {s['gating']} gating"]
        if self.world > 1:
            parts.append(f"expert-parallel rank {self.rank}/{self.world} ({E} experts per layer here)")
        if self.cfg.expert_cache:
            rate = "n/a" if s["hit_rate"] is None else f"{100 * s['hit_rate']:.1f}%"
            parts.append(
                f"expert cache {self.cfg.expert_cache} of {E} per layer ({self.offload}): hit rate {rate} "
                f"({s['hits']} hits, {s['misses']} misses), "
                f"brought in {_mb(s['loaded_bytes'])} in {s['load_seconds']:.2f}s"
            )
        parts.append(
            f"expert memory {_mb(s['expert_memory_bytes'])} (resident {_mb(s['resident_bytes'])}, mapped "
            f"{_mb(s['mapped_bytes'])}, host {_mb(s['host_bytes'])}; all experts {_mb(s['full_expert_bytes'])})"
        )
        return "; ".join(parts)


def _init_distributed(device: torch.device) -> tuple[int, Any]:
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return dist.get_rank(), None


def setup(
    loaded: Any, cfg: MoEInferenceConfig, device: torch.device, dtype: torch.dtype, int8: bool = False
) -> MoEInference | None:
    """Gating, expert runners and (under torchrun) expert parallelism for ``loaded`` (a ``LoadedModel``).

    None for a dense model (then ``--expert-cache`` / ``--expert-placement`` are an error). ``int8``
    (``--quantize int8``): every expert resident as int8 (``Int8Experts``); not with an expert cache or
    expert parallelism, whose runners bring float weights in on demand."""
    model = loaded.model
    layers = [(n, m) for n, m in model.named_modules() if isinstance(m, MoELayer)]
    world, rank = world_size(), 0
    if not layers:
        if cfg.expert_cache or cfg.expert_placement or world > 1:
            raise UserError(
                f"{loaded.path}: --expert-cache, --expert-placement and torchrun (expert-parallel inference) "
                "need an MoE checkpoint; this model is dense"
            )
        return None
    if world > 1 and cfg.moe_gating == "static":
        raise UserError(
            "--moe-inference-gating static runs in one process (it is the padded baseline); "
            "use dynamic gating with expert-parallel inference"
        )
    if int8 and (cfg.expert_cache or world > 1 or loaded.expert_source):
        raise UserError(
            "--quantize int8 keeps every expert resident in int8: not with --expert-cache, --expert-offload "
            "or expert-parallel inference (drop one of them)"
        )
    set_inference_gating(model, cfg.moe_gating, cfg.moe_eval_capacity_token_fraction)
    offload = cfg.offload(device)
    placement = None
    if world > 1:
        if not loaded.expert_source:
            raise UserError("expert-parallel inference needs a model loaded with lazy_experts=True")
        rank, group = _init_distributed(device)
        if cfg.expert_placement:
            placement = read_placement(cfg.expert_placement, {m.tag: m.num_experts for _, m in layers}, world)
        expert_parallel_(model, rank, world, group, placement, replicated=True)
    elif cfg.expert_placement:
        raise UserError("--expert-placement is for expert-parallel inference: run under torchrun with W processes")
    full = 0
    for name, m in layers:
        E = m.num_experts
        per = E // world
        ids = placement_order(placement[m.tag], E) if placement else list(range(E))
        local = ids[rank * per : (rank + 1) * per]
        if loaded.expert_source:
            src = [loaded.expert_source[name][e] for e in local]
            full += sum(t.numel() * t.element_size() for w in loaded.expert_source[name] for t in w)
            m.runner = _cache(src, cfg.expert_cache, offload, device, dtype)
        else:
            stacked = [p for p in (m.experts.fc1_weight, m.experts.fc1_bias, m.experts.fc2_weight, m.experts.fc2_bias)]
            full += sum(p.numel() * p.element_size() for p in stacked)
            if int8:
                m.runner = Int8Experts(stacked)
                m.experts.to("meta")  # decoding runs on the int8 copies only
            elif cfg.expert_cache:
                if stacked[0].device.type != "cpu":
                    raise UserError(
                        "an expert cache needs the experts in host memory: load the model with lazy_experts=True"
                    )
                m.runner = ExpertCache(
                    [tuple(p[e] for p in stacked) for e in range(E)], cfg.expert_cache, device, dtype
                )
            else:
                m.runner = ExpertCache.resident(stacked, dtype)
    return MoEInference(layers, cfg, offload, rank, world, loaded.mapped_files if offload == "mmap" else [], full)


def _cache(src: list, capacity: int, offload: str, device: torch.device, dtype: torch.dtype) -> ExpertCache:
    """A cache over memory-mapped expert views: kept mapped, or copied to (pinned) host memory first."""
    if offload == "mmap":
        return ExpertCache(src, capacity, device, dtype, mapped=True)
    pin = device.type == "cuda"
    host = []
    for w in src:
        copies = tuple(t.clone() for t in w)
        host.append(tuple(t.pin_memory() for t in copies) if pin else copies)
    ranges = [pagemem.tensor_range(t) for w in src for t in w]
    if pagemem.file_backed(ranges):
        pagemem.advise(ranges, pagemem.MADV_DONTNEED)
    return ExpertCache(host, capacity, device, dtype, mapped=False)
