"""eval/metrics.py and `mt-eval score/compare`: numbers agree with sacrebleu's own CLI and API."""

import hashlib
import random
import subprocess
import sys

import pytest
import sacrebleu

from eval.cli import eval_main as main
from eval.metrics import MetricSpec, corpus_score, paired_bootstrap, read_aligned
from mt.common.errors import UserError

WORDS = (
    "the a house cat dog runs quickly slowly green red blue sky under over big small river town "
    "Haus Katze läuft schnell grün rot blau Himmel über groß klein Fluss Stadt ,".split()
)


def _sentences(n, seed, length=(4, 14)):
    rng = random.Random(seed)
    return [
        " ".join(rng.choice(WORDS) for _ in range(rng.randint(*length))) + rng.choice([".", "!", "?"]) for _ in range(n)
    ]


def _corrupt(lines, rate, seed):
    rng = random.Random(seed)
    out = []
    for line in lines:
        words = line.split()
        out.append(" ".join(w if rng.random() > rate else rng.choice(WORDS) for w in words))
    return out


def _write(path, lines):
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def files(tmp_path):
    refs = _sentences(120, seed=1)
    hyps = _corrupt(refs, 0.3, seed=2)
    return _write(tmp_path / "hyp.txt", hyps), _write(tmp_path / "ref.txt", refs)


def _sacrebleu_cli(*args):
    args = [*map(str, args), "-w", "4"]  # 4 decimals (the CLI's default is 1)
    out = subprocess.run([sys.executable, "-m", "sacrebleu", *args], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def test_chrf_pp_matches_sacrebleu_cli(files):
    hyp, ref = files
    ours = corpus_score(*read_aligned(hyp, ref), MetricSpec("chrf++")).score
    theirs = _sacrebleu_cli(ref, "-i", hyp, "-m", "chrf", "--chrf-word-order", "2", "-b")
    assert ours == pytest.approx(theirs, abs=1e-4)
    assert 20 < ours < 95  # a real, partial match


def test_bleu_matches_sacrebleu_cli(files):
    hyp, ref = files
    ours = corpus_score(*read_aligned(hyp, ref), MetricSpec("bleu")).score
    theirs = _sacrebleu_cli(ref, "-i", hyp, "-m", "bleu", "-b")
    assert ours == pytest.approx(theirs, abs=1e-4)


def test_score_cli_prints_signature_then_number(files, capsys):
    hyp, ref = files
    assert main(["score", "--hyp", str(hyp), "--ref", str(ref), "--metric", "chrf++"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("nrefs:1|") and "nw:2" in lines[0] and "version:" in lines[0]
    assert float(lines[-1]) == pytest.approx(
        _sacrebleu_cli(ref, "-i", hyp, "-m", "chrf", "--chrf-word-order", "2", "-b"), abs=0.005
    )


def test_line_count_mismatch_names_both_files(tmp_path, capsys):
    hyp = _write(tmp_path / "short.hyp", ["a b c"] * 3)
    ref = _write(tmp_path / "long.ref", ["a b c"] * 4)
    with pytest.raises(SystemExit) as exc:
        main(["score", "--hyp", str(hyp), "--ref", str(ref)])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "short.hyp has 3 lines" in err and "long.ref has 4 lines" in err


@pytest.fixture(scope="module")
def tiny_spm(tmp_path_factory):
    import sentencepiece as spm

    d = tmp_path_factory.mktemp("spm")
    corpus = _write(d / "train.txt", _sentences(400, seed=5))
    spm.SentencePieceTrainer.train(
        input=str(corpus),
        model_prefix=str(d / "tiny"),
        vocab_size=60,
        model_type="unigram",
        character_coverage=1.0,
        minloglevel=2,
    )
    return d / "tiny.model"


def test_spbleu_equals_bleu_on_pretokenised_text(files, tiny_spm, tmp_path):
    import sentencepiece as spm

    hyp, ref = files
    sp = spm.SentencePieceProcessor(model_file=str(tiny_spm))
    tok = lambda lines: [" ".join(p) for p in sp.encode(lines, out_type=str)]  # noqa: E731
    hyps, refs = read_aligned(hyp, ref)
    result = corpus_score(hyps, refs, MetricSpec("spbleu", str(tiny_spm)))
    pre = sacrebleu.BLEU(tokenize="none").corpus_score(tok(hyps), [tok(refs)]).score
    assert result.score == pytest.approx(pre)
    # ... and with sacrebleu's CLI on the pre-tokenised files
    thyp, tref = _write(tmp_path / "h.tok", tok(hyps)), _write(tmp_path / "r.tok", tok(refs))
    assert result.score == pytest.approx(_sacrebleu_cli(tref, "-i", thyp, "-m", "bleu", "-tok", "none", "-b"), abs=1e-4)
    # the tokenisation differs from 13a: spBLEU is not plain BLEU
    assert result.score != pytest.approx(corpus_score(hyps, refs, MetricSpec("bleu")).score)
    sha8 = hashlib.sha256(tiny_spm.read_bytes()).hexdigest()[:8]
    assert f"tok:spm-local({sha8})" in result.signature
    assert result.signature.startswith("nrefs:1|case:mixed|eff:no|") and result.signature.endswith(
        f"version:{sacrebleu.__version__}"
    )


def test_spbleu_without_model_says_where_to_get_it(monkeypatch, tmp_path):
    monkeypatch.delenv("NLLB_SPM_MODEL", raising=False)
    monkeypatch.setattr("eval.metrics._SACREBLEU_CACHED_SPM", tmp_path / "absent")
    with pytest.raises(UserError) as exc:
        MetricSpec("spbleu")
    assert "flores200_sacrebleu_tokenizer_spm.model" in str(exc.value) and "--spm-model" in str(exc.value)
    with pytest.raises(UserError, match="not found"):
        corpus_score(["a"], ["a"], MetricSpec("spbleu", str(tmp_path / "missing.model")))


def test_unknown_metric():
    with pytest.raises(UserError, match="chrf\\+\\+"):
        MetricSpec("meteor")


def test_bootstrap_clearly_better_system_is_significant():
    refs = _sentences(200, seed=11)
    worse = _corrupt(refs, 0.6, seed=12)
    better = _corrupt(refs, 0.1, seed=13)
    res = paired_bootstrap(worse, better, refs, MetricSpec("chrf++"), n_samples=1000, seed=7)
    assert res.delta > 10
    assert res.p_value < 0.01
    assert res.delta_ci[0] > 0  # the whole 95% interval above zero
    assert res.ci_a[0] <= res.score_a <= res.ci_a[1] and res.ci_b[0] <= res.score_b <= res.ci_b[1]
    assert res.b_wins > 0.99


def test_bootstrap_equal_systems_are_not_significant():
    refs = _sentences(200, seed=21)
    # same corruption rate on different lines: equal quality, different outputs
    a = [r if i % 2 else c for i, (r, c) in enumerate(zip(refs, _corrupt(refs, 0.4, seed=22)))]
    b = [r if i % 2 == 0 else c for i, (r, c) in enumerate(zip(refs, _corrupt(refs, 0.4, seed=23)))]
    res = paired_bootstrap(a, b, refs, MetricSpec("chrf++"), n_samples=1000, seed=7)
    assert res.p_value > 0.05
    assert res.delta_ci[0] < 0 < res.delta_ci[1]
    same = paired_bootstrap(a, a, refs, MetricSpec("chrf++"), n_samples=200, seed=7)
    assert same.delta == 0 and same.p_value == 1.0


def test_bootstrap_p_value_matches_sacrebleu_paired_bs(monkeypatch):
    from sacrebleu.significance import PairedTest

    refs = _sentences(150, seed=31)
    a, b = _corrupt(refs, 0.35, seed=32), _corrupt(refs, 0.3, seed=33)
    monkeypatch.setenv("SACREBLEU_SEED", "12345")
    _, scores = PairedTest(
        [("a", a), ("b", b)], {"chrf": sacrebleu.CHRF(word_order=2)}, [refs], test_type="bs", n_samples=1000
    )()
    (name,) = [k for k in scores if k != "System"]
    theirs = scores[name][1]
    ours = paired_bootstrap(a, b, refs, MetricSpec("chrf++"), n_samples=1000, seed=12345)
    assert ours.score_b == pytest.approx(theirs.score)
    assert ours.p_value == pytest.approx(theirs.p_value)


def test_compare_cli_on_generation_dirs(tmp_path, capsys):
    refs = {"deu_Latn": _sentences(80, seed=41), "fra_Latn": _sentences(80, seed=42)}
    (tmp_path / "devtest").mkdir()
    for lang, lines in refs.items():
        _write(tmp_path / "devtest" / f"{lang}.devtest", lines)
    for system, rate in (("A", 0.6), ("B", 0.1)):
        (tmp_path / system).mkdir()
        for lang, lines in refs.items():
            _write(tmp_path / system / f"eng_Latn-{lang}.hyp", _corrupt(lines, rate, seed=len(system)))
    assert (
        main(
            [
                "compare",
                str(tmp_path / "A"),
                str(tmp_path / "B"),
                "--ref",
                str(tmp_path / "devtest"),
                "--n-samples",
                "200",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "eng_Latn-deu_Latn" in out and "eng_Latn-fra_Latn" in out
    assert "2/2 directions differ significantly" in out


# --- BLEU tokenised for the target language as sacrebleu -l does ---------------------------------------
HAN = (  # common Han characters: Chinese text has no spaces between words
    "的一是不了人我在有他这中大来上国个到说们为子和你地出道也时年得就那要下以生会自着去之过家学对可里后小"
    "么心多天而能好都然没日于起还发成事只作当想看文无开手十用主行方又如前所本见经头面公同三已老从动两长"
)


def _zh_sentences(n, seed):
    rng = random.Random(seed)
    return ["".join(rng.choice(HAN) for _ in range(rng.randint(8, 20))) + "。" for _ in range(n)]


def _zh_corrupt(lines, rate, seed):
    rng = random.Random(seed)
    return ["".join(c if rng.random() > rate else rng.choice(HAN) for c in line) for line in lines]


def test_bom_is_stripped_so_identical_files_score_100(tmp_path, capsys):
    lines = _sentences(40, seed=3)
    hyp = tmp_path / "hyp.txt"
    hyp.write_bytes(b"\xef\xbb\xbf" + "\n".join(lines).encode() + b"\n")
    ref = _write(tmp_path / "ref.txt", lines)
    assert read_aligned(hyp) == [lines]
    for metric in ("chrf++", "bleu"):
        assert main(["score", "--hyp", str(hyp), "--ref", str(ref), "--metric", metric]) == 0
        assert capsys.readouterr().out.strip().splitlines()[-1] == "100.00"


def test_bleu_tokenizer_follows_the_target_language(tmp_path, capsys):
    refs = _zh_sentences(60, seed=51)
    hyps = _zh_corrupt(refs, 0.3, seed=52)
    hyp, ref = _write(tmp_path / "eng_Latn-zho_Hans.hyp", hyps), _write(tmp_path / "zho_Hans.devtest", refs)
    theirs = _sacrebleu_cli(ref, "-i", hyp, "-m", "bleu", "-l", "en-zh", "-b")
    assert main(["score", "--hyp", str(hyp), "--ref", str(ref), "--metric", "bleu"]) == 0
    sig, score = capsys.readouterr().out.strip().splitlines()
    assert "tok:zh" in sig and float(score) == pytest.approx(theirs, abs=0.005)
    assert theirs > 30  # 13a sees one "word" per sentence: a near-zero score
    # the language can be given when the file names do not say it; --tokenize overrides the choice
    plain_h, plain_r = _write(tmp_path / "out.txt", hyps), _write(tmp_path / "ref.txt", refs)
    args = ["--metric", "bleu", "--tgt-lang", "zho_Hant"]
    assert main(["score", "--hyp", str(plain_h), "--ref", str(plain_r), *args]) == 0
    assert float(capsys.readouterr().out.split()[-1]) == pytest.approx(theirs, abs=0.005)
    assert main(["score", "--hyp", str(hyp), "--ref", str(ref), "--metric", "bleu", "--tokenize", "13a"]) == 0
    sig, score = capsys.readouterr().out.strip().splitlines()
    assert "tok:13a" in sig
    assert float(score) == pytest.approx(_sacrebleu_cli(ref, "-i", hyp, "-m", "bleu", "-b"), abs=0.005)
    # other targets keep 13a (sacrebleu's default)
    assert MetricSpec("bleu").for_target("deu_Latn")[0].tokenize == "13a"
    assert MetricSpec("bleu").for_target("yue_Hant")[0].tokenize == "zh"


def test_bleu_for_japanese_without_mecab_says_so_and_falls_back(capsys, monkeypatch):
    from eval import metrics

    monkeypatch.setattr(metrics, "tokenizer_available", lambda name: False)
    spec, note = MetricSpec("bleu").for_target("jpn_Jpan")
    assert spec.tokenize == "char" and "sacrebleu[ja]" in note and "char" in note
    spec, note = MetricSpec("bleu").for_target("kor_Hang")
    assert spec.tokenize == "13a" and "sacrebleu[ko]" in note
    with pytest.raises(UserError, match="sacrebleu\\[ja\\]"):
        MetricSpec("bleu", tokenize="ja-mecab")
    with pytest.raises(UserError, match="--tokenize"):
        MetricSpec("chrf++", tokenize="zh")
    with pytest.raises(UserError, match="13a"):
        MetricSpec("bleu", tokenize="moses")


def test_dir_and_compare_tokenise_bleu_per_target(tmp_path, capsys):
    refs = {"zho_Hans": _zh_sentences(50, seed=61), "deu_Latn": _sentences(50, seed=62)}
    (tmp_path / "devtest").mkdir()
    for system, rate in (("A", 0.5), ("B", 0.2)):
        (tmp_path / system).mkdir()
    for lang, lines in refs.items():
        _write(tmp_path / "devtest" / f"{lang}.devtest", lines)
        corrupt = _zh_corrupt if lang == "zho_Hans" else _corrupt
        for system, rate in (("A", 0.5), ("B", 0.2)):
            _write(tmp_path / system / f"eng_Latn-{lang}.hyp", corrupt(lines, rate, seed=7))
    assert main(["dir", str(tmp_path / "B"), "--ref-dir", str(tmp_path / "devtest"), "--metrics", "bleu"]) == 0
    import pandas as pd

    df = pd.read_csv(tmp_path / "B" / "scores.csv").set_index("direction")
    zh = _sacrebleu_cli(
        tmp_path / "devtest" / "zho_Hans.devtest",
        "-i",
        tmp_path / "B" / "eng_Latn-zho_Hans.hyp",
        "-m",
        "bleu",
        "-l",
        "en-zh",
        "-b",
    )
    de = _sacrebleu_cli(
        tmp_path / "devtest" / "deu_Latn.devtest", "-i", tmp_path / "B" / "eng_Latn-deu_Latn.hyp", "-m", "bleu", "-b"
    )
    assert df.at["eng_Latn-zho_Hans", "bleu"] == pytest.approx(zh, abs=0.006)
    assert df.at["eng_Latn-deu_Latn", "bleu"] == pytest.approx(de, abs=0.006)
    import json

    sigs = json.loads((tmp_path / "B" / "scores.json").read_text())["signatures"]
    assert "tok:zh" in sigs["bleu (tok:zh)"] and "tok:13a" in sigs["bleu (tok:13a)"]
    capsys.readouterr()
    assert (
        main(
            [
                "compare",
                str(tmp_path / "A"),
                str(tmp_path / "B"),
                "--ref",
                str(tmp_path / "devtest"),
                "--metric",
                "bleu",
                "--n-samples",
                "50",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if "eng_Latn-zho_Hans" in line)
    assert f"{zh:.2f}" in row


def test_every_eval_text_reader_drops_a_bom(tmp_path):
    import json

    from eval.classification import read_examples
    from eval.gettext_domains import corpus_train_keys
    from eval.toxicity import ToxicityList
    from eval.train_stats import parse_train_log

    bom = b"\xef\xbb\xbf"
    (tmp_path / "task.tsv").write_bytes(bom + "greeting\thello there\n".encode())
    assert read_examples(tmp_path / "task.tsv")[0].label == "greeting"
    (tmp_path / "deu_Latn_twl.txt").write_bytes(bom + "Mist\n".encode())
    assert ToxicityList.from_file("deu_Latn", tmp_path / "deu_Latn_twl.txt").matches("so ein Mist") == ["Mist"]
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "eng_Latn-deu_Latn.eng_Latn").write_bytes(bom + b"First line\n")
    (tmp_path / "train" / "eng_Latn-deu_Latn.deu_Latn").write_bytes(bom + b"erste Zeile\n")
    assert corpus_train_keys(tmp_path, ["deu_Latn"]) == (
        {"deu_Latn": ({"first line"}, {"erste zeile"})},
        {"first line"},
    )
    (tmp_path / "log.jsonl").write_bytes(bom + json.dumps({"update": 100, "loss": 5.0}).encode() + b"\n")
    train, _, skipped = parse_train_log(tmp_path / "log.jsonl")
    assert train.to_dict("records") == [{"update": 100, "loss": 5.0}] and skipped == 0
