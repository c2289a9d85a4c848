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
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from mt import checkpoint as ckpt
from mt.data.dictionary import Dictionary
from mt.data.spm import SpmTokenizer
from mt.errors import UserError
from mt.generate import pagemem
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
    if ".." in parts or len(parts) >= len(folder.parts) or list(folder.parts[-len(parts):]) != parts:
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
            "(the mt-preprocess output with dict.txt and spm.model), or copy dict.txt and spm.model next to the checkpoint"
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
) -> LoadedModel:
    """Model in eval mode on ``device`` with its dictionary (checked) and SentencePiece model.

    ``lazy_experts``: the checkpoint is memory-mapped, the model is built without expert weights and
    ``expert_source`` maps them (nothing read yet; see ``mt.generate.moe_inference``). The pages the other
    weights were copied from are dropped from the process afterwards.
    """
    path = Path(path)
    state = ckpt.load_checkpoint(path, map_location="cpu", mmap=lazy_experts)
    views, mapped = ckpt.expert_views(path, state) if lazy_experts else ({}, [])
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
    with moe.lazy_experts() if lazy_experts else nullcontext():
        model = build_model(cfg)
    missing, unexpected = model.load_state_dict(state["model"], strict=False)
    missing = [k for k in missing if k not in views]
    if missing or unexpected:
        raise UserError(
            f"{path}: weights do not fit this code's model (missing {missing[:3]}, unexpected {unexpected[:3]}); "
            "use the nllb-mini version that trained it"
        )
    model.to(device).eval()
    source = _expert_source(model, views, path) if lazy_experts else {}
    if lazy_experts:  # the other weights were copied: their pages (and neighbours mapped with them) can go
        ranges = [pagemem.tensor_range(t) for t in state["model"].values() if torch.is_tensor(t)]
        ranges += [pagemem.tensor_range(t) for ts in views.values() for t in ts]
        if pagemem.file_backed(ranges):
            pagemem.advise(ranges, pagemem.MADV_DONTNEED)
    meta = {k: v for k, v in state.items() if k not in ("model", "optimizer", "rng")}
    emb = state["model"].get("embed_tokens.weight")
    return LoadedModel(
        model, dictionary, SpmTokenizer(spm_path) if spm_path else None, path, data_dir,
        list(state.get("lang_pairs", [])), meta, source, mapped, emb.dtype if torch.is_tensor(emb) else torch.float32,
    )  # fmt: skip


def _expert_source(model: Transformer, views: dict[str, list[torch.Tensor]], path: Path) -> dict[str, list[tuple[torch.Tensor, ...]]]:
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
