"""mt-spm: temperature sampling, joint SentencePiece training, fairseq dict.txt, encode/decode."""

from __future__ import annotations

import io
import json
import pickle
import sys

import numpy as np
import pytest
from _tiny_corpus import SIZES, WORDS, make_corpus

from mt.common.errors import UserError
from mt.common.langs import lang_token
from mt.data import spm
from mt.data.cli import spm_main
from mt.data.dictionary import Dictionary


# ---------------------------------------------------------------- pure functions
def test_temperature_probs_formula():
    counts = {"a": 1_000_000, "b": 10_000, "c": 100}
    for T in (1.0, 2.0, 5.0, 100.0):
        p = spm.temperature_probs(counts, T)
        z = sum(n ** (1 / T) for n in counts.values())
        for k, n in counts.items():
            assert p[k] == pytest.approx(n ** (1 / T) / z, rel=1e-12)
        assert sum(p.values()) == pytest.approx(1.0)
    p1, p5 = spm.temperature_probs(counts, 1.0), spm.temperature_probs(counts, 5.0)
    assert p1["a"] == pytest.approx(1_000_000 / 1_010_100)  # T=1: proportional to data
    assert p5["c"] > 10 * p1["c"] and p5["a"] < p1["a"]  # T=5 moves mass to the low-resource language
    assert max(spm.temperature_probs(counts, 1e6).values()) == pytest.approx(1 / 3, rel=1e-4)  # T→∞: uniform
    assert spm.temperature_probs({"a": 5, "empty": 0}, 5.0) == {"a": 1.0}
    with pytest.raises(UserError):
        spm.temperature_probs(counts, 0)


def test_sample_sizes_upsample_and_cap():
    counts = {"hi": 10_000, "lo": 10}
    k = spm.sample_sizes(counts, 5.0, total=1000)
    p = spm.temperature_probs(counts, 5.0)
    assert k == {"hi": round(p["hi"] * 1000), "lo": round(p["lo"] * 1000)}
    assert k["lo"] > counts["lo"]  # repeated: upsampling
    assert spm.sample_sizes(counts, 5.0, total=1000, cap=100)["hi"] == 100
    idx = spm._draw(10, 25, np.random.default_rng(0))
    assert len(idx) == 25 and np.bincount(idx).min() == 2 and np.bincount(idx).max() == 3
    assert len(set(spm._draw(100, 30, np.random.default_rng(0)).tolist())) == 30  # without replacement


# ---------------------------------------------------------------- training
@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("spm")
    corpus = make_corpus(root / "corpus")
    cfg = spm.SpmTrainConfig(
        out=str(root / "spm"), corpus=str(corpus), vocab_size=180, langs=["zul_Latn"], num_threads=1
    )
    res = spm.train(cfg, progress=False)
    return root, corpus, cfg, res


def test_train_outputs_and_sample_table(trained, capsys):
    root, corpus, cfg, res = trained
    out = root / "spm"
    assert not res.skipped and all((out / n).is_file() for n in spm.OUTPUTS)
    table = {row["lang"]: row for row in res.table}
    # eng_Latn: all English sides, distinct sentences only
    eng = set()
    for lang in SIZES:
        eng |= set((corpus / "train" / f"eng_Latn-{lang}.eng_Latn").read_text(encoding="utf-8").splitlines())
    assert table["eng_Latn"]["sentences"] == len(eng)
    counts = {k: v["sentences"] for k, v in table.items()}
    p = spm.temperature_probs(counts, 5.0)
    total = sum(counts.values())
    for lang, row in table.items():
        assert row["prob"] == pytest.approx(p[lang])
        assert row["sampled"] == max(1, round(p[lang] * total))
    assert table["tzm_Tfng"]["sampled"] > table["tzm_Tfng"]["sentences"]  # low-resource upsampled
    saved = json.loads((out / "spm.config.json").read_text())
    assert saved["languages"] == res.table


def test_dict_txt_fairseq_layout_and_lang_tokens(trained):
    root, corpus, cfg, res = trained
    out = root / "spm"
    lines = (out / "dict.txt").read_text(encoding="utf-8").splitlines()
    assert all(len(line.split(" ")) == 2 and line.split(" ")[1].isdigit() for line in lines)
    toks = [line.split(" ")[0] for line in lines]
    assert not {"<s>", "<pad>", "</s>", "<unk>"} & set(toks)
    expected_langs = sorted(set(WORDS) | {"zul_Latn"})
    assert toks[-len(expected_langs) :] == [lang_token(c) for c in expected_langs]
    d = Dictionary.load(out / "dict.txt")
    assert d.langs() == expected_langs
    tok = spm.SpmTokenizer(out / "spm.model")
    assert len(d) == len(tok) + len(expected_langs)
    for i in range(4, len(tok)):  # dictionary index == SentencePiece id
        assert d[i] == tok.sp.id_to_piece(i)
    # counts are piece frequencies of the encoded sample: frequent pieces have big counts
    cnt = {t: int(c) for t, c in (line.split(" ") for line in lines)}
    sampled = {r["lang"]: r["sampled"] for r in res.table}
    assert sum(c for t, c in cnt.items() if not t.startswith("__")) >= sum(sampled.values())  # >= 1 piece/sentence
    assert cnt[lang_token("deu_Latn")] == sampled["deu_Latn"] and cnt[lang_token("zul_Latn")] == 1
    # the low-resource script got its characters into the vocabulary
    assert all(ch in d for ch in "ⴰⵣⵓⵍ")
    assert d.index(lang_token("tzm_Tfng")) != d.unk_index


def test_tokenizer_roundtrip_and_pickle(trained):
    root, *_ = trained
    tok = spm.SpmTokenizer(root / "spm" / "spm.model")
    for text in ("die Datei ist offen", "файл открыт", "ⴰⵣⵓⵍ ⵉⵍⴰ"):
        pieces = tok.encode(text)
        assert tok.decode(pieces) == text
        assert tok.decode(" ".join(pieces)) == text
        assert tok.decode(tok.encode_ids(text)) == text
        assert tok.decode(["__deu_Latn__", *pieces, "</s>"]) == text
    tok2 = pickle.loads(pickle.dumps(tok))
    assert tok2.encode("the file") == tok.encode("the file")
    with pytest.raises(UserError, match="not found"):
        spm.SpmTokenizer(root / "missing.model")


def test_one_loader_names_the_fix_of_the_command_that_asks(trained, tmp_path):
    """mt-spm, spBLEU (eval.metrics), chrF validation, LASER and mt-import all load through SpmTokenizer."""
    from eval.metrics import MetricSpec
    from mt.train.validate import load_spm

    root, *_ = trained
    model = root / "spm" / "spm.model"
    not_a_model = tmp_path / "x.model"
    not_a_model.write_text("hello\n")
    with pytest.raises(UserError, match=r"x.model: not a SentencePiece model .*; pass the spm.model that `mt-spm"):
        spm.SpmTokenizer(not_a_model)
    with pytest.raises(UserError, match=r"x.model: not a SentencePiece model .*--eval-chrf needs it"):
        load_spm(not_a_model)
    with pytest.raises(UserError, match=r"missing.model not found: download flores200_sacrebleu_tokenizer_spm"):
        MetricSpec("spbleu", spm_model=str(tmp_path / "missing.model")).build()
    metric, pieces = MetricSpec("spbleu", spm_model=str(model)).build()
    assert pieces(["die Datei ist offen"]) == [" ".join(spm.SpmTokenizer(model).encode("die Datei ist offen"))]
    assert pickle.loads(pickle.dumps(load_spm(model))).hint.startswith("--eval-chrf")


def test_skip_when_up_to_date_and_retrain_on_change(trained, capsys):
    root, corpus, cfg, res = trained
    model = root / "spm" / "spm.model"
    mtime = model.stat().st_mtime_ns
    again = spm.train(cfg, progress=False)
    assert again.skipped and model.stat().st_mtime_ns == mtime
    assert "up to date" in capsys.readouterr().err
    cfg2 = spm.SpmTrainConfig(**{**cfg.__dict__, "out": str(root / "spm_t1"), "sampling_temperature": 1.0})
    res2 = spm.train(cfg2, progress=False)
    assert not res2.skipped
    t1 = {r["lang"]: r["sampled"] for r in res2.table}
    t5 = {r["lang"]: r["sampled"] for r in res.table}
    assert t1["tzm_Tfng"] < t5["tzm_Tfng"] and t1["eng_Latn"] > t5["eng_Latn"]


def test_cap_and_input_files(tmp_path):
    a = tmp_path / "mono.swh_Latn"
    a.write_text("".join(f"habari ya leo {i} rafiki\n" for i in range(200)), encoding="utf-8")
    b = tmp_path / "extra.txt"
    b.write_text("".join(f"some more text {i}\n" for i in range(50)), encoding="utf-8")
    res = spm.train(
        spm.SpmTrainConfig(
            out=str(tmp_path / "o"), inputs=[str(a), str(b)], vocab_size=40, sentences_per_lang_cap=40, num_threads=1
        ),
        progress=False,
    )
    table = {r["lang"]: r for r in res.table}
    assert set(table) == {"swh_Latn", "input:extra.txt"}
    assert all(r["sampled"] <= 40 for r in res.table)
    assert Dictionary.load(tmp_path / "o" / "dict.txt").langs() == ["swh_Latn"]


def test_vocab_too_large_is_a_user_error(tmp_path):
    f = tmp_path / "t.eng_Latn"
    f.write_text("a b c\n", encoding="utf-8")
    with pytest.raises(UserError, match="--vocab-size 5000"):
        spm.train(
            spm.SpmTrainConfig(out=str(tmp_path / "o"), inputs=[str(f)], vocab_size=5000, num_threads=1), progress=False
        )
    with pytest.raises(UserError, match="unknown language code"):
        spm.train(spm.SpmTrainConfig(out=str(tmp_path / "o"), inputs=[str(f)], langs=["german"]), progress=False)


def test_encode_decode_cli(trained, monkeypatch, capsys):
    root, *_ = trained
    model = str(root / "spm" / "spm.model")
    text = "die Datei ist offen\nfichier ouvert 12\n"

    def run(args, stdin):
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin.encode()), encoding="utf-8"))
        assert spm_main(args) == 0
        return capsys.readouterr().out

    pieces = run(["encode", "--model", model], text)
    assert len(pieces.splitlines()) == 2 and "▁" in pieces
    assert run(["decode", "--model", model], pieces) == text
    ids = run(["encode", "--model", model, "--output-format", "id"], text)
    assert all(x.isdigit() for x in ids.split())
    assert run(["decode", "--model", model, "--input-format", "id"], ids) == text


def test_help_has_examples(capsys):
    for args in (["--help"], ["train", "--help"]):
        with pytest.raises(SystemExit):
            spm_main(args)
        assert "examples:" in capsys.readouterr().out


def test_a_killed_runs_work_folder_is_removed_and_a_failed_run_leaves_no_folder(tmp_path):
    import subprocess
    import sys

    from mt.common.files import temp_tag

    a = tmp_path / "mono.swh_Latn"
    a.write_text("".join(f"habari ya leo {i} rafiki\n" for i in range(200)), encoding="utf-8")
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()  # a writer that died
    dead = tmp_path / "o" / f".spm-train.{temp_tag().rsplit('-', 1)[0]}-{proc.pid}.x1.tmp"
    dead.mkdir(parents=True)
    (dead / "sample.txt").write_text("a killed run's sample\n" * 1000)
    spm.train(
        spm.SpmTrainConfig(out=str(tmp_path / "o"), inputs=[str(a)], vocab_size=40, num_threads=1), progress=False
    )
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == sorted(spm.OUTPUTS)
    with pytest.raises(UserError, match="--vocab-size"):
        spm.train(
            spm.SpmTrainConfig(out=str(tmp_path / "new" / "o"), inputs=[str(a)], vocab_size=5000, num_threads=1),
            progress=False,
        )
    assert not (tmp_path / "new").exists()
