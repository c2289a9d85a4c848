"""mt-eval translate-test end to end: a tiny random-weight MT model, the ngram encoder, three systems."""

from __future__ import annotations

import json
import random

import pandas as pd
import pytest
from decode_fixtures import make_checkpoint
from train_fixtures import one_thread, sentence  # noqa: F401 (one_thread: autouse)

from eval.classification import Example, write_task
from eval.cli import eval_main as main
from eval.translate_test import EmbeddingCache, TranslateTestConfig, TranslationCache, run_translate_test
from mt.common.errors import UserError

# two labels told apart by their nouns (the words are the decode fixtures' vocabulary, so the MT model's
# SentencePiece model covers the ciphered deu/fra text)
NOUNS = {"animals": ["cat", "dog", "bird", "man", "child"], "nature": ["tree", "river", "stone", "water", "house"]}
FILLER = ["the", "big", "small", "red", "green", "old", "young", "sees", "and", "a"]


def _words(label: str, rng: random.Random) -> list[str]:
    ws = [rng.choice(NOUNS[label]) for _ in range(2)] + [rng.choice(FILLER) for _ in range(rng.randint(1, 3))]
    rng.shuffle(ws)
    return ws


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("tt")
    ck, _ = make_checkpoint(root)
    rng = random.Random(0)
    train = [Example(label, " ".join(_words(label, rng))) for label in NOUNS for _ in range(20)]
    test_words = [(label, _words(label, rng)) for label in NOUNS for _ in range(8)]
    test = {
        "eng_Latn": [Example(label, " ".join(ws)) for label, ws in test_words],
        "deu_Latn": [Example(label, sentence("deu_Latn", ws)) for label, ws in test_words],
        "fra_Latn": [Example(label, sentence("fra_Latn", ws)) for label, ws in test_words],
        # a "language" the MT model lacks, written with English words: zero-shot must transfer perfectly well
        "ita_Latn": [Example(label, " ".join(ws)) for label, ws in test_words],
    }
    task = root / "task"
    write_task(task, train, test, {"source": "test", "tiers": {"deu_Latn": "high"}})
    stats = root / "stats.tsv"
    stats.write_text(
        "lang\ttrain_pairs\tdev\tdevtest\tmono\ttier\ndeu_Latn\t900\t0\t0\t0\tmid\n"
        "fra_Latn\t20000\t0\t0\t0\thigh\nita_Latn\t50\t0\t0\t0\tlow\n"
    )
    return root, ck, task, stats


def test_translate_test_end_to_end(setup, capsys, monkeypatch):
    root, ck, task, stats = setup
    run = root / "run"
    rc = main(
        [
            "translate-test",
            "--task",
            str(task),
            "--mt-checkpoint",
            str(ck),
            "--encoder",
            "ngram",
            "--out",
            str(run),
            "--beam",
            "2",
            "--stats",
            str(stats),
            "--no-progress-bar",
        ]
    )
    assert rc == 0
    printed = capsys.readouterr().out
    assert "translate-test" in printed and "average (high, 1 lang)" in printed
    df = pd.read_csv(run / "translate_test.csv")
    assert list(df.columns) == ["lang", "tier", "method", "metric", "score", "n"]
    assert df["score"].between(0, 1).all()
    methods = {lang: set(g["method"]) for lang, g in df.groupby("lang")}
    assert methods["deu_Latn"] == methods["fra_Latn"] == {"zero_shot", "translate_test", "translate_train"}
    assert methods["ita_Latn"] == {"zero_shot"}  # the MT model has no ita_Latn token: noted, not faked
    assert set(df["metric"]) == {"accuracy", "macro_f1"}
    assert dict(zip(df["lang"], df["tier"])) == {"deu_Latn": "mid", "fra_Latn": "high", "ita_Latn": "low"}
    res = json.loads((run / "translate_test.json").read_text())
    # the classifier really classifies: English test and the English-worded ita set are (nearly) all right
    assert res["english"]["accuracy"] >= 0.9
    ita = df[(df["lang"] == "ita_Latn") & (df["metric"] == "accuracy")]["score"].item()
    assert ita == res["english"]["accuracy"]
    assert any("ita_Latn" in n and "no ita_Latn token" in n for n in res["notes"])
    pred = pd.read_csv(run / "translate_test" / "predictions" / "deu_Latn.tsv", sep="\t", quoting=3)
    assert len(pred) == 16 and {"gold", "zero_shot", "translate_test", "translate_train", "mt_english"} <= set(
        pred.columns
    )
    acc = df[(df["lang"] == "deu_Latn") & (df["metric"] == "accuracy")].set_index("method")["score"]
    assert acc["zero_shot"] == pytest.approx((pred["gold"] == pred["zero_shot"]).mean(), abs=1e-4)

    # a re-run reads every translation and embedding from the cache: no model call at all
    def boom(*a, **k):
        raise AssertionError("cache miss")

    monkeypatch.setattr(TranslationCache, "_translate", boom)
    monkeypatch.setattr(EmbeddingCache, "__init__", _patched_cache_init(EmbeddingCache.__init__))
    again = run_translate_test(
        TranslateTestConfig(
            task=str(task),
            out=str(run),
            mt_checkpoint=str(ck),
            encoder="ngram",
            beam=2,
            stats=str(stats),
            progress=False,
        )
    )
    assert {r.lang: r.scores for r in again.langs} == {r["lang"]: r["scores"] for r in res["langs"]}

    # the run directory renders in mt-eval report, with all three systems and the gap
    assert main(["report", str(run)]) == 0
    md = (run / "report.md").read_text(encoding="utf-8")
    assert "translate_train" in md and "TT − ZS" in md and "Not run yet" not in md


def _patched_cache_init(orig):
    def init(self, encoder, spec, root):
        orig(self, encoder, spec, root)

        class NoEncode:
            def encode(self, *a, **k):
                raise AssertionError("embedding cache miss")

        self.encoder = NoEncode()

    return init


def test_translate_test_other_checkpoint_is_not_read_from_cache(setup, tmp_path):
    root, ck, task, _ = setup
    other, _ = make_checkpoint(tmp_path / "other", seed=3)
    a = TranslationCache(TranslateTestConfig(task="", out="", mt_checkpoint=str(ck)), tmp_path)
    b = TranslationCache(TranslateTestConfig(task="", out="", mt_checkpoint=str(other)), tmp_path)
    c = TranslationCache(TranslateTestConfig(task="", out="", mt_checkpoint=str(ck), beam=1), tmp_path)
    assert len({a.root, b.root, c.root}) == 3


def test_zero_shot_alone_needs_no_mt_and_mt_methods_do(setup):
    root, _, task, _ = setup
    res = run_translate_test(
        TranslateTestConfig(
            task=str(task),
            out=str(root / "zs"),
            encoder="ngram",
            methods=["zero_shot"],
            langs=["deu_Latn"],
            progress=False,
        )
    )
    assert [r.lang for r in res.langs] == ["deu_Latn"] and set(res.langs[0].scores) == {"zero_shot"}
    assert res.langs[0].tier == "high"  # from task.json when no --stats
    with pytest.raises(UserError, match="need --mt-checkpoint"):
        run_translate_test(TranslateTestConfig(task=str(task), out=str(root / "x"), encoder="ngram"))
    with pytest.raises(UserError, match="--methods"):
        run_translate_test(TranslateTestConfig(task=str(task), out=str(root / "x"), encoder="ngram", methods=["magic"]))
