"""Expert placement: which rank holds which experts of each MoE layer, computed, stored and applied.

- computed by ``mt-moe-stats --num-ranks W`` from routing counts (``balanced_placement``; Huang et al. 2023,
  "expert load balancing"): each layer's experts in W groups of E/W, the most loaded group made small;
- stored as ``placement.json`` (``placement_from_stats`` writes its content, ``read_placement`` reads and checks
  it; format in ``mt.generate.moe_stats``);
- applied by ``expert_parallel_`` (mt-train under torchrun, and expert-parallel inference): each rank keeps its
  E/W experts of every layer, after ``permute_experts_`` relabelled a layer so its experts are contiguous.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from mt.common.errors import UserError
from mt.common.files import read_marked_json
from mt.models.moe.layers import MoELayer, moe_layers

PLACEMENT_FORMAT = "nllb-mini/moe-placement"

Placement = dict[str, list[list[int]]]  # MoE layer tag ("enc1", "dec3") -> the experts of each rank


def placement_order(ranks: Sequence[Sequence[int]], num_experts: int, where: str = "placement") -> list[int]:
    """The experts of rank 0, then rank 1, ...: a permutation of 0..E-1 with E/W experts per rank."""
    order = [int(e) for r in ranks for e in r]
    W = len(ranks)
    if W < 1 or sorted(order) != list(range(num_experts)) or any(len(r) != num_experts // W for r in ranks):
        raise UserError(
            f"{where}: expected every expert 0..{num_experts - 1} exactly once, {num_experts}/W per rank "
            f"(got {[list(r) for r in ranks]}); write it again with mt-moe-stats --num-ranks W"
        )
    return order


def permute_experts_(layer: MoELayer, order: Sequence[int]) -> None:
    """Relabel experts so that expert i becomes old expert ``order[i]``: the gate's rows and the stacked
    expert weights move together, so the layer computes the same function (ties between exactly equal
    gate logits aside). Layers built with ``lazy_experts`` hold no expert weights: only the gate moves."""
    idx = torch.as_tensor(list(order), dtype=torch.long)
    E = layer.num_experts
    if sorted(idx.tolist()) != list(range(E)):
        raise UserError(f"MoE layer {layer.tag}: {list(order)} is not a permutation of its {E} experts")
    layer.wg.weight.data = layer.wg.weight.data.index_select(0, idx.to(layer.wg.weight.device))
    for p in layer.experts.parameters():
        if p.size(0) == E:
            p.data = p.data.index_select(0, idx.to(p.device))


def expert_parallel_(
    model: nn.Module,
    rank: int,
    world: int,
    group: Any = None,
    placement: Placement | None = None,
    replicated: bool = False,
) -> None:
    """Keep this rank's E/W experts in every MoE layer (UserError when E is not divisible by W).

    Without ``placement`` rank r holds experts [r*E/W, (r+1)*E/W). A ``placement`` (inference) gives each
    layer's experts per rank: the layer is first relabelled (``permute_experts_``) so that rank r's experts
    are the contiguous block r. ``replicated`` (inference): every rank holds the same tokens.
    """
    for m in moe_layers(model):
        if placement is not None:
            if m.tag not in placement:
                raise UserError(
                    f"the expert placement has no entry for MoE layer {m.tag} (it has {', '.join(placement)})"
                )
            ranks = placement[m.tag]
            if len(ranks) != world:
                raise UserError(
                    f"the expert placement is for {len(ranks)} ranks, this run has {world}; "
                    f"write one with mt-moe-stats --num-ranks {world}"
                )
            permute_experts_(m, placement_order(ranks, m.num_experts, f"placement of {m.tag}"))
        m.shard_(rank, world, group, replicated)


# --- placements ----------------------------------------------------------------------------------
def contiguous(num_experts: int, world: int) -> list[list[int]]:
    per = num_experts // world
    return [list(range(r * per, (r + 1) * per)) for r in range(world)]


def round_robin(num_experts: int, world: int) -> list[list[int]]:
    return [list(range(r, num_experts, world)) for r in range(world)]


def rank_loads(load: Sequence[float], ranks: Sequence[Sequence[int]]) -> list[float]:
    return [float(sum(load[e] for e in r)) for r in ranks]


def imbalance(load: Sequence[float], ranks: Sequence[Sequence[int]]) -> float:
    """max / mean rank load (1.0 = perfectly even)."""
    loads = rank_loads(load, ranks)
    mean = sum(loads) / len(loads)
    return max(loads) / mean if mean > 0 else 1.0


def balanced_placement(load: Sequence[float], world: int) -> list[list[int]]:
    """E/W experts per rank with the largest rank load made small: LPT, then improving swaps."""
    E = len(load)
    if world < 1 or E % world:
        raise UserError(f"{E} experts cannot be split evenly over {world} ranks; pick --num-ranks dividing {E}")
    per = E // world
    ranks: list[list[int]] = [[] for _ in range(world)]
    totals = [0.0] * world
    for e in sorted(range(E), key=lambda e: (-load[e], e)):
        r = min((r for r in range(world) if len(ranks[r]) < per), key=lambda r: (totals[r], r))
        ranks[r].append(e)
        totals[r] += load[e]
    for _ in range(10 * E * E):  # each swap strictly lowers the sum of squared rank loads: it ends
        m = max(range(world), key=lambda r: totals[r])
        best = None
        for o in range(world):
            if o == m:
                continue
            for i in ranks[m]:
                for j in ranks[o]:
                    d = load[i] - load[j]
                    if d > 0 and max(totals[m] - d, totals[o] + d) < totals[m] - 1e-12:
                        gain = totals[m] - max(totals[m] - d, totals[o] + d)
                        if best is None or gain > best[0]:
                            best = (gain, o, i, j, d)
        if best is None:
            break
        _, o, i, j, d = best
        ranks[m][ranks[m].index(i)] = j
        ranks[o][ranks[o].index(j)] = i
        totals[m] -= d
        totals[o] += d
    return [sorted(r) for r in ranks]


def placement_from_stats(stats: dict[str, Any], world: int) -> dict[str, Any]:
    """placement.json's content for the ``stats.json`` content ``stats``."""
    E = int(stats["num_experts"])
    layers, report = {}, {}
    kinds = ("contiguous", "round_robin", "placement")
    for tag, s in stats["layers"].items():
        load = [float(x) for x in s["assignments"]]
        placed = balanced_placement(load, world)
        layers[tag] = placed
        options = {"contiguous": contiguous(E, world), "round_robin": round_robin(E, world), "placement": placed}
        report[tag] = {k: imbalance(load, options[k]) for k in kinds}
    # each layer's all-to-all waits for its slowest rank: the mean of the per-layer ratios is the summary
    report["mean_over_layers"] = {k: sum(r[k] for r in report.values()) / max(len(report), 1) for k in kinds}
    return {
        "format": PLACEMENT_FORMAT,
        "version": 1,
        "num_experts": E,
        "num_ranks": world,
        "layers": layers,
        "imbalance": report,
    }


def read_placement(path: str | Path, layers: dict[str, int], world: int) -> Placement:
    """The placement in ``path`` for MoE layers ``{tag: num_experts}`` and ``world`` ranks (checked)."""
    data = read_marked_json(path, PLACEMENT_FORMAT, "an expert placement", "write it with mt-moe-stats --num-ranks W")
    if int(data.get("num_ranks", 0)) != world:
        raise UserError(
            f"{path}: placement for {data.get('num_ranks')} ranks, this run has {world}; "
            f"write one with mt-moe-stats --num-ranks {world}"
        )
    out: Placement = {}
    for tag, E in layers.items():
        if tag not in data.get("layers", {}):
            raise UserError(f"{path}: no placement for MoE layer {tag}; was it written for another checkpoint?")
        out[tag] = [[int(e) for e in r] for r in data["layers"][tag]]
        placement_order(out[tag], E, f"{path}: layer {tag}")
    return out
