"""A small random-weight model saved as an mt-train checkpoint, with the tiny corpus' dict.txt and spm.model.

Random weights are enough to test search mechanics, batch jobs and export parity token for token. Two
tweaks make the random model behave more like a trained one: the decoder's final LayerNorm gets random
gains (with tied embeddings a fresh model otherwise just copies its previous token forever), and the
embeddings are scaled so next-token distributions are peaked (no near-ties for float noise to flip) and
``</s>`` wins now and then.
"""

from __future__ import annotations

from pathlib import Path

import torch
from train_fixtures import make_corpus

from mt.data.dictionary import Dictionary
from mt.formats import checkpoint as ckpt
from mt.models.config import arch_config
from mt.models.transformer import build_model

PAIRS = (("eng_Latn", "deu_Latn"), ("eng_Latn", "fra_Latn"))
LANG_PAIRS = ["eng_Latn-deu_Latn", "deu_Latn-eng_Latn", "eng_Latn-fra_Latn"]


def make_checkpoint(
    root: Path, seed: int = 0, sharpen: float = 1.5, arch: str = "transformer_tiny", **overrides
) -> tuple[Path, Path]:
    """(checkpoint path, data dir) under ``root``."""
    data = make_corpus(root, PAIRS, sizes={"eng_Latn-deu_Latn": 60, "eng_Latn-fra_Latn": 40}, n_valid=24, max_len=9)
    d = Dictionary.load(data / "dict.txt")
    cfg = arch_config(arch, vocab_size=len(d), padding_idx=d.pad(), langs=d.langs(), dropout=0.0, **overrides)
    torch.manual_seed(seed)
    model = build_model(cfg)
    with torch.no_grad():
        model.embed_tokens.weight.mul_(sharpen)
        gain = model.decoder.layer_norm.weight
        gain.copy_(torch.randn(gain.shape, generator=torch.Generator().manual_seed(seed)) * 2.0)
    state = {
        "format": ckpt.FORMAT,
        "format_version": ckpt.FORMAT_VERSION,
        "code_version": "test",
        "model_config": cfg.to_dict(),
        "train_config": {"data": str(data)},
        "dict_checksum": d.checksum(),
        "lang_pairs": LANG_PAIRS,
        "model": model.state_dict(),
        "num_updates": 0,
    }
    path = root / "ck" / "checkpoint_best.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    ckpt.save_checkpoint(state, path)
    return path, data
