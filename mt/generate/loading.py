"""Load a trained model for inference: checkpoint + the ``dict.txt`` and ``spm.model`` it was trained with.

A checkpoint holds the weights, the model config and the dictionary's checksum, not the dictionary itself
(fairseq's convention: the data directory carries ``dict.txt``). The vocabulary files are looked for, in
order: the directory given (``--data`` / ``DATA``), the checkpoint's own folder (copy ``dict.txt`` and
``spm.model`` next to a checkpoint to ship it), and the data directory recorded at training time. The
dictionary must have the checksum recorded in the checkpoint, so a wrong ``dict.txt`` is an error, never
silently wrong output.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from mt import checkpoint as ckpt
from mt.data.dictionary import Dictionary
from mt.data.spm import SpmTokenizer
from mt.errors import UserError
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

    @property
    def langs(self) -> list[str]:
        return self.dictionary.langs()


def _candidates(path: Path, data: str | os.PathLike | None, state: dict[str, Any]) -> list[Path]:
    if data:
        return [Path(data)]
    out = [path.parent]
    recorded = (state.get("train_config") or {}).get("data")
    if recorded:
        out.append(Path(recorded))
    return out


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
    recorded = (state.get("train_config") or {}).get("spm_model")
    for cand in [data_dir / "spm.model", path.parent / "spm.model"] + ([Path(recorded)] if recorded else []):
        if cand.is_file():
            return data_dir, cand
    return data_dir, None


def load_model(
    path: str | os.PathLike,
    data: str | os.PathLike | None = None,
    spm_model: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
    need_spm: bool = True,
) -> LoadedModel:
    """Model in eval mode on ``device`` with its dictionary (checked) and SentencePiece model."""
    path = Path(path)
    state = ckpt.load_checkpoint(path, map_location="cpu")
    data_dir, spm_path = find_vocab(path, state, data, spm_model)
    dictionary = Dictionary.load(data_dir / "dict.txt")
    want = state.get("dict_checksum")
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
    model = build_model(cfg)
    missing, unexpected = model.load_state_dict(state["model"], strict=False)
    if missing or unexpected:
        raise UserError(
            f"{path}: weights do not fit this code's model (missing {missing[:3]}, unexpected {unexpected[:3]}); "
            "use the nllb-mini version that trained it"
        )
    model.to(device).eval()
    meta = {k: v for k, v in state.items() if k not in ("model", "optimizer", "rng")}
    return LoadedModel(
        model, dictionary, SpmTokenizer(spm_path) if spm_path else None, path, data_dir,
        list(state.get("lang_pairs", [])), meta,
    )  # fmt: skip


def banned_ids(dictionary: Dictionary) -> list[int]:
    """Ids a translation may never contain: ``<s>``, ``<pad>`` and every language token."""
    return [dictionary.bos(), dictionary.pad()] + [dictionary.lang_index(c) for c in dictionary.langs()]
