"""Mining on a built corpus: BUCC sets from its mono/ files (``--corpus``), ``mine-eval gold``, and the
end-to-end ``recipes/mine_pair.sh`` (LID -> filter -> embed -> k-NN -> margin -> score) with ngram.

The corpus is built by the real ``mt-data build gettext`` from a tiny locale tree written here:
``xh`` translates English sentences (word by word, so the n-gram encoder can match them), ``de`` holds
German sentences as its msgids, so German lines turn up among the English distractors of the mono set
and LID drops them: gold scoring must go through the surviving line numbers.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
from _mo_writer import write_mo

from mining import bucc
from mining.cli import eval_main
from mining.evaluate import GoldScoreConfig, score_against_gold
from mt.common.errors import UserError
from mt.data.gettext_corpus import GettextConfig, build_gettext_corpus

cli = eval_main.__wrapped__  # without cli_entry: a UserError is raised, not turned into exit status 2

ROOT = Path(__file__).resolve().parents[2]
ADJ = "red green blue small large old new empty hidden open".split()
NOUN = "file window folder printer document picture account device network message".split()
VERB = "was saved was closed was deleted was moved was printed was shared was found was opened".split(" was ")
ADV = "quickly again today yesterday safely twice silently automatically".split()
DE_NOUN = "Datei Fenster Ordner Drucker Dokument Bild Konto Gerät Netzwerk Nachricht".split()
DE_VERB = "wurde gespeichert|wurde geschlossen|wurde gelöscht|wurde verschoben|wurde gedruckt".split("|")
DE_ADV = "schnell wieder heute gestern sicher zweimal leise automatisch".split()


def english(i: int) -> str:
    a, n, v, d = ADJ[i % 10], NOUN[(i // 10) % 10], VERB[(i // 100) % 8], ADV[(i * 7) % 8]
    return f"The {a} {n} {'was ' + v if not v.startswith('was') else v} {d}"


def xhosa(text: str) -> str:
    return " ".join("uku" + w.lower() for w in text.split())


def german(i: int) -> str:
    return f"Die {DE_NOUN[i % 10]} {DE_VERB[(i // 10) % 5]} {DE_ADV[(i // 50) % 8]} und niemand hat es bemerkt"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    tree = tmp_path_factory.mktemp("locale")
    en = sorted({english(i) for i in range(800)})
    random.Random(0).shuffle(en)
    write_mo(tree / "xh" / "LC_MESSAGES" / "app.mo", [(e, xhosa(e)) for e in en[:300]])
    # de: German msgids (land among the English distractors), plus English strings xh does not translate
    de = [(german(i), f"Übersetzung {german(i)} fertig") for i in range(400)]
    de += [(e, f"Deutsch {e} fertig") for e in en[300:500]]
    write_mo(tree / "de" / "LC_MESSAGES" / "app.mo", de)
    out = tmp_path_factory.mktemp("corpus")
    build_gettext_corpus(
        GettextConfig(
            out=str(out),
            locale_dir=str(tree),
            langs=["xho_Latn", "deu_Latn"],
            dev_size=10,
            devtest_size=10,
            mono_size=60,
            mono_max_fraction=0.5,
            min_pairs=20,
            workers=1,
            progress=False,
        )
    )
    return out


def mono(corpus: Path, side: str) -> list[str]:
    return (corpus / "mono" / f"eng_Latn-xho_Latn.{side}").read_text(encoding="utf-8").splitlines()


def gold_of(corpus: Path) -> set[tuple[int, int]]:
    rows = (corpus / "mono" / "eng_Latn-xho_Latn.gold.tsv").read_text().split("\n")
    return {tuple(int(x) for x in r.split("\t")) for r in rows if r}


def test_corpus_has_german_distractors_on_the_english_side(corpus):
    eng = mono(corpus, "eng_Latn")
    assert len(gold_of(corpus)) == 60
    assert sum(line.startswith("Die ") for line in eng) >= 5  # what LID will drop


def test_bucc_sets_from_corpus_mono(corpus, tmp_path):
    info = bucc.build(
        bucc.BuildConfig(out=str(tmp_path / "b"), langs=["all"], corpus=str(corpus), seed=3), progress=False
    )
    assert set(info["pairs"]) == {"xho_Latn-eng_Latn", "deu_Latn-eng_Latn"}
    assert info["pairs"]["xho_Latn-eng_Latn"]["source"] == f"corpus:{corpus.resolve()}"
    eng, xho, gold = mono(corpus, "eng_Latn"), mono(corpus, "xho_Latn"), gold_of(corpus)
    seen_e, seen_x, seen_gold = [], [], set()
    for split in bucc.SPLITS:
        ds = bucc.read_set(tmp_path / "b", "xho_Latn", "eng_Latn", split)
        # an id is the 1-based line of the mono file, and the sentence is that line
        rows_x = [int(i.split("-")[1]) - 1 for i in ds.src_ids]
        rows_e = [int(i.split("-")[1]) - 1 for i in ds.tgt_ids]
        assert [xho[r] for r in rows_x] == ds.src_sents and [eng[r] for r in rows_e] == ds.tgt_sents
        assert rows_x == sorted(rows_x) and ds.src_ids[0].startswith("xho-") and ds.tgt_ids[0].startswith("eng-")
        split_gold = {(int(t.split("-")[1]) - 1, int(s.split("-")[1]) - 1) for s, t in ds.gold}
        assert split_gold <= gold and len(split_gold) == 30  # gold dealt evenly, pairs kept whole
        seen_e += rows_e
        seen_x += rows_x
        seen_gold |= split_gold
    # every line in exactly one split, every gold pair in one
    assert sorted(seen_e) == list(range(len(eng))) and sorted(seen_x) == list(range(len(xho)))
    assert seen_gold == gold
    with pytest.raises(UserError, match="no hidden-parallel set for fra_Latn"):
        bucc.build(bucc.BuildConfig(out=str(tmp_path / "b"), langs=["fra_Latn"], corpus=str(corpus)))
    with pytest.raises(UserError, match="no mono/ folder"):
        bucc.build(bucc.BuildConfig(out=str(tmp_path / "c"), langs=["all"], corpus=str(tmp_path)))


def test_mine_eval_bucc_on_corpus_and_origin_check(corpus, tmp_path, capsys):
    data, work = tmp_path / "data", tmp_path / "work"
    rc = cli(
        [
            "bucc",
            "--corpus",
            str(corpus),
            "--data",
            str(data),
            "--work",
            str(work),
            "--encoder",
            "ngram:512",
            "--pairs",
            "xho_Latn",
        ]
    )
    assert rc == 0
    rows = {r["margin"]: r for r in json.loads((work / "ngram_512" / "report.json").read_text())["results"]}
    assert rows["ratio"]["n_gold"] == 30 and rows["ratio"]["tuned_on"] == "training"
    assert rows["ratio"]["test"]["f1"] >= 0.8  # word-by-word "translations": easy for the n-gram encoder
    capsys.readouterr()
    # the same data folder cannot silently serve sets of another origin
    with pytest.raises(UserError, match="was built from corpus:.*not gettext:"):
        cli(["bucc", "--data", str(data), "--work", str(work), "--encoder", "ngram:512", "--pairs", "xho_Latn"])
    # a changed set (other seed, rebuilt in place) is re-embedded, not read from the stale cache
    emb = work / "ngram_512" / "xho_Latn-eng_Latn.test.xho_Latn.txt"
    before = emb.read_text(encoding="utf-8")
    cli(["bucc-build", "--corpus", str(corpus), "--out", str(data), "--langs", "xho_Latn", "--seed", "99"])
    cli(
        [
            "bucc",
            "--corpus",
            str(corpus),
            "--data",
            str(data),
            "--work",
            str(work),
            "--encoder",
            "ngram:512",
            "--pairs",
            "xho_Latn",
        ]
    )
    ds = bucc.read_set(data, "xho_Latn", "eng_Latn", "test")
    assert emb.read_text(encoding="utf-8") != before
    assert emb.read_text(encoding="utf-8").splitlines() == ds.src_sents


def _write(path: Path, lines) -> Path:
    path.write_text("".join(f"{x}\n" for x in lines), encoding="utf-8")
    return path


def test_gold_score_maps_through_line_numbers(tmp_path):
    # original files: src lines 0..5, tgt lines 0..4; gold (src, tgt) = (0, 3), (2, 0), (4, 4), (5, 1)
    _write(tmp_path / "gold.tsv", ["0\t3", "2\t0", "4\t4", "5\t1"])
    # the filters kept src lines 0, 2, 3, 5 and tgt lines 0, 1, 3 (tgt 4 dropped: gold (4, 4) unreachable)
    _write(tmp_path / "s.txt", ["s0", "s2", "s3", "dup"])
    _write(tmp_path / "s.lines", [0, 2, 3, 5])
    _write(tmp_path / "t.txt", ["t0", "dup t", "t3"])
    _write(tmp_path / "t.lines", [0, 1, 3])
    _write(tmp_path / "mined.tsv", ["1.30\ts0\tt3", "1.20\ts2\tt0", "1.10\ts3\tdup t", "1.05\tdup\tdup t"])
    cfg = GoldScoreConfig(
        mined=str(tmp_path / "mined.tsv"),
        gold=str(tmp_path / "gold.tsv"),
        src_text=str(tmp_path / "s.txt"),
        tgt_text=str(tmp_path / "t.txt"),
        src_line_numbers=str(tmp_path / "s.lines"),
        tgt_line_numbers=str(tmp_path / "t.lines"),
        threshold=1.15,
    )
    res = score_against_gold(cfg)
    # correct: s0-t3 (0, 3), s2-t0 (2, 0), dup-"dup t" (5, 1); wrong: s3-"dup t" (3, 1)
    assert res["gold"] == 4 and res["gold_reachable"] == 3 and res["mined"] == 4
    assert (res["all"]["correct"], res["all"]["extracted"]) == (3, 4)
    assert res["all"]["precision"] == pytest.approx(0.75) and res["all"]["recall"] == pytest.approx(0.75)
    assert (res["at_threshold"]["correct"], res["at_threshold"]["extracted"]) == (2, 2)
    assert res["best"]["f1"] == pytest.approx(0.75)
    # without the line numbers the same mined pairs score differently: the mapping matters
    plain = score_against_gold(
        GoldScoreConfig(mined=cfg.mined, gold=cfg.gold, src_text=cfg.src_text, tgt_text=cfg.tgt_text)
    )
    assert plain["all"]["correct"] != 3
    # a sentence that is not in the text, a wrong number of line numbers
    _write(tmp_path / "bad.tsv", ["1.0\tnowhere\tt0"])
    with pytest.raises(UserError, match=r"bad.tsv:1: the source sentence is not a line of --src-text"):
        score_against_gold(
            GoldScoreConfig(
                mined=str(tmp_path / "bad.tsv"), gold=cfg.gold, src_text=cfg.src_text, tgt_text=cfg.tgt_text
            )
        )
    _write(tmp_path / "short.lines", [0, 2])
    with pytest.raises(UserError, match="short.lines: only 2 line numbers for a longer input"):
        score_against_gold(
            GoldScoreConfig(
                mined=cfg.mined,
                gold=cfg.gold,
                src_text=cfg.src_text,
                tgt_text=cfg.tgt_text,
                src_line_numbers=str(tmp_path / "short.lines"),
            )
        )


@pytest.mark.slow
def test_mine_pair_recipe_end_to_end(corpus, tmp_path):
    out = tmp_path / "mined"
    # THREADS reaches every step: faiss's default would be OMP_NUM_THREADS (2)
    env = dict(
        os.environ,
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        OMP_NUM_THREADS="2",
        THREADS="1",
    )
    cmd = ["bash", str(ROOT / "recipes" / "mine_pair.sh"), str(corpus), "xho_Latn", str(out), "ngram:512"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "(1 faiss thread)" in proc.stderr
    eng, xho, gold = mono(corpus, "eng_Latn"), mono(corpus, "xho_Latn"), gold_of(corpus)
    kept_e = [int(x) for x in (out / "eng_Latn.lines").read_text().split()]
    assert len(kept_e) < len(eng)  # LID dropped the German lines: the line numbers are not the identity
    assert all(not eng[i].startswith("Die ") for i in kept_e)
    assert (out / "eng_Latn.txt").read_text(encoding="utf-8").splitlines() == [eng[i] for i in kept_e]
    rows = [r.split("\t") for r in (out / "mined.tsv").read_text(encoding="utf-8").splitlines()]
    cut = json.loads((out / "mined.meta.json").read_text())["threshold"]
    assert cut["source"] in ("fitted", "none") and "threshold" in proc.stderr  # ngram:512 is not calibrated
    assert rows and all(float(r[0]) >= (cut["value"] or float("-inf")) for r in rows)
    # the two-file form for mt-preprocess is line-aligned with the TSV
    assert (out / "mined.eng_Latn").read_text(encoding="utf-8").splitlines() == [r[1] for r in rows]
    assert (out / "mined.xho_Latn").read_text(encoding="utf-8").splitlines() == [r[2] for r in rows]
    # score it independently: sentences are unique in this corpus, so text -> original line is exact
    e_line, x_line = {s: i for i, s in enumerate(eng)}, {s: j for j, s in enumerate(xho)}
    correct = sum((e_line[s], x_line[t]) in gold for _, s, t in rows)
    res = json.loads((out / "gold.json").read_text())
    assert res["gold"] == len(gold) and res["mined"] == len(rows)
    assert res["all"]["correct"] == correct and res["all"]["recall"] == pytest.approx(correct / len(gold), abs=1e-6)
    assert res["all"]["f1"] >= 0.7
    # a re-run skips every step
    stamp = (out / "mined.tsv").stat().st_mtime_ns
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert proc.returncode == 0 and "=== " not in proc.stderr
    assert (out / "mined.tsv").stat().st_mtime_ns == stamp


def test_mine_embed_meta_feeds_mine_bitext_defaults(tmp_path, monkeypatch):
    """mine-embed records 'source' (absolute) and 'lang'; mine-bitext finds the texts and the pair-file
    names from them when --src-text / --src-lang are not given (relative paths, another working dir)."""
    from mining.cli import bitext_main, embed_main, knn_main

    en = [english(i) for i in range(0, 400, 7)]
    xh = [xhosa(s) for s in reversed(en)]
    monkeypatch.chdir(tmp_path)
    _write(tmp_path / "en.txt", en)
    _write(tmp_path / "xh.txt", xh)
    for name, lang in (("en", "eng_Latn"), ("xh", "xho_Latn")):
        assert (
            embed_main(
                [
                    "--encoder",
                    "ngram:256",
                    "--lang",
                    lang,
                    "--input",
                    f"{name}.txt",
                    "--output",
                    f"emb/{name}",
                    "--no-progress-bar",
                ]
            )
            == 0
        )
        meta = json.loads((tmp_path / "emb" / f"{name}.meta.json").read_text())
        assert meta["lang"] == lang and meta["source"] == str(tmp_path / f"{name}.txt")
    assert knn_main(["--src-emb", "emb/en", "--tgt-emb", "emb/xh", "--out-dir", "knn"]) == 0
    monkeypatch.chdir(tmp_path / "emb")  # the texts are found through the absolute 'source'
    assert (
        bitext_main(["--knn-dir", "../knn", "--out", "../mined.tsv", "--threshold", "1.0", "--pair-prefix", "../train"])
        == 0
    )
    rows = [r.split("\t") for r in (tmp_path / "mined.tsv").read_text(encoding="utf-8").splitlines()]
    assert sum(xhosa(s) == t for _, s, t in rows) >= 0.9 * len(en)
    assert (tmp_path / "train.eng_Latn").read_text(encoding="utf-8").splitlines() == [r[1] for r in rows]
    assert (tmp_path / "train.xho_Latn").read_text(encoding="utf-8").splitlines() == [r[2] for r in rows]
