"""Benchmark of the whole mining chain on BUCC-style sets: encoders x margins x languages.

For each encoder it runs ``mine-eval bucc`` (mining.evaluate.run_bucc: embed with mine-embed's code,
FAISS k-NN both ways, margin, max mode; threshold tuned on the ``training`` split, scored on ``test``)
and puts every result in one table: F1 at the tuned threshold, the oracle F1 (best threshold on test
itself), the xsim error (gold sentences whose best match among the gold targets is not their
translation) and the tuned threshold, for the ratio margin and plain cosine side by side. A second table
puts the F1 at the *default* cut (what mine-bitext applies without --threshold: the calibrated cut of
mining/calibration.py) next to the best cut, and the F1 a pair nobody calibrated would get (the median of
the other pairs' tuned cuts). ``--calibrate FILE`` writes the tuned cuts (mine-eval bucc --calibrate): the
source of mining/calibration.py's SHIPPED table.

Optionally (``--demo-corpus``) it also runs ``recipes/mine_pair.sh`` on each language of a built corpus
(LID -> filters -> embed -> k-NN -> ratio margin -> mined TSV) and scores the mined pairs against the
corpus gold (``mine-eval gold``): the end-to-end numbers of exactly what the demo mines.

    OMP_NUM_THREADS=1 python bench/bucc.py --encoders ngram --langs deu_Latn,xho_Latn        # quick
    OMP_NUM_THREADS=1 python bench/bucc.py --encoders e5,use,ngram --size 3000 --gold 300 --threads 1 \
        --langs deu_Latn,fra_Latn,rus_Cyrl,zho_Hans,arb_Arab,hin_Deva,mya_Mymr,khk_Cyrl,xho_Latn \
        --calibrate bench/out/calibration.json                                               # the calibration
    OMP_NUM_THREADS=1 python bench/bucc.py --encoders e5,use,ngram \\
        --langs deu_Latn,fra_Latn,rus_Cyrl,zho_Hans,xho_Latn,mya_Mymr,khk_Cyrl --threads 1 \\
        --demo-corpus work/demo/corpus --demo-encoder e5                                     # the full run

Writes bench/out/bucc.md and bench/out/bucc.json and prints the tables. Benchmarks measure; they never
assert.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def bucc_rows(encoder: str, langs: list[str], args: argparse.Namespace) -> list[dict]:
    from mining import bucc
    from mining.evaluate import BuccEvalConfig, run_bucc

    cfg = BuccEvalConfig(
        data=args.data,
        pairs=[f"{lang}-eng_Latn" for lang in langs],
        encoder=encoder,
        work=args.work,
        margins=args.margins,
        k=args.k,
        threads=args.threads,
        calibration=args.calibration,
        calibrate=args.calibrate,
        keep_candidates=True,
        protocol=args.protocol,
        build=bucc.BuildConfig(size=args.size, gold=args.gold, locale_dir=args.locale_dir, corpus=args.corpus),
    )
    t0 = time.time()
    rows = run_bucc(cfg)
    for r in rows:
        r["wall_s"] = time.time() - t0
    return rows


def bucc_table(rows: list[dict]) -> str:
    by = {}
    for r in rows:
        by.setdefault((r["pair"], r["encoder"]), {})[r["margin"]] = r
    head = (
        "| pair | sentences (src x tgt) / gold | encoder | F1 ratio | F1 cosine | oracle F1 ratio | "
        "oracle F1 cosine | xsim err % ratio | xsim err % cosine | threshold ratio | threshold cosine |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|"
    )
    lines = [head]
    for (pair, enc), m in by.items():
        r, c = m.get("ratio"), m.get("absolute")
        any_ = r or c

        def f1(x):
            return f"{100 * x['test']['f1']:.1f}" if x and "test" in x else "-"

        def oracle(x):
            return f"{100 * x['oracle']['f1']:.1f}" if x else "-"

        def xsim(x):
            return f"{100 * x['xsim_error']:.1f}" if x else "-"

        def thr(x):
            t = x and x.get("test", {}).get("threshold")
            return f"{t:.4f}" if t is not None else "-"

        lines.append(
            f"| {pair} | {any_['n_src']} x {any_['n_tgt']} / {any_['n_gold']} | {enc} | **{f1(r)}** | "
            f"{f1(c)} | {oracle(r)} | {oracle(c)} | {xsim(r)} | {xsim(c)} | {thr(r)} | {thr(c)} |"
        )
    return "\n".join(lines) + "\n"


def unseen_pair_f1(rows: list[dict]) -> None:
    """Add ``unseen``: P/R/F1 at the median of the *other* pairs' tuned cuts (same encoder): what the
    calibrated default gives a language pair that was not calibrated itself."""
    import statistics

    from mining import bucc

    by_enc: dict[str, list[dict]] = {}
    for r in rows:
        if r["margin"] == "ratio" and r.get("tuned_on"):
            by_enc.setdefault(r["encoder"], []).append(r)
    for enc_rows in by_enc.values():
        for r in enc_rows:
            others = [o["test"]["threshold"] for o in enc_rows if o is not r and o["test"]["threshold"] is not None]
            if not others or "candidates" not in r:
                continue
            cut = statistics.median(others)
            r["unseen"] = {**bucc.prf_at(r["candidates"], r["gold_pairs"], cut).as_dict(), "cut": round(cut, 6)}


def default_table(rows: list[dict]) -> str:
    """Ratio margin: F1 at the default cut (what mine-bitext applies with no --threshold) next to the best cut."""
    lines = [
        "| pair | encoder | gold / sentences | default cut (source) | P / R at default | **F1 at default** | "
        "best-cut F1 (cut) | default - best | F1, cut tuned on training | F1, median cut of the other pairs | "
        "xsim err % |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if r["margin"] != "ratio":
            continue
        d, o, c = r["default"], r["oracle"], r["default_cut"]
        cut = "none" if c["value"] is None else f"{c['value']:.4f} ({c['source']})"
        tuned = f"{100 * r['test']['f1']:.1f}" if r.get("tuned_on") else "-"
        unseen = f"{100 * r['unseen']['f1']:.1f}" if "unseen" in r else "-"
        lines.append(
            f"| {r['pair']} | {r['encoder']} | {r['n_gold']} / {r['n_src']}x{r['n_tgt']} | {cut} | "
            f"{100 * d['precision']:.1f} / {100 * d['recall']:.1f} | **{100 * d['f1']:.1f}** | "
            f"{100 * o['f1']:.1f} ({o['threshold'] or 0:.4f}) | {100 * (d['f1'] - o['f1']):+.1f} | {tuned} | "
            f"{unseen} | {100 * r['xsim_error']:.1f} |"
        )
    return "\n".join(lines) + "\n"


def demo_rows(corpus: str, encoder: str, langs: list[str], out: str, threads: int | None) -> list[dict]:
    rows = []
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    if threads:
        env["THREADS"] = str(threads)
    for lang in langs:
        odir = Path(out) / encoder / lang
        t0 = time.time()
        proc = subprocess.run(
            ["bash", str(ROOT / "recipes" / "mine_pair.sh"), corpus, lang, str(odir), encoder], env=env
        )
        if proc.returncode != 0:
            rows.append({"lang": lang, "error": f"mine_pair.sh exited with {proc.returncode}"})
            continue
        res = json.loads((odir / "gold.json").read_text())
        kept = {}
        for side in ("eng_Latn", lang):
            with open(odir / f"{side}.txt", encoding="utf-8") as fh:
                kept[side] = sum(1 for _ in fh)
        meta = odir / "mined.meta.json"
        cut = json.loads(meta.read_text())["threshold"] if meta.is_file() else None
        rows.append({"lang": lang, "encoder": encoder, "seconds": time.time() - t0, "kept": kept, "cut": cut, **res})
    return rows


def demo_table(rows: list[dict], corpus: str) -> str:
    lines = [
        "| pair | mono lines kept (eng / other) | gold | gold left after LID+filters | cut (source) | mined | P | "
        "R | **F1** | oracle F1 (threshold) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| eng_Latn-{r['lang']} | {r['error']} | | | | | | | | |")
            continue
        a, b = r["all"], r["best"]
        mono = Path(corpus) / "mono" / f"eng_Latn-{r['lang']}.eng_Latn"
        with open(mono, encoding="utf-8") as fh:
            n = sum(1 for _ in fh)
        c = r.get("cut") or {}
        cut = "-" if not c else ("none" if c.get("value") is None else f"{c['value']:.4f} ({c['source']})")
        lines.append(
            f"| eng_Latn-{r['lang']} | {r['kept']['eng_Latn']} / {r['kept'][r['lang']]} of {n} | {r['gold']} | "
            f"{r['gold_reachable']} ({100 * r['gold_reachable'] / max(r['gold'], 1):.1f}%) | {cut} | "
            f"{r['mined']} | {100 * a['precision']:.1f} | {100 * a['recall']:.1f} | "
            f"**{100 * a['f1']:.1f}** | {100 * b['f1']:.1f} ({b['threshold'] or 0:.4f}) |"
        )
    return "\n".join(lines) + "\n"


def _csv(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__
    )
    p.add_argument("--encoders", type=_csv, default=["ngram"], help="encoder specs (default: ngram)")
    p.add_argument(
        "--langs",
        type=_csv,
        default=["deu_Latn", "fra_Latn", "rus_Cyrl", "zho_Hans", "xho_Latn", "mya_Mymr", "khk_Cyrl"],
    )
    p.add_argument("--data", default="work/bucc", help="BUCC-format sets (built from the catalogues when missing)")
    p.add_argument("--work", default="work/bucc-eval", help="embedding / k-NN cache")
    p.add_argument("--size", type=int, default=5000, help="sentences per side per split (default: %(default)s)")
    p.add_argument("--gold", type=int, default=500, help="gold pairs per split (default: %(default)s)")
    p.add_argument("--locale-dir", default="/usr/share/locale")
    p.add_argument("--corpus", default=None, help="build the sets from this corpus's mono/ files instead")
    p.add_argument("--margins", type=_csv, default=["ratio", "absolute"])
    p.add_argument("--calibration", default=None, help="calibration file for the default cut (mine-eval bucc)")
    p.add_argument("--calibrate", default=None, help="write each encoder's tuned cuts here (mine-eval bucc)")
    p.add_argument(
        "--protocol",
        default="auto",
        choices=["auto", "split", "kfold"],
        help="mine-eval bucc --protocol: kfold mines the test split only (half the embedding)",
    )
    p.add_argument("--name", default="bucc", help="report name: {out}/{name}.md and .json (default: %(default)s)")
    p.add_argument("--k", type=int, default=4)
    p.add_argument("--threads", type=int, default=None, help="encoder threads (1 on a shared machine)")
    p.add_argument("--demo-corpus", default=None, help="also run recipes/mine_pair.sh on this corpus's mono/ sets")
    p.add_argument("--demo-encoder", default="e5")
    p.add_argument("--demo-langs", type=_csv, default=None, help="default: every language with mono files")
    p.add_argument("--demo-out", default="work/bench-mined", help="recipe outputs (reused on re-run)")
    p.add_argument("--out", default=str(ROOT / "bench" / "out"))
    a = p.parse_args(argv)

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    report = {
        "machine": f"{platform.node()} {platform.machine()}, {os.cpu_count()} cores",
        "command": " ".join(sys.argv),
        "bucc": [],
        "demo": [],
    }
    t0 = time.time()
    for enc in a.encoders:
        print(f"bench: mine-eval bucc --encoder {enc} ({', '.join(a.langs)})", file=sys.stderr)
        report["bucc"] += bucc_rows(enc, a.langs, a)
    unseen_pair_f1(report["bucc"])
    for r in report["bucc"]:
        r.pop("candidates", None)
        r.pop("gold_pairs", None)
    origin = (
        f"the hidden-parallel `mono/` files of {a.corpus} (half of each side are hidden translations)"
        if a.corpus
        else "/usr/share/locale (10% of the sentences of each side are hidden translations)"
    )
    md = [
        f"# Bitext mining on BUCC-style gettext sets\n\n`{report['command']}` on {report['machine']}\n\n"
        f"Sets: `mine-eval bucc-build` from {origin}. Mining: k-NN both ways (FAISS Flat), k=4, max mode. F1 on "
        "`test` at the threshold tuned on `training`; oracle = best threshold on `test`; xsim = error rate on the "
        "gold pairs.\n",
        bucc_table(report["bucc"]),
        "\n## The default cut (ratio margin) against the best cut\n\nDefault = what `mine-bitext` applies without "
        "`--threshold` (`pair`: the pair's calibrated cut, `encoder`: the encoder's median, `fitted`: fitted to "
        "the pair's scores). Best cut = the oracle, tuned on the `test` gold itself. The last columns: the "
        "cut tuned on this pair's `training` split, and the median of the other pairs' tuned cuts (what a pair "
        "nobody calibrated gets).\n",
        default_table(report["bucc"]),
    ]
    if a.demo_corpus:
        from mining.bucc import corpus_langs

        langs = a.demo_langs or corpus_langs(a.demo_corpus)
        print(
            f"bench: recipes/mine_pair.sh on {a.demo_corpus} with {a.demo_encoder} ({', '.join(langs)})",
            file=sys.stderr,
        )
        report["demo"] = demo_rows(a.demo_corpus, a.demo_encoder, langs, a.demo_out, a.threads)
        md += [
            f"\n## Mined pairs of the demo corpus (`recipes/mine_pair.sh`, encoder {a.demo_encoder})\n\n"
            "LID -> mine-filter -> mine-embed -> mine-knn -> mine-bitext (ratio margin, max mode, default "
            "threshold) on the hidden-parallel `mono/` files, scored with `mine-eval gold` against "
            "`.gold.tsv`; recall counts every gold pair, also those LID or the filters dropped.\n",
            demo_table(report["demo"], a.demo_corpus),
        ]
    report["seconds"] = time.time() - t0
    (out / f"{a.name}.json").write_text(json.dumps(report, indent=1, ensure_ascii=False))
    (out / f"{a.name}.md").write_text("\n".join(md))
    print("\n".join(md))
    print(f"bench: {out / a.name}.md ({report['seconds']:.0f}s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
