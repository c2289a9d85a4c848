"""Hostile and careless inputs for mt-generate, mt-interactive and mt-eval: one-line error, exit != 0, nothing
written."""

from __future__ import annotations

from pathlib import Path

import pytest
from decode_fixtures import make_checkpoint
from hostile import assert_refused
from train_fixtures import one_thread  # noqa: F401 (autouse)


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> tuple[Path, Path]:
    return make_checkpoint(tmp_path_factory.mktemp("hostile_decode"))


@pytest.fixture(autouse=True)
def _home(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("NLLB_MINI_HOME", str(tmp_path / "home" / "nllb"))


def _gen(data: Path, ck: Path, *extra: object) -> list:
    return [
        data,
        "--path",
        ck,
        "--gen-subset",
        "dev",
        "-s",
        "eng_Latn",
        "-t",
        "deu_Latn",
        "--beam",
        "1",
        "--max-len-b",
        "3",
        "--no-progress-bar",
        *extra,
    ]


def _inter(ck: Path, inp: Path, *extra: object) -> list:
    return ["--path", ck, "-s", "eng_Latn", "-t", "deu_Latn", "--input", inp, "--beam", "1", "--max-len-b", "3", *extra]


# --- mt-generate -------------------------------------------------------------------------------------------
def test_generate_missing_or_garbage_checkpoint(model, tmp_path):
    _, data = model
    res = tmp_path / "gen"
    assert_refused(
        "mt-generate",
        _gen(data, tmp_path / "nope.pt", "--results-path", res),
        tmp_path,
        outputs=[res],
        expect="nope.pt",
    )
    (tmp_path / "junk.pt").write_bytes(b"\x00\x01 not a checkpoint \xff" * 10)
    assert_refused(
        "mt-generate",
        _gen(data, tmp_path / "junk.pt", "--results-path", res),
        tmp_path,
        outputs=[res],
        expect="junk.pt",
    )


@pytest.mark.parametrize(("lang", "expect"), [("zul_Latn", "its languages: "), ("german", "unknown language code")])
def test_generate_unknown_language(model, tmp_path, lang, expect):
    ck, data = model
    res = tmp_path / "gen"
    args = [data, "--path", ck, "--gen-subset", "dev", "-s", "eng_Latn", "-t", lang, "--results-path", res]
    message = assert_refused("mt-generate", args, tmp_path, outputs=[res], expect=expect)
    assert "--langs" not in message


def test_generate_bad_data_subset_and_scoring(model, tmp_path):
    ck, data = model
    res = tmp_path / "gen"
    assert_refused(
        "mt-generate",
        _gen(tmp_path / "nodata", ck, "--results-path", res),
        tmp_path,
        outputs=[res],
        expect="data directory not found",
    )
    assert_refused(
        "mt-generate", [*_gen(data, ck, "--results-path", res), "--gen-subset", "nosuch"], tmp_path, outputs=[res]
    )
    assert_refused("mt-generate", _gen(data, ck, "--scoring", "meteor"), tmp_path, expect="--scoring")


def test_generate_results_path_under_a_file(model, tmp_path):
    ck, data = model
    (tmp_path / "notes.txt").write_text("mine\n", encoding="utf-8")
    assert_refused(
        "mt-generate", _gen(data, ck, "--results-path", tmp_path / "notes.txt" / "gen"), tmp_path, expect="not a folder"
    )


# --- mt-interactive ----------------------------------------------------------------------------------------
def test_interactive_missing_checkpoint_input_and_dictionary(model, tmp_path):
    ck, _ = model
    inp = tmp_path / "in.txt"
    inp.write_text("a big house\n", encoding="utf-8")
    assert_refused("mt-interactive", _inter(tmp_path / "nope.pt", inp), tmp_path, expect="nope.pt")
    assert_refused("mt-interactive", _inter(ck, tmp_path / "missing.txt"), tmp_path, expect="missing.txt")
    (tmp_path / "empty").mkdir()
    assert_refused("mt-interactive", [tmp_path / "empty", *_inter(ck, inp)], tmp_path, expect="dict.txt")


def test_interactive_unknown_language(model, tmp_path):
    ck, _ = model
    inp = tmp_path / "in.txt"
    inp.write_text("a big house\n", encoding="utf-8")
    args = ["--path", ck, "-s", "eng_Latn", "-t", "zul_Latn", "--input", inp]
    message = assert_refused("mt-interactive", args, tmp_path, expect="-t/--target-lang zul_Latn")
    assert "eng_Latn" in message and "--langs" not in message
    assert_refused(
        "mt-interactive",
        ["--path", ck, "-s", "eng", "-t", "deu_Latn", "--input", inp],
        tmp_path,
        expect="unknown language code 'eng'",
    )


# --- mt-eval -----------------------------------------------------------------------------------------------
def _texts(tmp_path: Path, hyp: bytes, ref: bytes) -> tuple[Path, Path]:
    (tmp_path / "hyp.txt").write_bytes(hyp)
    (tmp_path / "ref.txt").write_bytes(ref)
    return tmp_path / "hyp.txt", tmp_path / "ref.txt"


def test_eval_binary_or_non_utf8_hypotheses(tmp_path):
    hyp, ref = _texts(tmp_path, b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe", b"a\nb\n")
    assert_refused("mt-eval", ["score", "--hyp", hyp, "--ref", ref], tmp_path, expect="not valid UTF-8")
    hyp, ref = _texts(tmp_path, "Stra\u00dfe\n".encode("latin-1") + b"x\n", b"a\nb\n")
    assert_refused("mt-eval", ["score", "--hyp", hyp, "--ref", ref, "--metric", "bleu"], tmp_path, expect="hyp.txt")


def test_eval_line_count_mismatch(tmp_path):
    hyp, ref = _texts(tmp_path, b"a\nb\nc\n", b"a\nb\n")
    message = assert_refused("mt-eval", ["score", "--hyp", hyp, "--ref", ref], tmp_path, expect="line counts differ")
    assert "hyp.txt has 3 lines" in message and "ref.txt has 2 lines" in message
    assert_refused("mt-eval", ["compare", hyp, hyp, "--ref", ref], tmp_path, expect="line-aligned")


def test_eval_dir_line_count_mismatch_writes_no_scores(tmp_path):
    gen, refs = tmp_path / "gen", tmp_path / "devtest"
    gen.mkdir()
    refs.mkdir()
    (gen / "eng_Latn-deu_Latn.hyp").write_text("a\nb\n", encoding="utf-8")
    (refs / "deu_Latn.devtest").write_text("a\n", encoding="utf-8")
    assert_refused(
        "mt-eval", ["dir", gen, "--ref-dir", refs], tmp_path, outputs=[gen / "scores.csv"], expect="line counts differ"
    )


def test_eval_unknown_language_and_tokenizer(tmp_path):
    hyp, ref = _texts(tmp_path, b"a b\n", b"a b\n")
    assert_refused(
        "mt-eval",
        ["score", "--hyp", hyp, "--ref", ref, "--metric", "bleu", "--tgt-lang", "chinese"],
        tmp_path,
        expect="--tgt-lang",
    )
    assert_refused(
        "mt-eval",
        ["score", "--hyp", hyp, "--ref", ref, "--metric", "bleu", "--tokenize", "moses"],
        tmp_path,
        expect="--tokenize 'moses'",
    )
    assert_refused("mt-eval", ["score", "--hyp", hyp, "--ref", ref, "--tokenize", "zh"], tmp_path, expect="BLEU only")
    assert_refused(
        "mt-eval", ["score", "--hyp", hyp, "--ref", ref, "--metric", "meteor"], tmp_path, expect="unknown metric"
    )


def test_eval_missing_files(tmp_path):
    assert_refused(
        "mt-eval",
        ["score", "--hyp", tmp_path / "nope.hyp", "--ref", tmp_path / "nope.ref"],
        tmp_path,
        expect="nope.hyp",
    )
    assert_refused("mt-eval", ["dir", tmp_path / "nogen", "--ref-dir", tmp_path], tmp_path, expect="nogen")
