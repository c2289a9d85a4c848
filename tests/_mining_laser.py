"""Builders for tiny LASER2/LASER3 checkpoints in the released formats (random weights), for the tests.

The state dicts are assembled from plain torch modules under fairseq's key names, independently of
``mining.encoders.laser``, so a wrong key, shape or layout in the loader shows up as a failure.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import sentencepiece as spm
import torch
from torch import nn

CORPUS = [
    "the cat sits on the mat.",
    "the weather is nice today.",
    "open the file in read-only mode.",
    "could not connect to the server.",
    "save the document before closing the window.",
    "die katze sitzt auf der matte.",
    "das wetter ist heute schön.",
    "öffnen sie die datei.",
    "le chat est assis sur le tapis.",
    "il fait beau aujourd'hui.",
    "ouvrir le fichier en lecture seule.",
    "impossible de se connecter au serveur.",
    "enregistrez le document avant de fermer la fenêtre.",
    "el gato está sentado en la alfombra.",
    "no se pudo conectar con el servidor.",
] * 4


def make_spm(path: Path, vocab_size: int = 150) -> Path:
    """Train a tiny SentencePiece model and store it as ``path`` (LASER names it ``*.spm``)."""
    prefix = str(path.parent / "_spm_tmp")
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(CORPUS),
        model_prefix=prefix,
        vocab_size=vocab_size,
        model_type="unigram",
        character_coverage=1.0,
        hard_vocab_limit=False,
        minloglevel=2,
    )
    Path(prefix + ".model").rename(path)
    Path(prefix + ".vocab").unlink()
    return path


def spm_pieces(spm_path: Path) -> list[str]:
    sp = spm.SentencePieceProcessor(model_file=str(spm_path))
    return [sp.id_to_piece(i) for i in range(sp.get_piece_size()) if not (sp.is_control(i) or sp.is_unknown(i))]


def write_cvocab(spm_path: Path, path: Path) -> list[str]:
    """fairseq dictionary text (``piece count``) of the spm pieces; id of line k is k + 4."""
    pieces = spm_pieces(spm_path)
    path.write_text("".join(f"{p} {1000 - i}\n" for i, p in enumerate(pieces)), encoding="utf-8")
    return pieces


def laser2_checkpoint(pieces: list[str], embed_dim=8, hidden=6, layers=2, seed=0) -> dict:
    """``{"params", "model", "dictionary"}`` exactly as LASER2's ``laser2.pt`` is laid out."""
    torch.manual_seed(seed)
    n = 4 + len(pieces)
    emb = nn.Embedding(n, embed_dim, padding_idx=1)
    lstm = nn.LSTM(embed_dim, hidden, num_layers=layers, bidirectional=True)
    state = {"embed_tokens.weight": emb.weight.detach().clone()}
    state.update({f"lstm.{k}": v.detach().clone() for k, v in lstm.state_dict().items()})
    dictionary = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3, **{p: 4 + i for i, p in enumerate(pieces)}}
    params = {
        "num_embeddings": n,
        "padding_idx": 1,
        "embed_dim": embed_dim,
        "hidden_size": hidden,
        "num_layers": layers,
        "bidirectional": True,
        "left_pad": True,
        "padding_value": 0.0,
    }
    return {"params": params, "model": state, "dictionary": dictionary}


def reference_laser2(ckpt: dict, ids: list[int]) -> torch.Tensor:
    """Unpadded reference forward: embedding -> BiLSTM -> max over time."""
    p = ckpt["params"]
    emb = nn.Embedding(p["num_embeddings"], p["embed_dim"], padding_idx=1)
    emb.weight.data.copy_(ckpt["model"]["embed_tokens.weight"])
    lstm = nn.LSTM(p["embed_dim"], p["hidden_size"], num_layers=p["num_layers"], bidirectional=True)
    lstm.load_state_dict({k[len("lstm.") :]: v for k, v in ckpt["model"].items() if k.startswith("lstm.")})
    with torch.no_grad():
        out, _ = lstm(emb(torch.tensor(ids))[:, None, :])
    return out[:, 0].max(dim=0).values


def laser3_checkpoint(
    vocab_size: int,
    dim=16,
    ffn=32,
    layers=2,
    heads=4,
    normalize_before=False,
    learned_pos=False,
    whole_model=True,
    seed=0,
) -> dict:
    """A fairseq checkpoint of a TransformerEncoder: ``{"cfg": {"model": Namespace}, "model": ...}``.

    ``vocab_size`` must already count fairseq's 4 specials and ``<mask>`` (these models have a final
    layer norm). With ``whole_model`` the keys carry ``encoder.`` and decoder keys sit beside them, as in
    a translation checkpoint. Returns also ``torch_layers``: the reference ``nn.TransformerEncoderLayer``s.
    """
    torch.manual_seed(seed)
    emb = nn.Embedding(vocab_size, dim, padding_idx=1)
    ref_layers = [
        nn.TransformerEncoderLayer(
            dim, heads, ffn, dropout=0.0, activation="relu", batch_first=True, norm_first=normalize_before
        )
        for _ in range(layers)
    ]
    final_ln = nn.LayerNorm(dim)
    with torch.no_grad():
        for m in [final_ln, *[ln for lay in ref_layers for ln in (lay.norm1, lay.norm2)]]:
            m.weight.normal_(1.0, 0.1)
            m.bias.normal_(0.0, 0.1)
    state = {
        "embed_tokens.weight": emb.weight.detach().clone(),
        "embed_positions._float_tensor": torch.zeros(1),
        "version": torch.tensor([3.0]),
        "layer_norm.weight": final_ln.weight.detach().clone(),
        "layer_norm.bias": final_ln.bias.detach().clone(),
    }
    if learned_pos:
        pos = nn.Embedding(1024 + 2, dim, padding_idx=1)
        state.pop("embed_positions._float_tensor")
        state["embed_positions.weight"] = pos.weight.detach().clone()
    for i, lay in enumerate(ref_layers):
        q, k, v = lay.self_attn.in_proj_weight.detach().chunk(3)
        qb, kb, vb = lay.self_attn.in_proj_bias.detach().chunk(3)
        pre = f"layers.{i}."
        state.update(
            {
                pre + "self_attn.q_proj.weight": q.clone(),
                pre + "self_attn.q_proj.bias": qb.clone(),
                pre + "self_attn.k_proj.weight": k.clone(),
                pre + "self_attn.k_proj.bias": kb.clone(),
                pre + "self_attn.v_proj.weight": v.clone(),
                pre + "self_attn.v_proj.bias": vb.clone(),
                pre + "self_attn.out_proj.weight": lay.self_attn.out_proj.weight.detach().clone(),
                pre + "self_attn.out_proj.bias": lay.self_attn.out_proj.bias.detach().clone(),
                pre + "self_attn_layer_norm.weight": lay.norm1.weight.detach().clone(),
                pre + "self_attn_layer_norm.bias": lay.norm1.bias.detach().clone(),
                pre + "fc1.weight": lay.linear1.weight.detach().clone(),
                pre + "fc1.bias": lay.linear1.bias.detach().clone(),
                pre + "fc2.weight": lay.linear2.weight.detach().clone(),
                pre + "fc2.bias": lay.linear2.bias.detach().clone(),
                pre + "final_layer_norm.weight": lay.norm2.weight.detach().clone(),
                pre + "final_layer_norm.bias": lay.norm2.bias.detach().clone(),
            }
        )
    if whole_model:
        state = {f"encoder.{k}": v for k, v in state.items()}
        state.update({"decoder.version": torch.tensor([3.0]), "decoder.embed_out": torch.zeros(3, dim)})
    cfg = argparse.Namespace(
        encoder_embed_dim=dim,
        encoder_ffn_embed_dim=ffn,
        encoder_layers=layers,
        encoder_attention_heads=heads,
        encoder_normalize_before=normalize_before,
        encoder_learned_pos=learned_pos,
        no_scale_embedding=False,
        layernorm_embedding=False,
        max_source_positions=1024,
        activation_fn="relu",
        prepend_bos=False,
        left_pad_source=True,
        sentemb_criterion="maxpool",
        arch="laser_transformer",
    )
    ckpt = {"cfg": {"model": cfg}, "model": state}
    return ckpt, {
        "emb": emb,
        "layers": ref_layers,
        "final_ln": final_ln,
        "pos": state.get("encoder.embed_positions.weight", state.get("embed_positions.weight")),
    }


def reference_laser3(ref: dict, ids: list[int], learned_pos: bool = False) -> torch.Tensor:
    """Unpadded reference forward with torch's own TransformerEncoderLayer."""
    dim = ref["emb"].embedding_dim
    x = ref["emb"](torch.tensor(ids)) * math.sqrt(dim)
    positions = torch.arange(len(ids)) + 2  # padding_idx + 1 onwards
    if learned_pos:
        x = x + ref["pos"][positions]
    else:
        half = dim // 2
        freqs = torch.exp(torch.arange(half, dtype=torch.float) * -(math.log(10000) / (half - 1)))
        ang = positions.float()[:, None] * freqs[None, :]
        x = x + torch.cat([torch.sin(ang), torch.cos(ang)], dim=1)
    x = x[None]
    with torch.no_grad():
        for lay in ref["layers"]:
            lay.eval()
            x = lay(x)
        x = ref["final_ln"](x)
    return x[0].max(dim=0).values
