"""Load a trained model for inference: checkpoint + the ``dict.txt`` and ``spm.model`` it was trained with.

A checkpoint holds the weights, the model config and the dictionary's checksum, not the dictionary itself
(fairseq's convention: the data directory carries ``dict.txt``). The vocabulary files are looked for, in
order: the directory given (``--data`` / ``DATA``), the checkpoint's own folder (copy ``dict.txt`` and
``spm.model`` next to a checkpoint to ship it), and the data directory recorded at training time (found
from any working directory, see ``recorded_places``). The dictionary must have the checksum recorded in
the checkpoint, so a wrong ``dict.txt`` is an error, never silently wrong output. A model fine-tuned with
``mt-train --add-langs`` records the tokens it appended (``dict_added``): its dictionary is the data's
``dict.txt`` plus those, so the binarized data and ``dict.txt`` it was trained on still serve it.
"""

from __future__ import annotations

import os
import zipfile
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import nn

from mt.common import pagemem
from mt.common.errors import UserError
from mt.data.dictionary import Dictionary
from mt.data.spm import SpmTokenizer
from mt.formats import checkpoint as ckpt
from mt.models import moe
from mt.models.config import TransformerConfig
from mt.models.transformer import Transformer, build_model


@dataclass
class LoadedModel:
    model: Transformer
    dictionary: Dictionary
    spm: SpmTokenizer | None
    path: Path
    data_dir: Path
    lang_pairs: list[str] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)  # the checkpoint's other entries (no tensors)
    # ``lazy_experts=True``: the model holds no expert weights; per MoE layer (module name) the experts'
    # (fc1_weight, fc1_bias, fc2_weight, fc2_bias), memory-mapped from ``mapped_files``
    expert_source: dict[str, list[tuple[torch.Tensor, ...]]] = field(default_factory=dict)
    mapped_files: list[Path] = field(default_factory=list)
    stored_dtype: torch.dtype = torch.float32  # the checkpoint's weights' type (the model computes in float32)

    @property
    def langs(self) -> list[str]:
        return self.dictionary.langs()


def recorded_places(path: Path, state: dict[str, Any], key: str) -> list[Path]:
    """Where the ``data`` / ``spm_model`` path recorded at training time may be now, most likely first.

    The absolute path resolved at save time; the path as typed (relative to the current directory);
    relative to the directory mt-train ran in, found by taking the recorded ``save_dir`` off the
    checkpoint's folder (the whole project moved, or another working directory); relative to the
    checkpoint's folder. So ``--data`` is needed only when the data itself is gone.
    """
    tc = state.get("train_config") or {}
    recorded = tc.get(key)
    resolved = (state.get("resolved_paths") or {}).get(key)
    places = [Path(resolved)] if isinstance(resolved, str) and resolved else []
    if isinstance(recorded, str) and recorded:
        rec = Path(recorded)
        places.append(rec)
        if not rec.is_absolute():
            run_dir = _training_dir(path, tc.get("save_dir"))
            if run_dir is not None:
                places.append(run_dir / rec)
            places.append(path.parent / rec)
    out: list[Path] = []
    for p in places:
        if p not in out:
            out.append(p)
    return out


def _training_dir(path: Path, save_dir: object) -> Path | None:
    """The directory mt-train ran in: the checkpoint's folder less the relative ``save_dir`` it was saved to."""
    if not isinstance(save_dir, str) or not save_dir or Path(save_dir).is_absolute():
        return None
    parts = [p for p in Path(save_dir).parts if p != "."]
    folder = path.resolve().parent
    if not parts:
        return folder
    if ".." in parts or len(parts) >= len(folder.parts) or list(folder.parts[-len(parts) :]) != parts:
        return None
    return Path(*folder.parts[: -len(parts)])


def _candidates(path: Path, data: str | os.PathLike | None, state: dict[str, Any]) -> list[Path]:
    if data:
        return [Path(data)]
    return [path.parent, *(p for p in recorded_places(path, state, "data") if p != path.parent)]


def find_vocab(
    path: Path, state: dict[str, Any], data: str | os.PathLike | None, spm_model: str | os.PathLike | None
) -> tuple[Path, Path | None]:
    """(directory holding dict.txt, spm.model path or None) for the checkpoint ``path``."""
    places = _candidates(path, data, state)
    data_dir = next((p for p in places if (p / "dict.txt").is_file()), None)
    if data_dir is None:
        tried = ", ".join(str(p / "dict.txt") for p in places)
        raise UserError(
            f"{path}: cannot find the dictionary it was trained with (tried {tried}); pass --data DIR "
            "(the mt-preprocess output with dict.txt and spm.model), "
            "or copy dict.txt and spm.model next to the checkpoint"
        )
    if spm_model:
        spm = Path(spm_model)
        if not spm.is_file():
            raise UserError(f"{spm}: SentencePiece model not found (pass the spm.model from mt-spm train)")
        return data_dir, spm
    for cand in [data_dir / "spm.model", path.parent / "spm.model", *recorded_places(path, state, "spm_model")]:
        if cand.is_file():
            return data_dir, cand
    return data_dir, None


def load_model(
    path: str | os.PathLike,
    data: str | os.PathLike | None = None,
    spm_model: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
    need_spm: bool = True,
    lazy_experts: bool = False,
    bf16: bool = False,
) -> LoadedModel:
    """Model in eval mode on ``device`` with its dictionary (checked) and SentencePiece model.

    The checkpoint is memory-mapped (torch's zip format): each weight is copied into the model from the
    mapping and the pages are dropped afterwards, so loading holds one copy of the weights; experts saved
    in expert files are copied one expert at a time (``_fill_experts``). ``lazy_experts``: the model is
    built without expert weights and ``expert_source`` maps them (nothing read yet; see
    ``mt.generate.moe_inference``).

    ``bf16`` (the caller computes in bf16): weight matrices the checkpoint stores in bfloat16 (``mt-import
    --dtype bfloat16``) stay bfloat16 in memory instead of being widened to float32: half the memory (the
    dense part of the 54.5B NLLB-MoE: 5.9 instead of 11.8 GB) and the same results, since autocast would
    round the widened copies back to the same bf16 values. Vectors (LayerNorms, biases) are widened as
    always. The model's matrices are then created in bf16 (never in float32) and filled from the checkpoint.
    """
    path = Path(path)
    mmap = lazy_experts or (path.is_file() and zipfile.is_zipfile(path))  # torch.save's format since 1.6
    state = ckpt.load_checkpoint(path, map_location="cpu", mmap=mmap)
    views, mapped = ckpt.expert_views(path, state) if mmap else ({}, [])
    data_dir, spm_path = find_vocab(path, state, data, spm_model)
    dictionary = Dictionary.load(data_dir / "dict.txt")
    want = state.get("dict_checksum")
    added = state.get("dict_added") or []  # mt-train --add-langs: tokens appended to the data's dict.txt
    if want and added and dictionary.checksum() != want and not any(t in dictionary for t in added):
        dictionary = dictionary.extended(added)
    if want and dictionary.checksum() != want:
        raise UserError(
            f"{data_dir / 'dict.txt'}: not the dictionary {path} was trained with (checksum {dictionary.checksum()} "
            f"!= {want}); pass --data with the mt-preprocess directory used for training"
        )
    if need_spm and spm_path is None:
        raise UserError(
            f"{data_dir}: no spm.model beside dict.txt; pass --spm-model (the SentencePiece model from mt-spm train)"
        )
    cfg = TransformerConfig.from_dict(state["model_config"])
    keep = _bf16_matrices({**state["model"], **{k: v[0] for k, v in views.items() if v}}) if bf16 else set()
    with moe.lazy_experts() if lazy_experts else nullcontext(), _matrices_in_bf16() if keep else nullcontext():
        model = build_model(cfg)
    if keep:
        _widen_others(model, keep)
    missing, unexpected = model.load_state_dict(state["model"], strict=False)
    missing = [k for k in missing if k not in views]
    if views and not lazy_experts:
        _fill_experts(model, views, path)
    if missing or unexpected:
        raise UserError(
            f"{path}: weights do not fit this code's model (missing {missing[:3]}, unexpected {unexpected[:3]}); "
            "use the nllb-mini version that trained it"
        )
    model.to(device).eval()
    source = _expert_source(model, views, path) if lazy_experts else {}
    if mmap:  # the other weights were copied: their pages (and neighbours mapped with them) can go
        ranges = [pagemem.tensor_range(t) for t in state["model"].values() if torch.is_tensor(t)]
        ranges += [pagemem.tensor_range(t) for ts in views.values() for t in ts]
        if pagemem.file_backed(ranges):
            pagemem.advise(ranges, pagemem.MADV_DONTNEED)
    meta = {k: v for k, v in state.items() if k not in ("model", "optimizer", "rng")}
    emb = state["model"].get("embed_tokens.weight")
    return LoadedModel(
        model,
        dictionary,
        SpmTokenizer(spm_path) if spm_path else None,
        path,
        data_dir,
        list(state.get("lang_pairs", [])),
        meta,
        source,
        mapped if lazy_experts else [],
        emb.dtype if torch.is_tensor(emb) else torch.float32,
    )


def _fill_experts(model: nn.Module, views: dict[str, list[torch.Tensor]], path: Path) -> None:
    """Copy each expert's memory-mapped tensors into the model's stacked expert parameters, one expert at a
    time, dropping the source pages as it goes: one copy of the experts in memory, however many expert files
    hold them (a whole-file load of an imported or pruned model would hold the files, their concatenation
    and the parameters at once)."""
    params = dict(model.named_parameters())
    for key, vs in views.items():
        p = params.get(key)
        if p is None or p.size(0) != len(vs) or tuple(p.shape[1:]) != tuple(vs[0].shape):
            raise UserError(
                f"{path}: expert weights {key} do not fit this code's model; use the nllb-mini version that wrote it"
            )
        with torch.no_grad():
            for e, v in enumerate(vs):
                p[e].copy_(v)
        ranges = [pagemem.tensor_range(v) for v in vs]
        if pagemem.file_backed(ranges):
            pagemem.advise(ranges, pagemem.MADV_DONTNEED)


def _bf16_matrices(weights: dict[str, Any]) -> set[str]:
    """Keys of the checkpoint's bfloat16 matrices (2 or more dims)."""
    return {k for k, v in weights.items() if torch.is_tensor(v) and v.dtype == torch.bfloat16 and v.dim() >= 2}


@contextmanager
def _matrices_in_bf16() -> Iterator[None]:
    """Modules built inside create their matrix parameters (2+ dims) in bfloat16: the float32 ones are never
    written (untouched memory costs nothing), so only the bf16 copy takes memory. Their initialisation runs
    on it and is overwritten by the checkpoint. (Building on the ``meta`` device instead would import ~60 MB
    of torch's Python meta kernels the first time an initialiser runs there.)"""
    register = nn.Module.register_parameter

    def in_bf16(module: nn.Module, name: str, param: nn.Parameter | None) -> None:
        if param is not None and param.dim() >= 2 and param.dtype == torch.float32:
            param = nn.Parameter(
                torch.empty(param.shape, dtype=torch.bfloat16, device=param.device), requires_grad=param.requires_grad
            )
        register(module, name, param)

    nn.Module.register_parameter = in_bf16  # type: ignore[method-assign]
    try:
        yield
    finally:
        nn.Module.register_parameter = register  # type: ignore[method-assign]


def _widen_others(model: nn.Module, bf16_keys: set[str]) -> None:
    """Matrices built in bf16 that the checkpoint stores in another dtype go back to float32 (lossless load)."""
    for prefix, module in model.named_modules():
        for name, p in list(module._parameters.items()):
            key = f"{prefix}.{name}" if prefix else name
            if p is not None and p.dtype == torch.bfloat16 and key not in bf16_keys and p.numel():
                new = nn.Parameter(p.detach().float(), requires_grad=p.requires_grad)
                new.__dict__.update(p.__dict__)
                module._parameters[name] = new


def _expert_source(
    model: Transformer, views: dict[str, list[torch.Tensor]], path: Path
) -> dict[str, list[tuple[torch.Tensor, ...]]]:
    """Per MoE layer (module name): per expert its four weight views."""
    out = {}
    for name, m in model.named_modules():
        if isinstance(m, moe.MoELayer):
            keys = [f"{name}.experts.{p}" for p in ("fc1_weight", "fc1_bias", "fc2_weight", "fc2_bias")]
            if any(k not in views for k in keys):
                raise UserError(f"{path}: no expert weights for MoE layer {name} in the checkpoint's 'moe' entry")
            out[name] = list(zip(*(views[k] for k in keys)))
    return out


def banned_ids(dictionary: Dictionary) -> list[int]:
    """Ids a translation may never contain: ``<s>``, ``<pad>`` and every language token."""
    return [dictionary.bos(), dictionary.pad()] + [dictionary.lang_index(c) for c in dictionary.langs()]
