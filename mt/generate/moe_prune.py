"""``mt-moe-prune``: language-specific expert pruning of an MoE checkpoint (Koishekenov et al. 2023,
"Memory-efficient NLLB-200: language-specific expert pruning of a massively multilingual machine
translation model", arXiv 2212.09811).

A language pair uses few of the experts of each MoE layer: ``mt-moe-stats`` on the pair's dev set counts,
per layer, how often each expert was chosen (``assignments``: top-1 and top-2 choices, the expert's work;
or ``first``: top-1 choices only, ``--importance first``). This command keeps, in every MoE layer, the
experts that pair uses most (``--keep-experts N`` or ``--keep-share F`` of them, the same number in every
layer) and writes a smaller checkpoint that decodes without any expert cache: a 54.5B NLLB-MoE pruned to
a quarter of its experts for one pair has ~13B parameters.

Routing in the pruned model: the gate keeps only the rows of the kept experts (``wg.weight[kept]``), so
the softmax, the top-1 and the top-2 run over the kept experts, and each token's two combine weights are
renormalised over them. That is exactly the full model with the removed experts' gate logits set to -inf
(the paper's masking at inference): softmax over the remaining logits is the full softmax renormalised
over the kept experts, and top-2 combine weights g1 / (g1 + g2) do not change under that renormalisation.
A token whose first choice was removed goes to its best kept expert instead. EOM's (1 - p) scale, the
second-expert policy and the capacity options are unchanged.

Output folder (``--out``): ``checkpoint.pt`` with ``moe_expert_count`` = N, the kept experts renumbered
0..N-1 in each layer (``pruned.experts`` lists each layer's original ids), one file per expert
(``checkpoint-rank-{q}.pt``, as mt-import writes) and the model's ``dict.txt`` / ``spm.model``; every
command runs on it as on the full model. The source is memory-mapped and the experts are copied one at a
time: pruning a model larger than memory needs the dense part plus one expert per layer. The optimizer
state is not kept (``mt-train --finetune-from-model`` starts a fresh one).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import torch

from mt.common import pagemem
from mt.common.errors import UserError
from mt.common.files import read_marked_json
from mt.common.flags import arg
from mt.data.dictionary import Dictionary
from mt.formats import checkpoint as ckpt
from mt.generate.loading import find_vocab
from mt.generate.moe_stats import STATS_FORMAT
from mt.models.config import TransformerConfig
from mt.models.moe import is_moe_layer

IMPORTANCE = ("assignments", "first")
EXPERT_PARAMS = ("fc1_weight", "fc1_bias", "fc2_weight", "fc2_bias")
# what a pruned checkpoint keeps of its source's entries (no optimizer, RNG or loop position: not a resume point)
KEPT_ENTRIES = (
    "format",
    "format_version",
    "model_config",
    "train_config",
    "resolved_paths",
    "dict_checksum",
    "lang_pairs",
    "num_updates",
    "imported",
)


@dataclass
class PruneConfig:
    path: str = arg("", "the MoE checkpoint to prune", metavar="CKPT", required=True)
    # stats.json files of mt-moe-stats: counts are summed
    stats: list[str] = arg(
        [],
        "mt-moe-stats output(s) on the language pair's dev set (counts of several are summed)",
        metavar="JSON[,JSON...]",
        required=True,
    )
    # experts kept per MoE layer, or this share of them: one of the two (check)
    keep_experts: int = arg(0, "experts kept in each MoE layer (>= 2); give this or --keep-share", metavar="N")
    keep_share: float = arg(0.0, "share of each MoE layer's experts kept, in (0, 1] (0.25: 32 of 128)", metavar="F")
    importance: str = arg(
        "assignments",
        "which counts rank the experts: assignments (top-1 and top-2 choices, the expert's work; "
        "default) or first (top-1 choices)",
        choices=list(IMPORTANCE),
        show_default=False,
    )
    out: str = arg("", "folder for checkpoint.pt (+ expert files), dict.txt, spm.model", metavar="DIR", required=True)
    data: str = arg("", "directory with the model's dict.txt (default: as mt-generate finds it)", metavar="DIR")
    spm_model: str = arg("", "SentencePiece model (default: beside dict.txt)", metavar="FILE")
    force: bool = arg(False, "replace the files of an earlier checkpoint in --out")

    def check(self) -> "PruneConfig":
        if bool(self.keep_experts) == bool(self.keep_share):
            raise UserError("give one of --keep-experts N and --keep-share F (experts kept per MoE layer)")
        if self.keep_share and not 0.0 < self.keep_share <= 1.0:
            raise UserError(f"--keep-share is a share of the experts in (0, 1], got {self.keep_share}")
        if self.keep_experts < 0:
            raise UserError(f"--keep-experts must be >= 2, got {self.keep_experts}")
        if self.importance not in IMPORTANCE:
            raise UserError(f"--importance must be one of {', '.join(IMPORTANCE)}, got {self.importance!r}")
        if not self.stats:
            raise UserError("--stats: give the stats.json of mt-moe-stats on the language pair's dev set")
        return self

    def kept(self, num_experts: int) -> int:
        n = self.keep_experts or max(1, round(self.keep_share * num_experts))
        if n < 2:
            raise UserError(f"keeping {n} of {num_experts} experts per layer: top-2 gating needs 2; keep at least 2")
        if n > num_experts:
            raise UserError(f"--keep-experts {n}: the model has {num_experts} experts per MoE layer")
        return n


@dataclass
class MoEParams:
    """An MoE layer's tensors in a state dict: its gate and its stacked experts."""

    tag: str  # enc1, dec3 (as mt-moe-stats names layers)
    gate: str
    experts: list[str]


def moe_params(cfg: TransformerConfig) -> list[MoEParams]:
    """Every MoE layer of ``cfg`` with its state-dict keys (a CMR layer's experts sit under ``ffn.moe``)."""
    out = []
    for stack, short, n in (("encoder", "enc", cfg.encoder_layers), ("decoder", "dec", cfg.decoder_layers)):
        for i in range(n):
            if is_moe_layer(cfg, i):
                p = f"{stack}.layers.{i}.ffn." + ("moe." if cfg.moe_cmr else "")
                out.append(MoEParams(f"{short}{i}", p + "wg.weight", [p + f"experts.{x}" for x in EXPERT_PARAMS]))
    return out


def read_stats(
    paths: list[str], tags: list[str], num_experts: int, importance: str
) -> tuple[dict[str, list[float]], list[str]]:
    """Per MoE layer the summed ``importance`` counts of the stats files; and the directions they cover."""
    counts: dict[str, list[float]] = {t: [0.0] * num_experts for t in tags}
    directions: list[str] = []
    for path in paths:
        data = read_marked_json(path, STATS_FORMAT, "routing statistics", "write them with mt-moe-stats")
        if int(data.get("num_experts", 0)) != num_experts:
            raise UserError(
                f"{path}: statistics of a model with {data.get('num_experts')} experts per layer, this one has "
                f"{num_experts}; run mt-moe-stats on this checkpoint"
            )
        layers = data.get("layers") or {}
        for tag in tags:
            got = (layers.get(tag) or {}).get(importance)
            if not isinstance(got, list) or len(got) != num_experts:
                raise UserError(
                    f"{path}: no '{importance}' counts for MoE layer {tag}; was it written for another checkpoint?"
                )
            counts[tag] = [a + float(b) for a, b in zip(counts[tag], got)]
        directions += [d for d in data.get("directions", []) if d not in directions]
    return counts, directions


def select(counts: list[float], keep: int) -> list[int]:
    """The ``keep`` experts with the highest counts (ties: the lower id), in id order."""
    order = sorted(range(len(counts)), key=lambda e: (-counts[e], e))
    return sorted(order[:keep])


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def prune(cfg: PruneConfig) -> dict[str, Any]:
    """Write the pruned checkpoint folder; returns {"path", "experts": {tag: kept ids}, "coverage", "bytes"}."""
    from mt.importing.convert import check_outputs, write_folder

    cfg.check()
    path, out = Path(cfg.path), Path(cfg.out)
    state = ckpt.load_checkpoint(path, mmap=True)
    mc = TransformerConfig.from_dict(state["model_config"])
    if mc.moe_freq <= 0:
        raise UserError(f"{path}: a dense checkpoint (no MoE layers): nothing to prune")
    E, K = mc.moe_expert_count, cfg.kept(mc.moe_expert_count)
    layers = moe_params(mc)
    counts, directions = read_stats(cfg.stats, [m.tag for m in layers], E, cfg.importance)
    data_dir, spm = find_vocab(path, state, cfg.data or None, cfg.spm_model or None)
    if spm is None:
        raise UserError(f"{data_dir}: no spm.model beside dict.txt; pass --spm-model (it is copied to --out)")
    dictionary = Dictionary.load(data_dir / "dict.txt")
    if state.get("dict_checksum") and dictionary.checksum() != state["dict_checksum"]:
        raise UserError(f"{data_dir / 'dict.txt'}: not the dictionary {path} was trained with; pass --data")
    views, files = ckpt.expert_views(path, state)
    inputs = {"--path": path, "--data dict.txt": data_dir / "dict.txt", "--spm-model": spm}
    check_outputs({**inputs, **{f"expert file {i}": f for i, f in enumerate(files)}}, out, cfg.force, K)
    kept = {m.tag: select(counts[m.tag], K) for m in layers}
    coverage = {t: sum(counts[t][e] for e in kept[t]) / max(sum(counts[t]), 1e-9) for t in kept}
    new = {k: state[k] for k in KEPT_ENTRIES if k in state}
    new["code_version"] = ckpt.code_version()
    new["model_config"] = {**state["model_config"], "moe_expert_count": K}
    model = dict(state["model"])
    for m in layers:
        model[m.gate] = model[m.gate].index_select(0, torch.tensor(kept[m.tag]))
    new["model"] = model
    new["moe"] = {"shards": K, "expert_keys": [k for m in layers for k in m.experts]}
    new["pruned"] = {
        "source": str(path.resolve()),
        "source_id": ckpt.model_id(path, state),
        "stats": [str(s) for s in cfg.stats],
        "directions": directions,
        "importance": cfg.importance,
        "num_experts": E,
        "experts": kept,
        "coverage": coverage,
    }
    expert_bytes = sum(v.numel() * v.element_size() for k in new["moe"]["expert_keys"] for v in views[k])
    written = write_folder(out, spm, dictionary, new, _shards(layers, kept, views, files, K))
    _say(
        f"mt-moe-prune: kept {K} of {E} experts in each of {len(layers)} MoE layers ({', '.join(directions) or '?'}: "
        f"{100 * min(coverage.values()):.1f}-{100 * max(coverage.values()):.1f}% of the {cfg.importance} per layer); "
        f"expert weights {expert_bytes / 2**20:.1f} MiB -> {expert_bytes * K / E / 2**20:.1f} MiB; "
        f"wrote {written}"
    )
    return {"path": written, "experts": kept, "coverage": coverage, "bytes": (expert_bytes, expert_bytes * K // E)}


def _shards(
    layers: list[MoEParams], kept: dict[str, list[int]], views: dict[str, list[torch.Tensor]], files: list[Path], K: int
) -> Iterator[dict[str, torch.Tensor]]:
    """Shard q: the q-th kept expert of every layer, copied from the mapped source (then its pages dropped)."""
    for q in range(K):
        shard = {k: views[k][kept[m.tag][q]].clone().unsqueeze(0) for m in layers for k in m.experts}
        pagemem.drop_file_pages(files)
        yield shard
        del shard
