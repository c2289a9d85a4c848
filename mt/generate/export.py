"""``mt-export``: a dense checkpoint as a Hugging Face M2M100 model, or as a CTranslate2 model.

Our dense model is exactly the M2M100 family: pre-LN layers, a final LayerNorm on each stack, ReLU FFNs,
fairseq sinusoidal positions starting at ``padding_idx + 1`` (HF's M2M100 table with its offset of 2
for ``padding_idx`` 1 gives the same rows), embeddings scaled by sqrt(d) and shared by encoder, decoder
and output projection. The weights map one to one, with our fused projections split: self-attention
``qkv_proj`` -> ``q_proj``/``k_proj``/``v_proj``, encoder-attention ``kv_proj`` -> ``k_proj``/``v_proj``.

Models mt-train wrote: one convention differs and the export keeps ours, because the weights were
trained with it: our decoder starts with the target-language token (``__deu_Latn__ y1 y2 ...``), while
HF's M2M100/NLLB start with ``</s>`` and force the language token second. So:

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

Models in the released NLLB-200 layout (``decoder_start = "eos_lang"``: mt-import, and models fine-tuned
from one) are exported as the released models are published, so ``mt-import`` then ``mt-export --format
hf`` gives back the original tensors (names, shapes, dtypes, values) and config: ``decoder_start_token_id``
is ``</s>``, the target language is ``forced_bos_token_id`` (HF) / ``target_prefix`` (CTranslate2, whose
hypotheses then start with it), and the tokenizer is NllbTokenizer's files (``sentencepiece.bpe.model``,
``tokenizer_config.json``, ``special_tokens_map.json``) with the language codes named ``eng_Latn``
(``legacy_behaviour`` from ``source_langtok``). CTranslate2's own converter turns that folder into its
NLLB model (``decoder_start_token`` ``</s>``). The generation config bans ``<s>``, ``<pad>`` and language
tokens with ``bad_words_ids``, which transformers applies before the forced language token
(``suppress_tokens`` comes after it and would suppress the forced token too).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import torch

from mt.common.errors import UserError
from mt.common.files import atomic_write, is_stale_temp, remove_stale_temps, temp_name
from mt.common.flags import arg
from mt.common.langs import token_lang
from mt.generate.loading import LoadedModel, banned_ids, load_model
from mt.generate.search import SearchConfig

FORMATS = ("hf", "ctranslate2")
TEMP = "mt-export"  # the staging folder inside --out: .mt-export.{host}-{pid}.{rand}.tmp


def _require(module: str, extra: str) -> Any:
    try:
        return __import__(module)
    except ImportError:
        raise UserError(
            f"mt-export needs the {extra} package: pip install '.[export]' (or pip install {extra})"
        ) from None


def check_dense(loaded: LoadedModel) -> None:
    """A UserError for models M2M100 cannot hold (sparse MoE layers, CMR, adapters)."""
    from mt.models.moe import num_moe_layers

    cfg = loaded.model.cfg
    if num_moe_layers(cfg) or cfg.moe_cmr:
        raise UserError(
            f"{loaded.path}: a Mixture-of-Experts checkpoint ({num_moe_layers(cfg)} MoE layers); HF M2M100 and "
            "CTranslate2 export support dense models only: serve MoE models with mt-translate / mt-interactive"
        )
    if (cfg.decoder_start, cfg.source_langtok) == ("lang", "last"):  # no such model is made here (mt.data.rows)
        raise UserError(
            f"{loaded.path}: a source row 'x </s> __src__' with a decoder that starts '__tgt__': no HF or "
            "CTranslate2 tokenizer convention has that layout"
        )
    if nllb_layout(loaded):
        nllb_symbols(loaded)  # the vocabulary must be SentencePiece's pieces + 1, as NllbTokenizer numbers them


def nllb_layout(loaded: LoadedModel) -> bool:
    """A model in the released NLLB-200 layout (decoder starts ``</s> __tgt__``): exported as those are published."""
    return loaded.model.cfg.decoder_start == "eos_lang"


def nllb_symbols(loaded: LoadedModel) -> tuple[int, list[tuple[int, str]]]:
    """(number of SentencePiece pieces, [(id, HF name)] of the tokens after them) for NllbTokenizer's files.

    ``dict.txt`` of an NLLB model is ``<s> <pad> </s> <unk>``, the pieces (SentencePiece id + 1), then the
    language tokens, ``<mask>`` and fairseq's ``madeupword`` fillers (``mt.importing.vocab``). The fillers at
    the end are not tokenizer tokens (the released tokenizers leave them out); any other token is listed
    with its id, language tokens under HF's names (``eng_Latn``)."""
    if loaded.spm is None:
        raise UserError(f"{loaded.data_dir}: no spm.model, needed for the tokenizer files; pass --spm-model")
    sp, d = loaded.spm.sp, loaded.dictionary
    n = sp.get_piece_size()
    wrong = next((i for i in range(3, n) if d[i + 1] != sp.id_to_piece(i)), None) if len(d) > n else 3
    if wrong is not None:
        raise UserError(
            f"{loaded.data_dir / 'dict.txt'}: id {wrong + 1} is {d[wrong + 1]!r}, not SentencePiece piece "
            f"{wrong} + 1: not the vocabulary layout of the NLLB models, which the export needs"
        )
    extra = [(i, token_lang(d[i]) or d[i]) for i in range(n + 1, len(d))]
    while extra and re.fullmatch(r"madeupword\d+", extra[-1][1]):
        extra.pop()
    return n, extra


def hf_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Our parameter names -> ``M2M100ForConditionalGeneration`` names (fused projections split), dtypes kept."""
    ours = {k: v.detach().cpu() for k, v in model.state_dict().items()}  # load_state_dict casts to the HF model's dtype
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
        vocab_size=c.vocab_size,
        d_model=c.encoder_embed_dim,
        max_position_embeddings=max(c.max_source_positions, c.max_target_positions),
        encoder_layers=c.encoder_layers,
        encoder_ffn_dim=c.encoder_ffn_embed_dim,
        encoder_attention_heads=c.encoder_attention_heads,
        decoder_layers=c.decoder_layers,
        decoder_ffn_dim=c.decoder_ffn_embed_dim,
        decoder_attention_heads=c.decoder_attention_heads,
        encoder_layerdrop=0.0,
        decoder_layerdrop=0.0,
        activation_function="relu",
        dropout=c.dropout,
        attention_dropout=c.attention_dropout,
        activation_dropout=c.activation_dropout,
        scale_embedding=True,
    )


def build_hf_model(loaded: LoadedModel):
    """An ``M2M100ForConditionalGeneration`` holding our weights (in the checkpoint's dtype, eval mode)."""
    _require("transformers", "transformers")
    from transformers import M2M100Config, M2M100ForConditionalGeneration

    check_dense(loaded)
    c, d = loaded.model.cfg, loaded.dictionary
    nllb = nllb_layout(loaded)
    start = d.eos() if nllb else d.lang_index(_default_target(loaded))
    hf_cfg = M2M100Config(
        **hf_shape_kwargs(c),
        pad_token_id=d.pad(),
        bos_token_id=d.bos(),
        eos_token_id=d.eos(),
        decoder_start_token_id=start,
        tie_word_embeddings=True,
        **({"tokenizer_class": "NllbTokenizer"} if nllb else {}),
    )
    dtype = loaded.stored_dtype  # an mt-import --dtype bfloat16 model is exported in bfloat16
    model = M2M100ForConditionalGeneration(hf_cfg).to(dtype)
    sd = hf_state_dict(loaded.model)
    missing, unexpected = model.load_state_dict(sd, strict=False)
    tied = {"lm_head.weight", "model.encoder.embed_tokens.weight", "model.decoder.embed_tokens.weight"}
    missing = [k for k in missing if k not in tied]
    if missing or unexpected:
        raise RuntimeError(f"M2M100 mapping is incomplete: missing {missing[:4]}, unexpected {unexpected[:4]}")
    model.tie_weights()
    model.config.dtype = dtype
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
    common = dict(
        decoder_start_token_id=start,
        bos_token_id=d.bos(),
        eos_token_id=d.eos(),
        pad_token_id=d.pad(),
        do_sample=False,
        num_beams=s.beam,
        length_penalty=s.lenpen,
        early_stopping=True,
        max_new_tokens=loaded.model.cfg.max_target_positions,
    )
    if nllb_layout(loaded):  # the forced language token is the first new token; bans before it (module doc)
        return GenerationConfig(**common, bad_words_ids=[[i] for i in banned_ids(d)], min_new_tokens=s.min_len + 1)
    return GenerationConfig(**common, suppress_tokens=banned_ids(d), min_new_tokens=s.min_len)


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
    tok.add_special_tokens(
        [AddedToken(s, special=True, normalized=False) for s in [*d.symbols[: d.nspecial], *lang_tokens]]
    )
    tok.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", d.eos())]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        additional_special_tokens=lang_tokens,
        model_max_length=loaded.model.cfg.max_source_positions,
    )


def nllb_tokenizer_config(
    added: list[tuple[int, str]], langs: list[str], legacy: bool, max_length: int
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(``tokenizer_config.json``, ``special_tokens_map.json``) of NllbTokenizer as the released models publish
    them: ``added`` lists every token outside the SentencePiece pieces with its id (specials, language codes,
    ``<mask>``), ``langs`` the language codes, ``legacy`` is ``legacy_behaviour`` (source language token last)."""
    mask = {
        "__type": "AddedToken",
        "content": "<mask>",
        "lstrip": True,
        "normalized": True,
        "rstrip": False,
        "single_word": False,
    }
    special = {
        "bos_token": "<s>",
        "cls_token": "<s>",
        "eos_token": "</s>",
        "mask_token": mask,
        "pad_token": "<pad>",
        "sep_token": "</s>",
        "unk_token": "<unk>",
        "additional_special_tokens": langs,
    }
    config = {
        **special,
        "added_tokens_decoder": {
            str(i): {
                "content": name,
                "lstrip": name == "<mask>",
                "normalized": False,
                "rstrip": False,
                "single_word": False,
                "special": True,
            }
            for i, name in added
        },
        "legacy_behaviour": legacy,
        "model_max_length": max_length,
        "sp_model_kwargs": {},
        "src_lang": None,
        "tgt_lang": None,
        "tokenizer_class": "NllbTokenizer",
    }
    return config, special


def write_nllb_tokenizer(loaded: LoadedModel, out: Path) -> None:
    """NllbTokenizer's files as the released models publish them: ``sentencepiece.bpe.model`` (our spm.model),
    ``tokenizer_config.json`` and ``special_tokens_map.json`` (``nllb_tokenizer_config``). transformers'
    NllbTokenizer / AutoTokenizer (and CTranslate2's converter, through it) then give our ids."""
    n, extra = nllb_symbols(loaded)
    d = loaded.dictionary
    langs = [name for i, name in extra if token_lang(d[i])]
    added = [(i, d[i]) for i in range(d.nspecial)] + extra
    cfg = loaded.model.cfg
    config, special = nllb_tokenizer_config(added, langs, cfg.source_langtok == "last", cfg.max_source_positions)
    shutil.copyfile(loaded.spm.path, out / "sentencepiece.bpe.model")
    for name, content in (("tokenizer_config.json", config), ("special_tokens_map.json", special)):
        with atomic_write(out / name) as fh:
            json.dump(content, fh, indent=2, ensure_ascii=False)
            fh.write("\n")


def _readme(loaded: LoadedModel, fmt: str) -> str:
    """The export's README.md; its python blocks run as they are from the export folder
    (tests/test_generate_export.py runs them and compares with mt-translate)."""
    tgt = _default_target(loaded)
    src = loaded.lang_pairs[0].split("-")[0] if loaded.lang_pairs else loaded.langs[0]
    if nllb_layout(loaded):
        return _readme_nllb(
            loaded, fmt, src, tgt if loaded.lang_pairs else next((c for c in loaded.langs if c != src), src)
        )
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
res = tr.translate_batch(
    src, target_prefix=[["__{tgt}__"]] * len(src), beam_size={s.beam}, min_decoding_length={s.min_len}
)
print([sp.decode(r.hypotheses[0]) for r in res])
```

The hypotheses hold the translation only: the target-language token starts the decoder and is not part of
them, so do not drop their first token. Options as mt-translate: `beam_size={s.beam}`,
`min_decoding_length={s.min_len}`; mt-translate also stops each sentence at {s.max_len_a:g} x source tokens
+ {s.max_len_b} (here `max_decoding_length`, default 256) and never outputs `<s>`, `<pad>` or a language
token (CTranslate2's `suppress_sequences` can ban
them but renormalises the scores, so leave it out unless a model does produce them)."""
    return f"""# nllb-mini export ({fmt})

Exported by `mt-export` from `{loaded.path.name}` (language pairs: {", ".join(loaded.lang_pairs) or "n/a"}).

Conventions (they differ from stock M2M100/NLLB checkpoints):
- source: `__src__ x </s>` (language token first, `</s>` last);
- the decoder starts with the target-language token itself (`__{tgt}__ y1 y2 ...`), not `</s> __{tgt}__`:
  pass it as `decoder_start_token_id` (HF) / the first `target_prefix` token (CTranslate2);
  never set `forced_bos_token_id`;
- `<s>`, `<pad>` and language tokens should never be generated (HF: `suppress_tokens` in generation_config).

Run from this folder (or set `model_dir` to its path):

{usage}
"""


def _readme_nllb(loaded: LoadedModel, fmt: str, src: str, tgt: str) -> str:
    """README.md of an export in the released NLLB-200 layout (python blocks run as written, like ``_readme``'s)."""
    s = SearchConfig()
    legacy = loaded.model.cfg.source_langtok == "last"
    head = f"""```python
model_dir = "."  # this folder
sentences = ["Hello world.", "How are you today?"]  # in {src}"""
    if fmt == "hf":
        usage = f"""{head}
from transformers import AutoTokenizer, M2M100ForConditionalGeneration
tok = AutoTokenizer.from_pretrained(model_dir, src_lang="{src}")
model = M2M100ForConditionalGeneration.from_pretrained(model_dir).eval()
batch = tok(sentences, return_tensors="pt", padding=True)
out = model.generate(**batch, forced_bos_token_id=tok.convert_tokens_to_ids("{tgt}"))
print(tok.batch_decode(out, skip_special_tokens=True))
```

`generation_config.json` sets up mt-translate's beam search: {s.beam} beams, length penalty {s.lenpen}, no `</s>` as the
first word (`min_new_tokens` {s.min_len + 1}: the forced language token is the first new token), `<s>`, `<pad>` and
language tokens never generated (`bad_words_ids`), a sentence stops once {s.beam} hypotheses have ended
(`early_stopping: true`). mt-translate also stops each sentence at {s.max_len_a:g} x source tokens + {s.max_len_b};
`generate()` at `max_new_tokens`."""
    else:
        row = (
            '[*sp.encode(s, out_type=str), "</s>", "{src}"]'
            if legacy
            else '["{src}", *sp.encode(s, out_type=str), "</s>"]'
        )
        usage = f"""{head}
import ctranslate2, sentencepiece as spm
sp = spm.SentencePieceProcessor(model_file=f"{{model_dir}}/spm.model")
tr = ctranslate2.Translator(model_dir, compute_type="default")  # or "int8"
src = [{row.format(src=src)} for s in sentences]
res = tr.translate_batch(src, target_prefix=[["{tgt}"]] * len(src), beam_size={s.beam})
print([sp.decode(r.hypotheses[0][1:]) for r in res])
```

As with the released NLLB models in CTranslate2, the decoder starts from `</s>` and the hypotheses start with
the target-language token (hence `[1:]`). mt-translate also bans `<s>`, `<pad>` and language tokens from
translations and stops each sentence at {s.max_len_a:g} x source tokens + {s.max_len_b} (here `max_decoding_length`)."""
    source = "`x </s> src_lang` (HF's legacy_behaviour)" if legacy else "`src_lang x </s>`"
    return f"""# nllb-mini export ({fmt}, NLLB-200 layout)

Exported by `mt-export` from `{loaded.path.name}`. Conventions of the released NLLB-200 models: source
{source}; the decoder starts with `</s>`, then the target-language token (`forced_bos_token_id` in HF,
`target_prefix` in CTranslate2). Language codes are FLORES-200 codes (`eng_Latn`); `dict.txt` and `spm.model`
are the model's vocabulary for nllb-mini (`mt-import --format hf` reads this folder back).

Run from this folder (or set `model_dir` to its path):

{usage}
"""


def check_out(out: Path, force: bool) -> None:
    """A UserError, before any work, when ``out`` cannot take the export: a file, under a file, or a folder
    with content and no ``--force``. (Leftovers of a killed export do not count as content.)"""
    if out.is_dir():
        content = [p.name for p in out.iterdir() if not is_stale_temp(p.name)]
        if content and not force:
            raise UserError(
                f"{out}: exists and is not empty; pass --force to add the export to it (only the "
                "files the export writes are replaced), or another --out"
            )
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


@dataclass
class ExportConfig:
    """``mt-export``'s options (``export``'s arguments)."""

    fmt: str = arg("hf", name="--format", choices=list(FORMATS), show_default=False)
    path: str = arg("", metavar="CKPT", required=True)
    out: str = arg("", "output directory (new or empty; see --force)", required=True)
    data: str = arg("", "directory with dict.txt and spm.model (default: as mt-generate finds them)")
    spm_model: str = arg("")
    quantization: str | None = arg(
        None, "CTranslate2 only: int8, int8_float32, float16, bfloat16... (default: float32 weights)"
    )
    force: bool = arg(False, "write into a non-empty --out: replaces the files the export writes, keeps all others")


def export(
    path: str | Path,
    out: str | Path,
    fmt: str = "hf",
    data: str | None = None,
    spm_model: str | None = None,
    quantization: str | None = None,
    force: bool = False,
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
    if not nllb_layout(loaded):  # NLLB layout: CTranslate2's converter already starts the decoder from </s>
        cfg["decoder_start_token"] = None  # the target_prefix's language token starts the decoder (see module doc)
        with atomic_write(cfg_path) as fh:
            json.dump(cfg, fh, indent=2)
    with atomic_write(out / "README.md") as fh:
        fh.write(_readme(loaded, "ctranslate2"))
    return out


def _export_hf(loaded: LoadedModel, out: Path) -> Path:
    """The HF model, tokenizer, spm.model, dict.txt and README.md in the new folder ``out``; returns it."""
    model = build_hf_model(loaded)
    nllb = nllb_layout(loaded)
    tok = None if nllb else build_hf_tokenizer(loaded)
    out.mkdir(parents=True)
    model.save_pretrained(out)
    if tok is not None:
        tok.save_pretrained(out)
    else:
        write_nllb_tokenizer(loaded, out)
    if loaded.spm is not None:
        shutil.copyfile(loaded.spm.path, out / "spm.model")
    loaded.dictionary.save(out / "dict.txt")  # the model's (with any mt-train --add-langs tokens)
    with atomic_write(out / "README.md") as fh:
        fh.write(_readme(loaded, "hf"))
    return out
