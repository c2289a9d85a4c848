"""LASER2 and LASER3 sentence encoders from their released checkpoints, in our own torch modules.

``laser-encoders`` imports fairseq at module load, so the two architectures are re-implemented here with
fairseq's parameter names, so that the released state dicts load with no missing or unexpected keys:

* LASER2 (``laser2.pt``): ``{"params": {...}, "model": state_dict, "dictionary": {piece: id}}``;
  token embeddings -> BiLSTM (5 layers, 512 per direction) -> max-pool over time -> 1024-d.
* LASER3 (``laser3-xxx.v1.pt``): a fairseq checkpoint ``{"cfg": {"model": Namespace}, "model": ...}``
  (or ``{"args": Namespace}``) of a TransformerEncoder; vocabulary from the ``.cvocab`` fairseq
  dictionary (``<s> <pad> </s> <unk>`` = 0..3 come first, so cvocab line k is id k + 4), plus
  ``<mask>`` when the model has a final layer norm; max-pool (or the ``<s>`` position) -> 1024-d.

Text goes through LASER's preprocessing before SentencePiece: non-printing characters (Unicode
category C) become spaces, Moses punctuation normalisation (``en``), lower-casing. Checkpoints load with
``torch.load(weights_only=True)`` and only ``argparse.Namespace`` allowed beyond tensors and containers.
"""

from __future__ import annotations

import argparse
import math
import pickle
import sys
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mining.encoders.base import Encoder
from mt.common.errors import UserError
from mt.data.dictionary import Dictionary
from mt.data.spm import SpmTokenizer
from mt.formats.checkpoint import first_reason, refused_object
from mt.models.transformer import sinusoidal_table

BOS, PAD, EOS, UNK = 0, 1, 2, 3
_DOWNLOAD_HINT = (
    "get the LASER files with the LASER repo's nllb/download_models.sh "
    "(run it inside the directory; it fetches laser2.pt/.spm/.cvocab and laser3-LANG.v1.*), "
    "then pass --laser-model-dir DIR or --encoder laser2:DIR / laser3:DIR:LANG"
)


# --- checkpoint loading -----------------------------------------------------------------------------
def safe_load(path: Path) -> dict:
    """``torch.load(weights_only=True)`` with ``argparse.Namespace`` allowed (fairseq's cfg/args)."""
    if not path.is_file():
        raise UserError(f"{path}: checkpoint not found; {_DOWNLOAD_HINT}")
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        what = refused_object(exc)
        if what is None:  # the unpickler also fails on a damaged file: that is not a refusal
            raise UserError(
                f"{path}: not a readable torch checkpoint ({first_reason(exc)}); the download may be "
                "truncated: fetch it again"
            ) from None
        raise UserError(
            f"{path}: refused to load {what}: only tensors, containers and argparse.Namespace are "
            "loaded from checkpoints (loading other objects could run code); this file was not "
            "written by LASER/fairseq or was tampered with"
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError) as exc:
        raise UserError(
            f"{path}: not a readable torch checkpoint ({first_reason(exc)}); the download may be "
            "truncated: fetch it again"
        ) from None
    if not isinstance(ckpt, dict) or "model" not in ckpt:
        raise UserError(f"{path}: not a LASER/fairseq checkpoint (expected a dict with a 'model' state dict)")
    return ckpt


def _load_state(module: nn.Module, state: dict, path: Path) -> None:
    """Strict load that reports missing/unexpected keys and shape mismatches as one UserError."""
    missing, unexpected = [], []
    own = module.state_dict()
    for k in own:
        if k not in state:
            missing.append(k)
    for k in state:
        if k not in own:
            unexpected.append(k)
    bad = [
        f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}"
        for k, v in own.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    if missing or unexpected or bad:
        parts = []
        if missing:
            parts.append(f"missing keys {missing[:6]}")
        if unexpected:
            parts.append(f"unexpected keys {unexpected[:6]}")
        if bad:
            parts.append(f"shape mismatches {bad[:4]}")
        raise UserError(f"{path}: checkpoint does not match its architecture: {'; '.join(parts)}")
    module.load_state_dict(state, strict=True)


# --- LASER2: BiLSTM + max-pool ----------------------------------------------------------------------
class LaserLstmEncoder(nn.Module):
    """LASER's LSTM encoder; ``params`` of the checkpoint are its constructor arguments."""

    def __init__(
        self,
        num_embeddings: int,
        padding_idx: int,
        embed_dim: int = 320,
        hidden_size: int = 512,
        num_layers: int = 1,
        bidirectional: bool = False,
        left_pad: bool = True,
        padding_value: float = 0.0,
    ):
        super().__init__()
        self.padding_idx = padding_idx
        self.embed_tokens = nn.Embedding(num_embeddings, embed_dim, padding_idx=padding_idx)
        self.lstm = nn.LSTM(
            input_size=embed_dim, hidden_size=hidden_size, num_layers=num_layers, bidirectional=bidirectional
        )
        self.left_pad = left_pad  # kept for the checkpoint's sake: batches here are right-padded
        self.padding_value = padding_value
        self.output_dim = hidden_size * (2 if bidirectional else 1)

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """``tokens`` [B, T] right-padded, ``lengths`` [B] -> sentence embeddings [B, output_dim]."""
        bsz, seqlen = tokens.shape
        x = self.embed_tokens(tokens).transpose(0, 1)  # T x B x C
        packed = nn.utils.rnn.pack_padded_sequence(x, lengths.cpu(), enforce_sorted=False)
        out, _ = self.lstm(packed)
        x, _ = nn.utils.rnn.pad_packed_sequence(out, padding_value=self.padding_value, total_length=seqlen)
        pad = torch.arange(seqlen, device=tokens.device)[:, None] >= lengths[None, :]  # T x B
        x = x.float().masked_fill(pad.unsqueeze(-1), float("-inf"))
        return x.max(dim=0).values


# --- LASER3: fairseq TransformerEncoder + max-pool --------------------------------------------------
def make_positions(tokens: torch.Tensor, padding_idx: int) -> torch.Tensor:
    """Positions count from padding_idx + 1 over non-pad tokens (left or right padding alike)."""
    mask = tokens.ne(padding_idx).int()
    return (torch.cumsum(mask, dim=1) * mask).long() + padding_idx


_ACTIVATIONS = {
    "relu": F.relu,
    "gelu": F.gelu,
    "gelu_fast": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_accurate": lambda x: F.gelu(x, approximate="tanh"),
    "tanh": torch.tanh,
    "linear": lambda x: x,
    "swish": F.silu,
}


class SelfAttention(nn.Module):
    """fairseq MultiheadAttention (self-attention only), same parameter names."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        if dim % heads:
            raise UserError(f"encoder_embed_dim {dim} is not divisible by encoder_attention_heads {heads}")
        self.heads = heads
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.q_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        split = lambda y: y.view(b, t, self.heads, c // self.heads).transpose(1, 2)  # noqa: E731
        q, k, v = split(self.q_proj(x)), split(self.k_proj(x)), split(self.v_proj(x))
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=~pad[:, None, None, :])
        return self.out_proj(y.transpose(1, 2).reshape(b, t, c))


class TransformerLayer(nn.Module):
    """fairseq TransformerEncoderLayer (post-norm by default, pre-norm with normalize_before)."""

    def __init__(self, dim: int, ffn: int, heads: int, normalize_before: bool, activation: str):
        super().__init__()
        self.self_attn = SelfAttention(dim, heads)
        self.self_attn_layer_norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, ffn)
        self.fc2 = nn.Linear(ffn, dim)
        self.final_layer_norm = nn.LayerNorm(dim)
        self.normalize_before = normalize_before
        if activation not in _ACTIVATIONS:
            raise UserError(f"unsupported activation_fn {activation!r} (supported: {', '.join(_ACTIVATIONS)})")
        self.act = _ACTIVATIONS[activation]

    def forward(self, x: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
        residual = x
        if self.normalize_before:
            x = self.self_attn_layer_norm(x)
        x = residual + self.self_attn(x, pad)
        if not self.normalize_before:
            x = self.self_attn_layer_norm(x)
        residual = x
        if self.normalize_before:
            x = self.final_layer_norm(x)
        x = residual + self.fc2(self.act(self.fc1(x)))
        if not self.normalize_before:
            x = self.final_layer_norm(x)
        return x


class LaserTransformerEncoder(nn.Module):
    """fairseq's TransformerEncoder at inference (no dropout/layerdrop), pooled to a sentence vector."""

    def __init__(
        self,
        num_embeddings: int,
        embed_dim: int,
        ffn_dim: int,
        layers: int,
        heads: int,
        *,
        padding_idx: int = PAD,
        bos_idx: int = BOS,
        normalize_before: bool = False,
        final_layer_norm: bool = False,
        learned_pos: bool = False,
        no_positions: bool = False,
        no_scale_embedding: bool = False,
        layernorm_embedding: bool = False,
        max_source_positions: int = 1024,
        activation: str = "relu",
        sentemb_criterion: str = "maxpool",
    ):
        super().__init__()
        self.padding_idx = padding_idx
        self.bos_idx = bos_idx
        self.embed_tokens = nn.Embedding(num_embeddings, embed_dim, padding_idx=padding_idx)
        self.embed_scale = 1.0 if no_scale_embedding else math.sqrt(embed_dim)
        self.learned_pos = learned_pos and not no_positions
        self.sinusoidal = not learned_pos and not no_positions
        if self.learned_pos:
            self.embed_positions = nn.Embedding(max_source_positions + padding_idx + 1, embed_dim, padding_idx)
        self.register_buffer(
            "_sin",
            sinusoidal_table(max_source_positions + padding_idx + 1, embed_dim, padding_idx)
            if self.sinusoidal
            else torch.zeros(0),
            persistent=False,
        )
        self.layernorm_embedding = nn.LayerNorm(embed_dim) if layernorm_embedding else None
        self.layers = nn.ModuleList(
            TransformerLayer(embed_dim, ffn_dim, heads, normalize_before, activation) for _ in range(layers)
        )
        self.layer_norm = nn.LayerNorm(embed_dim) if final_layer_norm else None
        if sentemb_criterion not in ("maxpool", "cls"):
            raise UserError(f"unsupported sentemb_criterion {sentemb_criterion!r} (maxpool or cls)")
        self.sentemb_criterion = sentemb_criterion
        self.max_positions = max_source_positions
        self.output_dim = embed_dim

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        pad = tokens.eq(self.padding_idx)
        x = self.embed_scale * self.embed_tokens(tokens)
        if self.learned_pos or self.sinusoidal:
            pos = make_positions(tokens, self.padding_idx)
            if self.learned_pos:
                x = x + self.embed_positions(pos)
            else:
                if int(pos.max()) >= self._sin.shape[0]:
                    self._sin = sinusoidal_table(int(pos.max()) + 1, x.shape[-1], self.padding_idx)
                x = x + self._sin[pos].to(x.dtype)
        if self.layernorm_embedding is not None:
            x = self.layernorm_embedding(x)
        x = x * (~pad).unsqueeze(-1).to(x.dtype)
        for layer in self.layers:
            x = layer(x, pad)
        if self.layer_norm is not None:
            x = self.layer_norm(x)
        if self.sentemb_criterion == "cls":
            return x[tokens.eq(self.bos_idx)].float()
        return x.float().masked_fill(pad.unsqueeze(-1), float("-inf")).max(dim=1).values


def _cfg_get(cfg: Any, name: str, default: Any) -> Any:
    if isinstance(cfg, dict):
        return cfg.get(name, default)
    return getattr(cfg, name, default)


def build_transformer(ckpt: dict, path: Path, vocab_size: int) -> tuple[LaserTransformerEncoder, dict]:
    """Module + encoder-only state dict from a fairseq/LASER3 checkpoint (``cfg.model`` or ``args``)."""
    cfg = None
    if isinstance(ckpt.get("cfg"), dict):
        cfg = ckpt["cfg"].get("model")
    if cfg is None:
        cfg = ckpt.get("args")
    if cfg is None:
        raise UserError(f"{path}: transformer checkpoint without cfg['model'] or args: cannot tell its architecture")
    state = dict(ckpt["model"])
    if any(k.startswith("encoder.") for k in state):  # a whole encoder-decoder model: keep the encoder
        state = {k[len("encoder.") :]: v for k, v in state.items() if k.startswith("encoder.")}
    for k in ("version", "embed_positions._float_tensor", "embed_positions.weights"):
        state.pop(k, None)  # fairseq bookkeeping buffers, not weights
    if "embed_tokens.weight" not in state:
        raise UserError(f"{path}: no embed_tokens.weight in the encoder state dict")
    dim = int(_cfg_get(cfg, "encoder_embed_dim", state["embed_tokens.weight"].shape[1]))
    normalize_before = bool(_cfg_get(cfg, "encoder_normalize_before", False))
    model = LaserTransformerEncoder(
        num_embeddings=vocab_size,
        embed_dim=dim,
        ffn_dim=int(_cfg_get(cfg, "encoder_ffn_embed_dim", 2048)),
        layers=int(_cfg_get(cfg, "encoder_layers", 6)),
        heads=int(_cfg_get(cfg, "encoder_attention_heads", 8)),
        normalize_before=normalize_before,
        final_layer_norm=normalize_before or "layer_norm.weight" in state,
        learned_pos=bool(_cfg_get(cfg, "encoder_learned_pos", False)),
        no_positions=bool(_cfg_get(cfg, "no_token_positional_embeddings", False)),
        no_scale_embedding=bool(_cfg_get(cfg, "no_scale_embedding", False)),
        layernorm_embedding=bool(_cfg_get(cfg, "layernorm_embedding", False)),
        max_source_positions=int(_cfg_get(cfg, "max_source_positions", 1024)),
        activation=str(_cfg_get(cfg, "activation_fn", "relu")),
        sentemb_criterion=str(_cfg_get(cfg, "sentemb_criterion", "maxpool")),
    )
    info = {"prepend_bos": bool(_cfg_get(cfg, "prepend_bos", False)), "max_len": model.max_positions}
    if model.sentemb_criterion == "cls" and not info["prepend_bos"]:
        raise UserError(f"{path}: sentemb_criterion=cls needs prepend_bos=True in the checkpoint cfg")
    return model, {"state": state, **info}


# --- tokenisation -----------------------------------------------------------------------------------
class LaserTextNormalizer:
    """LASER's text preprocessing before SentencePiece: \\p{C} -> space, Moses punctuation (en), lower-case.

    One place for it: encoders trained here (``mine-train-encoder``) see their training text through the
    same function that ``LaserTokenizer`` applies at inference."""

    def __init__(self) -> None:
        import regex
        from sacremoses import MosesPunctNormalizer

        self._nonprint = regex.compile(r"\p{C}")
        self._punct = MosesPunctNormalizer(lang="en")

    def __call__(self, text: str) -> str:
        return self._punct.normalize(self._nonprint.sub(" ", text)).lower()


class LaserTokenizer:
    """LASER's preprocessing (``LaserTextNormalizer``) + SentencePiece pieces."""

    def __init__(self, spm_path: Path):
        self.spm = SpmTokenizer(spm_path, hint=_DOWNLOAD_HINT)
        self.path = spm_path
        self.preprocess = LaserTextNormalizer()

    def pieces(self, sentences: list[str]) -> list[list[str]]:
        return self.spm.encode_batch([self.preprocess(s) for s in sentences])


# --- the encoder ------------------------------------------------------------------------------------
class LaserEncoder(Encoder):
    """A LASER-style encoder: tokenizer + piece->id map + LSTM or transformer module."""

    def __init__(
        self,
        name: str,
        model: nn.Module,
        tokenizer: LaserTokenizer,
        indices: dict[str, int],
        *,
        prepend_bos: bool = False,
        max_len: int | None = None,
        lang: str | None = None,
        bf16: bool = False,
        device: str | None = None,
    ):
        self.name = name
        try:
            self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        except RuntimeError:
            raise UserError(f"unknown --device {device!r}: use cpu, cuda or cuda:N") from None
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise UserError(f"--device {device} asked for, but this torch build sees no CUDA GPU; use --device cpu")
        self.model = model.eval().to(self.device)
        self.tokenizer = tokenizer
        self.indices = indices
        self.prepend_bos = prepend_bos
        self.max_len = max_len
        self.lang = lang
        self.bf16 = bf16
        self.dim = int(model.output_dim)
        self._warned: set[str] = set()
        self._ids_cache: dict[str, list[int]] = {}

    def check_lang(self, lang: str) -> None:
        if self.lang and lang != self.lang and lang not in self._warned:
            self._warned.add(lang)
            print(
                f"warning: {self.name} is the LASER3 encoder of {self.lang}, asked to encode {lang}; "
                "LASER3 students share LASER2's space, so embed other languages with laser2",
                file=sys.stderr,
            )

    def token_ids(self, sentences: list[str]) -> list[list[int]]:
        """Ids as LASER feeds them: [<s>] pieces </s>, unknown pieces -> <unk>, truncated to max_len."""
        cached = [self._ids_cache.pop(s, None) for s in sentences]
        todo = [s for s, c in zip(sentences, cached) if c is None]
        fresh = iter(self._ids(todo)) if todo else iter(())
        return [c if c is not None else next(fresh) for c in cached]

    def _ids(self, sentences: list[str]) -> list[list[int]]:
        out = []
        for pieces in self.tokenizer.pieces(sentences):
            ids = [self.indices.get(p, UNK) for p in pieces] + [EOS]
            if self.prepend_bos:
                ids = [BOS] + ids
            if self.max_len and len(ids) > self.max_len:
                ids = ids[: self.max_len - 1] + [EOS]
            out.append(ids)
        return out

    def count_tokens(self, sentences: list[str]) -> list[int]:
        """Exact lengths; the ids are kept for the encode() that follows (mine-embed batches by them)."""
        if len(self._ids_cache) > 100_000:
            self._ids_cache.clear()
        ids = self._ids(sentences)
        self._ids_cache.update(zip(sentences, ids))
        return [len(x) for x in ids]

    @torch.inference_mode()
    def _encode_batch(self, sentences: list[str], lang: str) -> np.ndarray:
        ids = self.token_ids(sentences)
        lengths = torch.tensor([len(x) for x in ids], dtype=torch.long)
        tokens = torch.full((len(ids), int(lengths.max())), PAD, dtype=torch.long)
        for i, x in enumerate(ids):
            tokens[i, : len(x)] = torch.tensor(x, dtype=torch.long)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            emb = self.model(tokens.to(self.device), lengths.to(self.device))
        return emb.float().cpu().numpy()


def _lstm_indices(ckpt: dict, path: Path, vocab_size: int) -> dict[str, int]:
    d = ckpt.get("dictionary")
    if not isinstance(d, dict) or not d:
        raise UserError(f"{path}: LASER2-format checkpoint without its 'dictionary' {{piece: id}}")
    indices = {str(k): int(v) for k, v in d.items()}
    indices.update({"<s>": BOS, "<pad>": PAD, "</s>": EOS, "<unk>": UNK})  # as LASER's SentenceEncoder
    top = max(indices.values())
    if top >= vocab_size:
        raise UserError(f"{path}: dictionary id {top} is outside the {vocab_size}-row embedding table")
    return indices


def build_encoder(
    ckpt_path: Path,
    spm_path: Path,
    cvocab_path: Path | None,
    name: str,
    *,
    lang: str | None = None,
    bf16: bool = False,
    device: str | None = None,
) -> LaserEncoder:
    """LASER2 format (``params``) -> BiLSTM; fairseq format (``cfg``/``args``) -> transformer + cvocab."""
    ckpt = safe_load(ckpt_path)
    tokenizer = LaserTokenizer(spm_path)
    if "params" in ckpt:
        params = dict(ckpt["params"])
        try:
            model: nn.Module = LaserLstmEncoder(**params)
        except TypeError as exc:
            raise UserError(f"{ckpt_path}: unexpected LASER2 params {sorted(params)} ({exc})") from None
        _load_state(model, dict(ckpt["model"]), ckpt_path)
        indices = _lstm_indices(ckpt, ckpt_path, params["num_embeddings"])
        return LaserEncoder(name, model, tokenizer, indices, lang=lang, bf16=bf16, device=device)
    if cvocab_path is None or not cvocab_path.is_file():
        raise UserError(
            f"{cvocab_path or spm_path.with_suffix('.cvocab')}: the .cvocab dictionary of this "
            f"transformer encoder is missing; {_DOWNLOAD_HINT}"
        )
    dictionary = Dictionary.load(cvocab_path)
    state = ckpt["model"]
    if any(k in state for k in ("encoder.layer_norm.weight", "layer_norm.weight")):
        dictionary.add_symbol("<mask>")  # fairseq adds it for these models; it shifts nothing before it
    model, info = build_transformer(ckpt, ckpt_path, len(dictionary))
    rows = info["state"]["embed_tokens.weight"].shape[0]
    if rows != len(dictionary):
        mask = " + <mask>" if "<mask>" in dictionary else ""
        raise UserError(
            f"{ckpt_path}: embedding table has {rows} rows but {cvocab_path.name} gives "
            f"{len(dictionary)} symbols (4 specials + entries{mask}); "
            "the .cvocab belongs to another model"
        )
    _load_state(model, info["state"], ckpt_path)
    return LaserEncoder(
        name,
        model,
        tokenizer,
        dict(dictionary.indices),
        prepend_bos=info["prepend_bos"],
        max_len=info["max_len"],
        lang=lang,
        bf16=bf16,
        device=device,
    )


def _need_dir(directory: Path, flag_hint: str) -> None:
    if not directory.is_dir():
        raise UserError(f"{directory}: LASER model directory not found ({flag_hint}); {_DOWNLOAD_HINT}")


def load_laser2(directory: str | Path, bf16: bool = False, device: str | None = None) -> LaserEncoder:
    """``DIR/laser2.pt`` + ``DIR/laser2.spm`` (``laser2.cvocab`` is only needed by LASER3 students)."""
    directory = Path(directory)
    _need_dir(directory, "laser2:DIR or --laser-model-dir")
    return build_encoder(
        directory / "laser2.pt",
        directory / "laser2.spm",
        directory / "laser2.cvocab",
        "laser2",
        bf16=bf16,
        device=device,
    )


def load_laser3(directory: str | Path, lang: str, bf16: bool = False, device: str | None = None) -> LaserEncoder:
    """``DIR/laser3-LANG.v1.pt`` with its own ``.spm``/``.cvocab`` when released, else LASER2's."""
    directory = Path(directory)
    _need_dir(directory, "laser3:DIR:LANG or --laser-model-dir")
    ckpt = directory / f"laser3-{lang}.v1.pt"
    if not ckpt.is_file():
        raise UserError(
            f"{ckpt}: no LASER3 encoder for {lang} in {directory}; {_DOWNLOAD_HINT} "
            f"(e.g. bash download_models.sh {lang})"
        )
    own = directory / f"laser3-{lang}.v1.spm"
    spm_path = own if own.is_file() else directory / "laser2.spm"
    return build_encoder(
        ckpt, spm_path, spm_path.with_suffix(".cvocab"), f"laser3-{lang}", lang=lang, bf16=bf16, device=device
    )


def load_checkpoint(path: Path, bf16: bool = False, device: str | None = None) -> LaserEncoder:
    """A checkpoint file (its ``.spm`` beside it, same stem, else the directory's only/laser2 ``.spm``)
    or a directory holding one. This is where encoders trained by this toolkit load (LASER2 format)."""
    if path.is_dir():
        pts = sorted(path.glob("*.pt"))
        ckpt = path / "laser2.pt" if (path / "laser2.pt").is_file() else (pts[0] if len(pts) == 1 else None)
        if ckpt is None:
            raise UserError(
                f"{path}: expected one encoder checkpoint (*.pt) in the directory, found "
                f"{[p.name for p in pts] or 'none'}; pass the file itself"
            )
    else:
        ckpt = path
    spm_path = ckpt.with_suffix(".spm")
    if not spm_path.is_file():
        spms = sorted(ckpt.parent.glob("*.spm"))
        if (ckpt.parent / "laser2.spm").is_file():
            spm_path = ckpt.parent / "laser2.spm"
        elif len(spms) == 1:
            spm_path = spms[0]
        else:
            raise UserError(
                f"{ckpt}: its SentencePiece model {spm_path.name} is not beside it "
                f"(found {[p.name for p in spms] or 'no .spm files'})"
            )
    return build_encoder(ckpt, spm_path, spm_path.with_suffix(".cvocab"), str(path), bf16=bf16, device=device)
