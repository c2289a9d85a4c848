"""``mt-export``: a dense checkpoint as a Hugging Face M2M100 model, or as a CTranslate2 model.

Our dense model is exactly the M2M100 family: pre-LN layers, a final LayerNorm on each stack, ReLU FFNs,
fairseq sinusoidal positions starting at ``padding_idx + 1`` (HF's M2M100 table with its offset of 2
for ``padding_idx`` 1 gives the same rows), embeddings scaled by sqrt(d) and shared by encoder, decoder
and output projection. The weights map one to one, with our fused projections split: self-attention
``qkv_proj`` -> ``q_proj``/``k_proj``/``v_proj``, encoder-attention ``kv_proj`` -> ``k_proj``/``v_proj``.

One convention differs and the export keeps ours, because the weights were trained with it: our decoder
starts with the target-language token (``__deu_Latn__ y1 y2 ...``), while HF's M2M100/NLLB start with
``</s>`` and force the language token second. So:

- HF: ``decoder_start_token_id`` is a language token. The config carries a default (the first target
  language of the checkpoint's ``--lang-pairs``); pass ``decoder_start_token_id=tok.convert_tokens_to_ids
  ("__fra_Latn__")`` to ``generate()`` for another one, and never set ``forced_bos_token_id``. The
  generation config suppresses ``<s>``, ``<pad>`` and every language token, as our search does, and sets
  up transformers' beam search to give mt-generate's translations (``hf_generation_config``).
- CTranslate2: ``decoder_start_token`` is null in the model's ``config.json``, so the first token of
  ``target_prefix`` starts the decoder and is not part of the hypotheses:
  ``translate_batch(src, target_prefix=[["__deu_Latn__"]], beam_size=4, min_decoding_length=1)``.
- Sources are ``__src__ x </s>`` in both: ``tok("__eng_Latn__ " + text)`` with the exported tokenizer
  (its template appends ``</s>``), or tokens ``["__eng_Latn__", *pieces, "</s>"]`` for CTranslate2.

The tokenizer is a ``tokenizers`` Unigram model over our ``dict.txt`` with the SentencePiece model's
normalisation (``tokenizer.json``), plus ``spm.model`` and ``dict.txt`` themselves. MoE checkpoints are
refused: neither M2M100 nor CTranslate2's converter has sparse expert layers.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any, Iterator

import torch

from mt.errors import UserError
from mt.generate.loading import LoadedModel, banned_ids, load_model
from mt.generate.search import SearchConfig
from mt.util import atomic_write, is_stale_temp, remove_stale_temps, temp_name

FORMATS = ("hf", "ctranslate2")
TEMP = "mt-export"  # the staging folder inside --out: .mt-export.{host}-{pid}.{rand}.tmp


def _require(module: str, extra: str) -> Any:
    try:
        return __import__(module)
    except ImportError:
        raise UserError(f"mt-export needs the {extra} package: pip install '.[export]' (or pip install {extra})") from None


def check_dense(loaded: LoadedModel) -> None:
    """A UserError for models M2M100 cannot hold (sparse MoE layers, CMR, adapters)."""
    from mt.models.moe import num_moe_layers

    cfg = loaded.model.cfg
    if num_moe_layers(cfg) or cfg.moe_cmr:
        raise UserError(
            f"{loaded.path}: a Mixture-of-Experts checkpoint ({num_moe_layers(cfg)} MoE layers); HF M2M100 and "
            "CTranslate2 export support dense models only: serve MoE models with mt-translate / mt-interactive"
        )
    if (cfg.decoder_start, cfg.source_langtok) != ("lang", "first"):  # an imported NLLB model (mt.data.rows)
        raise UserError(
            f"{loaded.path}: the decoder starts with '</s> __tgt__' or the source ends with its language token "
            "(an mt-import of a released NLLB model); exporting that layout is not supported yet: use the "
            "original Hugging Face files"
        )


def hf_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Our parameter names -> ``M2M100ForConditionalGeneration`` names (fused projections split)."""
    ours = {k: v.detach().cpu().float() for k, v in model.state_dict().items()}
    d = model.cfg.encoder_embed_dim
    out: dict[str, torch.Tensor] = {"model.shared.weight": ours.pop("embed_tokens.weight")}
    for stack, n in (("encoder", model.cfg.encoder_layers), ("decoder", model.cfg.decoder_layers)):
        for i in range(n):
            src, dst = f"{stack}.layers.{i}.", f"model.{stack}.layers.{i}."
            for part in ("weight", "bias"):
                qkv = ours.pop(f"{src}self_attn.qkv_proj.{part}")
                for name, t in zip(("q_proj", "k_proj", "v_proj"), qkv.split(d, dim=0)):
                    out[f"{dst}self_attn.{name}.{part}"] = t.clone()
                names = ["self_attn.out_proj", "self_attn_layer_norm", "final_layer_norm"]
                out[f"{dst}fc1.{part}"] = ours.pop(f"{src}ffn.fc1.{part}")
                out[f"{dst}fc2.{part}"] = ours.pop(f"{src}ffn.fc2.{part}")
                if stack == "decoder":
                    kv = ours.pop(f"{src}encoder_attn.kv_proj.{part}")
                    for name, t in zip(("k_proj", "v_proj"), kv.split(d, dim=0)):
                        out[f"{dst}encoder_attn.{name}.{part}"] = t.clone()
                    names += ["encoder_attn.q_proj", "encoder_attn.out_proj", "encoder_attn_layer_norm"]
                for name in names:
                    out[f"{dst}{name}.{part}"] = ours.pop(f"{src}{name}.{part}")
        for part in ("weight", "bias"):
            out[f"model.{stack}.layer_norm.{part}"] = ours.pop(f"{stack}.layer_norm.{part}")
    if ours:
        raise UserError(
            f"parameters with no M2M100 equivalent: {', '.join(sorted(ours)[:4])}; only the dense Transformer "
            "(no adapters, no MoE) can be exported"
        )
    return out


def _default_target(loaded: LoadedModel) -> str:
    for pair in loaded.lang_pairs:
        return pair.split("-")[1]
    return loaded.langs[0]


def hf_shape_kwargs(c) -> dict:
    """Our ``TransformerConfig``'s shape and dropouts under Hugging Face's M2M100 / NLLB-MoE config names
    (pre-LN, ReLU, scaled embeddings, no layer drop): what an equivalent HF model needs besides token ids."""
    return dict(
        vocab_size=c.vocab_size, d_model=c.encoder_embed_dim, max_position_embeddings=max(c.max_source_positions, c.max_target_positions),
        encoder_layers=c.encoder_layers, encoder_ffn_dim=c.encoder_ffn_embed_dim, encoder_attention_heads=c.encoder_attention_heads,
        decoder_layers=c.decoder_layers, decoder_ffn_dim=c.decoder_ffn_embed_dim, decoder_attention_heads=c.decoder_attention_heads,
        encoder_layerdrop=0.0, decoder_layerdrop=0.0, activation_function="relu", dropout=c.dropout,
        attention_dropout=c.attention_dropout, activation_dropout=c.activation_dropout, scale_embedding=True,
    )  # fmt: skip


def build_hf_model(loaded: LoadedModel):
    """An ``M2M100ForConditionalGeneration`` holding our weights (float32, eval mode)."""
    _require("transformers", "transformers")
    from transformers import M2M100Config, M2M100ForConditionalGeneration

    check_dense(loaded)
    c, d = loaded.model.cfg, loaded.dictionary
    start = d.lang_index(_default_target(loaded))
    hf_cfg = M2M100Config(
        **hf_shape_kwargs(c), pad_token_id=d.pad(), bos_token_id=d.bos(), eos_token_id=d.eos(),
        decoder_start_token_id=start, tie_word_embeddings=True,
    )  # fmt: skip
    model = M2M100ForConditionalGeneration(hf_cfg)
    sd = hf_state_dict(loaded.model)
    missing, unexpected = model.load_state_dict(sd, strict=False)
    tied = {"lm_head.weight", "model.encoder.embed_tokens.weight", "model.decoder.embed_tokens.weight"}
    missing = [k for k in missing if k not in tied]
    if missing or unexpected:
        raise RuntimeError(f"M2M100 mapping is incomplete: missing {missing[:4]}, unexpected {unexpected[:4]}")
    model.tie_weights()
    model.generation_config = hf_generation_config(loaded, start)
    return model.eval()


def hf_generation_config(loaded: LoadedModel, start: int):
    """Transformers' beam search set up as ``mt.generate.search`` with mt-generate's defaults.

    Both keep the ``2 * beam`` best continuations, finalise a ``</s>`` only among the first ``beam`` of them,
    score ``sum(log p) / len ** lenpen`` with ``len`` counting ``</s>``, and stop a sentence once ``beam``
    hypotheses are finished: that last rule is ``early_stopping=True`` (transformers' default ``False`` keeps
    searching while a live beam could still win, and gives other translations). ``min_new_tokens`` is
    ``--min-len``. The length limit cannot match: ours is per sentence (``1.2 * src_len + 10`` tokens, then a
    forced ``</s>``), transformers' is one ``max_new_tokens`` (here the model's ``max_target_positions``,
    ``</s>`` included), so only translations that reach the limit differ. ``forced_bos_token_id`` stays unset.
    """
    from transformers import GenerationConfig

    d, s = loaded.dictionary, SearchConfig()
    return GenerationConfig(
        decoder_start_token_id=start, bos_token_id=d.bos(), eos_token_id=d.eos(), pad_token_id=d.pad(),
        suppress_tokens=banned_ids(d), do_sample=False, num_beams=s.beam, length_penalty=s.lenpen,
        early_stopping=True, min_new_tokens=s.min_len, max_new_tokens=loaded.model.cfg.max_target_positions,
    )  # fmt: skip


def build_hf_tokenizer(loaded: LoadedModel):
    """A fast tokenizer with our ids: Unigram over dict.txt + the SentencePiece normaliser; appends ``</s>``."""
    _require("tokenizers", "tokenizers")
    _require("google.protobuf", "protobuf")
    from sentencepiece import sentencepiece_model_pb2
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, normalizers, pre_tokenizers, processors
    from tokenizers.models import Unigram
    from transformers import PreTrainedTokenizerFast

    if loaded.spm is None:
        raise UserError(f"{loaded.data_dir}: no spm.model, needed for the tokenizer files; pass --spm-model")
    sp, d = loaded.spm.sp, loaded.dictionary
    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(sp.serialized_model_proto())
    specials = set(d.symbols[: d.nspecial])
    lang_tokens = [f"__{c}__" for c in d.langs()]
    vocab = []
    for sym in d.symbols:
        pid = sp.piece_to_id(sym)
        known = sym not in specials and sym not in lang_tokens and sp.id_to_piece(pid) == sym
        vocab.append((sym, float(sp.get_score(pid)) if known else 0.0))
    tok = Tokenizer(Unigram(vocab, unk_id=d.unk(), byte_fallback=False))
    norm = [normalizers.Strip(left=False, right=True), normalizers.Replace(Regex(" {2,}"), "▁")]
    charsmap = proto.normalizer_spec.precompiled_charsmap
    tok.normalizer = normalizers.Sequence(([normalizers.Precompiled(charsmap)] if charsmap else []) + norm)
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in [*d.symbols[: d.nspecial], *lang_tokens]])
    tok.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", d.eos())]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>",
        additional_special_tokens=lang_tokens, model_max_length=loaded.model.cfg.max_source_positions,
    )  # fmt: skip


def _readme(loaded: LoadedModel, fmt: str) -> str:
    """The export's README.md; its python blocks run as they are from the export folder
    (tests/test_generate_export.py runs them and compares with mt-translate)."""
    tgt = _default_target(loaded)
    src = loaded.lang_pairs[0].split("-")[0] if loaded.lang_pairs else loaded.langs[0]
    s = SearchConfig()
    head = f"""```python
model_dir = "."  # this folder
sentences = ["Hello world.", "How are you today?"]  # in {src}"""
    if fmt == "hf":
        usage = f"""{head}
from transformers import AutoTokenizer, M2M100ForConditionalGeneration
tok = AutoTokenizer.from_pretrained(model_dir)
model = M2M100ForConditionalGeneration.from_pretrained(model_dir).eval()
batch = tok(["__{src}__ " + s for s in sentences], return_tensors="pt", padding=True)
out = model.generate(**batch, decoder_start_token_id=tok.convert_tokens_to_ids("__{tgt}__"))
print(tok.batch_decode(out, skip_special_tokens=True))
```

`generation_config.json` sets up mt-generate's beam search: {s.beam} beams, length penalty {s.lenpen},
at least {s.min_len} token, and a sentence stops once {s.beam} hypotheses have ended (`early_stopping: true`;
transformers' default `false` gives other translations). The length limit differs: mt-generate stops each
sentence at {s.max_len_a:g} x source tokens + {s.max_len_b}, `generate()` at `max_new_tokens` (pass a smaller one
if you like); only translations that run that long differ."""
    else:
        usage = f"""{head}
import ctranslate2, sentencepiece as spm
sp = spm.SentencePieceProcessor(model_file=f"{{model_dir}}/spm.model")
tr = ctranslate2.Translator(model_dir, compute_type="default")  # or "int8"
src = [["__{src}__", *sp.encode(s, out_type=str), "</s>"] for s in sentences]
res = tr.translate_batch(src, target_prefix=[["__{tgt}__"]] * len(src), beam_size={s.beam}, min_decoding_length={s.min_len})
print([sp.decode(r.hypotheses[0]) for r in res])
```

The hypotheses hold the translation only: the target-language token starts the decoder and is not part of
them, so do not drop their first token. Options as mt-translate: `beam_size={s.beam}`, `min_decoding_length={s.min_len}`;
mt-translate also stops each sentence at {s.max_len_a:g} x source tokens + {s.max_len_b} (here `max_decoding_length`,
default 256) and never outputs `<s>`, `<pad>` or a language token (CTranslate2's `suppress_sequences` can ban
them but renormalises the scores, so leave it out unless a model does produce them)."""
    return f"""# nllb-mini export ({fmt})

Exported by `mt-export` from `{loaded.path.name}` (language pairs: {', '.join(loaded.lang_pairs) or 'n/a'}).

Conventions (they differ from stock M2M100/NLLB checkpoints):
- source: `__src__ x </s>` (language token first, `</s>` last);
- the decoder starts with the target-language token itself (`__{tgt}__ y1 y2 ...`), not `</s> __{tgt}__`:
  pass it as `decoder_start_token_id` (HF) / the first `target_prefix` token (CTranslate2);
  never set `forced_bos_token_id`;
- `<s>`, `<pad>` and language tokens should never be generated (HF: `suppress_tokens` in generation_config).

Run from this folder (or set `model_dir` to its path):

{usage}
"""


def check_out(out: Path, force: bool) -> None:
    """A UserError, before any work, when ``out`` cannot take the export: a file, under a file, or a folder
    with content and no ``--force``. (Leftovers of a killed export do not count as content.)"""
    if out.is_dir():
        content = [p.name for p in out.iterdir() if not is_stale_temp(p.name)]
        if content and not force:
            raise UserError(f"{out}: exists and is not empty; pass --force to add the export to it (only the "
                            "files the export writes are replaced), or another --out")  # fmt: skip
        return
    if out.exists() or out.is_symlink():
        raise UserError(f"{out}: exists and is not a folder; --out names the folder to write the export to")
    for parent in out.absolute().parents:
        if parent.exists():
            if not parent.is_dir():
                raise UserError(f"{out}: {parent} is a file, not a folder; choose another --out")
            return


@contextlib.contextmanager
def staging(out: Path) -> Iterator[Path]:
    """A fresh temp folder inside ``out`` (created if missing) to write the export to, removed afterwards.

    Inside ``out``, so moving its files into place is a rename on one file system; named by ``temp_name``,
    so the next export to ``out`` removes what a killed one left. On an error, folders this created are
    removed again when empty.
    """
    missing = []
    for p in (out, *out.absolute().parents):
        if p.exists():
            break
        missing.append(p)
    out.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(out, f".{TEMP}.")
    stage = out / temp_name(TEMP)
    ok = False
    try:
        stage.mkdir()
        yield stage
        ok = True
    finally:
        shutil.rmtree(stage, ignore_errors=True)
        if not ok:
            for p in missing:
                with contextlib.suppress(OSError):
                    p.rmdir()


def move_into(src: Path, out: Path) -> list[str]:
    """Move the files of ``src`` into ``out``, replacing files of the same names and nothing else; README.md
    last. Returns the names moved."""
    names = sorted((p.name for p in src.iterdir()), key=lambda n: (n == "README.md", n))
    for name in names:
        target = out / name
        if target.is_dir() and not target.is_symlink():
            raise UserError(f"{target}: a folder where the export writes a file; move it away or choose another --out")
    for name in names:
        os.replace(src / name, out / name)
    return names


def export(
    path: str | Path, out: str | Path, fmt: str = "hf", data: str | None = None, spm_model: str | None = None,
    quantization: str | None = None, force: bool = False,
) -> Path:
    """Write the export of checkpoint ``path`` into the folder ``out``; returns ``out``.

    The files are written to a temp folder inside ``out`` and then moved into place one by one: ``out`` may
    hold other files (``--force``, ``--out .``), and the export replaces only the files it writes. Neither
    CTranslate2's converter (it deletes its whole output folder) nor ``save_pretrained`` (it deletes
    ``model-0000i-of-0000n`` files it does not write) ever gets ``out`` itself.
    """
    if fmt not in FORMATS:
        raise UserError(f"--format {fmt!r}: choose {' or '.join(FORMATS)}")
    out = Path(out)
    check_out(out, force)
    _require("transformers", "transformers")
    ct2 = _require("ctranslate2", "ctranslate2") if fmt == "ctranslate2" else None
    loaded = load_model(path, data, spm_model)
    check_dense(loaded)
    with staging(out) as stage:
        files = _export_hf(loaded, stage / "hf") if ct2 is None else _export_ct2(loaded, stage, quantization)
        written = move_into(files, out)
    others = sorted(p.name for p in out.iterdir() if p.name not in written and not is_stale_temp(p.name))
    if others:
        shown = ", ".join(others[:5]) + (f" and {len(others) - 5} more" if len(others) > 5 else "")
        print(f"mt-export: left as they were in {out}: {shown}", file=sys.stderr)
    what = "Hugging Face M2M100" if ct2 is None else f"CTranslate2 {ct2.__version__}"
    print(f"mt-export: {what} model written to {out}", file=sys.stderr)
    return out


def _export_ct2(loaded: LoadedModel, stage: Path, quantization: str | None) -> Path:
    """The HF export converted by CTranslate2 into ``stage/ct2`` (a new folder); returns that folder."""
    from ctranslate2.converters import TransformersConverter

    hf, out = _export_hf(loaded, stage / "hf"), stage / "ct2"
    conv = TransformersConverter(str(hf), copy_files=["spm.model", "dict.txt"])
    try:
        conv.convert(str(out), quantization=quantization)
    except ValueError as exc:
        raise UserError(f"CTranslate2 conversion failed: {exc}") from None
    cfg_path = out / "config.json"
    cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    cfg["decoder_start_token"] = None  # the target_prefix's language token starts the decoder (see module doc)
    with atomic_write(cfg_path) as fh:
        json.dump(cfg, fh, indent=2)
    with atomic_write(out / "README.md") as fh:
        fh.write(_readme(loaded, "ctranslate2"))
    return out


def _export_hf(loaded: LoadedModel, out: Path) -> Path:
    """The HF model, tokenizer, spm.model, dict.txt and README.md in the new folder ``out``; returns it."""
    model = build_hf_model(loaded)
    tok = build_hf_tokenizer(loaded)
    out.mkdir(parents=True)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    if loaded.spm is not None:
        shutil.copyfile(loaded.spm.path, out / "spm.model")
    shutil.copyfile(loaded.data_dir / "dict.txt", out / "dict.txt")
    with atomic_write(out / "README.md") as fh:
        fh.write(_readme(loaded, "hf"))
    return out
