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

Output folder (what ``load_model`` finds next to a checkpoint): ``checkpoint.pt`` (our format, see
``mt.checkpoint``; ``imported`` records the source), ``dict.txt`` and ``spm.model``. The sparse NLLB-MoE
import adds its expert targets to the plan (per MoE layer, per expert) and writes the experts as
``mt.checkpoint`` lays them out; the dense part goes through this code unchanged.
"""

from __future__ import annotations

import contextlib
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from mt import checkpoint as ckpt
from mt.data.dictionary import Dictionary
from mt.errors import UserError
from mt.importing.weights import WeightSource
from mt.models.config import TransformerConfig
from mt.models.transformer import build_model
from mt.util import atomic_write, refuse_overwriting_input

EMBED = "encoder.embed_tokens.weight"  # fairseq's name of the shared embedding
OUTPUTS = ("checkpoint.pt", "dict.txt", "spm.model")


@dataclass
class Target:
    name: str  # our state-dict key
    sources: list[str]  # fairseq-style source keys, concatenated along dim 0 when several


@dataclass
class Naming:
    """Where a checkpoint keeps the fairseq-style keys."""

    prefix: str  # prepended to every fairseq key ("model." in HF's M2M-100)
    embed: tuple[str, ...]  # the stored copies of the shared embedding: the first present is read
    ignore: tuple[str, ...] = ()  # key suffixes with nothing to import (sinusoid tables, version counters)

    def key(self, fs_key: str) -> str:
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


def dense_plan(cfg: TransformerConfig) -> list[Target]:
    """Every tensor of our dense Transformer and the fairseq tensors it is made of."""
    plan = [Target("embed_tokens.weight", [EMBED])]
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
                        plan.append(Target(f"{a}.qkv_proj.{part}", [f"{a}.{x}_proj.{part}" for x in "qkv"]))
                    else:
                        plan.append(Target(f"{a}.q_proj.{part}", [f"{a}.q_proj.{part}"]))
                        plan.append(Target(f"{a}.kv_proj.{part}", [f"{a}.{x}_proj.{part}" for x in "kv"]))
                    plan.append(Target(f"{a}.out_proj.{part}", [f"{a}.out_proj.{part}"]))
                plan += [Target(p + f"{norm}.{part}", [p + f"{norm}.{part}"]) for norm in norms]
                plan += [Target(p + f"ffn.{fc}.{part}", [p + f"{fc}.{part}"]) for fc in ("fc1", "fc2")]
        plan += [Target(f"{stack}.layer_norm.{part}", [f"{stack}.layer_norm.{part}"]) for part in ("weight", "bias")]
    return plan


def expected_shapes(cfg: TransformerConfig) -> dict[str, tuple[int, ...]]:
    """Our model's tensor shapes, from a model built on the meta device (allocates nothing)."""
    with torch.device("meta"):
        model = build_model(cfg)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def embed_key(weights: WeightSource, naming: Naming, where: Path) -> str:
    for k in naming.embed:
        if k in weights:
            return k
    raise UserError(f"{where}: no token embedding ({' / '.join(naming.embed)}) in the weights: not an M2M-100 / "
                    "NLLB model")  # fmt: skip


def convert(imp: Imported, dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """Our state dict from the source weights, tensor by tensor (see the module docstring)."""
    w, naming = imp.weights, imp.naming
    primary = embed_key(w, naming, imp.inputs["weights"])
    shapes = expected_shapes(imp.cfg)
    plan = dense_plan(imp.cfg)
    missing = sorted(set(shapes) - {t.name for t in plan})
    if missing:  # a model option the plan does not cover (an adapter, an MoE layer)
        raise UserError(f"mt-import cannot fill {missing[0]} of this model configuration")
    used: set[str] = set()
    state: dict[str, torch.Tensor] = {}
    for t in plan:
        keys = [primary if k == EMBED else naming.key(k) for k in t.sources]
        absent = [k for k in keys if k not in w]
        if absent:
            raise UserError(f"{imp.inputs['weights']}: tensor {absent[0]} is missing: the weights are incomplete "
                            "or do not match config (layers, model type)")  # fmt: skip
        rows = sum(w.shape(k)[0] for k in keys)
        got = (rows, *w.shape(keys[0])[1:])
        if got != shapes[t.name]:
            raise UserError(f"{w.file_of(keys[0])}: {keys[0]} has shape {list(w.shape(keys[0]))}, the config "
                            f"says {list(shapes[t.name])} (joined from {len(keys)}); weights and config disagree")  # fmt: skip
        parts = [w.get(k) for k in keys]
        out = torch.cat(parts) if len(parts) > 1 else parts[0].clone(memory_format=torch.contiguous_format)
        state[t.name] = out if dtype is None or out.dtype == dtype else out.to(dtype)
        w.release(parts)
        del parts
        used.update(keys)
    used |= _check_tied(w, naming, primary)
    ignored = [k for k in w.keys() if k not in used and k.endswith(naming.ignore or ("\0",))]
    extra = [k for k in w.keys() if k not in used and k not in ignored]
    if extra:
        raise UserError(
            f"{w.file_of(extra[0])}: {len(extra)} tensors mt-import does not know, e.g. {extra[0]}: the model has "
            "parts our Transformer lacks (layernorm_embedding, learned positions, MoE layers?)"
        )
    return state


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


def check_outputs(imp: Imported, out: Path, force: bool) -> None:
    """Refuse before any work: outputs that would replace an input, or earlier outputs without ``--force``."""
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; give a folder for checkpoint.pt, dict.txt and spm.model")
    for name in OUTPUTS:
        refuse_overwriting_input({k: v for k, v in imp.inputs.items()}, out / name, f"--out {out} ({name})")
    present = [n for n in OUTPUTS if (out / n).exists()]
    if present and not force:
        raise UserError(f"--out {out} already holds {', '.join(present)}; pass --force to replace them, or choose "
                        "another folder")  # fmt: skip


def write(imp: Imported, state: dict[str, torch.Tensor], out: Path) -> Path:
    """Write spm.model, dict.txt and checkpoint.pt (each atomically); on failure none of this run's files stay."""
    written: list[Path] = []
    try:
        out.mkdir(parents=True, exist_ok=True)
        with atomic_write(out / "spm.model", "wb") as fh, open(imp.spm, "rb") as src:
            shutil.copyfileobj(src, fh, 1 << 22)
        written.append(out / "spm.model")
        imp.dictionary.save(out / "dict.txt")
        written.append(out / "dict.txt")
        if Dictionary.load(out / "dict.txt").symbols != imp.dictionary.symbols:  # pieces dict.txt cannot hold
            raise UserError(f"{out / 'dict.txt'}: the vocabulary does not survive dict.txt's format (a token with "
                            "unusual whitespace?); report this model")  # fmt: skip
        path = out / "checkpoint.pt"
        ckpt.save_checkpoint(_checkpoint(imp, state), path)
        written.append(path)
    except BaseException:
        for p in written:
            with contextlib.suppress(OSError):
                p.unlink()
        raise
    return path


def _checkpoint(imp: Imported, state: dict[str, torch.Tensor]) -> dict[str, Any]:
    return {
        "format": ckpt.FORMAT, "format_version": ckpt.FORMAT_VERSION, "code_version": ckpt.code_version(),
        "model_config": imp.cfg.to_dict(), "train_config": {}, "dict_checksum": imp.dictionary.checksum(),
        "lang_pairs": [], "model": state, "num_updates": 0, "imported": imp.meta,
    }  # fmt: skip
