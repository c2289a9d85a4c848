"""``mt-moe-stats``: routing statistics of an MoE checkpoint on a sample of text, and an expert placement
that evens the expert work across ranks (Huang et al. 2023, arXiv 2303.06182, "expert load balancing").

Statistics (``--out stats.json``): the checkpoint translates the sample with the search of mt-translate
(dynamic gating) and every MoE forward's routing is counted, per layer: ``assignments`` per expert (a
token has two: this is the expert's work), ``first`` choices, and with ``--coactivation`` how often two
experts serve the same token. Decoder layers count every decoding step's rows, beams included: the work
the experts really do at inference.

Placement (``--num-ranks W`` -> ``placement.json``; computed and read by ``mt.models.moe.placement``): each
layer's experts in W groups of E/W (the shape expert parallelism needs), minimising the most loaded group:
greedy LPT (experts heaviest first, each to the least-loaded rank that still has room), then swaps between
the most loaded rank and another while that lowers the maximum. Reported per layer and overall: max/mean
rank load of contiguous blocks (what ``expert_parallel_`` does without a placement), of round-robin, and of
the placement. Expert-parallel inference reads the file: ``torchrun ... mt-generate ... --expert-placement
placement.json``.

Formats (JSON, written atomically)::

    stats.json      {"format": "nllb-mini/moe-stats", "version": 1, "checkpoint", "directions",
                     "sentences", "num_experts", "layers": {tag: {"assignments": [E], "first": [E],
                     "coactivation": [[E x E]] (optional)}}}
    placement.json  {"format": "nllb-mini/moe-placement", "version": 1, "num_experts", "num_ranks",
                     "layers": {tag: [[experts of rank 0], [rank 1], ...]},
                     "imbalance": {tag or "all": {"contiguous", "round_robin", "placement"}}}

Layer tags are the MoE layers' (``enc1``, ``dec3``: stack and 0-based layer index), as in mt-train's logs.
"""

from __future__ import annotations

import json
import random
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch

from mt.common.errors import UserError, warn_once
from mt.common.files import atomic_write
from mt.common.flags import arg
from mt.common.langs import check_code
from mt.generate.moe_inference import MoEInferenceConfig
from mt.generate.search import SearchConfig
from mt.generate.translator import Translator
from mt.models.moe import MoELayer, Routing
from mt.models.moe.placement import placement_from_stats

STATS_FORMAT = "nllb-mini/moe-stats"


# --- statistics ----------------------------------------------------------------------------------
class RoutingCounter:
    """A ``route_hook`` for MoE layers: counts assignments (and co-activations) per layer."""

    def __init__(self, coactivation: bool = False) -> None:
        self.coactivation = coactivation
        self.assign: dict[str, torch.Tensor] = {}
        self.first: dict[str, torch.Tensor] = {}
        self.coact: dict[str, torch.Tensor] = {}

    def attach(self, model: torch.nn.Module) -> list[MoELayer]:
        layers = [m for m in model.modules() if isinstance(m, MoELayer)]
        for m in layers:
            m.route_hook = self
        return layers

    def __call__(self, layer: MoELayer, r: Routing) -> None:
        E, tag = layer.num_experts, layer.tag
        a = torch.bincount(r.expert, minlength=E).cpu().long()
        f = torch.bincount(r.top1, minlength=E).cpu().long()
        self.assign[tag] = self.assign.get(tag, torch.zeros(E, dtype=torch.long)) + a
        self.first[tag] = self.first.get(tag, torch.zeros(E, dtype=torch.long)) + f
        if self.coactivation:
            M = torch.zeros(r.probs.size(0), E)
            M[r.token.cpu(), r.expert.cpu()] = 1.0
            c = (M.t() @ M).long()
            self.coact[tag] = self.coact.get(tag, torch.zeros(E, E, dtype=torch.long)) + c

    def layers(self) -> dict[str, dict[str, Any]]:
        out = {}
        for tag in sorted(self.assign, key=lambda t: (t[:3] != "enc", int(t[3:]))):
            out[tag] = {"assignments": self.assign[tag].tolist(), "first": self.first[tag].tolist()}
            if self.coactivation:
                out[tag]["coactivation"] = self.coact[tag].tolist()
        return out


@dataclass
class MoEStatsConfig:
    path: str = ""
    input: str = arg("", "text, one sentence per line", metavar="FILE", required=True)
    src_lang: str = arg("", name="--source-lang", short="-s", required=True)
    tgt_langs: list[str] = arg(
        [], "one or more target languages, comma-separated", name="--target-lang", short="-t", required=True
    )
    out: str = arg("stats.json", "statistics file (stats.json)", metavar="JSON", required=True, show_default=False)
    # sentences drawn at random (seeded); 0 = all
    sample: int = arg(0, "translate N random lines, drawn with --seed (default: all)", metavar="N")
    seed: int = 1  # the command line's --seed (SearchConfig's)
    # > 1: also write a placement for this many ranks
    num_ranks: int = arg(0, "also write an expert placement for W ranks (expert-parallel inference)", metavar="W")
    placement: str = arg("", "where (default: placement.json beside --out)", metavar="JSON")
    coactivation: bool = arg(False, "also count expert x expert co-activations")
    data: str = ""
    spm_model: str = ""
    device: str = "cpu"
    bf16: bool = False
    threads: int = 0
    quantize: str = "none"  # routing statistics come from the float model
    search: SearchConfig = field(default_factory=SearchConfig)
    max_tokens: int = 4096
    batch_size: int = 0
    progress: bool = True
    moe: MoEInferenceConfig = field(default_factory=MoEInferenceConfig)  # gating and expert cache

    def check(self) -> "MoEStatsConfig":
        if not self.tgt_langs:
            raise UserError("-t/--target-lang: give one or more target languages")
        if self.sample < 0:
            raise UserError(f"--sample must be >= 0 (0: every line), got {self.sample}")
        if self.num_ranks < 0 or self.num_ranks == 1:
            raise UserError(f"--num-ranks must be 2 or more (0: no placement), got {self.num_ranks}")
        if not Path(self.input).is_file():
            raise UserError(f"{self.input}: input file not found (one sentence per line)")
        self.search.check()
        self.moe.check()
        return self


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def read_sample(path: str, sample: int, seed: int) -> tuple[list[str], int]:
    """(sentences, bad or empty lines skipped): all good lines, or ``sample`` of them drawn with ``seed``."""
    from mt.generate.readers import iter_records, list_inputs

    good, bad = [], 0
    for rec in iter_records(list_inputs([path], "text")):
        if rec.text is None or not rec.text.strip():
            bad += 1
        else:
            good.append(rec.text)
    if not good:
        raise UserError(f"{path}: no non-empty UTF-8 lines to translate")
    if sample and sample < len(good):
        keep = sorted(random.Random(seed).sample(range(len(good)), sample))
        good = [good[i] for i in keep]
    return good, bad


def collect(
    translator: Any,
    sentences: Sequence[str],
    src_lang: str,
    tgt_langs: Sequence[str],
    search: SearchConfig,
    max_tokens: int = 4096,
    batch_size: int = 0,
    coactivation: bool = False,
    progress: bool = False,
) -> dict[str, Any]:
    """Translate ``sentences`` into each target language and count the routing (stats.json's content)."""
    from tqdm import tqdm

    warn = warn_once("mt-moe-stats")
    counter = RoutingCounter(coactivation)
    layers = counter.attach(translator.model)
    if not layers:
        raise UserError(f"{translator.loaded.path}: not an MoE checkpoint (no MoE layers): nothing to count")
    ids = translator.encode(list(sentences))
    bar = tqdm(total=len(ids) * len(tgt_langs), unit="sent", desc="mt-moe-stats", disable=not progress, file=sys.stderr)
    try:
        for tgt in tgt_langs:
            translator.translate_ids(
                ids,
                src_lang,
                tgt,
                search,
                max_tokens,
                batch_size,
                on_batch=lambda idx, _: bar.update(len(idx)),
                warn=warn,
            )
    finally:
        bar.close()
        for m in layers:
            m.route_hook = None
    return {
        "format": STATS_FORMAT,
        "version": 1,
        "checkpoint": str(translator.loaded.path),
        "directions": [f"{src_lang}-{t}" for t in tgt_langs],
        "sentences": len(ids),
        "num_experts": layers[0].num_experts,
        "layers": counter.layers(),
    }


def report_lines(placement: dict[str, Any]) -> list[str]:
    lines = [f"max/mean expert work per rank over {placement['num_ranks']} ranks: contiguous | round-robin | placement"]
    for tag, r in placement["imbalance"].items():
        lines.append(f"  {tag:>16}: {r['contiguous']:.3f} | {r['round_robin']:.3f} | {r['placement']:.3f}")
    return lines


def moe_stats(cfg: MoEStatsConfig, translator: Any = None) -> dict[str, Any]:
    """Run mt-moe-stats; returns {"stats": ..., "placement": ... or None}."""
    cfg.check()
    check_code(cfg.src_lang, "-s/--source-lang")
    for t in cfg.tgt_langs:
        check_code(t, "-t/--target-lang")
    sentences, bad = read_sample(cfg.input, cfg.sample, cfg.seed)
    if bad:
        _say(f"mt-moe-stats: {cfg.input}: skipped {bad} empty or undecodable lines")
    tr = translator or Translator.from_options(cfg)
    stats = collect(
        tr,
        sentences,
        cfg.src_lang,
        cfg.tgt_langs,
        cfg.search,
        cfg.max_tokens,
        cfg.batch_size,
        cfg.coactivation,
        cfg.progress,
    )
    if tr.moe is not None and cfg.moe.expert_cache:
        _say(f"mt-moe-stats: {tr.moe_summary()}")
    with atomic_write(cfg.out) as fh:
        json.dump(stats, fh, indent=1)
    _say(f"mt-moe-stats: routing of {len(sentences)} sentences x {len(cfg.tgt_langs)} directions -> {cfg.out}")
    placement = None
    if cfg.num_ranks:
        placement = placement_from_stats(stats, cfg.num_ranks)
        where = cfg.placement or str(Path(cfg.out).with_name("placement.json"))
        with atomic_write(where) as fh:
            json.dump(placement, fh, indent=1)
        for line in report_lines(placement):
            _say(line)
        _say(f"mt-moe-stats: placement for {cfg.num_ranks} ranks -> {where}")
    return {"stats": stats, "placement": placement}
