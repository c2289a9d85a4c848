"""Tiny stand-ins for the released NLLB-200 files, built by the tests (nothing is downloaded).

- text in 10 languages / 9 scripts and a SentencePiece BPE model trained on it, with NLLB's id layout
  (``<unk>=0 <s>=1 </s>=2``, no ``<pad>``), saved as ``sentencepiece.bpe.model``;
- a Hugging Face folder as the dense models are published: ``config.json`` shaped like
  nllb-200-distilled-600M's at reduced sizes, weights of a random ``M2M100ForConditionalGeneration``
  (``model.safetensors``; or sharded; or ``pytorch_model.bin``), ``tokenizer_config.json`` and
  ``special_tokens_map.json`` listing the language codes (ids after the pieces, then ``<mask>``, then two
  spare embedding rows, like the real 256204 tokens / 256206 rows);
- the same model as a fairseq ``checkpoint.pt`` in the released key layout (``encoder.embed_tokens``,
  ``decoder.output_projection``, ``*.version``, ``embed_positions._float_tensor``) with an argparse
  ``args``, an omegaconf ``cfg`` (pickled under omegaconf's class names, without omegaconf installed),
  ``last_optimizer_state`` and numpy numbers in ``extra_state``; ``dictionary.txt`` and ``langs.txt``.

- the sparse NLLB-MoE the same two ways: an HF folder (``model_type`` nllb-moe, nllb-moe-54b's
  config.json at reduced sizes, a random ``NllbMoeForConditionalGeneration``) and the fairseq release
  layout (``checkpoint_2_300000-shared.pt`` with the dense part and the gates, the experts in
  ``checkpoint_2_300000-rank-{r}.pt`` as local experts ``moe_layer.experts.{0..L-1}``).

The random weights are drawn wider than HF's init (std 0.02 would make every next-token distribution
nearly flat, where ties decide) and the ``</s>`` embedding is scaled up so that hypotheses end by
themselves after a few tokens instead of at the length limit.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import shutil
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import torch

# 10 languages, 9 scripts; words chosen so every character also occurs in the SentencePiece training text
WORDS = {
    "eng_Latn": "the file is open save close window print new folder name user settings error".split(),
    "deu_Latn": "die Datei ist offen speichern schließen Fenster drucken neuer Ordner Name Benutzer Fehler".split(),
    "fra_Latn": "le fichier est ouvert enregistrer fermer fenêtre imprimer nouveau dossier nom utilisateur".split(),
    "rus_Cyrl": "файл открыт сохранить закрыть окно печать новый папка имя пользователь ошибка".split(),
    "tzm_Tfng": "ⴰⵣⵓⵍ ⴰⴼⴰⵢⵍⵓ ⵉⵍⴰ ⵔⵥⵎ ⵇⵇⵏ ⵜⴰⵙⵔⵜⵢ ⵙⵙⵉⴳⵣ ⴰⵎⴰⵢⵏⵓ".split(),
    "ell_Grek": "το αρχείο είναι ανοιχτό αποθήκευση κλείσιμο παράθυρο εκτύπωση νέος φάκελος όνομα".split(),
    "hin_Deva": "फ़ाइल खुली है सहेजें बंद करें खिड़की छापें नया फ़ोल्डर नाम उपयोगकर्ता त्रुटि".split(),
    "arb_Arab": "الملف مفتوح حفظ إغلاق نافذة طباعة جديد مجلد اسم المستخدم خطأ".split(),
    "zho_Hans": "文件 已 打开 保存 关闭 窗口 打印 新建 文件夹 名称 用户 设置 错误".split(),
    "kor_Hang": "파일이 열려 있습니다 저장 닫기 창 인쇄 새 폴더 이름 사용자 설정 오류".split(),
}
# the model's language list, in an order that is not alphabetical (like NLLB's: pes_Arab follows fao_Latn)
LANGS = [
    "eng_Latn",
    "ace_Arab",
    "deu_Latn",
    "fra_Latn",
    "rus_Cyrl",
    "arb_Arab",
    "tzm_Tfng",
    "ell_Grek",
    "hin_Deva",
    "zho_Hans",
    "kor_Hang",
    "pes_Arab",
]
PUNCT = [".", "?", "!", ",", ":", "…", "«", "»", "(", ")", "-", "%", "'", '"']


def sentence(rng: random.Random, lang: str) -> str:
    words = [rng.choice(WORDS[lang]) for _ in range(rng.randint(1, 10))]
    if rng.random() < 0.3:
        words.insert(rng.randrange(len(words) + 1), str(rng.randint(0, 9999)))
    if rng.random() < 0.3:
        words[rng.randrange(len(words))] += rng.choice(PUNCT)
    sep = "" if lang == "zho_Hans" and rng.random() < 0.5 else " "
    text = sep.join(words)
    text += rng.choice(["", ".", "?", "!"])
    if rng.random() < 0.1:  # stray spaces (not at the end: see test_tokenizer_follows_sentencepiece)
        text = "  " + text.replace(" ", "   ", 1)
    return text


def sentences(n_per_lang: int, seed: int, langs: list[str] | None = None) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    return [(lang, sentence(rng, lang)) for lang in (langs or list(WORDS)) for _ in range(n_per_lang)]


def train_spm(folder: Path, vocab_size: int = 400) -> Path:
    """A BPE model with NLLB's special ids, trained on text in all 10 languages (every character covered)."""
    import sentencepiece as spm

    folder.mkdir(parents=True, exist_ok=True)
    text = folder / "spm_train.txt"
    lines = [s for _, s in sentences(60, seed=123)] + [
        " ".join(w) + " " + " ".join(PUNCT) + " 0123456789" for w in WORDS.values()
    ]
    text.write_text("\n".join(lines) + "\n", encoding="utf-8")
    spm.SentencePieceTrainer.train(
        input=str(text),
        model_prefix=str(folder / "sp"),
        vocab_size=vocab_size,
        model_type="bpe",
        character_coverage=1.0,
        hard_vocab_limit=False,
        minloglevel=2,
        num_threads=1,
    )
    out = folder / "sentencepiece.bpe.model"
    (folder / "sp.model").rename(out)
    return out


def piece_count(spm_path: Path) -> int:
    import sentencepiece as spm

    return spm.SentencePieceProcessor(model_file=str(spm_path)).get_piece_size()


# --- Hugging Face ------------------------------------------------------------------------------------
def hf_config(vocab_size: int, d: int = 32, layers: int = 2, ffn: int = 64, heads: int = 4) -> dict[str, Any]:
    """nllb-200-distilled-600M's config.json (transformers 4.21 era) at reduced sizes."""
    return {
        "_name_or_path": "facebook/nllb-200-distilled-600M",
        "activation_dropout": 0.0,
        "activation_function": "relu",
        "architectures": ["M2M100ForConditionalGeneration"],
        "attention_dropout": 0.1,
        "bos_token_id": 0,
        "d_model": d,
        "decoder_attention_heads": heads,
        "decoder_ffn_dim": ffn,
        "decoder_layerdrop": 0,
        "decoder_layers": layers,
        "decoder_start_token_id": 2,
        "dropout": 0.1,
        "encoder_attention_heads": heads,
        "encoder_ffn_dim": ffn,
        "encoder_layerdrop": 0,
        "encoder_layers": layers,
        "eos_token_id": 2,
        "init_std": 0.02,
        "is_encoder_decoder": True,
        "max_length": 200,
        "max_position_embeddings": 1024,
        "model_type": "m2m_100",
        "num_hidden_layers": layers,
        "pad_token_id": 1,
        "scale_embedding": True,
        "tokenizer_class": "NllbTokenizer",
        "torch_dtype": "float32",
        "transformers_version": "4.21.0.dev0",
        "use_cache": True,
        "vocab_size": vocab_size,
    }


def random_m2m100(config: dict[str, Any], seed: int = 0, eos_boost: float = 6.0):
    from transformers import M2M100Config, M2M100ForConditionalGeneration

    torch.manual_seed(seed)
    model = M2M100ForConditionalGeneration(M2M100Config(**config)).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("layer_norm.weight"):
                p.copy_(1 + 0.2 * torch.randn_like(p))
            elif name.endswith("bias"):
                p.copy_(0.1 * torch.randn_like(p))
            else:
                p.copy_(torch.randn_like(p) / p.shape[-1] ** 0.5)
        gain = model.model.decoder.layer_norm.weight  # random signs: a tied model would copy its last token
        gain.copy_(torch.randn_like(gain) * 2.0)
        emb = model.model.shared.weight
        emb[config["pad_token_id"]].zero_()
        emb[config["eos_token_id"]] *= eos_boost
    return model


def hf_vocab_size(spm_path: Path, langs: list[str] = LANGS) -> int:
    """Embedding rows: specials + pieces + languages + <mask> + 2 spare rows (256204 tokens, 256206 rows)."""
    return 4 + piece_count(spm_path) - 3 + len(langs) + 1 + 2


def write_tokenizer_files(
    folder: Path, spm_path: Path, langs: list[str] = LANGS, legacy: bool = False, with_ids: bool = True
) -> None:
    """tokenizer_config.json + special_tokens_map.json as published (language codes after the pieces)."""
    shutil.copy(spm_path, folder / "sentencepiece.bpe.model")
    n = piece_count(spm_path)
    mask = {
        "__type": "AddedToken",
        "content": "<mask>",
        "lstrip": True,
        "normalized": True,
        "rstrip": False,
        "single_word": False,
    }
    config: dict[str, Any] = {
        "additional_special_tokens": langs,
        "bos_token": "<s>",
        "cls_token": "<s>",
        "eos_token": "</s>",
        "legacy_behaviour": legacy,
        "mask_token": mask,
        "model_max_length": 1024,
        "pad_token": "<pad>",
        "sep_token": "</s>",
        "sp_model_kwargs": {},
        "src_lang": None,
        "tgt_lang": None,
        "tokenizer_class": "NllbTokenizer",
        "unk_token": "<unk>",
    }
    if with_ids:
        added = {
            0: "<s>",
            1: "<pad>",
            2: "</s>",
            3: "<unk>",
            **{n + 1 + i: c for i, c in enumerate(langs)},
            n + 1 + len(langs): "<mask>",
        }
        config["added_tokens_decoder"] = {
            str(i): {
                "content": c,
                "lstrip": c == "<mask>",
                "normalized": False,
                "rstrip": False,
                "single_word": False,
                "special": True,
            }
            for i, c in added.items()
        }
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    special = {
        "additional_special_tokens": langs,
        "bos_token": "<s>",
        "cls_token": "<s>",
        "eos_token": "</s>",
        "mask_token": mask,
        "pad_token": "<pad>",
        "sep_token": "</s>",
        "unk_token": "<unk>",
    }
    (folder / "special_tokens_map.json").write_text(json.dumps(special, indent=2), encoding="utf-8")


def make_hf_folder(
    folder: Path, spm_path: Path, model=None, weights: str = "safetensors", legacy: bool = False, seed: int = 0
) -> Path:
    """An HF folder; ``weights``: safetensors | sharded | bin | sharded-bin."""
    folder.mkdir(parents=True, exist_ok=True)
    if model is None:
        model = random_m2m100(hf_config(hf_vocab_size(spm_path)), seed)
    config = hf_config(
        model.config.vocab_size,
        model.config.d_model,
        model.config.encoder_layers,
        model.config.encoder_ffn_dim,
        model.config.encoder_attention_heads,
    )
    if weights in ("safetensors", "sharded"):
        model.save_pretrained(folder, max_shard_size="40KB" if weights == "sharded" else "10GB")
    else:  # the full state dict, tied copies included (torch.save stores the shared storage once)
        sd = model.state_dict()
        if weights == "bin":
            torch.save(sd, folder / "pytorch_model.bin")
        else:
            keys = list(sd)
            halves = {
                "pytorch_model-00001-of-00002.bin": keys[: len(keys) // 2],
                "pytorch_model-00002-of-00002.bin": keys[len(keys) // 2 :],
            }
            for name, ks in halves.items():
                torch.save({k: sd[k] for k in ks}, folder / name)
            index = {"metadata": {}, "weight_map": {k: n for n, ks in halves.items() for k in ks}}
            (folder / "pytorch_model.bin.index.json").write_text(json.dumps(index), encoding="utf-8")
    (folder / "config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    write_tokenizer_files(folder, spm_path, legacy=legacy)
    return folder


def nllb_tokenizer(folder: Path, legacy: bool = False):
    """transformers' NllbTokenizer for an HF folder (converted from the SentencePiece model by transformers)."""
    from transformers import NllbTokenizer

    return NllbTokenizer.from_pretrained(str(folder), legacy_behaviour=legacy)


# --- fairseq ------------------------------------------------------------------------------------------
class _Pickled:
    """Pickles as NEWOBJ + BUILD with its ``__dict__``, as omegaconf's classes and dataclasses do."""

    def __init__(self, **state: Any) -> None:
        self.__dict__.update(state)


def _stand_in(module: str, name: str) -> type:
    return type(name, (_Pickled,), {"__module__": module, "__qualname__": name})


OMEGACONF_CLASSES = {
    "omegaconf.dictconfig": ["DictConfig"],
    "omegaconf.listconfig": ["ListConfig"],
    "omegaconf.nodes": ["AnyNode", "StringNode", "IntegerNode", "BooleanNode", "FloatNode", "EnumNode"],
    "omegaconf.base": ["ContainerMetadata", "Metadata"],
}


class _EnumMember:
    """Pickles like a member of fairseq's ``ChoiceEnum`` (``DDP_BACKEND_CHOICES("c10d")``)."""

    enum_class: type = object

    def __init__(self, value: str) -> None:
        self.value = value

    def __reduce__(self):
        return (self.enum_class, (self.value,))


@contextlib.contextmanager
def fake_omegaconf():
    """omegaconf's (and a fairseq enum's) class names, importable while pickling so that pickle writes
    those names, then gone again."""
    classes = {(m, n): _stand_in(m, n) for m, names in OMEGACONF_CLASSES.items() for n in names}
    classes[("fairseq.dataclass.constants", "DDP_BACKEND_CHOICES")] = _stand_in(
        "fairseq.dataclass.constants", "DDP_BACKEND_CHOICES"
    )
    added = {}
    for mod in ["omegaconf", "fairseq", "fairseq.dataclass", *{m for m, _ in classes}]:
        if mod not in sys.modules:
            added[mod] = sys.modules[mod] = types.ModuleType(mod)
    for (m, n), cls in classes.items():
        setattr(sys.modules[m], n, cls)
    try:
        yield {n: c for (_, n), c in classes.items()}
    finally:
        for mod in added:
            del sys.modules[mod]


def _dictconfig(C: dict[str, type], content: dict[str, Any]) -> Any:
    import typing

    node_types = {str: "StringNode", int: "IntegerNode", bool: "BooleanNode", float: "FloatNode"}
    cfg = C["DictConfig"](
        _metadata=C["ContainerMetadata"](
            ref_type=typing.Any,
            object_type=dict,
            optional=True,
            key=None,
            flags={},
            flags_root=False,
            resolver_cache={},
            key_type=typing.Any,
            element_type=typing.Any,
        ),
        _parent=None,
        _content={},
    )
    for k, v in content.items():
        if isinstance(v, dict):
            node = _dictconfig(C, v)
        elif isinstance(v, list):
            node = C["ListConfig"](
                _metadata=C["ContainerMetadata"](
                    ref_type=typing.Any,
                    object_type=list,
                    optional=True,
                    key=k,
                    flags={},
                    flags_root=False,
                    resolver_cache={},
                    key_type=int,
                    element_type=typing.Any,
                ),
                _parent=cfg,
                _content=[C["AnyNode"](_val=x, _parent=None) for x in v],
            )
        elif isinstance(v, _EnumMember):
            v.enum_class = C["DDP_BACKEND_CHOICES"]
            node = C["EnumNode"](
                _metadata=C["Metadata"](
                    ref_type=C["DDP_BACKEND_CHOICES"], object_type=None, optional=False, key=k, flags={}
                ),
                _parent=cfg,
                _val=v,
            )
        else:
            kind = node_types.get(type(v), "AnyNode")  # a Namespace sits in an AnyNode
            ref = typing.Optional[type(v)] if kind != "AnyNode" else typing.Any  # e.g. seed: Optional[int]
            node = C[kind](
                _metadata=C["Metadata"](ref_type=ref, object_type=None, optional=True, key=k, flags={}),
                _parent=cfg,
                _val=v,
            )
        cfg._content[k] = node
    return cfg


def fairseq_args(config: dict[str, Any], langs: list[str] = LANGS) -> argparse.Namespace:
    """The options of an NLLB-200 dense training run (fairseq's NLLB branch, transformer_12_12 grid)."""
    return argparse.Namespace(
        arch="transformer",
        task="translation_multi_simple_epoch",
        share_all_embeddings=True,
        encoder_layers=config["encoder_layers"],
        decoder_layers=config["decoder_layers"],
        encoder_embed_dim=config["d_model"],
        decoder_embed_dim=config["d_model"],
        encoder_ffn_embed_dim=config["encoder_ffn_dim"],
        decoder_ffn_embed_dim=config["decoder_ffn_dim"],
        encoder_attention_heads=config["encoder_attention_heads"],
        decoder_attention_heads=config["decoder_attention_heads"],
        encoder_normalize_before=True,
        decoder_normalize_before=True,
        attention_dropout=0.1,
        relu_dropout=0.0,
        dropout=0.1,
        activation_fn="relu",
        max_source_positions=1024,
        max_target_positions=1024,
        langs=list(langs),
        lang_tok_style="multilingual",
        encoder_langtok="src",
        decoder_langtok=True,
        langtoks_specs=["main"],
        extra_data={"mono_dae": "/data/dae"},
        add_data_source_prefix_tags=False,
        lang_pairs=["eng_Latn-deu_Latn", "deu_Latn-eng_Latn"],
        layernorm_embedding=False,
        no_scale_embedding=False,
        encoder_learned_pos=False,
        decoder_learned_pos=False,
        moe_freq=0,
        fp16=True,
        seed=2,
    )


def fairseq_state_dict(hf_model) -> dict[str, torch.Tensor]:
    """The HF model's weights under the released fairseq names (transformers' conversion script, reversed)."""
    sd = hf_model.state_dict()
    out: dict[str, torch.Tensor] = {}
    emb = sd["model.shared.weight"]
    for k, v in sd.items():
        if k.startswith("model.encoder.") or k.startswith("model.decoder."):
            if not k.endswith("embed_tokens.weight"):
                out[k[len("model.") :]] = v.clone()
    out["encoder.embed_tokens.weight"] = emb.clone()
    out["decoder.embed_tokens.weight"] = out["encoder.embed_tokens.weight"]  # one storage, three names
    out["decoder.output_projection.weight"] = out["encoder.embed_tokens.weight"]
    for side in ("encoder", "decoder"):
        out[f"{side}.version"] = torch.tensor([3.0])
        out[f"{side}.embed_positions._float_tensor"] = torch.tensor([1.0])
    return out


def write_fairseq_vocab(folder: Path, spm_path: Path, langs: list[str] = LANGS) -> None:
    """dictionary.txt (pieces after fairseq's 4 specials), sentencepiece.bpe.model and langs.txt."""
    import sentencepiece as spm

    folder.mkdir(parents=True, exist_ok=True)
    sp = spm.SentencePieceProcessor(model_file=str(spm_path))
    lines = [f"{sp.id_to_piece(i)} {1000 - i}" for i in range(3, sp.get_piece_size())]
    (folder / "dictionary.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    shutil.copy(spm_path, folder / "sentencepiece.bpe.model")
    (folder / "langs.txt").write_text(",".join(langs), encoding="utf-8")


def training_state(sd: dict[str, torch.Tensor]) -> dict[str, Any]:
    """What a fairseq save holds besides the options: the model, optimizer history, extra state, Adam moments."""
    first = next(iter(sd.values()))
    return {
        "args": None,
        "model": sd,
        "optimizer_history": [
            {
                "criterion_name": "LabelSmoothedCrossEntropyCriterion",
                "optimizer_name": "FairseqAdam",
                "lr_scheduler_state": {"best": np.float64(3.25)},
                "num_updates": 1000,
            }
        ],
        "extra_state": {"epoch": 3, "val_loss": np.float64(2.5), "train_iterator": {"iterations_in_epoch": 7}},
        "last_optimizer_state": {
            "state": {
                0: {"step": 1000, "exp_avg": torch.randn(64, 8) + first.float().sum(), "exp_avg_sq": torch.rand(64, 8)}
            },
            "param_groups": [{"lr": 1e-4}],
        },
    }


def make_fairseq_files(
    folder: Path,
    hf_model,
    spm_path: Path,
    langs: list[str] = LANGS,
    cfg_style: str = "omegaconf",
    extra: dict[str, Any] | None = None,
) -> Path:
    """checkpoint.pt (+ dictionary.txt, sentencepiece.bpe.model, langs.txt) of the HF model's weights.

    ``cfg_style``: "omegaconf" (cfg a pickled DictConfig holding the Namespace, args None), "args" (args
    only, cfg None: older fairseq), or "both".
    """
    write_fairseq_vocab(folder, spm_path, langs)
    hc = hf_model.config.to_dict()
    args = fairseq_args(hc, langs)
    state = {**training_state(fairseq_state_dict(hf_model)), **(extra or {})}
    path = folder / "checkpoint.pt"
    with fake_omegaconf() as C:
        if cfg_style in ("args", "both"):
            state["args"] = args
        if cfg_style in ("omegaconf", "both"):
            task = {
                "_name": "translation_multi_simple_epoch",
                "langs": list(langs),
                "lang_tok_style": "multilingual",
                "encoder_langtok": "src",
                "decoder_langtok": True,
                "extra_data": {"mono_dae": "/data/dae"},
            }
            common = {"fp16": True, "seed": 2, "ddp_backend": _EnumMember("c10d")}
            state["cfg"] = _dictconfig(
                C,
                {
                    "_name": None,
                    "common": common,
                    "task": task,
                    "model": args,
                    "optimization": {"lr": [0.0001], "max_update": 300000},
                },
            )
        torch.save(state, path)
    return path


def nasty_checkpoint(path: Path, payload: Any, legacy_format: bool = False) -> Path:
    """A checkpoint dict whose ``extra_state`` unpickles by calling ``payload`` (an object with __reduce__)."""
    state = {
        "args": argparse.Namespace(arch="transformer"),
        "model": {"encoder.version": torch.tensor([3.0])},
        "extra_state": {"hook": payload},
    }
    torch.save(state, path, _use_new_zipfile_serialization=not legacy_format)
    return path


# --- NLLB-MoE -----------------------------------------------------------------------------------------
def hf_moe_config(
    vocab_size: int, d: int = 32, layers: int = 4, ffn: int = 64, heads: int = 4, experts: int = 8, step: int = 2
) -> dict[str, Any]:
    """nllb-moe-54b's config.json (transformers 4.27 era) at reduced sizes (54b: 24 + 24 layers, step 4, 128
    experts)."""
    config = hf_config(vocab_size, d, layers, ffn, heads)
    config.update(
        {
            "_name_or_path": "facebook/nllb-moe-54b",
            "architectures": ["NllbMoeForConditionalGeneration"],
            "model_type": "nllb-moe",
            "num_experts": experts,
            "encoder_sparse_step": step,
            "decoder_sparse_step": step,
            "expert_capacity": 64,
            "router_bias": False,
            "router_dtype": "float32",
            "router_ignore_padding_tokens": False,
            "router_aux_loss_coef": 0.001,
            "router_z_loss_coef": 0.001,
            "second_expert_policy": "all",
            "normalize_router_prob_before_dropping": False,
            "batch_prioritized_routing": False,
            "moe_eval_capacity_token_fraction": 1.0,
            "moe_token_dropout": 0.2,
            "output_router_logits": False,
            "transformers_version": "4.27.0.dev0",
        }
    )
    return config


def random_nllb_moe(config: dict[str, Any], seed: int = 0, eos_boost: float = 6.0):
    """A random NllbMoeForConditionalGeneration, weights drawn as ``random_m2m100``'s (routers included, so
    that tokens spread over the experts)."""
    from transformers import NllbMoeConfig, NllbMoeForConditionalGeneration

    torch.manual_seed(seed)
    model = NllbMoeForConditionalGeneration(NllbMoeConfig(**config)).eval()
    _randomize(model, config)
    return model


def nllb_moe_of_size(config: dict[str, Any]):
    """An NllbMoeForConditionalGeneration with arbitrary (non-random) weights, built fast: for memory tests."""
    from transformers import NllbMoeConfig, NllbMoeForConditionalGeneration

    with torch.device("meta"):
        model = NllbMoeForConditionalGeneration(NllbMoeConfig(**config))
    model = model.to_empty(device="cpu").eval()
    model.tie_weights()
    with torch.no_grad():
        for i, p in enumerate(model.parameters()):
            p.fill_(0.01 * (i % 7))
    return model


def _randomize(model, config: dict[str, Any], eos_boost: float = 6.0) -> None:
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("layer_norm.weight"):
                p.copy_(1 + 0.2 * torch.randn_like(p))
            elif name.endswith("bias"):
                p.copy_(0.1 * torch.randn_like(p))
            else:
                p.copy_(torch.randn_like(p) / p.shape[-1] ** 0.5)
        gain = model.model.decoder.layer_norm.weight
        gain.copy_(torch.randn_like(gain) * 2.0)
        emb = model.model.shared.weight
        emb[config["pad_token_id"]].zero_()
        emb[config["eos_token_id"]] *= eos_boost


def fix_hf_routing(model) -> None:
    """transformers' NllbMoeSparseMLP passes the one-hot top-1 mask where NllbMoeExperts expects expert
    indices, so experts run on the wrong tokens. Patch each sparse layer to pass the indices of the (up to
    two) experts its router chose and their combine weights; everything else stays HF's (as
    ``bench/train_throughput.py``'s ``hf_fixed``)."""
    from transformers.models.nllb_moe import modeling_nllb_moe as hfm

    def sparse_forward(self, hidden_states, padding_mask=None):
        B, T, d = hidden_states.shape
        h = hidden_states.reshape(-1, d)
        _, combine, _ = self.router(h, padding_mask)  # (N, E), zero where a token is not routed
        top2 = combine.topk(2, dim=-1).indices
        return self.experts(h, top2, combine.gather(1, top2)).reshape(B, T, d)

    def experts_forward(self, h, top2, weights):
        final = torch.zeros_like(h)
        routed = (weights > 0).long()[..., None]
        mask = (torch.nn.functional.one_hot(top2, num_classes=self.num_experts) * routed).permute(2, 1, 0)
        for e in torch.greater(mask.sum(dim=(-1, -2)), 0).nonzero():
            idx, tok = torch.where(mask[e].squeeze(0))
            cur = self[f"expert_{e[0]}"](h[tok]) * weights[tok, idx, None]
            if self.moe_token_dropout > 0:
                cur = self.token_dropout(cur) if self.training else cur * (1 - self.moe_token_dropout)
            final.index_add_(0, tok, cur.to(h.dtype))
        return final

    for m in model.modules():
        if isinstance(m, hfm.NllbMoeSparseMLP):
            m.forward = sparse_forward.__get__(m)
            m.experts.forward = experts_forward.__get__(m.experts)


def make_hf_moe_folder(folder: Path, spm_path: Path, model, weights: str = "safetensors") -> Path:
    """An HF NLLB-MoE folder (config.json as nllb-moe-54b's, at the model's sizes); ``weights`` as make_hf_folder."""
    folder.mkdir(parents=True, exist_ok=True)
    c = model.config
    config = hf_moe_config(
        c.vocab_size,
        c.d_model,
        c.encoder_layers,
        c.encoder_ffn_dim,
        c.encoder_attention_heads,
        c.num_experts,
        c.encoder_sparse_step,
    )
    model.save_pretrained(folder, max_shard_size="60KB" if weights == "sharded" else "10GB")
    (folder / "config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    write_tokenizer_files(folder, spm_path)
    return folder


def fairseq_moe_state_dicts(hf_model, ranks: int) -> tuple[dict[str, torch.Tensor], list[dict[str, torch.Tensor]]]:
    """The NLLB-MoE weights under the fairseq release's names (transformers' conversion script, reversed):
    the shared state dict and, per rank file, its experts as local experts 0..E/ranks-1."""
    import re

    E = hf_model.config.num_experts
    local = E // ranks
    renames = [
        (r"\.ffn\.router\.classifier\.", ".moe_layer.gate.wg."),
        (r"\.ffn\.fc([12])\.", r".fc\1."),
        (r"\.cross_attention_layer_norm\.", ".encoder_attn_layer_norm."),
        (r"\.cross_attention\.", ".encoder_attn."),
        (r"\.ff_layer_norm\.", ".final_layer_norm."),
    ]
    shared: dict[str, torch.Tensor] = {}
    experts: list[dict[str, torch.Tensor]] = [{} for _ in range(ranks)]
    for k, v in fairseq_state_dict(hf_model).items():
        m = re.fullmatch(r"(.*)\.ffn\.experts\.expert_(\d+)\.(.*)", k)
        if m:
            e = int(m.group(2))
            experts[e // local][f"{m.group(1)}.moe_layer.experts.{e % local}.{m.group(3)}"] = v
            continue
        for pattern, repl in renames:
            k = re.sub(pattern, repl, k)
        shared[k] = v
    return shared, experts


def fairseq_moe_args(config: dict[str, Any], langs: list[str] = LANGS) -> argparse.Namespace:
    """An NLLB-MoE training run's options (fairseq NLLB branch: sweep_mmt.py's MoE grid, ``--moe-freq 4
    --moe-eom 0.2``)."""
    args = fairseq_args(config, langs)
    args.arch = "transformer_24_24_big"
    for k, v in {
        "moe_freq": config["encoder_sparse_step"],
        "encoder_moe_freq": config["encoder_sparse_step"],
        "decoder_moe_freq": config["decoder_sparse_step"],
        "moe_expert_count": config["num_experts"],
        "moe_gate_loss_wt": 0.01,
        "moe_gate_loss_combine_method": "sum",
        "moe_second_expert_policy": "all",
        "moe_normalize_gate_prob_before_dropping": False,
        "moe_gating_use_fp32": True,
        "moe_eval_capacity_token_fraction": 1.0,
        "use_moe_pad_mask": True,
        "moe_normalize_expert_grad": "sqrt_world_size",
        "moe_eom": config["moe_token_dropout"],
        "moe_batch_prioritized_routing": False,
        "moe_cmr": False,
    }.items():
        setattr(args, k, v)
    return args


def make_fairseq_moe_files(
    folder: Path, hf_model, spm_path: Path, ranks: int = 4, stem: str = "checkpoint_2_300000", langs: list[str] = LANGS
) -> Path:
    """``{stem}-shared.pt`` + ``{stem}-rank-{0..ranks-1}.pt`` (+ dictionary.txt, sentencepiece.bpe.model,
    langs.txt) of the HF NLLB-MoE's weights, each file with the options (``cfg``), optimizer state and
    ``extra_state`` of a fairseq save. Returns the shared file."""
    write_fairseq_vocab(folder, spm_path, langs)
    args = fairseq_moe_args(hf_model.config.to_dict(), langs)
    shared, experts = fairseq_moe_state_dicts(hf_model, ranks)
    with fake_omegaconf() as C:
        cfg = _dictconfig(
            C,
            {
                "_name": None,
                "common": {"fp16": True, "seed": 2},
                "model": args,
                "task": {"_name": "translation_multi_simple_epoch", "langs": list(langs)},
            },
        )
        for name, sd in [("shared", shared)] + [(f"rank-{r}", e) for r, e in enumerate(experts)]:
            torch.save({**training_state(sd), "cfg": cfg}, folder / f"{stem}-{name}.pt")
    return folder / f"{stem}-shared.pt"


# --- built once per test session ------------------------------------------------------------------
_BUILT: dict[str, Any] = {}


def built(tmp_path_factory) -> dict[str, Any]:
    """spm, the random HF model, its folder and its import (``out``), shared by the test modules."""
    if not _BUILT:
        from mt.importing.cli import import_main as main

        root = tmp_path_factory.mktemp("nllb")
        spm_path = train_spm(root / "spm")
        model = random_m2m100(hf_config(hf_vocab_size(spm_path)))
        hf = make_hf_folder(root / "hf", spm_path, model)
        assert main(["--format", "hf", str(hf), "--out", str(root / "imported")]) == 0
        _BUILT.update(root=root, spm=spm_path, model=model, hf=hf, out=root / "imported")
    return _BUILT


_BUILT_MOE: dict[str, Any] = {}


def built_moe(tmp_path_factory) -> dict[str, Any]:
    """spm, a random NLLB-MoE (4 + 4 layers, 8 experts in layers 1 and 3 of each stack), its HF folder and
    its import (``out``), shared by the test modules."""
    if not _BUILT_MOE:
        from mt.importing.cli import import_main as main

        dense = built(tmp_path_factory)
        root = tmp_path_factory.mktemp("nllb-moe")
        model = random_nllb_moe(hf_moe_config(hf_vocab_size(dense["spm"])))
        hf = make_hf_moe_folder(root / "hf", dense["spm"], model)
        assert main(["--format", "hf", str(hf), "--out", str(root / "imported")]) == 0
        _BUILT_MOE.update(root=root, spm=dense["spm"], model=model, hf=hf, out=root / "imported")
    return _BUILT_MOE
