"""xsim: the LASER / NLLB encoder check, ``mine-eval xsim`` (the scoring is ``mining.bucc.xsim_error``).

On an N-way (line-aligned) evaluation split, every sentence of a language looks for its nearest
English sentence; the xsim error rate is the share whose best match is not its own translation. Best
match by cosine, or by a margin over the k nearest neighbours in both directions (LASER's xsim default:
ratio margin, k = 4), which discounts "hub" sentences close to everything. Reported per language, in
both directions (xx -> eng and eng -> xx).

A LASER3 student embeds only its own language; its English side comes from the teacher:
``--eng-encoder`` (default: the same encoder).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from mining.bucc import xsim_error
from mining.encoders import load_encoder
from mt.common.errors import UserError
from mt.common.files import atomic_write
from mt.common.flags import arg
from mt.common.langs import ENGLISH, check_code, is_code
from mt.common.textio import read_lines
from mt.data.layout import EVAL_SPLITS, eval_file

MARGINS = ("ratio", "distance", "cosine", "absolute")  # cosine = absolute: no margin


@dataclass
class XsimConfig:
    """``mine-eval xsim``: each field is also its flag."""

    encoder: str = arg(help="encoder spec (see below)", required=True)
    corpus: str = arg(help="corpus directory with N-way dev/ and devtest/ files", required=True)
    split: str = arg("devtest", "", choices=list(EVAL_SPLITS))
    # default: every language of the split but English
    langs: list[str] = arg([], "comma-separated languages (default: all but eng_Latn)")
    eng_encoder: str = arg("", "encoder for the English side (default: --encoder)")
    margin: str = arg("ratio", "", choices=list(MARGINS))
    k: int = arg(4, "neighbourhood size of the margin")
    batch_size: int = arg(64, "")
    bf16: bool = arg(False, "LASER encoders: bfloat16 autocast")
    device: str | None = arg(None, "LASER encoders: cpu or cuda")
    threads: int | None = arg(None, "CPU threads")


@dataclass
class XsimReport:
    """Where ``mine-eval xsim`` also writes its rows (not part of the config recorded there)."""

    json: str | None = arg(None, "also write the rows as JSON here")


def split_langs(corpus: str | Path, split: str) -> list[str]:
    folder = Path(corpus) / split
    if not folder.is_dir():
        raise UserError(f"{folder}: no {split}/ folder in --corpus {corpus} (N-way files {split}/{{lang}}.{split})")
    return sorted(p.name.split(".")[0] for p in folder.glob(f"*.{split}") if is_code(p.name.split(".")[0]))


def _read(path: Path) -> list[str]:
    if not path.is_file():
        raise UserError(f"{path}: evaluation file not found")
    return list(read_lines(path, progress=False))  # the last line counts without a final newline too


def run_xsim(cfg: XsimConfig, encoder=None, eng_encoder=None) -> list[dict]:
    """One row per language: ``lang, n, xsim_error`` (xx -> eng), ``xsim_error_rev`` (eng -> xx)."""
    if cfg.split not in EVAL_SPLITS:
        raise UserError(f"--split {cfg.split!r}: use one of {', '.join(EVAL_SPLITS)}")
    if cfg.margin not in MARGINS:
        raise UserError(f"--margin {cfg.margin!r}: use one of {', '.join(MARGINS)}")
    available = split_langs(cfg.corpus, cfg.split)
    langs = list(cfg.langs) or [c for c in available if c != ENGLISH]
    for c in langs:
        check_code(c, "--langs")
        if c not in available:
            raise UserError(
                f"{eval_file(cfg.corpus, cfg.split, c)}: not in the corpus ({cfg.split} has {', '.join(available)})"
            )
    eng = _read(eval_file(cfg.corpus, cfg.split, ENGLISH))
    kw = {"batch_size": cfg.batch_size, "bf16": cfg.bf16, "device": cfg.device, "threads": cfg.threads}
    if encoder is None:
        encoder = load_encoder(cfg.encoder, **kw)
    if eng_encoder is None:
        same = not cfg.eng_encoder or cfg.eng_encoder == cfg.encoder
        eng_encoder = encoder if same else load_encoder(cfg.eng_encoder, **kw)
    eng_emb = eng_encoder.encode(eng, ENGLISH)
    rows = []
    for c in langs:
        sents = _read(eval_file(cfg.corpus, cfg.split, c))
        if len(sents) != len(eng):
            raise UserError(
                f"{eval_file(cfg.corpus, cfg.split, c)} has {len(sents)} lines, "
                f"{eval_file(cfg.corpus, cfg.split, ENGLISH)} {len(eng)}: the split is not N-way aligned"
            )
        emb = encoder.encode(sents, c)
        if emb.shape[1] != eng_emb.shape[1]:
            raise UserError(
                f"{cfg.encoder} gives {emb.shape[1]}-d vectors but the English encoder "
                f"{cfg.eng_encoder or cfg.encoder} {eng_emb.shape[1]}-d: they are not one space"
            )
        rows.append(
            {
                "lang": c,
                "n": len(sents),
                "xsim_error": xsim_error(emb, eng_emb, cfg.margin, cfg.k),
                "xsim_error_rev": xsim_error(eng_emb, emb, cfg.margin, cfg.k),
            }
        )
    return rows


def markdown_table(rows: list[dict], title: str = "") -> str:
    lines = ["| language | sentences | xsim error % (xx->eng) | xsim error % (eng->xx) |", "|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['lang']} | {r['n']} | {100 * r['xsim_error']:.2f} | {100 * r['xsim_error_rev']:.2f} |")
    if rows:
        mean = lambda key: 100 * float(np.mean([r[key] for r in rows]))  # noqa: E731
        lines.append(f"| **mean** | | **{mean('xsim_error'):.2f}** | **{mean('xsim_error_rev'):.2f}** |")
    return (f"{title}\n\n" if title else "") + "\n".join(lines) + "\n"


def xsim_report(cfg: XsimConfig, json_path: str | None = None) -> list[dict]:
    """``mine-eval xsim``: the error rates, printed as a table (and written to ``json_path``)."""
    if cfg.threads:
        import torch

        torch.set_num_threads(cfg.threads)
    rows = run_xsim(cfg)
    eng = f", English by {cfg.eng_encoder}" if cfg.eng_encoder else ""
    print(
        markdown_table(
            rows, f"xsim on {cfg.corpus}/{cfg.split}: encoder {cfg.encoder}{eng}, {cfg.margin} margin (k={cfg.k})"
        )
    )
    if json_path:
        with atomic_write(json_path) as fh:
            json.dump({"config": asdict(cfg), "rows": rows}, fh, indent=1)
    return rows
