"""Margin scoring: formulas checked against hand-computed values, each mining mode on a constructed case,
threshold, deduplication, output files and the mine-bitext CLI."""

import numpy as np
import pytest
from mining_helpers import write_knn

from mining.bitext import write_bitext
from mining.cli import bitext_main
from mining.knn import KnnSet
from mining.margin import MarginConfig, margin_fn, margin_scores, mine
from mt.common.errors import UserError

cli = bitext_main.__wrapped__  # without cli_entry: a UserError is raised, not turned into exit status 2

# A constructed 3 x 3 case (k = 2). Cosine similarities:
#          y0    y1    y2
#   x0   0.90  0.80  0.10
#   x1   0.85  0.30  0.20
#   x2   0.10  0.20  0.60
# y0 is a "hub": by plain cosine both x0 and x1 want it. Neighbour lists, best first:
#   x0: y0 .90, y1 .80 (mean .85)    y0: x0 .90, x1 .85 (mean .875)
#   x1: y0 .85, y1 .30 (mean .575)   y1: x0 .80, x1 .30 (mean .55)
#   x2: y2 .60, y1 .20 (mean .40)    y2: x2 .60, x1 .20 (mean .40)
FWD_IDS, FWD_SIMS = [[0, 1], [0, 1], [2, 1]], [[0.9, 0.8], [0.85, 0.3], [0.6, 0.2]]
BWD_IDS, BWD_SIMS = [[0, 1], [0, 1], [2, 1]], [[0.9, 0.85], [0.8, 0.3], [0.6, 0.2]]

# Ratio margins by hand: cos / ((mean_x + mean_y) / 2)
#   x0-y0: .90 / ((.85 + .875) / 2 = .8625) = 1.0434783     x0-y1: .80 / ((.85 + .55) / 2 = .70) = 1.1428571
#   x1-y0: .85 / ((.575 + .875) / 2 = .725) = 1.1724138     x1-y1: .30 / ((.575 + .55) / 2 = .5625) = 0.5333333
#   x2-y2: .60 / ((.40 + .40) / 2 = .40) = 1.5              x2-y1: .20 / ((.40 + .55) / 2 = .475) = 0.4210526
#   x1-y2 (backward from y2): .20 / ((.575 + .40) / 2 = .4875) = 0.4102564
RATIO = {
    (0, 0): 0.9 / 0.8625,
    (0, 1): 0.8 / 0.7,
    (1, 0): 0.85 / 0.725,
    (1, 1): 0.3 / 0.5625,
    (2, 2): 1.5,
    (2, 1): 0.2 / 0.475,
    (1, 2): 0.2 / 0.4875,
}


@pytest.fixture
def knn(tmp_path):
    fwd = KnnSet.open(write_knn(tmp_path / "src2tgt", FWD_IDS, FWD_SIMS, ntotal=3))
    bwd = KnnSet.open(write_knn(tmp_path / "tgt2src", BWD_IDS, BWD_SIMS, ntotal=3, shard_rows=2))
    return fwd, bwd


def pairs(al):
    return [(int(i), int(j)) for i, j in zip(al.src, al.tgt)]


def test_margin_functions_on_a_hand_computed_example():
    # cos(x, y) = 0.9; x's 2 neighbours: 0.9, 0.5; y's: 0.9, 0.7
    # b = (0.9 + 0.5) / (2 * 2) + (0.9 + 0.7) / (2 * 2) = 0.35 + 0.40 = 0.75
    a, b = np.float32(0.9), np.float32(0.75)
    assert margin_fn("ratio", a, b) == pytest.approx(1.2, abs=1e-6)
    assert margin_fn("distance", a, b) == pytest.approx(0.15, abs=1e-6)
    assert margin_fn("absolute", a, b) == pytest.approx(0.9, abs=1e-6)
    assert margin_fn("cosine", a, b) == pytest.approx(0.9, abs=1e-6)
    sc = margin_scores(
        np.array([[0.9, 0.8]]),
        np.array([[0, 1]]),
        np.array([0.7], np.float32),
        np.array([0.8, 0.6], np.float32),
        "ratio",
    )
    # second candidate: 0.8 / ((0.7 + 0.6) / 2 = 0.65) = 1.2307692
    np.testing.assert_allclose(sc, [[0.9 / 0.75, 0.8 / 0.65]], rtol=1e-6)
    with pytest.raises(UserError, match="unknown margin"):
        margin_fn("cos", a, b)


def test_forward_ratio_scores_by_hand(knn):
    al = mine(*knn, MarginConfig("ratio", "forward", threshold=float("-inf")))
    # best per source: x0 -> y1 (1.143 > 1.043), x1 -> y0 (1.172), x2 -> y2 (1.5); sorted by score
    assert pairs(al) == [(2, 2), (1, 0), (0, 1)]
    np.testing.assert_allclose(al.scores, [RATIO[2, 2], RATIO[1, 0], RATIO[0, 1]], rtol=1e-6)


def test_distance_margin_by_hand(knn):
    al = mine(*knn, MarginConfig("distance", "forward", threshold=float("-inf")))
    # x0-y0: .9 - .8625 = .0375; x0-y1: .8 - .7 = .1 -> y1; x1-y0: .85 - .725 = .125; x2-y2: .6 - .4 = .2
    assert pairs(al) == [(2, 2), (1, 0), (0, 1)]
    np.testing.assert_allclose(al.scores, [0.2, 0.125, 0.1], atol=1e-6)


@pytest.mark.parametrize(
    "mode,expected",
    [
        # plain cosine: x0 -> y0, x1 -> y0 (the hub), x2 -> y2 ...
        ("forward", [(0, 0), (1, 0), (2, 2)]),
        # ... y0 -> x0, y1 -> x0, y2 -> x2
        ("backward", [(0, 0), (0, 1), (2, 2)]),
        # mutual best: x0-y0 and x2-y2 only
        ("intersect", [(0, 0), (2, 2)]),
        # both lists, x0-y0 (found both ways) once: .9, .85, .8, .6
        ("union", [(0, 0), (1, 0), (0, 1), (2, 2)]),
        # greedy one-to-one over the union: x0-y0 (.9), x1-y0 blocked by y0, x0-y1 blocked by x0, x2-y2
        ("max", [(0, 0), (2, 2)]),
    ],
)
def test_each_mode_with_plain_cosine(knn, mode, expected):
    al = mine(*knn, MarginConfig("absolute", mode))
    assert pairs(al) == expected
    assert list(al.scores) == sorted(al.scores, reverse=True)


def test_ratio_margin_undoes_the_hub(knn):
    # with the margin, x1 keeps y0 and x0 moves to y1: every mode agrees on the one-to-one alignment
    for mode in ("forward", "backward", "intersect", "union", "max"):
        assert sorted(pairs(mine(*knn, MarginConfig("ratio", mode, threshold=0.0)))) == [(0, 1), (1, 0), (2, 2)]


def test_threshold_and_default(knn):
    # default threshold for ratio is 1.06: x0-y1 (1.143), x1-y0 (1.172), x2-y2 (1.5) pass
    assert len(mine(*knn, MarginConfig("ratio", "max"))) == 3
    assert pairs(mine(*knn, MarginConfig("ratio", "max", threshold=1.16))) == [(2, 2), (1, 0)]
    assert pairs(mine(*knn, MarginConfig("ratio", "max", threshold=1.5))) == [(2, 2)]  # >= keeps equality


def test_smaller_k_uses_the_first_neighbours_only(knn):
    # k = 1: means are the top similarity; x0-y0: .9 / ((.9 + .9) / 2) = 1.0, only candidate of x0
    al = mine(*knn, MarginConfig("ratio", "forward", k=1, threshold=float("-inf")))
    d = {(int(i), int(j)): float(s) for s, i, j in zip(al.scores, al.src, al.tgt)}
    assert d[0, 0] == pytest.approx(1.0)
    # x1-y0: .85 / ((.85 + .9) / 2 = .875) = 0.9714286
    assert d[1, 0] == pytest.approx(0.85 / 0.875, rel=1e-6)
    with pytest.raises(UserError, match="out of range"):
        mine(*knn, MarginConfig("ratio", "forward", k=3))


def test_missing_neighbours_are_ignored(tmp_path):
    # FAISS pads with -1 when an IVF probe finds fewer than k: x1 has one real neighbour only
    fwd = KnnSet.open(write_knn(tmp_path / "f", [[0, 1], [1, -1]], [[0.9, 0.2], [0.7, -np.inf]], ntotal=2))
    bwd = KnnSet.open(write_knn(tmp_path / "b", [[0, 1], [1, 0]], [[0.9, 0.6], [0.7, 0.2]], ntotal=2))
    al = mine(fwd, bwd, MarginConfig("ratio", "forward", threshold=float("-inf")))
    # x1 mean = .7 (its one neighbour); y1 mean = (.7 + .2) / 2 = .45; .7 / ((.7 + .45) / 2) = 1.2173913
    d = {(int(i), int(j)): float(s) for s, i, j in zip(al.scores, al.src, al.tgt)}
    assert d[1, 1] == pytest.approx(0.7 / 0.575, rel=1e-6)


def test_modes_need_their_directions(knn):
    fwd, bwd = knn
    assert len(mine(fwd, None, MarginConfig("absolute", "forward"))) == 3  # cosine forward: one side is enough
    with pytest.raises(UserError, match="needs the tgt2src k-NN result"):
        mine(fwd, None, MarginConfig("ratio", "forward"))
    with pytest.raises(UserError, match="unknown mining mode"):
        mine(fwd, bwd, MarginConfig("ratio", "best"))


def test_write_bitext_dedups_identical_pairs_and_writes_pair_files(tmp_path, knn):
    src = tmp_path / "s.txt"
    tgt = tmp_path / "t.txt"
    src.write_text("Hallo Welt\nHallo Welt\nzwei\tWörter\n", encoding="utf-8")  # rows 0 and 1 are the same text
    tgt.write_text("hello world\nhello world\ntwo words\n", encoding="utf-8")
    al = mine(*knn, MarginConfig("ratio", "union", threshold=1.0))
    # union of the best pairs both ways: x2-y2 1.5, x1-y0 1.172, x0-y1 1.143; the last two are both
    # "Hallo Welt" / "hello world" as text, so only the better one is written
    out = tmp_path / "mined.tsv"
    stats = write_bitext(
        al, src, tgt, out, pair_prefix=str(tmp_path / "P"), src_lang="deu_Latn", tgt_lang="eng_Latn", n_src=3, n_tgt=3
    )
    lines = out.read_text(encoding="utf-8").splitlines()
    assert lines == ["1.500000\tzwei Wörter\ttwo words", "1.172414\tHallo Welt\thello world"]
    assert stats == {"pairs": 3, "written": 2, "duplicates": 1}
    assert (tmp_path / "P.deu_Latn").read_text(encoding="utf-8") == "zwei\tWörter\nHallo Welt\n"
    assert (tmp_path / "P.eng_Latn").read_text(encoding="utf-8") == "two words\nhello world\n"
    write_bitext(al, src, tgt, out, dedup=False)
    assert len(out.read_text(encoding="utf-8").splitlines()) == 3
    with pytest.raises(UserError, match="3 lines but the source embeddings have 5 rows"):
        write_bitext(al, src, tgt, out, n_src=5)


def test_cli_writes_sorted_tsv(tmp_path, knn, capsys):
    (tmp_path / "s.txt").write_text("a\nb\nc\n")
    (tmp_path / "t.txt").write_text("A\nB\nC\n")
    rc = cli(
        [
            "--knn-dir",
            str(tmp_path),
            "--src-text",
            str(tmp_path / "s.txt"),
            "--tgt-text",
            str(tmp_path / "t.txt"),
            "--out",
            str(tmp_path / "o.tsv"),
            "--mode",
            "intersect",
            "--margin",
            "cosine",
            "--threshold",
            "0.5",
        ]
    )
    assert rc == 0
    assert (tmp_path / "o.tsv").read_text() == "0.900000\ta\tA\n0.600000\tc\tC\n"
    with pytest.raises(UserError, match="pass --src-text"):
        cli(["--knn-dir", str(tmp_path), "--out", str(tmp_path / "o2.tsv")])
    with pytest.raises(UserError, match="no k-NN results"):
        cli(["--knn-dir", str(tmp_path / "nothing"), "--out", str(tmp_path / "o3.tsv")])


def test_mine_knn_then_mine_bitext_from_meta_defaults(tmp_path):
    """The CLI chain on embeddings of real sentences: texts and languages come from the embedding meta."""
    from mining_helpers import write_emb

    from mining.cli import knn_main
    from mining.encoders.ngram import NgramEncoder

    # same-domain sentences without a translation on the other side (different codes): hard negatives
    de = [f"Datei zq{i:03d} wurde gespeichert" for i in range(30)] + [
        f"Datei zq{i} wurde gespeichert" for i in range(100, 110)
    ]
    en = [f"File zq{i:03d} was saved" for i in range(30)] + [f"File zq{i} was saved" for i in range(200, 210)]
    enc = NgramEncoder(dim=256)
    for name, sents, lang in (("de", de, "deu_Latn"), ("en", en, "eng_Latn")):
        (tmp_path / f"{name}.txt").write_text("\n".join(sents) + "\n", encoding="utf-8")
        write_emb(
            tmp_path / name, enc.encode(sents, lang), shard_rows=16, lang=lang, source=str(tmp_path / f"{name}.txt")
        )
    assert (
        knn_main(
            ["--src-emb", str(tmp_path / "de"), "--tgt-emb", str(tmp_path / "en"), "--out-dir", str(tmp_path / "knn")]
        )
        == 0
    )
    assert (
        cli(
            [
                "--knn-dir",
                str(tmp_path / "knn"),
                "--out",
                str(tmp_path / "mined.tsv"),
                "--mode",
                "max",
                "--threshold",
                "1.0",
                "--pair-prefix",
                str(tmp_path / "train"),
            ]
        )
        == 0
    )
    rows = [line.split("\t") for line in (tmp_path / "mined.tsv").read_text(encoding="utf-8").splitlines()]
    planted = {(de[i], en[i]) for i in range(30)}
    # every planted translation is mined, and they fill the top of the list (the toy n-gram encoder
    # lets a few look-alike codes, zq105 / zq205, in between)
    assert planted <= {(s, t) for _, s, t in rows}
    assert len({(s, t) for _, s, t in rows[:30]} & planted) >= 26
    scores = [float(r[0]) for r in rows]
    assert scores == sorted(scores, reverse=True) and min(scores) >= 1.0
    assert (tmp_path / "train.deu_Latn").read_text(encoding="utf-8").splitlines() == [s for _, s, _ in rows]
    assert (tmp_path / "train.eng_Latn").read_text(encoding="utf-8").splitlines() == [t for _, _, t in rows]


def _two_pair_knn(tmp_path, r):
    """2 x 2, k = 2: x_i's translation y_i at cosine .8, the other at b, so that ratio(x_i, y_i) = r."""
    b = 0.8 * (2 - r) / r
    ids, sims = [[0, 1], [1, 0]], [[0.8, b], [0.8, b]]
    return write_knn(tmp_path / "src2tgt", ids, sims, 2), write_knn(tmp_path / "tgt2src", ids, sims, 2)


def _point_meta_at(tmp_path, fwd_p, encoder, langs=("deu_Latn", "eng_Latn")):
    import json

    from mining_helpers import write_emb

    for side, lang, meta_file, key in ((0, langs[0], "src2tgt", "queries"), (1, langs[1], "tgt2src", "queries")):
        write_emb(tmp_path / f"emb-{side}", np.eye(2), encoder=encoder, lang=lang)
        meta = json.loads((tmp_path / f"{meta_file}.meta.json").read_text())
        meta[key] = str(tmp_path / f"emb-{side}")
        (tmp_path / f"{meta_file}.meta.json").write_text(json.dumps(meta))


def test_default_cut_comes_from_the_calibration_of_the_encoder_and_pair(tmp_path):
    """No --threshold: the cut calibrated for the encoder in the embedding meta (the pair's own with enough
    gold, else the encoder's median); an explicit threshold wins; it is logged and written to meta.json."""
    import json

    from mining.calibration import encoder_entry, write_calibration

    fwd_p, bwd_p = _two_pair_knn(tmp_path, 1.10)
    _point_meta_at(tmp_path, fwd_p, "myenc")
    cal = tmp_path / "cal.json"
    write_calibration(
        cal,
        "myenc",
        encoder_entry(
            {
                "deu_Latn-eng_Latn": {"cut": 1.12, "f1": 0.9, "gold": 500},
                "eng_Latn-fra_Latn": {"cut": 1.05, "f1": 0.9, "gold": 500},
                "eng_Latn-zho_Hans": {"cut": 1.08, "f1": 0.9, "gold": 500},
            }
        ),
    )
    fwd, bwd = KnnSet.open(fwd_p), KnnSet.open(bwd_p)
    al = mine(fwd, bwd, MarginConfig(calibration=str(cal)))
    assert al.cut.value == 1.12 and al.cut.source == "pair" and len(al) == 0  # 1.10 < the pair's 1.12
    al = mine(fwd, bwd, MarginConfig(calibration=str(cal), src_lang="hin_Deva", tgt_lang="eng_Latn"))
    assert al.cut.value == 1.08 and al.cut.source == "encoder" and len(al) == 2  # median of 1.05, 1.08, 1.12
    al = mine(fwd, bwd, MarginConfig(calibration=str(cal), threshold=1.2))
    assert al.cut.source == "given" and len(al) == 0
    # the CLI: the cut and why in the log and in mined.meta.json
    (tmp_path / "de.txt").write_text("a\nb\n")
    (tmp_path / "en.txt").write_text("x\ny\n")
    out = tmp_path / "mined.tsv"
    assert (
        cli(
            [
                "--knn-dir",
                str(tmp_path),
                "--out",
                str(out),
                "--src-text",
                str(tmp_path / "de.txt"),
                "--tgt-text",
                str(tmp_path / "en.txt"),
                "--calibration",
                str(cal),
                "--src-lang",
                "hin_Deva",
            ]
        )
        == 0
    )
    meta = json.loads((tmp_path / "mined.meta.json").read_text())
    assert meta["threshold"]["value"] == 1.08 and "median" in meta["threshold"]["why"]
    assert meta["candidates"] == 2 and meta["written"] == 2 and meta["src_lang"] == "hin_Deva"
    # an encoder nobody calibrated: a cut fitted to the scores (too few here: every pair kept)
    _point_meta_at(tmp_path, fwd_p, "other")
    al = mine(KnnSet.open(fwd_p), KnnSet.open(bwd_p), MarginConfig(calibration=str(cal)))
    assert al.cut.source == "none" and len(al) == 2
    _point_meta_at(tmp_path, fwd_p, "laser2")
    assert mine(KnnSet.open(fwd_p), KnnSet.open(bwd_p), MarginConfig()).cut.value == 1.06


def test_fitted_cut_falls_inside_a_known_separation():
    """Synthetic margin scores: noise around 1.0, translations around 1.3 with nothing between 1.1 and 1.2;
    at 10% and at 50% translations the fitted cut lands in the gap."""
    from mining.calibration import fit_cut

    rng = np.random.default_rng(0)
    for n_true in (100, 900):
        noise = np.clip(rng.normal(1.0, 0.03, 900), None, 1.1)
        true = np.clip(rng.normal(1.3, 0.04, n_true), 1.2, None)
        cut = fit_cut(np.concatenate([noise, true]))
        assert cut.source == "fitted" and 1.1 <= cut.value <= 1.2, (n_true, cut)
    assert fit_cut(np.ones(50)).value is None  # no spread: nothing to fit, every pair kept


def test_mine_bitext_refuses_a_text_other_than_the_embedded_one(tmp_path):
    """A --src-text with as many lines as the embedded one, but other content, would pair the wrong sentences."""
    import gzip

    from mining.cli import knn_main
    from mining.embed import embed_file

    de = [f"Datei zq{i:03d} wurde gespeichert" for i in range(12)]
    en = [f"File zq{i:03d} was saved" for i in range(12)]
    with gzip.open(tmp_path / "de.txt.gz", "wt", encoding="utf-8") as fh:  # embedded gzipped, mined gunzipped
        fh.write("\n".join(de) + "\n")
    (tmp_path / "de.txt").write_text("\n".join(de) + "\n", encoding="utf-8")
    (tmp_path / "en.txt").write_text("\n".join(en) + "\n", encoding="utf-8")
    embed_file(str(tmp_path / "de.txt.gz"), str(tmp_path / "de"), "deu_Latn", "ngram:256", progress=False)
    embed_file(str(tmp_path / "en.txt"), str(tmp_path / "en"), "eng_Latn", "ngram:256", progress=False)
    assert (
        knn_main(
            [
                "--src-emb",
                str(tmp_path / "de"),
                "--tgt-emb",
                str(tmp_path / "en"),
                "--k",
                "4",
                "--out-dir",
                str(tmp_path / "knn"),
            ]
        )
        == 0
    )
    (tmp_path / "other.txt").write_text("\n".join(reversed(de)) + "\n", encoding="utf-8")  # same line count
    out = tmp_path / "mined.tsv"
    args = ["--knn-dir", str(tmp_path / "knn"), "--out", str(out), "--threshold", "1.0"]
    with pytest.raises(UserError, match="other.txt: not the text the source embeddings were made from"):
        cli(args + ["--src-text", str(tmp_path / "other.txt")])
    assert not out.exists()
    assert cli(args + ["--src-text", str(tmp_path / "de.txt")]) == 0
    rows = [ln.split("\t") for ln in out.read_text(encoding="utf-8").splitlines()]
    assert {(s, t) for _, s, t in rows} == set(zip(de, en))
    # the text recorded in the meta, edited in place (same size) after it was embedded
    (tmp_path / "en.txt").write_text("\n".join(en[::-1]) + "\n", encoding="utf-8")
    with pytest.raises(UserError, match="en.txt: not the text the target embeddings were made from"):
        cli(args + ["--src-text", str(tmp_path / "de.txt")])
