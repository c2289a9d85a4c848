"""fairseq checkpoints of the dense NLLB-200 models, as released: ``checkpoint.pt``, ``dictionary.txt``,
``sentencepiece.bpe.model`` and the language list (``langs.txt`` of fairseq's NLLB branch).

The pickle is read by ``mt.importing.safe_pickle`` (no fairseq, no code from the file). Its options come
from ``args`` (an argparse Namespace) or ``cfg`` (omegaconf, or a dict whose ``model`` entry is the
Namespace); the task's and the model's are merged into one flat dict, fairseq's defaults filling gaps.

The released models are ``--arch transformer`` with ``--share-all-embeddings``, pre-LN
(``--encoder-normalize-before --decoder-normalize-before``, hence the final LayerNorm per stack), ReLU,
scaled embeddings and sinusoidal positions, trained by ``translation_multi_simple_epoch`` with
``--encoder-langtok src --decoder-langtok``: source ``__src__ x </s>``, target ``__tgt__ y </s>``
shifted right behind ``</s>``; at inference fairseq starts the decoder with ``</s>`` and forces
``__tgt__`` (``prefix_tokens``): our ``decoder_start = "eos_lang"``. Options that would change that are
refused with the option's name.

NLLB-MoE (fairseq's NLLB branch, ``--moe --moe-freq 4 --moe-eom 0.2`` with 128 experts): ``SRC`` is
``checkpoint_2_300000-shared.pt`` (everything but the experts: the dense layers, each MoE layer's gate
``moe_layer.gate.wg``) and the experts are in ``checkpoint_2_300000-rank-{r}.pt`` beside it, rank r's
local experts stored as ``moe_layer.experts.{0..L-1}`` (the release: one expert per file, L = 1); global
expert = r * L + local, as fairseq's ``merge_multi_local_expert_states`` numbers them. Each rank file is
memory-mapped and its optimizer state never read. Layer i is sparse when ``(i + 1) % moe_freq == 0``
(fairseq's ``max(encoder_moe_freq, moe_freq)`` per stack: both stacks must agree); the gating options
(``--moe-second-expert-policy``, ``--moe-normalize-gate-prob-before-dropping``,
``--moe-batch-prioritized-routing``, ``--moe-eval-capacity-token-fraction``, ``--moe-eom``, ``--moe-fom``)
become our MoE layer's options of the same names. The released model's (sweep_mmt.py): policy ``all``,
normalised after dropping, fp32 gating, padding not routed (``--use-moe-pad-mask``, as ours); at
inference ``MOELayer`` scales the expert outputs by (1 - moe_eom) (``tok_dropout``), as ours does.
"""

from __future__ import annotations

import glob
import re
from pathlib import Path
from typing import Any

from mt.common.errors import UserError
from mt.common.langs import is_code
from mt.importing import safe_pickle, vocab
from mt.importing.convert import Imported, Naming, embed_key
from mt.importing.weights import StateDictSource
from mt.models.config import TransformerConfig

EMBED_KEYS = ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight", "decoder.output_projection.weight")
IGNORE = ("encoder.version", "decoder.version", "embed_positions._float_tensor")
# fairseq options whose non-default value means a model our Transformer does not compute
UNSUPPORTED: dict[str, Any] = {
    "layernorm_embedding": False,
    "no_scale_embedding": False,
    "encoder_learned_pos": False,
    "decoder_learned_pos": False,
    "no_token_positional_embeddings": False,
    "cross_self_attention": False,
    "no_decoder_final_norm": False,
    "scale_attn": False,
    "scale_fc": False,
    "scale_heads": False,
    "scale_resids": False,
    "adaptive_softmax_cutoff": None,
    "lang_tok_replacing_bos_eos": False,
    "moe_cmr": False,
    "moe_top1_expert": False,
    "alternate_ffn_embed_dim": 0,
    "alternate_decoder_ffn_embed_dim": 0,
    "base_layers": 0,
}
REQUIRED: dict[str, Any] = {
    "encoder_normalize_before": True,
    "decoder_normalize_before": True,
    "activation_fn": "relu",
    "encoder_langtok": "src",
    "decoder_langtok": True,
}


def flat_options(state: dict[str, Any], path: Path) -> dict[str, Any]:
    """The training options as one plain dict: ``args``, else ``cfg``'s sections with ``cfg.model`` last."""
    args = safe_pickle.to_plain(state.get("args"))
    cfg = safe_pickle.to_plain(state.get("cfg"))
    flat: dict[str, Any] = {}
    if isinstance(cfg, dict):
        for section in ("common", "task", "model"):
            if isinstance(cfg.get(section), dict):
                flat.update(cfg[section])
    if isinstance(args, dict):
        flat.update(args)
    if not flat:
        raise UserError(f"{path}: the checkpoint has neither 'args' nor 'cfg': cannot tell the model's shape")
    return flat


def read(path: Path, dict_path: Path | None = None, spm_model: Path | None = None, langs: str = "") -> Imported:
    """Everything mt-import needs from a fairseq checkpoint; tensors stay memory-mapped and unread."""
    if path.is_dir():
        raise UserError(f"{path}: a folder; --format fairseq takes the checkpoint file (e.g. checkpoint.pt)")
    state = safe_pickle.load_checkpoint(path)
    model = state.get("model")
    if not isinstance(model, dict) or not model:
        raise UserError(f"{path}: no 'model' state dict in the checkpoint")
    opts = flat_options(state, path)
    _check(opts, path)
    moe = _moe_options(opts, path)
    tensors = {k: v for k, v in model.items() if hasattr(v, "shape")}
    files = {k: path for k in tensors}
    if moe:
        _add_experts(path, moe["moe_expert_count"], tensors, files)
    weights = StateDictSource(tensors, files)
    naming = Naming("", EMBED_KEYS, IGNORE)
    rows = weights.shape(embed_key(weights, naming, path))[0]
    dict_path = dict_path or _beside(path, ("dictionary.txt", "dict.txt"), "--dict", "dictionary")
    spm = spm_model or _beside(path, ("sentencepiece.bpe.model", "spm.model"), "--spm-model", "SentencePiece model")
    lang_list = _langs(opts, langs, path)
    dictionary = vocab.fairseq_dictionary(dict_path, spm, lang_list, opts, rows)
    d = int(opts.get("encoder_embed_dim", 512))
    cfg = TransformerConfig(
        vocab_size=rows,
        padding_idx=1,
        encoder_layers=int(opts.get("encoder_layers", 6)),
        decoder_layers=int(opts.get("decoder_layers", 6)),
        encoder_embed_dim=d,
        decoder_embed_dim=int(opts.get("decoder_embed_dim", d)),
        encoder_ffn_embed_dim=int(opts.get("encoder_ffn_embed_dim", 2048)),
        decoder_ffn_embed_dim=int(opts.get("decoder_ffn_embed_dim", opts.get("encoder_ffn_embed_dim", 2048))),
        encoder_attention_heads=int(opts.get("encoder_attention_heads", 8)),
        decoder_attention_heads=int(opts.get("decoder_attention_heads", 8)),
        dropout=float(opts.get("dropout", 0.1)),
        attention_dropout=float(opts.get("attention_dropout", 0.0)),
        activation_dropout=float(opts.get("activation_dropout") or opts.get("relu_dropout") or 0.0),
        max_source_positions=int(opts.get("max_source_positions") or 1024),
        max_target_positions=int(opts.get("max_target_positions") or 1024),
        langs=dictionary.langs(),
        source_langtok="first",
        decoder_start="eos_lang",
        **moe,
    )
    cfg.validate()
    meta = {"format": "fairseq", "source": str(path.resolve()), "arch": opts.get("arch"), "task": opts.get("task")}
    inputs = {"SRC": path, "--dict": dict_path, "--spm-model": spm, "weights": path}
    inputs.update({f"expert file {i}": f for i, f in enumerate(sorted(set(files.values()) - {path}))})
    return Imported(cfg, dictionary, spm, weights, naming, inputs, meta)


def _moe_options(opts: dict[str, Any], path: Path) -> dict[str, Any]:
    """Our MoE fields for a fairseq MoE model (see the module docstring); {} for a dense one."""
    enc = max(int(opts.get("encoder_moe_freq") or 0), int(opts.get("moe_freq") or 0))
    dec = max(int(opts.get("decoder_moe_freq") or 0), int(opts.get("moe_freq") or 0))
    if not enc and not dec:
        if path.name.endswith("-shared.pt"):
            raise UserError(f"{path}: a '-shared.pt' file of a model trained without --moe-freq: not an MoE checkpoint")
        return {}
    if enc != dec:
        raise UserError(
            f"{path}: trained with MoE layers every {enc} encoder and every {dec} decoder layers; our "
            "Transformer puts them at the same step in both stacks (--moe-freq), as NLLB-MoE does"
        )
    experts = int(opts.get("moe_expert_count") or 0)
    if experts < 2:
        raise UserError(
            f"{path}: trained with --moe-freq {enc} but --moe-expert-count {experts}; top-2 gating needs 2+"
        )
    if not path.name.endswith("-shared.pt"):
        raise UserError(
            f"{path}: an MoE model ({experts} experts every {enc} layers): pass its '-shared.pt' file "
            "(e.g. checkpoint_2_300000-shared.pt), with the '-rank-N.pt' expert files beside it"
        )
    frac = opts.get("moe_eval_capacity_token_fraction")
    return {
        "moe_freq": enc,
        "moe_expert_count": experts,
        "moe_second_expert_policy": str(opts.get("moe_second_expert_policy") or "sampling"),
        "moe_normalize_gate_prob_before_dropping": bool(opts.get("moe_normalize_gate_prob_before_dropping")),
        "moe_batch_prioritized_routing": bool(opts.get("moe_batch_prioritized_routing")),
        "moe_eval_capacity_token_fraction": 0.25 if frac is None else float(frac),  # fairseq's default
        "moe_eom": float(opts.get("moe_eom") or 0.0),
        "moe_fom": float(opts.get("moe_fom") or 0.0),
    }


EXPERT_KEY = re.compile(r"(.*\.moe_layer\.experts\.)(\d+)(\..*)")


def _add_experts(shared: Path, num_experts: int, tensors: dict[str, Any], files: dict[str, Path]) -> None:
    """The experts of every ``{stem}-rank-{r}.pt`` beside ``{stem}-shared.pt``, under global expert ids."""
    stem = shared.name[: -len("-shared.pt")]
    ranks = {
        int(m.group(1)): f
        for f in shared.parent.glob(f"{glob.escape(stem)}-rank-*.pt")
        if (m := re.fullmatch(re.escape(stem) + r"-rank-(\d+)\.pt", f.name))
    }
    if not ranks:
        raise UserError(f"{shared.parent}: no {stem}-rank-N.pt expert files beside {shared.name}; copy them there too")
    n = max(ranks) + 1
    if sorted(ranks) != list(range(n)) or num_experts % n:
        missing = sorted(set(range(max(n, 1))) - set(ranks))
        raise UserError(
            f"{shared.parent / f'{stem}-rank-{missing[0] if missing else n}.pt'}: expert files "
            f"{stem}-rank-0..{n - 1}.pt are incomplete or do not divide {num_experts} experts; copy all "
            "of them"
        )
    local = num_experts // n
    for r in range(n):
        f = ranks[r]
        state = safe_pickle.load_checkpoint(f)
        model = state.get("model")
        if not isinstance(model, dict):
            raise UserError(f"{f}: no 'model' state dict in the expert file")
        for k, v in model.items():
            m = EXPERT_KEY.fullmatch(k)
            if m is None or not hasattr(v, "shape"):
                raise UserError(
                    f"{f}: {k} is not an expert tensor (moe_layer.experts.N.*); is this an expert file "
                    f"of {shared.name}?"
                )
            e = int(m.group(2))
            if e >= local:
                raise UserError(f"{f}: local expert {e}, but {num_experts} experts in {n} files give {local} per file")
            key = f"{m.group(1)}{r * local + e}{m.group(3)}"
            tensors[key], files[key] = v, f


def _check(opts: dict[str, Any], path: Path) -> None:
    if not str(opts.get("arch", "transformer")).startswith("transformer"):
        raise UserError(f"{path}: --arch {opts.get('arch')}; mt-import reads fairseq transformer models")
    if not (opts.get("share_all_embeddings") or opts.get("share_decoder_input_output_embed")):
        raise UserError(f"{path}: trained without --share-all-embeddings; our Transformer shares one embedding")
    for key, default in UNSUPPORTED.items():
        value = opts.get(key, default)
        if value not in (default, None, False, 0, "", []):
            flag = "--" + key.replace("_", "-")
            raise UserError(f"{path}: trained with {flag} {value}; our Transformer lacks it")
    for key, want in REQUIRED.items():
        value = opts.get(key, False if key != "activation_fn" else "relu")
        if value != want:
            raise UserError(
                f"{path}: trained with --{key.replace('_', '-')} {value!r}; the NLLB-200 models (and "
                f"our Transformer) use {want!r}"
            )


def _beside(path: Path, names: tuple[str, ...], flag: str, what: str) -> Path:
    for name in names:
        if (path.parent / name).is_file():
            return path.parent / name
    raise UserError(f"{path.parent}: no {what} ({' or '.join(names)}) next to the checkpoint; pass {flag} FILE")


def _langs(opts: dict[str, Any], given: str, path: Path) -> list[str]:
    """The language list in the order fairseq added the language tokens (``--langs`` / ``--lang-dict``)."""
    stored = opts.get("langs")
    if isinstance(stored, str):
        stored = [x for x in stored.split(",") if x]
    if stored and len(stored) == 1 and not is_code(stored[0]):  # --langs FILE: a path on the training machine
        name = stored[0]
        stored = vocab.parse_langs(name, f"{name} (--langs of the checkpoint)") if Path(name).is_file() else None
    if given:
        langs = vocab.parse_langs(given, "--langs")
        if stored and list(stored) != langs:
            raise UserError(
                f"--langs {given}: differs from the language list the checkpoint was trained with "
                f"({len(stored)} languages, {stored[0]} first); leave --langs out to use the "
                "checkpoint's"
            )
        return langs
    if stored:
        return vocab.check_langs(list(stored), f"{path} (args.langs)")
    lang_dict = opts.get("lang_dict")
    if lang_dict and Path(lang_dict).is_file():
        return vocab.parse_langs(str(lang_dict), f"{lang_dict} (--lang-dict of the checkpoint)")
    raise UserError(
        f"{path}: the checkpoint does not list its languages (--lang-dict {lang_dict or '?'} is not here); "
        "pass --langs langs.txt (the NLLB language list, comma-separated, in training order)"
    )
