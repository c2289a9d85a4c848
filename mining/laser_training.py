"""Trainable LASER models: what ``mine-train-encoder`` hands to ``mt.train.trainer``'s loop, and their export.

* ``LaserTranslationModel`` (LASER, Artetxe & Schwenk 2019): a sentence encoder (BiLSTM in LASER2's
  layout, or a Transformer in LASER3's) max-pooled into one vector ``s``, and an LSTM decoder that sees
  ONLY ``s``: ``s`` initialises its states (one linear map) and is concatenated, with a target-language
  embedding, to its input at every step. There is no attention, so all the decoder needs must pass
  through ``s``, and training many languages into the same one or two targets makes ``s``
  language-agnostic.
* ``StudentModel`` (LASER3, Heffernan et al. 2022): the encoder alone, trained with
  ``DistillationLoss`` to put its vector of a sentence on a frozen teacher's embedding of the English
  translation (and of English itself).

Both reuse the encoder modules of ``mining.encoders.laser`` as they are, so the weights export to the
LASER checkpoint formats with no conversion (``export_encoder``) and load back through
``load_encoder(path)``. Training-only dropout is attached with forward hooks (inference modules have none).

Interface with the loop (see ``mt.train.trainer.ModelFactory``): ``forward(src_tokens, prev_output_tokens, ctx,
target_mask=, features_only=True)`` returns states at the target positions and ``output_weight`` is what
the criterion scores them against: the decoder's output projection for the translation model, the
teacher's embedding table for the student (whose "target tokens" are rows of that table). The data
loader's source rows are ``__src__ x1 .. xn </s>``: the encoders drop the language token, since LASER
encoders are language-agnostic and see ``pieces </s>`` at inference.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mining.encoders.laser import EOS, LaserLstmEncoder, LaserTransformerEncoder
from mt.common.errors import UserError
from mt.common.files import atomic_write
from mt.data.dictionary import Dictionary
from mt.models.config import preset_values
from mt.models.dropout import dropout
from mt.train.criterion import CriterionOutput

LN2 = math.log(2)
ALIGN_LOSSES = ("none", "ranking")
RANKING_SCALE = 20.0  # inverse temperature of the in-batch ranking softmax over cosines
# Student targets are teacher-table rows stored as "token ids" row + ROW_OFFSET, so they never equal
# <pad> (the loop masks those) and read as ordinary ids in the binarized files.
ROW_OFFSET = 4


@dataclass
class LaserModelConfig:
    """Shape of a LASER model. ``encoder``: ``lstm`` (BiLSTM, LASER2 format; sentence dim =
    2 x ``encoder_hidden_size``) or ``transformer`` (pre-LN, LASER3 format; sentence dim =
    ``encoder_embed_dim``). Decoder fields are 0 for students (no decoder)."""

    vocab_size: int = 0
    padding_idx: int = 1
    encoder: str = "lstm"
    encoder_embed_dim: int = 320
    encoder_hidden_size: int = 512
    encoder_layers: int = 5
    encoder_ffn_embed_dim: int = 1024
    encoder_attention_heads: int = 4
    decoder_embed_dim: int = 320
    decoder_hidden_size: int = 2048
    decoder_lang_embed_dim: int = 32
    dropout: float = 0.1
    max_source_positions: int = 512
    langs: list[str] = field(default_factory=list)
    # optional extra training signal (not LASER's): ``ranking`` = in-batch translation ranking between
    # the pooled vectors of each source and of its target (as LaBSE's dual encoders); ``none`` = LASER
    align_loss: str = "none"

    SHAPE_FIELDS = (
        "vocab_size",
        "encoder",
        "encoder_embed_dim",
        "encoder_hidden_size",
        "encoder_layers",
        "encoder_ffn_embed_dim",
        "encoder_attention_heads",
        "decoder_embed_dim",
        "decoder_hidden_size",
        "decoder_lang_embed_dim",
    )

    @property
    def sentence_dim(self) -> int:
        return 2 * self.encoder_hidden_size if self.encoder == "lstm" else self.encoder_embed_dim

    def validate(self) -> "LaserModelConfig":
        if self.encoder not in ("lstm", "transformer"):
            raise UserError(f"encoder type {self.encoder!r}: use lstm or transformer")
        if self.encoder == "transformer" and self.encoder_embed_dim % max(self.encoder_attention_heads, 1):
            raise UserError(
                f"--encoder-embed-dim {self.encoder_embed_dim} is not divisible by "
                f"--encoder-attention-heads {self.encoder_attention_heads}"
            )
        for name in ("encoder_embed_dim", "encoder_layers"):
            if getattr(self, name) < 1:
                raise UserError(f"--{name.replace('_', '-')} must be at least 1")
        if self.align_loss not in ALIGN_LOSSES:
            raise UserError(f"--align-loss {self.align_loss!r}: use one of {', '.join(ALIGN_LOSSES)}")
        if not 0.0 <= self.dropout < 1.0:
            raise UserError(f"--dropout must be in [0, 1), got {self.dropout}")
        if self.vocab_size <= self.padding_idx:
            raise UserError(f"vocabulary size {self.vocab_size} is too small: is dict.txt empty?")
        return self

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "LaserModelConfig":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def _lstm(emb: int, hid: int, layers: int, dec_emb: int, dec_hid: int, lang: int = 32, **kw: Any) -> dict[str, Any]:
    return dict(
        encoder="lstm",
        encoder_embed_dim=emb,
        encoder_hidden_size=hid,
        encoder_layers=layers,
        decoder_embed_dim=dec_emb,
        decoder_hidden_size=dec_hid,
        decoder_lang_embed_dim=lang,
        **kw,
    )


def _tf(dim: int, ffn: int, layers: int, heads: int, dec_emb: int, dec_hid: int, **kw: Any) -> dict[str, Any]:
    return dict(
        encoder="transformer",
        encoder_embed_dim=dim,
        encoder_ffn_embed_dim=ffn,
        encoder_layers=layers,
        encoder_attention_heads=heads,
        decoder_embed_dim=dec_emb,
        decoder_hidden_size=dec_hid,
        **kw,
    )


ARCHS: dict[str, dict[str, Any]] = {
    # LASER's published sizes: 320-d pieces, 5 x BiLSTM 512 (1024-d sentences), decoder LSTM 2048
    "laser_lstm": _lstm(320, 512, 5, 320, 2048),
    # a laptop-sized BiLSTM: 512-d sentences, trains in minutes on a CPU
    "laser_lstm_small": _lstm(192, 256, 2, 128, 384),
    # for tests
    "laser_lstm_tiny": _lstm(16, 8, 1, 8, 16, lang=4, dropout=0.0),
    # LASER3's student size: 12 x 1024 pre-LN Transformer
    "laser_transformer": _tf(1024, 4096, 12, 16, 320, 2048),
    "laser_transformer_small": _tf(256, 1024, 3, 4, 128, 512),
    "laser_transformer_tiny": _tf(16, 32, 1, 2, 8, 16, decoder_lang_embed_dim=4, dropout=0.0),
}
# fairseq-style flags that override a preset (argparse dest names)
OVERRIDABLE = (
    "encoder_embed_dim",
    "encoder_hidden_size",
    "encoder_layers",
    "encoder_ffn_embed_dim",
    "encoder_attention_heads",
    "decoder_embed_dim",
    "decoder_hidden_size",
    "decoder_lang_embed_dim",
    "dropout",
    "align_loss",
)


def arch_config(arch: str, **overrides: Any) -> LaserModelConfig:
    """The LASER preset ``arch`` with ``overrides`` (None values are ignored) applied, validated."""
    return LaserModelConfig(**preset_values(ARCHS, arch, overrides)).validate()


# --- modules ----------------------------------------------------------------------------------------
def _dropout_hook(p: float):
    def hook(module: nn.Module, inputs: Any, output: torch.Tensor) -> torch.Tensor:
        return dropout(output, p, module.training)

    return hook


def build_sentence_encoder(cfg: LaserModelConfig) -> nn.Module:
    """The inference module of ``mining.encoders.laser`` for ``cfg``, initialised for training, with
    dropout hooks (token embeddings, between LSTM layers / on each sub-layer output before the residual)."""
    if cfg.encoder == "lstm":
        enc: nn.Module = LaserLstmEncoder(
            num_embeddings=cfg.vocab_size,
            padding_idx=cfg.padding_idx,
            embed_dim=cfg.encoder_embed_dim,
            hidden_size=cfg.encoder_hidden_size,
            num_layers=cfg.encoder_layers,
            bidirectional=True,
        )
        nn.init.uniform_(enc.embed_tokens.weight, -0.1, 0.1)
        if cfg.dropout > 0 and cfg.encoder_layers > 1:
            enc.lstm.dropout = cfg.dropout  # nn.LSTM's inter-layer dropout: a plain attribute, not a weight
    else:
        enc = LaserTransformerEncoder(
            num_embeddings=cfg.vocab_size,
            embed_dim=cfg.encoder_embed_dim,
            ffn_dim=cfg.encoder_ffn_embed_dim,
            layers=cfg.encoder_layers,
            heads=cfg.encoder_attention_heads,
            padding_idx=cfg.padding_idx,
            normalize_before=True,
            final_layer_norm=True,
            max_source_positions=cfg.max_source_positions,
        )
        nn.init.normal_(enc.embed_tokens.weight, 0.0, cfg.encoder_embed_dim**-0.5)
        if cfg.dropout > 0:
            for layer in enc.layers:
                layer.self_attn.out_proj.register_forward_hook(_dropout_hook(cfg.dropout))
                layer.fc2.register_forward_hook(_dropout_hook(cfg.dropout))
    with torch.no_grad():
        enc.embed_tokens.weight[cfg.padding_idx].zero_()
    if cfg.dropout > 0:
        enc.embed_tokens.register_forward_hook(_dropout_hook(cfg.dropout))
    return enc


def sentence_embedding(encoder: nn.Module, src_tokens: torch.Tensor, padding_idx: int) -> torch.Tensor:
    """Max-pooled vectors (B, D) of loader rows ``__src__ x1 .. xn </s>`` (right-padded): the language
    token is dropped, so the encoder sees exactly what ``LaserEncoder`` feeds it at inference."""
    tokens = src_tokens[:, 1:]
    lengths = tokens.ne(padding_idx).sum(dim=1)
    return encoder(tokens, lengths)


class SentenceDecoder(nn.Module):
    """LASER's decoder: an LSTM conditioned only on the sentence vector (initial states from one linear
    map; the vector and a target-language embedding are concatenated to every input step)."""

    def __init__(self, cfg: LaserModelConfig) -> None:
        super().__init__()
        d, h, lang = cfg.decoder_embed_dim, cfg.decoder_hidden_size, cfg.decoder_lang_embed_dim
        self.dropout = cfg.dropout
        self.embed_tokens = nn.Embedding(cfg.vocab_size, d, padding_idx=cfg.padding_idx)
        nn.init.uniform_(self.embed_tokens.weight, -0.1, 0.1)
        self.embed_langs = nn.Embedding(max(len(cfg.langs), 1), lang) if lang > 0 else None
        if self.embed_langs is not None:
            nn.init.uniform_(self.embed_langs.weight, -0.1, 0.1)
        self.sentemb2init = nn.Linear(cfg.sentence_dim, 2 * h)
        self.lstm = nn.LSTM(d + cfg.sentence_dim + lang, h)
        self.output_projection = nn.Linear(h, cfg.vocab_size, bias=False)
        nn.init.normal_(self.output_projection.weight, 0.0, h**-0.5)

    def forward(self, prev_tokens: torch.Tensor, sent: torch.Tensor, tgt_lang: torch.Tensor | None) -> torch.Tensor:
        """States (B, T, H) for decoder inputs ``__tgt__ y1 .. y(n-1)``; padded steps are computed and ignored."""
        steps = prev_tokens.size(1)
        x = dropout(self.embed_tokens(prev_tokens), self.dropout, self.training).transpose(0, 1)  # T x B x d
        cond = sent
        if self.embed_langs is not None:
            if tgt_lang is None:
                raise ValueError("the LASER decoder needs the target language (ForwardContext.tgt_lang)")
            cond = torch.cat([sent, self.embed_langs(tgt_lang).to(sent.dtype)], dim=-1)
        x = torch.cat([x, cond.unsqueeze(0).expand(steps, -1, -1).to(x.dtype)], dim=-1)
        h0, c0 = self.sentemb2init(sent).chunk(2, dim=-1)
        out, _ = self.lstm(x, (h0.unsqueeze(0).to(x.dtype).contiguous(), c0.unsqueeze(0).to(x.dtype).contiguous()))
        return dropout(out, self.dropout, self.training).transpose(0, 1)


class LaserTranslationModel(nn.Module):
    """Encoder (``build_sentence_encoder``) + ``SentenceDecoder``: trained as a translation model, used as
    an encoder (``embed``)."""

    def __init__(self, cfg: LaserModelConfig) -> None:
        super().__init__()
        self.cfg = cfg.validate()
        self.encoder = build_sentence_encoder(cfg)
        self.decoder = SentenceDecoder(cfg)

    def embed(self, src_tokens: torch.Tensor) -> torch.Tensor:
        return sentence_embedding(self.encoder, src_tokens, self.cfg.padding_idx)

    @property
    def output_weight(self) -> torch.Tensor:
        return self.decoder.output_projection.weight

    def forward(
        self,
        src_tokens: torch.Tensor,
        prev_output_tokens: torch.Tensor,
        ctx: Any = None,
        target_mask: torch.Tensor | None = None,
        features_only: bool = False,
    ) -> torch.Tensor:
        sent = self.embed(src_tokens)
        h = self.decoder(prev_output_tokens, sent, getattr(ctx, "tgt_lang", None))
        if self.cfg.align_loss != "none" and self.training and ctx is not None and hasattr(ctx, "add_aux_loss"):
            ctx.add_aux_loss("align", self.align_loss(sent, prev_output_tokens))
        if target_mask is not None:
            h = h[target_mask]
        return h if features_only else F.linear(h, self.output_weight)

    def align_loss(self, sent: torch.Tensor, prev_output_tokens: torch.Tensor) -> torch.Tensor:
        """In-batch translation ranking: each source's vector must pick its own target's among the batch's
        targets by cosine (softmax at scale ``RANKING_SCALE``), and vice versa; mean cross-entropy.

        Why ranking and not 1 - cos: max-pooled vectors share a large common component, so a plain
        cosine pull is satisfied by making every vector alike; the other sentences of the batch as
        negatives rule that out. The target is read back from the decoder input (``__tgt__ y1 .. yn`` +
        ``</s>`` = the encoder's input format) and encoded by the same encoder. The value goes to the
        loop's aux losses (logged as ``align``; weighted by ``--align-weight`` in the criterion)."""
        pad = self.cfg.padding_idx
        body = prev_output_tokens[:, 1:]
        lengths = body.ne(pad).sum(dim=1)
        tgt = torch.cat([body, body.new_full((body.size(0), 1), pad)], dim=1)
        tgt[torch.arange(tgt.size(0), device=tgt.device), lengths] = EOS
        other = self.encoder(tgt, lengths + 1).float()
        a, b = F.normalize(sent.float(), dim=-1), F.normalize(other, dim=-1)
        logits = RANKING_SCALE * a @ b.t()
        labels = torch.arange(a.size(0), device=a.device)
        return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels)) / 2


class StudentModel(nn.Module):
    """A sentence encoder trained against a frozen teacher's embedding table (``set_teacher``).

    The table is a plain attribute, neither parameter nor buffer: it stays out of checkpoints and out of
    DDP's buffer broadcasts, and is moved to the parameters' device on first use."""

    def __init__(self, cfg: LaserModelConfig) -> None:
        super().__init__()
        self.cfg = cfg.validate()
        self.encoder = build_sentence_encoder(cfg)
        self.teacher: torch.Tensor | None = None

    def set_teacher(self, table: torch.Tensor) -> None:
        if table.dim() != 2 or table.size(1) != self.cfg.sentence_dim:
            raise UserError(
                f"teacher embeddings have shape {tuple(table.shape)}, but the student's sentence "
                f"dimension is {self.cfg.sentence_dim}: the student must have the teacher's dimension"
            )
        self.teacher = table

    def embed(self, src_tokens: torch.Tensor) -> torch.Tensor:
        return sentence_embedding(self.encoder, src_tokens, self.cfg.padding_idx)

    @property
    def output_weight(self) -> torch.Tensor:
        if self.teacher is None:
            raise RuntimeError("StudentModel.set_teacher() was not called")
        device = self.encoder.embed_tokens.weight.device
        if self.teacher.device != device:
            self.teacher = self.teacher.to(device)
        return self.teacher

    def forward(
        self,
        src_tokens: torch.Tensor,
        prev_output_tokens: torch.Tensor,
        ctx: Any = None,
        target_mask: torch.Tensor | None = None,
        features_only: bool = True,
    ) -> torch.Tensor:
        """The sentence vector repeated at each "target position" (one per sentence: the teacher row)."""
        sent = self.embed(src_tokens)
        h = sent.unsqueeze(1).expand(-1, prev_output_tokens.size(1), -1)
        return h[target_mask] if target_mask is not None else h


class DistillationLoss:
    """Student vs teacher, summed over sentences: ``cosine`` = 1 - cos (Heffernan et al.'s choice) or
    ``mse`` = squared Euclidean distance to the (unit-norm) teacher vector.

    The loop divides logged losses by ln 2 (its base-2 convention for cross-entropy), so the sum is
    returned times ln 2: ``train_log.jsonl``'s ``loss`` is then the plain mean distance per sentence
    (a constant factor that Adam's update does not see)."""

    def __init__(self, loss: str = "cosine") -> None:
        if loss not in ("cosine", "mse"):
            raise UserError(f"--loss {loss!r}: use cosine or mse")
        self.kind = loss

    def __call__(
        self,
        hidden: torch.Tensor,
        teacher: torch.Tensor,
        target: torch.Tensor,
        aux_losses: dict[str, torch.Tensor] | None = None,
    ) -> CriterionOutput:
        t = teacher.index_select(0, target - ROW_OFFSET).float()
        h = hidden.float()
        if self.kind == "cosine":
            per = 1.0 - F.cosine_similarity(h, t, dim=-1, eps=1e-8)
        else:
            per = (h - t).pow(2).sum(dim=-1)
        loss = per.sum() * LN2
        return CriterionOutput(loss, loss.detach(), int(target.numel()))


# --- export to the LASER formats --------------------------------------------------------------------
def export_encoder(
    encoder: nn.Module,
    cfg: LaserModelConfig,
    dictionary: Dictionary,
    spm_model: str | Path,
    out: str | Path,
    info: dict[str, Any] | None = None,
) -> Path:
    """Write ``out`` (``.pt``) + ``.spm`` + ``.cvocab`` beside it, atomically.

    BiLSTM: LASER2's ``{"params", "model", "dictionary"}`` (params are exactly LASER's constructor
    arguments, so LASER's own tools load it; the dimensions are in them). Transformer: a fairseq-style
    ``{"cfg": {"model": {...}}, "model"}`` as LASER3's students, its vocabulary in the ``.cvocab`` (plus the
    ``<mask>`` row fairseq adds for models with a final layer norm). ``info`` goes under ``"nllb_mini"``
    (languages, teacher, training run), which LASER's tools ignore."""
    out = Path(out)
    if out.suffix != ".pt":
        raise ValueError(f"export path must end in .pt: {out}")
    state = {k: v.detach().cpu().clone() for k, v in encoder.state_dict().items()}
    if len(dictionary) != cfg.vocab_size:
        raise ValueError(f"dictionary has {len(dictionary)} symbols, the model {cfg.vocab_size}")
    if cfg.encoder == "lstm":
        params = {
            "num_embeddings": cfg.vocab_size,
            "padding_idx": cfg.padding_idx,
            "embed_dim": cfg.encoder_embed_dim,
            "hidden_size": cfg.encoder_hidden_size,
            "num_layers": cfg.encoder_layers,
            "bidirectional": True,
            "left_pad": True,
            "padding_value": 0.0,
        }
        ckpt: dict[str, Any] = {
            "params": params,
            "model": state,
            "dictionary": {s: i for i, s in enumerate(dictionary.symbols)},
        }
    else:
        emb = state["embed_tokens.weight"]
        state["embed_tokens.weight"] = torch.cat([emb, emb.new_zeros(1, emb.size(1))])  # <mask>
        model_cfg = {
            "arch": "laser_transformer",
            "encoder_embed_dim": cfg.encoder_embed_dim,
            "encoder_ffn_embed_dim": cfg.encoder_ffn_embed_dim,
            "encoder_layers": cfg.encoder_layers,
            "encoder_attention_heads": cfg.encoder_attention_heads,
            "encoder_normalize_before": True,
            "encoder_learned_pos": False,
            "no_scale_embedding": False,
            "layernorm_embedding": False,
            "max_source_positions": cfg.max_source_positions,
            "activation_fn": "relu",
            "prepend_bos": False,
            "sentemb_criterion": "maxpool",
        }
        ckpt = {"cfg": {"model": model_cfg}, "model": state}
    ckpt["nllb_mini"] = dict(info or {}, sentence_dim=cfg.sentence_dim, model_config=cfg.to_dict())
    spm_src = Path(spm_model)
    with atomic_write(out.with_suffix(".spm"), "wb") as fh:
        fh.write(spm_src.read_bytes())
    dictionary.save(out.with_suffix(".cvocab"))
    with atomic_write(out, "wb") as fh:
        torch.save(ckpt, fh)
    return out
