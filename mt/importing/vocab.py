"""The vocabulary of a released model as our ``dict.txt``: fairseq's order and offsets, exactly.

fairseq (and so every NLLB-200 model) numbers tokens ``<s>=0 <pad>=1 </s>=2 <unk>=3``, then the lines of
``dictionary.txt``, then what the task adds (``augment_dictionary`` of fairseq's multilingual task): one
``__xxx_Yyyy__`` token per language of ``--langs``, ``<mask>`` when the model was trained with denoising,
data-source tags, ... and the embedding matrix may have a few rows more (fairseq pads with
``madeupwordNNNN``). The SentencePiece model has ``<unk>=0 <s>=1 </s>=2`` and then the pieces, in the
order of ``dictionary.txt``: a piece's id is its SentencePiece id + 1. Hugging Face's NllbTokenizer
keeps those ids, names the language tokens ``eng_Latn`` instead of ``__eng_Latn__`` and lists them (with
their ids) in ``tokenizer.json`` / ``tokenizer_config.json``.

Our ``Dictionary`` maps pieces by their text, so a ``dict.txt`` that lists every id's symbol in order
makes our token ids equal the released model's (and HF's) without any offset arithmetic at run time.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mt.common.errors import UserError
from mt.common.langs import is_code, lang_token
from mt.data.dictionary import BOS, EOS, PAD, UNK, Dictionary
from mt.data.spm import SpmTokenizer

SPECIALS = (BOS, PAD, EOS, UNK)
DATA_SOURCE_TAGS = ("<MINED_DATA>", "<MMT_BT_DATA>", "<SMT_BT_DATA>")  # fairseq's DATA_SOURCE_PREFIX_TAGS


def filler(i: int) -> str:
    """fairseq's name for the padding rows of a dictionary (``Dictionary.pad_to_multiple_``)."""
    return f"madeupword{i:04d}"


def spm_pieces(path: Path) -> list[str]:
    """The pieces of a SentencePiece model in id order; ids 0-2 must be ``<unk> <s> </s>`` (NLLB's layout)."""
    sp = SpmTokenizer(path, hint="pass the released model's sentencepiece.bpe.model").sp
    n = sp.get_piece_size()
    if n < 4 or not (sp.is_unknown(0) and sp.is_control(1) and sp.is_control(2)):
        first = [sp.id_to_piece(i) for i in range(min(n, 3))]
        raise UserError(
            f"{path}: SentencePiece ids 0-2 are {first}, not <unk> <s> </s>: this is not the layout of the NLLB / "
            "M2M-100 models (fairseq's dictionary = SentencePiece ids + 1), so the ids cannot be mapped"
        )
    return [sp.id_to_piece(i) for i in range(n)]


def read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a JSON object")
    return data


def _content(tok: Any) -> str | None:
    if isinstance(tok, str):
        return tok
    if isinstance(tok, dict) and isinstance(tok.get("content"), str):
        return tok["content"]
    return None


def _hf_added_tokens(folder: Path, first_free: int) -> dict[int, str]:
    """id -> token text of the tokens HF adds after the SentencePiece pieces (language codes, ``<mask>``)."""
    fast = read_json(folder / "tokenizer.json")
    if isinstance(fast.get("added_tokens"), list) and fast["added_tokens"]:
        try:
            return {int(t["id"]): str(t["content"]) for t in fast["added_tokens"]}
        except (KeyError, TypeError, ValueError):
            raise UserError(f"{folder / 'tokenizer.json'}: malformed added_tokens list") from None
    config = read_json(folder / "tokenizer_config.json")
    decoder = config.get("added_tokens_decoder")
    if isinstance(decoder, dict) and decoder:
        try:
            return {int(i): str(_content(t)) for i, t in decoder.items() if _content(t) is not None}
        except ValueError:
            raise UserError(f"{folder / 'tokenizer_config.json'}: added_tokens_decoder has a non-numeric id") from None
    special_map = read_json(folder / "special_tokens_map.json")
    for source in (config, special_map):  # no ids recorded: the order HF's NllbTokenizer gives them
        for key in ("additional_special_tokens", "extra_special_tokens"):
            listed = source.get(key)
            if isinstance(listed, list) and listed:
                names = [c for c in (_content(t) for t in listed) if c]
                mask = _content(config.get("mask_token") or special_map.get("mask_token")) or "<mask>"
                return {first_free + i: t for i, t in enumerate([*names, mask])}
    raise UserError(
        f"{folder}: no language codes found (tokenizer.json added_tokens, or additional_special_tokens in "
        "tokenizer_config.json / special_tokens_map.json); copy the tokenizer files of the model into the folder"
    )


def hf_dictionary(folder: Path, spm_path: Path, rows: int) -> Dictionary:
    """The dictionary of an HF NLLB / M2M-100 folder, ``rows`` symbols long (the embedding's size)."""
    pieces = spm_pieces(spm_path)
    symbols: dict[int, str] = dict(enumerate(SPECIALS))
    for sp_id, piece in enumerate(pieces[3:], start=3):
        symbols[sp_id + 1] = piece
    first_free = len(pieces) + 1
    for i, tok in sorted(_hf_added_tokens(folder, first_free).items()):
        tok = lang_token(tok) if is_code(tok) else tok
        if i < first_free:
            if symbols.get(i) != tok:
                raise UserError(
                    f"{folder}: the tokenizer files give id {i} to {tok!r}, but the SentencePiece model's layout gives "
                    f"it to {symbols.get(i)!r}: {spm_path.name} does not belong to this tokenizer"
                )
            continue
        symbols[i] = tok
    holes = [i for i in range(max(symbols)) if i not in symbols]
    if holes:  # added tokens must follow the pieces: a gap means pieces of another SentencePiece model
        raise UserError(
            f"{folder}: the tokenizer files number their tokens from {holes[-1] + 1}, but {spm_path.name} has "
            f"{len(pieces)} pieces (ids up to {first_free - 1}): the SentencePiece model does not belong to this "
            "tokenizer"
        )
    return _assemble(symbols, rows, folder)


def fairseq_dictionary(
    dict_path: Path, spm_path: Path, langs: list[str], task: dict[str, Any], rows: int
) -> Dictionary:
    """``dictionary.txt`` plus what fairseq's multilingual task adds to it (``augment_dictionary``)."""
    d = Dictionary.load(dict_path)
    pieces = spm_pieces(spm_path)[3:]
    unknown = sum(p not in d for p in pieces)
    if unknown > len(pieces) // 100:  # NLLB's dictionary.txt lists every piece, in SentencePiece order
        raise UserError(
            f"{dict_path}: {unknown} of the {len(pieces)} pieces of {spm_path} are not in it: the "
            "dictionary and the SentencePiece model belong to different models"
        )
    with open(dict_path, encoding="utf-8") as fh:
        lines = sum(1 for line in fh if line.strip())
    if lines != len(d) - d.nspecial:  # fairseq gives a '#fairseq:overwrite' duplicate an id of its own
        raise UserError(
            f"{dict_path}: {lines - len(d) + d.nspecial} tokens are listed twice (#fairseq:overwrite); "
            "such a dictionary cannot be written as dict.txt with the same ids"
        )
    style = task.get("lang_tok_style") or "multilingual"
    if style != "multilingual":
        raise UserError(
            f"{dict_path}: the model uses --lang-tok-style {style}; mt-import reads multilingual "
            "(__xxx_Yyyy__) language tokens only"
        )
    specs = task.get("langtoks_specs") or ["main"]
    specs = specs.split(",") if isinstance(specs, str) else list(specs)
    for spec in specs:
        suffix = {"main": "", "mono_dae": "_dae", "mono_lm": "_lm", "mono_mixed_task": ""}.get(spec)
        for code in langs:
            d.add_symbol(lang_token(code) if not suffix else f"__{code}{suffix}__")
    extra = task.get("extra_data") or {}
    finetune = task.get("finetune_dict_specs") or {}
    if any(k in extra for k in ("mono_dae", "mono_mixed_task")) or "mono_dae" in finetune:
        d.add_symbol("<mask>")
        if task.get("add_ssl_task_tokens"):
            d.add_symbol("__dae__")
    if task.get("add_data_source_prefix_tags"):
        for tag in DATA_SOURCE_TAGS:
            d.add_symbol(tag)
    lm = any(k in extra for k in ("mono_lm", "mono_mixed_task")) or "mono_lm" in finetune
    if lm and task.get("add_ssl_task_tokens"):
        d.add_symbol("__lm__")
    return _assemble(dict(enumerate(d.symbols)), rows, dict_path, counts=d.counts)


def _assemble(symbols: dict[int, str], rows: int, where: Path, counts: list[int] | None = None) -> Dictionary:
    top = max(symbols) + 1
    if top > rows:
        raise UserError(
            f"{where}: the vocabulary has {top} symbols but the model's embedding only {rows} rows: the "
            "dictionary / tokenizer files belong to another model"
        )
    k = 0
    out: list[str] = []
    taken = set(symbols.values())  # a set: a vocabulary with many filler rows must not cost rows x symbols
    for i in range(rows):
        if i not in symbols:
            while filler(k) in taken:
                k += 1
            symbols[i] = filler(k)
            k += 1
        out.append(symbols[i])
    seen: dict[str, int] = {}
    for i, s in enumerate(out):
        if s in seen:
            raise UserError(
                f"{where}: token {s!r} has two ids ({seen[s]} and {i}); the vocabulary cannot be written as dict.txt"
            )
        if not s or any(c in s for c in "\n\r") or s != s.strip(" "):
            raise UserError(f"{where}: token {s!r} (id {i}) cannot be written as a dict.txt line")
        seen[s] = i
    c = [counts[i] if counts and i < len(counts) else 1 for i in range(rows)]
    return Dictionary(symbols=out, counts=c)


def parse_langs(spec: str, where: str) -> list[str]:
    """A language list: a file (comma- or line-separated, like NLLB's ``langs.txt``) or ``eng_Latn,fra_Latn``."""
    path = Path(spec)
    text = path.read_text(encoding="utf-8") if path.is_file() else spec
    langs = [x.strip() for x in text.replace("\n", ",").split(",") if x.strip()]
    return check_langs(langs, where)


def check_langs(langs: list[str], where: str) -> list[str]:
    bad = [x for x in langs if not is_code(x)]
    if bad:
        raise UserError(f"{where}: {bad[0]!r} is not a language code like eng_Latn (FLORES-200 / NLLB codes)")
    if len(set(langs)) != len(langs):
        dup = next(x for x in langs if langs.count(x) > 1)
        raise UserError(f"{where}: language {dup} is listed twice")
    if not langs:
        raise UserError(f"{where}: the language list is empty")
    return langs
