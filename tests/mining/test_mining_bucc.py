"""BUCC-style benchmark: the set builders (catalogues, corpus mono files), the scorer (P/R/F1, best
threshold, xsim) and the end-to-end ``mine-eval bucc`` run with the n-gram baseline encoder.
(The .mo reader and the cleaning rules the catalogue builder uses are tested in test_corpus_*.)"""

import json

import numpy as np
import pytest
from _mo_writer import write_mo

from mining import bucc
from mining.cli import eval_main
from mining.encoders import load_encoder
from mining.encoders.ngram import NgramEncoder
from mining.evaluate import read_candidates
from mt.common.errors import UserError

cli = eval_main.__wrapped__  # without cli_entry: a UserError is raised, not turned into exit status 2

# A fake catalogue tree: German translates E0..E99, French E100..E199 (the English-only sentences).
WORDS = ["alpha", "bravo", "delta", "gamma", "sigma", "omega", "kappa", "lambda"]


def english(i):
    return f"Open the record {WORDS[i % 8]} number zq{i:03d} now"


def german(i):
    return f"Öffne den Eintrag {WORDS[i % 8]} Nummer zq{i:03d} jetzt"


@pytest.fixture
def locale_dir(tmp_path):
    root = tmp_path / "locale"
    de = [(english(i), german(i)) for i in range(100)]
    de += [("%s: %s", "%s: %s")]  # only placeholders: dropped by the cleaning rules
    write_mo(root / "de" / "LC_MESSAGES" / "app.mo", de)
    fr = [(english(i), f"Ouvrir la fiche {i}") for i in range(100, 200)]
    write_mo(root / "fr" / "LC_MESSAGES" / "app.mo", fr)
    return root


def read_tsv(path):
    return [line.rstrip("\n").split("\t") for line in open(path, encoding="utf-8")]


def test_builder_writes_bucc_files_with_hidden_gold(tmp_path, locale_dir):
    cfg = bucc.BuildConfig(out=str(tmp_path / "bucc"), langs=["deu_Latn"], size=40, gold=10, locale_dir=str(locale_dir))
    info = bucc.build(cfg, progress=False)
    assert info["pairs"]["deu_Latn-eng_Latn"]["usable_pairs"] == 100
    seen_en = {}
    for split in ("training", "test"):
        f = bucc.bucc_files(tmp_path / "bucc", "deu_Latn", "eng_Latn", split)
        assert f["src"].name == f"deu_Latn-eng_Latn.{split}.deu_Latn" and f["gold"].name.endswith(".gold")
        src, tgt, gold = dict(read_tsv(f["src"])), dict(read_tsv(f["tgt"])), read_tsv(f["gold"])
        assert len(src) == len(tgt) == 40 and len(gold) == 10
        assert all(i.startswith("deu-") for i in src) and all(i.startswith("eng-") for i in tgt)
        for s, t in gold:  # every gold pair is a real catalogue translation
            i = int(tgt[t].split("zq")[1][:3])
            assert tgt[t] == english(i) and src[s] == german(i)
        gold_src = {s for s, _ in gold}
        en_side = set(tgt.values())
        for sid, text in src.items():  # a foreign sentence outside the gold has no translation on the English side
            if sid not in gold_src:
                assert english(int(text.split("zq")[1][:3])) not in en_side
        seen_en[split] = en_side
        # the gold is hidden: gold pairs are not all at the top of the files
        assert sorted(int(s.split("-")[1]) for s, _ in gold) != list(range(1, 11))
    assert not seen_en["training"] & seen_en["test"]  # disjoint splits


def test_builder_errors(tmp_path, locale_dir):
    with pytest.raises(UserError, match="no gettext locale maps to 'tlh_Latn'"):
        bucc.build(bucc.BuildConfig(out=str(tmp_path / "b"), langs=["tlh_Latn"], locale_dir=str(locale_dir)))
    with pytest.raises(UserError, match="no .mo catalogues for rus_Cyrl .languages there: deu_Latn, fra_Latn"):
        bucc.build(bucc.BuildConfig(out=str(tmp_path / "b"), langs=["rus_Cyrl"], locale_dir=str(locale_dir)))


def test_scorer_on_a_hand_made_set():
    gold = {("a1", "b1"), ("a2", "b2"), ("a3", "b3")}
    cands = [(0.9, "a1", "b1"), (0.8, "a2", "b9"), (0.7, "a2", "b2"), (0.6, "a4", "b4"), (0.5, "a1", "b1")]
    # at 0.75: extracted a1-b1, a2-b9 -> 1 correct of 2; recall 1/3; F1 = 2 * .5 * .333 / .833 = 0.4
    at = bucc.prf_at(cands, gold, 0.75)
    assert (at.extracted, at.correct) == (2, 1)
    assert at.precision == pytest.approx(0.5) and at.recall == pytest.approx(1 / 3) and at.f1 == pytest.approx(0.4)
    # cut after 1: P 1, R 1/3, F1 .5; after 2: .4; after 3: P 2/3, R 2/3, F1 2/3; after 4: P .5, R 2/3, F1 .571
    best = bucc.best_threshold(cands, gold)
    assert best.f1 == pytest.approx(2 / 3)
    assert best.threshold == pytest.approx(0.65)  # midway between 0.7 and 0.6, as LASER
    assert bucc.prf_at(cands, gold, best.threshold).f1 == pytest.approx(2 / 3)
    assert bucc.prf_at([], gold, 0.5).f1 == 0.0


def test_xsim_error_cosine_vs_margin():
    # cosine: x1 = (.6, .8, 0) is closer to y0 = (.8, .6, 0) (.96) than to its translation y1 (.8): 1 error of 3
    # ratio margin, k = 2: x1-y0 = .96 / .88 = 1.09, x1-y1 = .8 / .64 = 1.25 -> correct, no error
    x = np.array([[1, 0, 0], [0.6, 0.8, 0], [0, 0, 1]], np.float32)
    y = np.array([[0.8, 0.6, 0], [0, 1, 0], [0, 0, 1]], np.float32)
    assert bucc.xsim_error(x, y, "cosine") == pytest.approx(1 / 3)
    assert bucc.xsim_error(x, y, "ratio", k=2) == 0.0
    with pytest.raises(UserError, match="equal shape"):
        bucc.xsim_error(x, y[:2])


def test_read_set_and_candidates_formats(tmp_path):
    d = tmp_path / "b"
    d.mkdir()
    (d / "de-en.test.de").write_text("de-1\tHallo\nde-2\tWelt\nde-3\tWelt\n")
    (d / "de-en.test.en").write_text("en-1\tHello\nen-2\tworld\n")
    (d / "de-en.test.gold").write_text("de-1\ten-1\n")
    ds = bucc.read_set(d, "de", "en", "test")
    assert ds.gold == {("de-1", "en-1")}
    (tmp_path / "ids.tsv").write_text("de-1\ten-1\nde-2\ten-2\n")
    assert read_candidates(tmp_path / "ids.tsv", ds) == [(1.0, "de-1", "en-1"), (1.0, "de-2", "en-2")]
    # mined TSV: sentences mapped back to ids; "Welt" occurs twice on the German side, so it is dropped
    (tmp_path / "mined.tsv").write_text("1.3\tHallo\tHello\n1.1\tWelt\tworld\n")
    assert read_candidates(tmp_path / "mined.tsv", ds) == [(1.3, "de-1", "en-1")]
    (d / "de-en.test.gold").write_text("de-1\ten-7\n")
    with pytest.raises(UserError, match="de-en.test.gold:1: target id 'en-7' is not in the target file"):
        bucc.read_set(d, "de", "en", "test")
    (d / "de-en.test.en").write_text("en-1 Hello\n")
    with pytest.raises(UserError, match="de-en.test.en:1: expected id<TAB>sentence"):
        bucc.read_set(d, "de", "en", "test")


def test_ngram_encoder_is_normalised_and_finds_shared_strings():
    enc = load_encoder("ngram:512")
    assert isinstance(enc, NgramEncoder) and enc.dim == 512 and enc.name == "ngram:512"
    assert load_encoder("ngram").dim == 1024
    with pytest.raises(UserError, match="expected ngram or ngram:DIM"):
        load_encoder("ngram:big")
    e = enc.encode(["Open record zq017 now", "Öffne Eintrag zq017 jetzt", "Öffne Eintrag zq018 jetzt", ""], "x")
    assert e.shape == (4, 512) and e.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(e[:3], axis=1), 1.0, rtol=1e-5)
    assert not e[3].any()
    assert e[0] @ e[1] > e[0] @ e[2]


def test_mine_eval_bucc_end_to_end(tmp_path, locale_dir, capsys):
    rc = cli(
        [
            "bucc",
            "--encoder",
            "ngram",
            "--pairs",
            "deu_Latn",
            "--data",
            str(tmp_path / "bucc"),
            "--work",
            str(tmp_path / "work"),
            "--size",
            "40",
            "--gold",
            "10",
            "--locale-dir",
            str(locale_dir),
            "--threshold",
            "1.0",
        ]
    )
    assert rc == 0
    report = json.loads((tmp_path / "work" / "ngram" / "report.json").read_text())
    rows = {r["margin"]: r for r in report["results"]}
    assert set(rows) == {"ratio", "absolute"}
    ratio = rows["ratio"]
    assert ratio["n_gold"] == 10 and ratio["tuned_on"] == "training"
    # the translations share a code (zq017): the n-gram baseline with the margin finds almost all of them
    assert ratio["test"]["f1"] >= 0.8 and ratio["oracle"]["f1"] >= ratio["test"]["f1"]
    assert ratio["xsim_error"] <= 0.2
    assert "fixed" in ratio and ratio["fixed"]["threshold"] == 1.0
    out = capsys.readouterr()
    assert "| deu_Latn-eng_Latn | ngram | ratio | max |" in out.out and "using the set already" not in out.err
    # re-running reuses the embeddings and k-NN results (cache under --work), and the set built at --size 40
    # --gold 10 though the defaults differ now: it says so
    emb = tmp_path / "work" / "ngram" / "deu_Latn-eng_Latn.test.deu_Latn.0000.npy"
    before = emb.stat().st_mtime_ns
    cli(
        [
            "bucc",
            "--encoder",
            "ngram",
            "--pairs",
            "deu_Latn-eng_Latn",
            "--data",
            str(tmp_path / "bucc"),
            "--work",
            str(tmp_path / "work"),
            "--locale-dir",
            str(locale_dir),
        ]
    )
    assert emb.stat().st_mtime_ns == before
    err = capsys.readouterr().err
    assert "deu_Latn-eng_Latn: using the set already in" in err and "built with --size 40 --gold 10;" in err


def test_mine_eval_score_command(tmp_path, locale_dir, capsys):
    bucc.build(
        bucc.BuildConfig(out=str(tmp_path / "b"), langs=["deu_Latn"], size=40, gold=10, locale_dir=str(locale_dir)),
        progress=False,
    )
    gold = (tmp_path / "b" / "deu_Latn-eng_Latn.test.gold").read_text().splitlines()
    (tmp_path / "c.tsv").write_text("\n".join(gold[:5]) + "\n")  # half the gold, nothing wrong
    cli(
        [
            "bucc-score",
            "--data",
            str(tmp_path / "b"),
            "--pair",
            "deu_Latn-eng_Latn",
            "--candidates",
            str(tmp_path / "c.tsv"),
        ]
    )
    out = json.loads(capsys.readouterr().out)
    assert out["best"]["precision"] == 1.0 and out["best"]["recall"] == 0.5


def test_kfold_never_scores_a_fold_at_its_own_threshold():
    # 40 sources; gold pairs score 0.9, each source also has a wrong candidate at 0.5
    gold = {(f"s{i}", f"t{i}") for i in range(40)}
    cands = [(0.9, f"s{i}", f"t{i}") for i in range(40)] + [(0.5, f"s{i}", f"u{i}") for i in range(40)]
    res, thresholds = bucc.kfold_prf(cands, gold, folds=4)
    assert len(thresholds) == 4 and all(0.5 < t <= 0.9 for t in thresholds)
    assert res.f1 == 1.0 and res.extracted == 40
    # a gold pair below every wrong one: the cut tuned on the other folds leaves it out; counts are pooled
    low = cands + [(0.1, "s99", "t99")]
    res2, _ = bucc.kfold_prf(low, gold | {("s99", "t99")}, folds=4)
    assert res2.correct == 40 and res2.recall == pytest.approx(40 / 41)
    with pytest.raises(UserError, match="at least 2 folds"):
        bucc.kfold_prf(cands, gold, folds=1)


def test_mine_eval_bucc_says_how_the_threshold_was_chosen(tmp_path, locale_dir, capsys):
    common = [
        "bucc",
        "--encoder",
        "ngram",
        "--pairs",
        "deu_Latn",
        "--data",
        str(tmp_path / "bucc"),
        "--work",
        str(tmp_path / "work"),
        "--size",
        "40",
        "--gold",
        "10",
        "--locale-dir",
        str(locale_dir),
        "--margins",
        "ratio",
    ]
    assert cli(common) == 0
    out = capsys.readouterr().out
    assert "threshold tuned on the `training` gold" in out and "| tuned on training |" in out
    assert "oracle = the best threshold on the `test` gold itself" in out
    # only a test split: no silent oracle, a k-fold result labelled as such, with P/R/F1 filled in
    for f in (tmp_path / "bucc").glob("*.training.*"):
        f.unlink()
    assert cli(common) == 0
    out = capsys.readouterr().out
    assert "| 5-fold on test |" in out and "tuned on training" not in out
    report = json.loads((tmp_path / "work" / "ngram" / "report.json").read_text())
    row = report["results"][0]
    assert row["protocol"]["name"] == "kfold" and len(row["protocol"]["fold_thresholds"]) == 5
    assert row["test"]["f1"] > 0 and "tuned_on" not in row
    md = (tmp_path / "work" / "ngram" / "report.md").read_text()
    assert "5-fold on `test`" in md and "Threshold tuned on `training`" not in md
    with pytest.raises(UserError, match="no deu_Latn-eng_Latn.training.gold"):
        cli(common + ["--protocol", "split"])


def test_mine_eval_bucc_calibrates_the_default_cut(tmp_path, locale_dir, capsys):
    """--calibrate writes the encoder's tuned cut (training split) to a file; with --calibration that file's
    cut is the default mine-bitext applies, reported next to the best cut."""
    from mining.calibration import read_calibration

    common = [
        "bucc",
        "--encoder",
        "ngram",
        "--pairs",
        "deu_Latn",
        "--data",
        str(tmp_path / "bucc"),
        "--work",
        str(tmp_path / "work"),
        "--size",
        "40",
        "--gold",
        "10",
        "--locale-dir",
        str(locale_dir),
        "--margins",
        "ratio",
    ]
    cal = tmp_path / "cal.json"
    assert cli(common + ["--calibrate", str(cal)]) == 0
    entry = read_calibration(cal)["encoders"]["ngram"]
    pair = entry["pairs"]["deu_Latn-eng_Latn"]
    report = json.loads((tmp_path / "work" / "ngram" / "report.json").read_text())
    row = report["results"][0]
    assert pair["cut"] == row["test"]["threshold"] and pair["gold"] == 10 and entry["default"] == pair["cut"]
    capsys.readouterr()
    assert cli(common + ["--calibration", str(cal)]) == 0
    row = json.loads((tmp_path / "work" / "ngram" / "report.json").read_text())["results"][0]
    assert row["default_cut"]["value"] == entry["default"] and row["default_cut"]["source"] == "encoder"
    assert row["default"] == row["test"]  # the same cut: the one tuned on training
    assert f"| {entry['default']:.4f} (encoder) |" in capsys.readouterr().out
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(UserError, match="bad.json: not a calibration file"):
        cli(common + ["--calibration", str(tmp_path / "bad.json")])
