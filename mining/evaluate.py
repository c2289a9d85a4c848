"""``mine-eval``: BUCC-style evaluation of the whole mining chain (encoder -> k-NN -> margin).

Sub-commands::

    mine-eval bucc        build the set if missing, embed, mine with each margin, score, report
    mine-eval bucc-build  write BUCC 2018-format sets from the gettext catalogues or a corpus's mono/ sets
    mine-eval bucc-score  score a candidates file (ids or mined TSV) against a gold file
    mine-eval gold        score a mined TSV against a corpus gold of original line numbers, through
                          the line-number files of mine-lid / mine-filter (recipes/mine_pair.sh)
    mine-eval xsim        nearest-neighbour error rate of an encoder on an N-way dev set (mining.xsim)

The protocol follows LASER's BUCC task: mine the ``training`` split, pick the threshold with the best
F1 against its gold, apply it to the ``test`` split. Without a ``training`` gold (``--protocol auto``
falls back to it; ``kfold`` asks for it) the test gold is cut into ``--folds`` parts by source sentence
and each part is scored at the threshold tuned on the others, so no reported F1 is tuned on itself.
Reported per pair and margin, each row naming its protocol: P/R/F1 on test, the *oracle* F1 (best
threshold on the test gold itself: an upper bound, not a result), and the xsim error on test gold.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from mining import bucc
from mining.calibration import encoder_entry, pair_key, read_calibration, resolve_cut, write_calibration
from mining.embed import embed_file
from mining.embeddings import EmbeddingSet
from mining.encoders import Encoder, l2_normalize, load_encoder
from mt.common.errors import UserError, located
from mt.common.files import atomic_write, refuse_file_in_the_way
from mt.common.langs import ENGLISH, parse_pair
from mt.common.textio import check_outputs, read_lines, with_line_numbers

# --------------------------------------------------------------------------------------------------
# embedding a BUCC side (through mine-embed's own code: same shards, meta, resume and checks)


def _write_if_changed(path: Path, lines: list[str]) -> bool:
    """Write ``lines`` to ``path`` unless it already holds exactly them; True when it was (re)written."""
    data = "".join(f"{line}\n" for line in lines).encode("utf-8", "surrogateescape")
    if path.is_file() and path.read_bytes() == data:
        return False
    with atomic_write(path, "wb") as fh:
        fh.write(data)
    return True


def embed_side(
    encoder: Encoder,
    sentences: list[str],
    lang: str,
    prefix: str | Path,
    batch_size: int = 1024,
    progress: bool = True,
    threads: int | None = None,
) -> tuple[EmbeddingSet, bool]:
    """Embed ``sentences`` as the set ``prefix`` with ``mine-embed``'s code, from the text file
    ``{prefix}.txt``; reused when that file already holds these sentences, rebuilt when the BUCC set
    changed. Returns the set and whether it was (re)computed."""
    prefix = Path(prefix)
    text = Path(f"{prefix}.txt")
    prefix.parent.mkdir(parents=True, exist_ok=True)
    changed = _write_if_changed(text, sentences)
    if changed:  # sentences of an earlier build of the set: its embeddings are stale
        for old in prefix.parent.glob(f"{prefix.name}.*"):
            if old != text and old.is_file():
                old.unlink()
    es = embed_file(str(text), str(prefix), lang, encoder, batch_size=batch_size, progress=progress, threads=threads)
    return es, changed


# --------------------------------------------------------------------------------------------------
# the end-to-end BUCC evaluation


CORPUS_DATA = "work/bucc-corpus"  # default --data of sets built from a corpus (never mixed with gettext ones)


@dataclass
class BuccEvalConfig:
    data: str = "work/bucc"
    pairs: list[str] = field(default_factory=lambda: [f"{c}-eng_Latn" for c in bucc.BuildConfig().langs])
    encoder: str = "ngram"
    work: str = "work/bucc-eval"
    margins: list[str] = field(default_factory=lambda: ["ratio", "absolute"])
    mode: str = "max"
    k: int = 4
    factory: str = "Flat"
    threshold: float | None = None  # also report P/R/F1 at this fixed threshold
    tune_split: str = "training"
    split: str = "test"
    protocol: str = "auto"  # split: tune on tune_split; kfold: k-fold on split; auto: split if it has a gold
    folds: int = 5
    calibration: str | None = None  # calibration file the default cut is read from (besides the shipped one)
    calibrate: str | None = None  # write the encoder's tuned ratio cuts into this calibration file
    keep_candidates: bool = False  # rows also carry "candidates" and "gold_pairs" of the test split (benchmarks)
    batch_size: int = 1024
    threads: int | None = None  # encoder CPU threads (e5/use/torch); None: the encoder's default
    build: bucc.BuildConfig = field(default_factory=bucc.BuildConfig)


def encoder_lang(code: str) -> str:
    """The FLORES-200 code an encoder expects (real BUCC files use de/fr/ru/zh/en)."""
    return bucc.BUCC_TO_FLORES.get(code, code)


def _tag(spec: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", spec).strip("_") or "encoder"


def _ensure_data(cfg: BuccEvalConfig, pairs: list[tuple[str, str]], progress: bool) -> None:
    """Build the missing ``{lang}-eng_Latn`` sets (from ``--corpus`` or the catalogues); refuse to mix:
    a set already in ``--data`` that info.json says was built from another origin is an error."""
    want = bucc.source_of(cfg.build)
    built = bucc.read_info(cfg.data).get("pairs", {})
    missing = []
    for s, t in pairs:
        have = built.get(f"{s}-{t}", {}).get("source")
        if have is not None and have != want:
            raise UserError(
                f"{cfg.data}: {s}-{t} was built from {have}, not {want}: pass another --data folder "
                "(or delete that set to rebuild it)"
            )
        if not all(p.is_file() for p in bucc.bucc_files(cfg.data, s, t, cfg.split).values()):
            missing.append((s, t))
    if not missing:
        return
    bad = [f"{s}-{t}" for s, t in missing if t != ENGLISH]
    if bad:
        raise UserError(f"{cfg.data}: no BUCC files for {', '.join(bad)}; only {{lang}}-eng_Latn sets can be built")
    langs = [s for s, _ in missing]
    bcfg = bucc.BuildConfig(**{**asdict(cfg.build), "out": cfg.data, "langs": langs})
    if progress:
        print(
            f"mine-eval: building the BUCC-style set for {', '.join(langs)} in {cfg.data} from {want}", file=sys.stderr
        )
    bucc.build(bcfg, progress=progress)


def mine_split(cfg: BuccEvalConfig, encoder: Encoder, src: str, tgt: str, split: str, progress: bool = True) -> dict:
    """Embed, search and mine one split; returns candidates per margin and the gold/embeddings."""
    from mining.index import IndexConfig, KnnConfig, MineKnnConfig, mine_knn, open_knn_dir
    from mining.margin import MarginConfig, mine

    ds = bucc.read_set(cfg.data, src, tgt, split)
    base = Path(cfg.work) / _tag(cfg.encoder) / f"{src}-{tgt}.{split}"
    timings = {}
    t0 = time.time()
    es, new_src = embed_side(
        encoder, ds.src_sents, encoder_lang(src), f"{base}.{src}", cfg.batch_size, progress, cfg.threads
    )
    et, new_tgt = embed_side(
        encoder, ds.tgt_sents, encoder_lang(tgt), f"{base}.{tgt}", cfg.batch_size, progress, cfg.threads
    )
    timings["embed_s"] = time.time() - t0
    t0 = time.time()
    k = min(cfg.k, len(ds.src_ids), len(ds.tgt_ids))
    knn_dir = Path(f"{base}.knn{k}")
    if (new_src or new_tgt) and knn_dir.is_dir():
        shutil.rmtree(knn_dir)  # searched on embeddings that were just replaced
    kcfg = MineKnnConfig(
        src_emb=str(es.prefix),
        tgt_emb=str(et.prefix),
        out_dir=str(knn_dir),
        index=IndexConfig(factory=cfg.factory),
        knn=KnnConfig(k=k),
    )
    mine_knn(kcfg, progress=False)
    timings["knn_s"] = time.time() - t0
    fwd, bwd = open_knn_dir(knn_dir)
    cands = {}
    t0 = time.time()
    for margin in cfg.margins:
        al = mine(fwd, bwd, MarginConfig(margin=margin, mode=cfg.mode, k=k, threshold=float("-inf")))
        cands[margin] = [
            (float(sc), ds.src_ids[i], ds.tgt_ids[j])
            for sc, i, j in zip(al.scores.tolist(), al.src.tolist(), al.tgt.tolist())
        ]
    timings["margin_s"] = time.time() - t0
    return {"set": ds, "cands": cands, "src_emb": es, "tgt_emb": et, "k": k, "timings": timings}


def gold_xsim(res: dict, margin: str, k: int) -> float:
    ds = res["set"]
    s_row = {x: i for i, x in enumerate(ds.src_ids)}
    t_row = {x: i for i, x in enumerate(ds.tgt_ids)}
    gold = sorted(ds.gold)
    x = l2_normalize(res["src_emb"].load()[[s_row[s] for s, _ in gold]])  # fp16 rounding moved the norms
    y = l2_normalize(res["tgt_emb"].load()[[t_row[t] for _, t in gold]])
    return bucc.xsim_error(x, y, margin=margin, k=k)


PROTOCOLS = ("auto", "split", "kfold")


def protocol_label(row: dict) -> str:
    """How the reported threshold was chosen, in words (report tables and logs)."""
    p = row.get("protocol", {})
    if p.get("name") == "split":
        return f"tuned on {p['tuned_on']}"
    if p.get("name") == "kfold":
        return f"{p['folds']}-fold on {p['split']}"
    return "oracle only"


def _tuned_result(cfg: BuccEvalConfig, test: dict, tune: dict | None, margin: str) -> tuple[dict, dict, float | None]:
    """(protocol, P/R/F1 on test, train F1) for one margin, by the protocol ``cfg`` and the data allow."""
    ds = test["set"]
    if tune is not None:
        tuned = bucc.best_threshold(tune["cands"][margin], tune["set"].gold)
        return (
            {"name": "split", "tuned_on": cfg.tune_split},
            bucc.prf_at(test["cands"][margin], ds.gold, tuned.threshold).as_dict(),
            round(tuned.f1, 6),
        )
    res, thresholds = bucc.kfold_prf(test["cands"][margin], ds.gold, folds=cfg.folds)
    return (
        {
            "name": "kfold",
            "folds": cfg.folds,
            "split": cfg.split,
            "fold_thresholds": [None if t is None else round(t, 6) for t in thresholds],
        },
        res.as_dict(),
        None,
    )


def run_bucc(cfg: BuccEvalConfig, progress: bool = True) -> list[dict]:
    """Evaluate every pair of ``cfg.pairs``; returns one result row per (pair, margin)."""
    from mining.margin import canonical_margin

    for m in cfg.margins:
        canonical_margin(m)
    if cfg.protocol not in PROTOCOLS:
        raise UserError(f"--protocol {cfg.protocol!r}: choose from {', '.join(PROTOCOLS)}")
    if cfg.protocol != "split" and cfg.folds < 2:
        raise UserError(f"--folds {cfg.folds}: k-fold tuning needs at least 2 folds")
    if cfg.calibrate and ("ratio" not in [canonical_margin(m) for m in cfg.margins] or cfg.protocol == "kfold"):
        raise UserError(
            "--calibrate tunes ratio-margin cuts on --tune-split: keep ratio in --margins and do not "
            "pass --protocol kfold"
        )
    for path in (cfg.calibration, cfg.calibrate if cfg.calibrate and Path(cfg.calibrate).exists() else None):
        if path:
            read_calibration(path)  # a broken file is an error before any embedding
    pairs = [parse_pair(p, pivot=ENGLISH, codes=False) for p in cfg.pairs]
    _ensure_data(cfg, pairs, progress)
    encoder = load_encoder(cfg.encoder, threads=cfg.threads)
    rows = []
    for src, tgt in pairs:
        test = mine_split(cfg, encoder, src, tgt, cfg.split, progress)
        has_tune = bucc.bucc_files(cfg.data, src, tgt, cfg.tune_split)["gold"].is_file()
        if cfg.protocol == "split" and not has_tune:
            raise UserError(
                f"{cfg.data}: no {src}-{tgt}.{cfg.tune_split}.gold to tune the threshold on: pass "
                f"--tune-split with a split that has a gold, or --protocol kfold"
            )
        has_tune = has_tune and cfg.protocol != "kfold"
        tune = mine_split(cfg, encoder, src, tgt, cfg.tune_split, progress) if has_tune else None
        ds = test["set"]
        for margin in cfg.margins:
            oracle = bucc.best_threshold(test["cands"][margin], ds.gold)
            row = {
                "pair": f"{src}-{tgt}",
                "encoder": cfg.encoder,
                "margin": canonical_margin(margin),
                "mode": cfg.mode,
                "k": test["k"],
                "n_src": len(ds.src_ids),
                "n_tgt": len(ds.tgt_ids),
                "n_gold": len(ds.gold),
                "oracle": oracle.as_dict(),
                "xsim_error": round(gold_xsim(test, margin, test["k"]), 6),
                "timings": test["timings"],
            }
            row["protocol"], row["test"], train_f1 = _tuned_result(cfg, test, tune, margin)
            if tune is not None:
                row["tuned_on"] = cfg.tune_split
                row["train_f1"] = train_f1
                row["train_gold"] = len(tune["set"].gold)
            cut = resolve_cut(
                None,
                row["margin"],
                cfg.mode,
                encoder.name,
                encoder_lang(src),
                encoder_lang(tgt),
                np.array([c[0] for c in test["cands"][margin]]),
                cfg.calibration,
            )
            row["default_cut"] = cut.as_dict()
            row["default"] = bucc.prf_at(test["cands"][margin], ds.gold, cut.value).as_dict()
            if cfg.threshold is not None:
                row["fixed"] = bucc.prf_at(test["cands"][margin], ds.gold, cfg.threshold).as_dict()
            if cfg.keep_candidates:
                row["candidates"], row["gold_pairs"] = test["cands"][margin], ds.gold
            rows.append(row)
            if progress:
                print(
                    f"mine-eval: {row['pair']} {row['margin']}: F1 {100 * row['test']['f1']:.2f} (threshold "
                    f"{protocol_label(row)}; oracle on the {cfg.split} gold itself {100 * oracle.f1:.2f}), "
                    f"xsim error {100 * row['xsim_error']:.2f}%",
                    file=sys.stderr,
                )
    if cfg.calibrate:
        write_calibration(cfg.calibrate, encoder.name, calibration_entry(cfg, rows))
        if progress:
            print(f"mine-eval: calibrated ratio-margin cuts of {encoder.name} -> {cfg.calibrate}", file=sys.stderr)
    return rows


def calibration_entry(cfg: BuccEvalConfig, rows: list[dict]) -> dict:
    """The calibration of the evaluated encoder: each pair's best-F1 ratio cut on the tuning split."""
    pairs = {}
    for r in rows:
        if r["margin"] != "ratio" or r.get("tuned_on") is None or r["test"]["threshold"] is None:
            continue
        src, tgt = parse_pair(r["pair"], pivot=ENGLISH, codes=False)
        pairs[pair_key(encoder_lang(src), encoder_lang(tgt))] = {
            "cut": r["test"]["threshold"],
            "f1": r["train_f1"],
            "gold": r["train_gold"],
        }
    if not pairs:
        raise UserError(
            f"--calibrate needs the ratio margin and a --tune-split with a gold ({cfg.tune_split} of "
            f"{cfg.data}) to tune the cuts on"
        )
    return encoder_entry(
        pairs,
        data=str(cfg.data),
        split=cfg.tune_split,
        margin="ratio",
        mode=cfg.mode,
        k=cfg.k,
        encoder_spec=cfg.encoder,
    )


def markdown_table(rows: list[dict]) -> str:
    head = (
        "| pair | encoder | margin | mode | gold / sents | threshold chosen | threshold | P | R | F1 "
        "| default cut | F1 at the default | oracle F1 (tuned on test) | xsim err % |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    )
    lines = [head]
    for r in rows:
        t = r.get("test")
        cells = (
            [
                f"{t['threshold']:.4f}" if t["threshold"] is not None else "-",
                f"{100 * t['precision']:.2f}",
                f"{100 * t['recall']:.2f}",
                f"**{100 * t['f1']:.2f}**",
            ]
            if t
            else ["-", "-", "-", "-"]
        )
        lines.append(
            f"| {r['pair']} | {r['encoder']} | {r['margin']} | {r['mode']} | {r['n_gold']} / "
            f"{r['n_src']}x{r['n_tgt']} | {protocol_label(r)} | "
            + " | ".join(cells)
            + f" | {_cut_cell(r.get('default_cut'))} | {100 * r['default']['f1']:.2f}"
            + f" | {100 * r['oracle']['f1']:.2f} | {100 * r['xsim_error']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def _cut_cell(cut: dict | None) -> str:
    if not cut or cut.get("value") is None:
        return "none"
    return f"{cut['value']:.4f} ({cut['source']})"


def protocol_text(rows: list[dict], split: str) -> str:
    """The report's sentence on how thresholds were chosen (every protocol the rows used)."""
    said = []
    for label in dict.fromkeys(protocol_label(r) for r in rows):
        if label.startswith("tuned on "):
            said.append(f"threshold tuned on the `{label[len('tuned on ') :]}` gold, P/R/F1 on `{split}`")
        elif "-fold" in label:
            k = label.split("-fold")[0]
            said.append(
                f"{k}-fold on `{split}` (no tuning split): each of {k} parts of the `{split}` gold, cut by "
                f"source sentence, scored at the threshold tuned on the other parts; the threshold shown "
                f"is the median of the folds'"
            )
    said.append(
        "default = the cut mine-bitext applies without --threshold (calibrated: `pair` = this pair's "
        "calibrated cut, `encoder` = the encoder's median, `fitted` = fitted to these scores)"
    )
    said.append(f"oracle = the best threshold on the `{split}` gold itself (an upper bound, not a result)")
    return "; ".join(said) + "."


# --------------------------------------------------------------------------------------------------
# scoring a candidates file


def read_candidates(path: str | Path, ds: bucc.BuccSet) -> list[tuple[float, str, str]]:
    """``src_id<TAB>tgt_id`` (BUCC submission, score 1), ``score<TAB>src_id<TAB>tgt_id``, or a mined
    ``score<TAB>src<TAB>tgt`` TSV whose sentences are mapped back to ids (repeated sentences dropped,
    as LASER's bucc.py does)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: candidates file not found")
    src_ids, tgt_ids = set(ds.src_ids), set(ds.tgt_ids)

    def text_map(ids: list[str], sents: list[str]) -> dict[str, str]:
        """sentence -> id, for sentences that occur once (a repeated one cannot be mapped back)."""
        out: dict[str, str] = {}
        repeated = set()
        for i, s in zip(ids, sents):
            if s in out:
                repeated.add(s)
            else:
                out[s] = i
        for s in repeated:
            del out[s]
        return out

    s_map = t_map = None
    cands = []
    with open(path, encoding="utf-8", errors="surrogateescape") as fh:
        for n, line in enumerate(fh, 1):
            parts = line.rstrip("\n").split("\t")
            if parts == [""]:
                continue
            if len(parts) == 2:
                score, s, t = 1.0, parts[0], parts[1]
            elif len(parts) == 3:
                try:
                    score = float(parts[0])
                except ValueError:
                    raise located(path, n, f"score {parts[0]!r} is not a number") from None
                s, t = parts[1], parts[2]
            else:
                raise located(path, n, "expected src_id<TAB>tgt_id or score<TAB>src<TAB>tgt")
            if s in src_ids and t in tgt_ids:
                cands.append((score, s, t))
                continue
            if s_map is None:
                s_map, t_map = text_map(ds.src_ids, ds.src_sents), text_map(ds.tgt_ids, ds.tgt_sents)
            if s in s_map and t in t_map:
                cands.append((score, s_map[s], t_map[t]))
    return cands


# --------------------------------------------------------------------------------------------------
# scoring mined pairs against a corpus gold (line numbers of the original mono files)


def _side_map(text: str | Path, numbers: str | Path | None) -> dict[str, list[int]]:
    """sentence (tabs as spaces, as in a mined TSV) -> its original 0-based line numbers, in file order."""
    out: dict[str, list[int]] = {}
    for n, s in with_line_numbers(read_lines(text, progress=False), numbers):
        out.setdefault(s.replace("\t", " "), []).append(n)
    return out


@dataclass
class GoldScoreConfig:
    mined: str  # score<TAB>src<TAB>tgt (mine-bitext --out)
    gold: str  # 0-based line_in_src<TAB>line_in_tgt of the original files (a corpus's mono/*.gold.tsv)
    src_text: str  # the texts that were embedded (after LID and filters)
    tgt_text: str
    src_line_numbers: str | None = None  # their original line numbers (None: the texts are the originals)
    tgt_line_numbers: str | None = None
    threshold: float | None = None  # also report P/R/F1 of the pairs scoring >= this


def score_against_gold(cfg: GoldScoreConfig) -> dict:
    """Precision / recall / F1 of mined pairs against the hidden gold of the original files.

    Each mined sentence is mapped back to its line of the embedded text, then through the line-number
    files to the original line, so lines dropped by LID or the filters count as missed gold (recall is
    over the whole gold). A sentence that occurs on several lines stands for all of them: the pair is
    correct when any of its line pairs is gold. ``gold_reachable`` counts the gold pairs whose two lines
    both survived LID and the filters (the best recall mining could reach); ``gold_reachable_share`` is
    their share of the gold.
    """
    s_map, t_map = _side_map(cfg.src_text, cfg.src_line_numbers), _side_map(cfg.tgt_text, cfg.tgt_line_numbers)
    s_rows = {n for ns in s_map.values() for n in ns}
    t_rows = {n for ns in t_map.values() for n in ns}
    gold = set(bucc.read_gold_lines(cfg.gold))
    gold_of_src: dict[int, set[int]] = {}
    for i, j in gold:
        gold_of_src.setdefault(i, set()).add(j)
    mined = Path(cfg.mined)
    if not mined.is_file():
        raise UserError(f"{mined}: mined TSV not found (run mine-bitext)")
    cands: list[tuple[float, int, int]] = []
    with open(mined, encoding="utf-8", errors="surrogateescape") as fh:
        for n, line in enumerate(fh, 1):
            parts = line.rstrip("\n").split("\t")
            if parts == [""]:
                continue
            if len(parts) != 3:
                raise located(mined, n, "expected score<TAB>src<TAB>tgt")
            try:
                score = float(parts[0])
            except ValueError:
                raise located(mined, n, f"score {parts[0]!r} is not a number") from None
            for side, text, m, flag in (
                ("source", parts[1], s_map, "--src-text"),
                ("target", parts[2], t_map, "--tgt-text"),
            ):
                if text not in m:
                    raise located(
                        mined,
                        n,
                        f"the {side} sentence is not a line of {flag}: pass the text that was embedded and mined",
                    )
            si, ti = s_map[parts[1]], t_map[parts[2]]
            tset = set(ti)
            hit = next(((i, j) for i in si for j in gold_of_src.get(i, ()) if j in tset), None)
            cands.append((score, *(hit or (si[0], ti[0]))))
    reachable = sum(i in s_rows and j in t_rows for i, j in gold)
    out = {
        "mined": len(cands),
        "gold": len(gold),
        "gold_reachable": reachable,
        "gold_reachable_share": round(reachable / len(gold), 6) if gold else None,
        "all": bucc.prf_at(cands, gold, None).as_dict(),
        "best": bucc.best_threshold(cands, gold).as_dict(),
    }
    if cfg.threshold is not None:
        out["at_threshold"] = bucc.prf_at(cands, gold, cfg.threshold).as_dict()
    return out


# --------------------------------------------------------------------------------------------------
# CLI

_EPILOG = """examples:
  # the whole benchmark with the weight-free baseline encoder (builds work/bucc from gettext if missing)
  mine-eval bucc --encoder ngram --pairs deu_Latn-eng_Latn,fra_Latn-eng_Latn,rus_Cyrl-eng_Latn,zho_Hans-eng_Latn,xho_Latn-eng_Latn
  # a real encoder on the real BUCC 2018 files (de-en.sample.*, de-en.training.* in ~/bucc2018; the
  # test gold was never released, so tune on sample and score on training)
  mine-eval bucc --encoder e5 --data ~/bucc2018 --pairs de-en,fr-en,ru-en,zh-en --tune-split sample --split training
  # only build the set / only score a candidates file
  mine-eval bucc-build --out work/bucc --langs deu_Latn,fra_Latn --size 5000 --gold 500
  mine-eval bucc-score --data work/bucc --pair deu_Latn-eng_Latn --split test --candidates mined.tsv
  # the same benchmark on a built corpus's hidden-parallel mono/ sets (what the demo mines), e5 encoder
  mine-eval bucc --corpus work/demo/corpus --encoder e5 --pairs xho_Latn,mya_Mymr --threads 1
  mine-eval bucc-build --corpus work/demo/corpus --langs all --out work/bucc-corpus
  # P/R/F1 of a mine-bitext output against the corpus gold, through the line numbers LID/filters kept
  mine-eval gold --mined M/mined.tsv --gold C/mono/eng_Latn-xho_Latn.gold.tsv \\
      --src-text M/eng_Latn.txt --src-line-numbers M/eng_Latn.lines \\
      --tgt-text M/xho_Latn.txt --tgt-line-numbers M/xho_Latn.lines --out M/gold.json
  # xsim of an encoder on the corpus's N-way devtest, every language against English
  mine-eval xsim --encoder work/enc/laser --corpus work/demo/corpus --split devtest
"""


def _build_args(p: argparse.ArgumentParser) -> None:
    d = bucc.BuildConfig()
    p.add_argument("--size", type=int, default=d.size, help="sentences per side per split (default: %(default)s)")
    p.add_argument("--gold", type=int, default=d.gold, help="hidden translation pairs per split (default: %(default)s)")
    p.add_argument("--seed", type=int, default=d.seed, help="shuffling seed (default: %(default)s)")
    p.add_argument("--locale-dir", default=d.locale_dir, help="gettext catalogues (default: %(default)s)")
    p.add_argument(
        "--corpus",
        default=None,
        help="build from this corpus's mono/eng_Latn-{lang}.* hidden-parallel files and their "
        ".gold.tsv (mt-data build gettext) instead of the catalogues; --size/--gold do not apply",
    )


def _csv(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def cli(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="mine-eval",
        description="Evaluate bitext mining on BUCC-style sets.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="cmd", required=True)
    d = BuccEvalConfig()

    b = sub.add_parser(
        "bucc",
        help="embed + mine + score each pair (builds the set when missing)",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    b.add_argument(
        "--encoder",
        default=d.encoder,
        help="encoder spec: ngram[:DIM], e5, use, laser2:DIR, laser3:DIR:lang (default: %(default)s)",
    )
    b.add_argument("--pairs", type=_csv, default=d.pairs, help="comma-separated pairs (default: %(default)s)")
    b.add_argument(
        "--data", default=None, help=f"BUCC-format folder (default: {d.data}, or {CORPUS_DATA} with --corpus)"
    )
    b.add_argument("--work", default=d.work, help="embeddings and k-NN cache (default: %(default)s)")
    b.add_argument("--margins", type=_csv, default=d.margins, help="margins to compare (default: ratio,absolute)")
    b.add_argument("--mode", default=d.mode, help="mining mode (default: %(default)s, as LASER's BUCC runs)")
    b.add_argument("--k", type=int, default=d.k, help="neighbourhood size (default: %(default)s)")
    b.add_argument("--factory", default=d.factory, help="FAISS index (default: %(default)s)")
    b.add_argument("--threshold", type=float, default=None, help="also report P/R/F1 at this fixed threshold")
    b.add_argument("--split", default=d.split, help="evaluated split (default: %(default)s)")
    b.add_argument("--tune-split", default=d.tune_split, help="split the threshold is tuned on (default: %(default)s)")
    b.add_argument(
        "--protocol",
        choices=PROTOCOLS,
        default=d.protocol,
        help="how the reported threshold is chosen: split (on --tune-split), kfold (k-fold on --split's "
        "own gold, each part scored at the threshold of the others), auto (split when --tune-split "
        "has a gold, else kfold; default)",
    )
    b.add_argument("--folds", type=int, default=d.folds, help="parts for --protocol kfold (default: %(default)s)")
    b.add_argument(
        "--calibrate",
        default=None,
        metavar="FILE",
        help="write this encoder's best ratio-margin cut per pair (tuned on --tune-split) and their "
        "median into FILE, the calibration mine-bitext --calibration reads",
    )
    b.add_argument(
        "--calibration",
        default=None,
        metavar="FILE",
        help="calibration file the reported default cut comes from (besides the shipped cuts)",
    )
    b.add_argument("--batch-size", type=int, default=d.batch_size, help="sentences per encoder call")
    b.add_argument(
        "--threads", type=int, default=None, help="encoder CPU threads (e5, use, torch); 1 is kind to a shared machine"
    )
    b.add_argument("--out-dir", default=None, help="report.md / report.json (default: {work}/{encoder})")
    _build_args(b)

    bb = sub.add_parser("bucc-build", help="write BUCC 2018-format sets from the gettext catalogues or a corpus")
    bb.add_argument("--out", default=None, help=f"output folder (default: {d.data}, or {CORPUS_DATA} with --corpus)")
    bb.add_argument(
        "--langs",
        type=_csv,
        default=bucc.BuildConfig().langs,
        help="languages mined against eng_Latn, or 'all' (every language of the corpus or locale tree)",
    )
    _build_args(bb)

    bs = sub.add_parser("bucc-score", help="P/R/F1 of a candidates file against the gold")
    bs.add_argument("--data", default=d.data, help="BUCC-format folder (default: %(default)s)")
    bs.add_argument("--pair", required=True, help="e.g. deu_Latn-eng_Latn or de-en")
    bs.add_argument("--split", default=d.split, help="(default: %(default)s)")
    bs.add_argument("--candidates", required=True, help="src_id<TAB>tgt_id, score<TAB>src_id<TAB>tgt_id or mined TSV")
    bs.add_argument("--threshold", type=float, default=None, help="score cut (default: report the best one)")

    from mining import xsim

    xs = sub.add_parser(
        "xsim",
        help="xsim error rate per language on an N-way split (LASER/NLLB's encoder check)",
        epilog=xsim.EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    xsim.add_xsim_args(xs)

    g = sub.add_parser(
        "gold",
        help="P/R/F1 of a mined TSV against a corpus gold of original line numbers",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    g.add_argument("--mined", required=True, help="mine-bitext output: score<TAB>src<TAB>tgt")
    g.add_argument("--gold", required=True, help="0-based line_in_src<TAB>line_in_tgt (a corpus's mono/*.gold.tsv)")
    g.add_argument("--src-text", required=True, help="the source text that was embedded (after LID/filters)")
    g.add_argument("--tgt-text", required=True, help="the target text that was embedded")
    g.add_argument(
        "--src-line-numbers",
        default=None,
        help="original line of each --src-text line (mine-filter --line-numbers); default: the same line",
    )
    g.add_argument("--tgt-line-numbers", default=None, help="the same for --tgt-text")
    g.add_argument("--threshold", type=float, default=None, help="also score the pairs at or above this score")
    g.add_argument("--out", default=None, help="also write the JSON here")

    a = p.parse_args(argv)
    if a.cmd == "xsim":
        return xsim.xsim_from_args(a)
    if a.cmd in ("bucc", "bucc-build"):
        data = (a.data if a.cmd == "bucc" else a.out) or (CORPUS_DATA if a.corpus else d.data)
        folders = {"--data" if a.cmd == "bucc" else "--out": data}
        if a.cmd == "bucc":
            folders.update({"--work": a.work, "--out-dir": a.out_dir})
        for flag, folder in folders.items():  # before the embedding and mining: a report that cannot be written
            if folder:
                refuse_file_in_the_way(folder, flag, folder=True)
        if a.cmd == "bucc":
            check_outputs({}, {"--calibrate": a.calibrate})
        bcfg = bucc.BuildConfig(
            out=data, size=a.size, gold=a.gold, seed=a.seed, locale_dir=a.locale_dir, corpus=a.corpus
        )
    if a.cmd == "bucc-build":
        bcfg.langs = a.langs
        bucc.build(bcfg)
        return 0
    if a.cmd == "gold":
        check_outputs(
            {
                "--mined": a.mined,
                "--gold": a.gold,
                "--src-text": a.src_text,
                "--tgt-text": a.tgt_text,
                "--src-line-numbers": a.src_line_numbers,
                "--tgt-line-numbers": a.tgt_line_numbers,
            },
            {"--out": a.out},
        )
        res = score_against_gold(
            GoldScoreConfig(
                mined=a.mined,
                gold=a.gold,
                src_text=a.src_text,
                tgt_text=a.tgt_text,
                src_line_numbers=a.src_line_numbers,
                tgt_line_numbers=a.tgt_line_numbers,
                threshold=a.threshold,
            )
        )
        text = json.dumps(res, indent=1)
        if a.out:
            with atomic_write(a.out) as fh:
                fh.write(text + "\n")
        al = res["all"]
        share = res["gold_reachable_share"]
        print(
            f"mine-eval gold: {res['mined']} mined pairs, {al['correct']} in the gold of {res['gold']} "
            f"({res['gold_reachable']} = {100 * (share or 0):.1f}% survived LID and the filters): "
            f"P {100 * al['precision']:.2f} "
            f"R {100 * al['recall']:.2f} F1 {100 * al['f1']:.2f}",
            file=sys.stderr,
        )
        print(text)
        return 0
    if a.cmd == "bucc-score":
        src, tgt = parse_pair(a.pair, pivot=ENGLISH, codes=False)
        ds = bucc.read_set(a.data, src, tgt, a.split)
        cands = read_candidates(a.candidates, ds)
        best = bucc.best_threshold(cands, ds.gold)
        out = {
            "pair": f"{src}-{tgt}",
            "split": a.split,
            "candidates": len(cands),
            "gold": len(ds.gold),
            "best": best.as_dict(),
        }
        if a.threshold is not None:
            out["at_threshold"] = bucc.prf_at(cands, ds.gold, a.threshold).as_dict()
        print(json.dumps(out, indent=1))
        return 0

    cfg = BuccEvalConfig(
        data=data,
        pairs=a.pairs,
        encoder=a.encoder,
        work=a.work,
        margins=a.margins,
        mode=a.mode,
        k=a.k,
        factory=a.factory,
        threshold=a.threshold,
        split=a.split,
        tune_split=a.tune_split,
        protocol=a.protocol,
        folds=a.folds,
        batch_size=a.batch_size,
        threads=a.threads,
        build=bcfg,
        calibration=a.calibration,
        calibrate=a.calibrate,
    )
    t0 = time.time()
    rows = run_bucc(cfg)
    out_dir = Path(a.out_dir or Path(cfg.work) / _tag(cfg.encoder))
    table = markdown_table(rows)
    with atomic_write(out_dir / "report.json") as fh:
        json.dump({"config": asdict(cfg), "results": rows}, fh, indent=1, ensure_ascii=False)
    with atomic_write(out_dir / "report.md") as fh:
        fh.write(f"# BUCC-style mining: encoder {cfg.encoder}\n\n{protocol_text(rows, cfg.split)}\n\n{table}")
    print(f"{protocol_text(rows, cfg.split)}\n\n{table}")
    print(f"mine-eval: report in {out_dir}/report.md ({time.time() - t0:.0f}s)", file=sys.stderr)
    return 0
