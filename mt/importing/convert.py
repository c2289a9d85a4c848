"""From a released checkpoint's tensors to our state dict, and the output folder mt-import writes.

Both formats name their tensors the fairseq way (HF's M2M-100 adds ``model.`` and calls the embedding
``shared``), so the plan is written once, in fairseq names, and each reader says where those names live
(``Naming``). A ``Target`` is one tensor of ours made from one or more source tensors concatenated
along dim 0: self-attention q/k/v become our fused ``qkv_proj``, encoder-decoder k/v our ``kv_proj``.
The one embedding matrix serves encoder, decoder and output; every copy a checkpoint stores of it must
be the same tensor (tied), or the import stops.

Weights are converted tensor by tensor (``mt.importing.weights``): each target is allocated, filled from
the memory-mapped sources and their pages are given back before the next one, so the state dict being
written is the only full copy in memory. The expected shapes come from our model built on the ``meta``
device (no memory).

Sparse MoE (NLLB-MoE): an MoE layer's gate ``moe_layer.gate.wg`` becomes our ``ffn.wg`` (same layout,
(E, d), no bias) and its experts ``moe_layer.experts.{e}.fc1/fc2`` (fairseq's global expert ids) our stacked
``ffn.experts.fc1_weight`` ... (E, ...) tensors, expert e at row e; nothing is transposed (both keep
``nn.Linear``'s (out, in) weights). Expert targets (``Target.experts``) are never built whole: the
experts are written as ``mt.formats.checkpoint`` lays out expert shards, one file per expert holding that
expert of every MoE layer (``checkpoint-rank-{e}.pt``, ``moe.shards`` = E), each converted, written and
dropped before the next (``save_with_expert_files``). So the import's peak memory is the dense part plus
one expert per MoE layer, and inference memory-maps each expert from its file (``expert_views``).

Everything is checked (names, shapes, the tied embedding, unknown tensors) before anything is written.

Output folder (what ``load_model`` finds next to a checkpoint): ``checkpoint.pt`` (our format, see
``mt.formats.checkpoint``; ``imported`` records the source), ``dict.txt``, ``spm.model`` and, for an MoE model,
``checkpoint-rank-{e}.pt`` per expert.
"""

from __future__ import annotations

import contextlib
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import torch

from mt.common.errors import UserError
from mt.common.files import atomic_write, refuse_overwriting_input
from mt.data.dictionary import Dictionary
from mt.formats import checkpoint as ckpt
from mt.importing.weights import WeightSource
from mt.models.config import TransformerConfig
from mt.models.moe import is_moe_layer
from mt.models.transformer import build_model

EMBED = "encoder.embed_tokens.weight"  # fairseq's name of the shared embedding
OUTPUTS = ("checkpoint.pt", "dict.txt", "spm.model")


EXPERT_PARTS = (
    ("fc1_weight", "fc1.weight"),
    ("fc1_bias", "fc1.bias"),
    ("fc2_weight", "fc2.weight"),
    ("fc2_bias", "fc2.bias"),
)


@dataclass
class Target:
    name: str  # our state-dict key
    # fairseq-style source keys: concatenated along dim 0 when several; with ``experts``, expert e's tensor
    # is sources[e] and they stack along a new dim 0 (written one expert at a time, never joined in memory)
    sources: list[str]
    experts: bool = False


@dataclass
class Naming:
    """Where a checkpoint keeps the fairseq-style keys."""

    prefix: str  # prepended to every fairseq key ("model." in HF's M2M-100)
    embed: tuple[str, ...]  # the stored copies of the shared embedding: the first present is read
    ignore: tuple[str, ...] = ()  # key suffixes with nothing to import (sinusoid tables, version counters)
    renames: tuple[tuple[str, str], ...] = ()  # (regex, replacement) applied to fairseq keys (HF's NLLB-MoE)

    def key(self, fs_key: str) -> str:
        for pattern, repl in self.renames:
            fs_key = re.sub(pattern, repl, fs_key)
        return self.prefix + fs_key


@dataclass
class Imported:
    """What a reader found: our model config, the vocabulary and the weights, before anything is written."""

    cfg: TransformerConfig
    dictionary: Dictionary
    spm: Path
    weights: WeightSource
    naming: Naming
    inputs: dict[str, Path]  # {flag or role: path}: never overwritten by the outputs
    meta: dict[str, Any] = field(default_factory=dict)


def plan(cfg: TransformerConfig) -> list[Target]:
    """Every tensor of our Transformer (dense FFN or MoE layer per ``is_moe_layer``) and its fairseq sources."""
    out = [Target("embed_tokens.weight", [EMBED])]
    for stack, n in (("encoder", cfg.encoder_layers), ("decoder", cfg.decoder_layers)):
        for i in range(n):
            p = f"{stack}.layers.{i}."
            attns = [("self_attn", True)] + ([("encoder_attn", False)] if stack == "decoder" else [])
            norms = ["self_attn_layer_norm", "final_layer_norm"]
            norms += ["encoder_attn_layer_norm"] if stack == "decoder" else []
            for part in ("weight", "bias"):
                for attn, fused_q in attns:
                    a = p + attn
                    if fused_q:
                        out.append(Target(f"{a}.qkv_proj.{part}", [f"{a}.{x}_proj.{part}" for x in "qkv"]))
                    else:
                        out.append(Target(f"{a}.q_proj.{part}", [f"{a}.q_proj.{part}"]))
                        out.append(Target(f"{a}.kv_proj.{part}", [f"{a}.{x}_proj.{part}" for x in "kv"]))
                    out.append(Target(f"{a}.out_proj.{part}", [f"{a}.out_proj.{part}"]))
                out += [Target(p + f"{norm}.{part}", [p + f"{norm}.{part}"]) for norm in norms]
                if not is_moe_layer(cfg, i):
                    out += [Target(p + f"ffn.{fc}.{part}", [p + f"{fc}.{part}"]) for fc in ("fc1", "fc2")]
            if is_moe_layer(cfg, i):
                out.append(Target(p + "ffn.wg.weight", [p + "moe_layer.gate.wg.weight"]))
                out += [
                    Target(
                        p + f"ffn.experts.{ours}",
                        [f"{p}moe_layer.experts.{e}.{theirs}" for e in range(cfg.moe_expert_count)],
                        experts=True,
                    )
                    for ours, theirs in EXPERT_PARTS
                ]
        out += [Target(f"{stack}.layer_norm.{part}", [f"{stack}.layer_norm.{part}"]) for part in ("weight", "bias")]
    return out


def expected_shapes(cfg: TransformerConfig) -> dict[str, tuple[int, ...]]:
    """Our model's tensor shapes, from a model built on the meta device (allocates nothing)."""
    with torch.device("meta"):
        model = build_model(cfg)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def embed_key(weights: WeightSource, naming: Naming, where: Path) -> str:
    for k in naming.embed:
        if k in weights:
            return k
    raise UserError(
        f"{where}: no token embedding ({' / '.join(naming.embed)}) in the weights: not an M2M-100 / NLLB model"
    )


@dataclass
class Checked:
    """The plan of an import whose every source tensor was found with the expected shape."""

    plan: list[Target]
    keys: dict[str, list[str]]  # our key -> the source keys (in the reader's names)


def check(imp: Imported) -> Checked:
    """Every target's sources present with the expected shapes, the embedding tied, no unknown tensor.

    Reads only shapes (and the embedding copies): run before anything is written."""
    w, naming = imp.weights, imp.naming
    primary = embed_key(w, naming, imp.inputs["weights"])
    shapes = expected_shapes(imp.cfg)
    targets = plan(imp.cfg)
    missing = sorted(set(shapes) - {t.name for t in targets})
    if missing:  # a model option the plan does not cover (an adapter, a CMR layer)
        raise UserError(f"mt-import cannot fill {missing[0]} of this model configuration")
    keys: dict[str, list[str]] = {}
    for t in targets:
        ks = [primary if k == EMBED else naming.key(k) for k in t.sources]
        absent = [k for k in ks if k not in w]
        if absent:
            raise UserError(
                f"{imp.inputs['weights']}: tensor {absent[0]} is missing: the weights are incomplete "
                "or do not match config (layers, model type, experts)"
            )
        for k in ks if t.experts else ks[:1]:
            got = w.shape(k) if t.experts else (sum(w.shape(x)[0] for x in ks), *w.shape(k)[1:])
            want = shapes[t.name][1:] if t.experts else shapes[t.name]
            if tuple(got) != tuple(want):
                what = "one expert" if t.experts else f"joined from {len(ks)}"
                raise UserError(
                    f"{w.file_of(k)}: {k} has shape {list(w.shape(k))}, the config says {list(want)} "
                    f"({what}); weights and config disagree"
                )
        keys[t.name] = ks
    used = {k for ks in keys.values() for k in ks} | _check_tied(w, naming, primary)
    ignored = [k for k in w.keys() if k not in used and k.endswith(naming.ignore or ("\0",))]
    extra = [k for k in w.keys() if k not in used and k not in ignored]
    if extra:
        raise UserError(
            f"{w.file_of(extra[0])}: {len(extra)} tensors mt-import does not know, e.g. {extra[0]}: the model has "
            "parts our Transformer lacks (layernorm_embedding, learned positions, CMR layers?)"
        )
    return Checked(targets, keys)


def _cast(t: torch.Tensor, dtype: torch.dtype | None) -> torch.Tensor:
    """A new tensor of ours (never a view of the source mapping), in ``dtype`` when given."""
    if dtype is not None and t.dtype != dtype:
        return t.to(dtype)
    return t.clone(memory_format=torch.contiguous_format)


def convert(imp: Imported, dtype: torch.dtype | None = None, checked: Checked | None = None) -> dict[str, torch.Tensor]:
    """Our state dict without the experts, tensor by tensor (see the module docstring)."""
    checked = checked or check(imp)
    w = imp.weights
    state: dict[str, torch.Tensor] = {}
    for t in checked.plan:
        if t.experts:
            continue
        parts = [w.get(k) for k in checked.keys[t.name]]
        state[t.name] = torch.cat(parts).to(dtype or parts[0].dtype) if len(parts) > 1 else _cast(parts[0], dtype)
        w.release(parts)
        del parts
    w.release_files(w.keys())
    return state


def expert_shards(
    imp: Imported, checked: Checked, dtype: torch.dtype | None = None
) -> Iterator[dict[str, torch.Tensor]]:
    """Per expert e, its tensors in every MoE layer as (1, ...) tensors: one shard of ``moe.shards`` = E."""
    w = imp.weights
    targets = [t for t in checked.plan if t.experts]
    for e in range(imp.cfg.moe_expert_count):
        shard: dict[str, torch.Tensor] = {}
        for t in targets:
            src = w.get(checked.keys[t.name][e])
            shard[t.name] = _cast(src, dtype).unsqueeze(0)
            w.release([src])
            del src
        w.release_files([checked.keys[t.name][e] for t in targets])
        yield shard
        del shard


def _check_tied(w: WeightSource, naming: Naming, primary: str) -> set[str]:
    """The stored copies of the embedding (input of encoder and decoder, output projection): all equal."""
    seen = {primary}
    ref = w.get(primary)
    for k in naming.embed:
        if k in seen or k not in w:
            continue
        other = w.get(k)
        same = other.shape == ref.shape and (
            (other.data_ptr() == ref.data_ptr() and other.stride() == ref.stride()) or torch.equal(other, ref)
        )
        w.release([other])
        if not same:
            raise UserError(
                f"{w.file_of(k)}: {k} differs from {primary}: this model does not share one embedding between "
                "encoder, decoder and output (our Transformer does, like every NLLB-200 model)"
            )
        seen.add(k)
    w.release([ref])
    return seen


def shard_outputs(out: Path) -> list[Path]:
    """Expert files of an earlier import or prune in ``out`` (``checkpoint-rank-{q}.pt`` and ``.pending``)."""
    pattern = re.compile(r"checkpoint-rank-\d+\.pt(\.pending)?")
    return sorted(p for p in out.glob("checkpoint-rank-*.pt*") if pattern.fullmatch(p.name))


def check_outputs(inputs: dict[str, Path], out: Path, force: bool, num_experts: int = 0) -> None:
    """Refuse before any work: outputs that would replace an input, or earlier outputs without ``--force``."""
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; give a folder for checkpoint.pt, dict.txt and spm.model")
    names = [*OUTPUTS, *(ckpt.shard_path("checkpoint.pt", q).name for q in range(num_experts))]
    for name in names:
        refuse_overwriting_input(dict(inputs), out / name, f"--out {out} ({name})")
    present = [n for n in OUTPUTS if (out / n).exists()] + [p.name for p in shard_outputs(out)[:1]]
    if present and not force:
        raise UserError(
            f"--out {out} already holds {', '.join(present)}; pass --force to replace them, or choose another folder"
        )


def write_folder(
    out: Path,
    spm: Path,
    dictionary: Dictionary,
    state: dict[str, Any],
    shards: Iterator[dict[str, torch.Tensor]] | None = None,
) -> Path:
    """Write spm.model, dict.txt and checkpoint.pt (each atomically), with ``state["moe"]``'s expert files
    from ``shards`` (one at a time); on failure none of this run's files stay. Expert files of an earlier
    model in ``out`` that this one does not have are removed once it is written."""
    written: list[Path] = []
    try:
        out.mkdir(parents=True, exist_ok=True)
        with atomic_write(out / "spm.model", "wb") as fh, open(spm, "rb") as src:
            shutil.copyfileobj(src, fh, 1 << 22)
        written.append(out / "spm.model")
        dictionary.save(out / "dict.txt")
        written.append(out / "dict.txt")
        if Dictionary.load(out / "dict.txt").symbols != dictionary.symbols:  # pieces dict.txt cannot hold
            raise UserError(
                f"{out / 'dict.txt'}: the vocabulary does not survive dict.txt's format (a token with "
                "unusual whitespace?); report this model"
            )
        path = out / "checkpoint.pt"
        if shards is None:
            ckpt.save_checkpoint(state, path)
            written.append(path)
        else:
            written += ckpt.save_with_expert_files(state, path, shards)
    except BaseException:
        for p in written:
            with contextlib.suppress(OSError):
                p.unlink()
        raise
    for stale in set(shard_outputs(out)) - set(written):
        with contextlib.suppress(OSError):
            stale.unlink()
    return path


def write(imp: Imported, out: Path, dtype: torch.dtype | None = None) -> Path:
    """Check, convert and write ``imp`` into ``out`` (the dense part in memory, then one expert at a time)."""
    checked = check(imp)
    state = ckpt.weights_state(
        imp.cfg.to_dict(), convert(imp, dtype, checked), imp.dictionary.checksum(), imported=imp.meta
    )
    shards = None
    if imp.cfg.moe_freq > 0:
        state["moe"] = {"shards": imp.cfg.moe_expert_count, "expert_keys": [t.name for t in checked.plan if t.experts]}
        shards = expert_shards(imp, checked, dtype)
    return write_folder(out, imp.spm, imp.dictionary, state, shards)
