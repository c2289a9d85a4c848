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
from mining.embedding_store import EmbeddingSet
from mining.encoders import Encoder, l2_normalize, load_encoder
from mining.encoders.pretrained import E5_PRECISIONS
from mt.common.errors import UserError, located
from mt.common.files import atomic_write, refuse_file_in_the_way
from mt.common.flags import arg
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


PROTOCOLS = ("auto", "split", "kfold")


@dataclass
class BuccEvalConfig:
    """``mine-eval bucc``: each field but keep_candidates and build is also its flag."""

    data: str = arg(
        bucc.GETTEXT_DATA, f"BUCC-format folder (default: {bucc.GETTEXT_DATA}, or {bucc.CORPUS_DATA} with --corpus)"
    )
    pairs: list[str] = arg([f"{c}-eng_Latn" for c in bucc.BuildConfig().langs], "comma-separated pairs")
    encoder: str = arg("ngram", "encoder spec: ngram[:DIM], e5, use, laser2:DIR, laser3:DIR:lang")
    work: str = arg("work/bucc-eval", "embeddings and k-NN cache")
    margins: list[str] = arg(["ratio", "absolute"], "margins to compare")
    mode: str = arg("max", "mining mode (max: as LASER's BUCC runs)")
    k: int = arg(4, "neighbourhood size")
    factory: str = arg("Flat", "FAISS index")
    threshold: float | None = arg(None, "also report P/R/F1 at this fixed threshold")
    tune_split: str = arg("training", "split the threshold is tuned on")
    split: str = arg("test", "evaluated split")
    # split: tune on tune_split; kfold: k-fold on split; auto: split if it has a gold
    protocol: str = arg(
        "auto",
        "how the reported threshold is chosen: split (on --tune-split), kfold (k-fold on --split's "
        "own gold, each part scored at the threshold of the others), auto (split when --tune-split "
        "has a gold, else kfold)",
        choices=PROTOCOLS,
    )
    folds: int = arg(5, "parts for --protocol kfold")
    # calibration file the default cut is read from (besides the shipped one)
    calibration: str | None = arg(
        None, "calibration file the reported default cut comes from (besides the shipped cuts)", metavar="FILE"
    )
    # write the encoder's tuned ratio cuts into this calibration file
    calibrate: str | None = arg(
        None,
        "write this encoder's best ratio-margin cut per pair (tuned on --tune-split) and their "
        "median into FILE, the calibration mine-bitext --calibration reads",
        metavar="FILE",
    )
    keep_candidates: bool = False  # rows also carry "candidates" and "gold_pairs" of the test split (benchmarks)
    batch_size: int = arg(1024, "sentences per encoder call")
    # encoder CPU threads (e5/use/torch); None: the encoder's default
    threads: int | None = arg(None, "encoder CPU threads (e5, use, torch); 1 is kind to a shared machine")
    precision: str = arg(
        "auto", "e5 encoders: auto, fp32, int8, bf16 or q4 (as mine-embed --precision)", choices=E5_PRECISIONS
    )
    build: bucc.BuildConfig = field(default_factory=bucc.BuildConfig)


@dataclass
class BuccReport:
    """Where ``mine-eval bucc`` writes its report (not part of the config recorded in report.json)."""

    out_dir: str | None = arg(None, "report.md / report.json (default: {work}/{encoder})")


def encoder_lang(code: str) -> str:
    """The FLORES-200 code an encoder expects (real BUCC files use de/fr/ru/zh/en)."""
    return bucc.BUCC_TO_FLORES.get(code, code)


def _tag(spec: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", spec).strip("_") or "encoder"


def _ensure_data(cfg: BuccEvalConfig, pairs: list[tuple[str, str]], progress: bool) -> None:
    """Build the missing ``{lang}-eng_Latn`` sets (from ``--corpus`` or the catalogues); refuse to mix:
    a set already in ``--data`` that info.json says was built from another origin is an error, and one
    built with other --size/--gold/--seed is used as it is, with a note (scores are only comparable on
    the same set, so it is not rebuilt behind the user's back)."""
    want = bucc.source_of(cfg.build)
    built = bucc.read_info(cfg.data).get("pairs", {})
    missing = []
    for s, t in pairs:
        info = built.get(f"{s}-{t}", {})
        have = info.get("source")
        if have is not None and have != want:
            raise UserError(
                f"{cfg.data}: {s}-{t} was built from {have}, not {want}: pass another --data folder "
                "(or delete that set to rebuild it)"
            )
        if not all(p.is_file() for p in bucc.bucc_files(cfg.data, s, t, cfg.split).values()):
            missing.append((s, t))
            continue
        other = [f"--{k} {info[k]}" for k in ("size", "gold", "seed") if k in info and info[k] != getattr(cfg.build, k)]
        if other:
            print(
                f"mine-eval: {s}-{t}: using the set already in {cfg.data}, built with {' '.join(other)}; "
                "--size/--gold/--seed apply only when a set is built (delete it or pass another --data to rebuild)",
                file=sys.stderr,
            )
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
    from mining.index import IndexConfig
    from mining.knn import KnnConfig, MineKnnConfig, mine_knn, open_knn_dir
    from mining.margin import MarginConfig, mine

    ds = bucc.read_set(cfg.data, src, tgt, split)
    tag = _tag(cfg.encoder)
    if getattr(encoder, "precision", None):  # e5: each precision has its own embeddings in the cache
        tag += f"-{encoder.precision}"
    base = Path(cfg.work) / tag / f"{src}-{tgt}.{split}"
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
    encoder = load_encoder(cfg.encoder, threads=cfg.threads, precision=cfg.precision)
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
    """``mine-eval gold``: each field is also its flag."""

    mined: str = arg(help="mine-bitext output: score<TAB>src<TAB>tgt", required=True)
    # 0-based line_in_src<TAB>line_in_tgt of the original files (a corpus's mono/*.gold.tsv)
    gold: str = arg(help="0-based line_in_src<TAB>line_in_tgt (a corpus's mono/*.gold.tsv)", required=True)
    src_text: str = arg(help="the source text that was embedded (after LID/filters)", required=True)
    tgt_text: str = arg(help="the target text that was embedded", required=True)
    # their original line numbers (None: the texts are the originals)
    src_line_numbers: str | None = arg(
        None, "original line of each --src-text line (mine-filter --line-numbers); default: the same line"
    )
    tgt_line_numbers: str | None = arg(None, "the same for --tgt-text")
    threshold: float | None = arg(None, "also score the pairs at or above this score")
    out: str | None = arg(None, "also write the JSON here")  # the CLI's; score_against_gold does not read it


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
# the commands: what each mine-eval sub-command does with its config


@dataclass
class BuccScoreConfig:
    """``mine-eval bucc-score``: P/R/F1 of a candidates file against a set's gold."""

    data: str = arg(bucc.GETTEXT_DATA, "BUCC-format folder")
    pair: str = arg("", "e.g. deu_Latn-eng_Latn or de-en", required=True)
    split: str = arg("test", "")
    candidates: str = arg("", "src_id<TAB>tgt_id, score<TAB>src_id<TAB>tgt_id or mined TSV", required=True)
    threshold: float | None = arg(None, "score cut (default: report the best one)")


def refuse_files_in_the_way(folders: dict[str, str | None]) -> None:
    """Before any embedding or mining: a folder a report cannot be written to stops the run now."""
    for flag, folder in folders.items():
        if folder:
            refuse_file_in_the_way(folder, flag, folder=True)


def build_sets(cfg: bucc.BuildConfig) -> None:
    """``mine-eval bucc-build``."""
    refuse_files_in_the_way({"--out": cfg.out})
    bucc.build(cfg)


def bucc_report(cfg: BuccEvalConfig, out_dir: str | None = None) -> Path:
    """``mine-eval bucc``: embed, mine and score every pair, print the table and write report.md / .json."""
    refuse_files_in_the_way({"--data": cfg.data, "--work": cfg.work, "--out-dir": out_dir})
    check_outputs({}, {"--calibrate": cfg.calibrate})
    t0 = time.time()
    rows = run_bucc(cfg)
    folder = Path(out_dir or Path(cfg.work) / _tag(cfg.encoder))
    table = markdown_table(rows)
    with atomic_write(folder / "report.json") as fh:
        json.dump({"config": asdict(cfg), "results": rows}, fh, indent=1, ensure_ascii=False)
    with atomic_write(folder / "report.md") as fh:
        fh.write(f"# BUCC-style mining: encoder {cfg.encoder}\n\n{protocol_text(rows, cfg.split)}\n\n{table}")
    print(f"{protocol_text(rows, cfg.split)}\n\n{table}")
    print(f"mine-eval: report in {folder}/report.md ({time.time() - t0:.0f}s)", file=sys.stderr)
    return folder


def score_candidates(cfg: BuccScoreConfig) -> dict:
    """``mine-eval bucc-score``: the best threshold's P/R/F1 (and at ``cfg.threshold``), printed as JSON."""
    src, tgt = parse_pair(cfg.pair, pivot=ENGLISH, codes=False)
    ds = bucc.read_set(cfg.data, src, tgt, cfg.split)
    cands = read_candidates(cfg.candidates, ds)
    best = bucc.best_threshold(cands, ds.gold)
    out = {
        "pair": f"{src}-{tgt}",
        "split": cfg.split,
        "candidates": len(cands),
        "gold": len(ds.gold),
        "best": best.as_dict(),
    }
    if cfg.threshold is not None:
        out["at_threshold"] = bucc.prf_at(cands, ds.gold, cfg.threshold).as_dict()
    print(json.dumps(out, indent=1))
    return out


def gold_report(cfg: GoldScoreConfig) -> dict:
    """``mine-eval gold``: score_against_gold, printed as JSON (and written to ``cfg.out``) with a summary."""
    check_outputs(
        {
            "--mined": cfg.mined,
            "--gold": cfg.gold,
            "--src-text": cfg.src_text,
            "--tgt-text": cfg.tgt_text,
            "--src-line-numbers": cfg.src_line_numbers,
            "--tgt-line-numbers": cfg.tgt_line_numbers,
        },
        {"--out": cfg.out},
    )
    res = score_against_gold(cfg)
    text = json.dumps(res, indent=1)
    if cfg.out:
        with atomic_write(cfg.out) as fh:
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
    return res
