"""mt-preprocess: binarize bitext with SPM into fairseq .bin/.idx, FLORES prefixes, errors, workers."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from _tiny_corpus import make_corpus

from mt.common.errors import UserError
from mt.data import preprocess as pp
from mt.data import spm
from mt.data.cli import preprocess_main
from mt.data.dictionary import Dictionary
from mt.data.indexed import IndexedDataset
from mt.data.layout import bin_prefix

SRC, TGT = "eng_Latn", "deu_Latn"


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("pp")
    corpus = make_corpus(root / "corpus")
    spm.train(
        spm.SpmTrainConfig(out=str(root / "spm"), corpus=str(corpus), vocab_size=180, num_threads=1), progress=False
    )
    return root, corpus, root / "spm"


def cfg_for(setup, dest, **kw) -> pp.PreprocessConfig:
    root, corpus, spmdir = setup
    base = dict(
        source_lang=SRC,
        target_lang=TGT,
        trainpref=str(corpus / "train" / f"{SRC}-{TGT}"),
        validpref=str(corpus / "dev"),
        testpref=str(corpus / "devtest"),
        destdir=str(dest),
        srcdict=str(spmdir / "dict.txt"),
        joined_dictionary=True,
        spm_model=str(spmdir / "spm.model"),
    )
    base.update(kw)
    return pp.PreprocessConfig(**base)


def binfiles(dest: Path) -> list[str]:
    return sorted(
        p.name for p in dest.iterdir() if p.suffix in (".bin", ".idx") or ".tmp" in p.name or ".part" in p.name
    )


def test_binarize_roundtrip_and_names(setup, tmp_path, capsys):
    root, corpus, spmdir = setup
    dest = tmp_path / "bin"
    pp.preprocess(cfg_for(setup, dest))
    err = capsys.readouterr().err
    names = set(os.listdir(dest))
    for split in ("train", "valid", "test"):
        for lang in (SRC, TGT):
            assert {f"{split}.{SRC}-{TGT}.{lang}.bin", f"{split}.{SRC}-{TGT}.{lang}.idx"} <= names
    assert {f"dict.{SRC}.txt", f"dict.{TGT}.txt", "dict.txt"} <= names
    assert (dest / "dict.txt").read_text() == (spmdir / "dict.txt").read_text()
    assert "replaced by <unk>" in err and "% replaced" in err

    d = Dictionary.load(dest / "dict.txt")
    tok = spm.SpmTokenizer(spmdir / "spm.model")
    for split, path in (
        ("train", corpus / "train" / f"{SRC}-{TGT}.{TGT}"),
        ("valid", corpus / "dev" / f"{TGT}.dev"),
        ("test", corpus / "devtest" / f"{TGT}.devtest"),
    ):
        lines = path.read_text(encoding="utf-8").splitlines()
        ds = IndexedDataset(bin_prefix(dest, split, SRC, TGT, TGT))
        assert len(ds) == len(lines) and ds.dtype.name == "uint16"
        for i in range(len(ds)):
            ids = ds[i].tolist()
            assert ids[-1] == d.eos_index and d.eos_index not in ids[:-1]
            assert not any(d[j].startswith("__") for j in ids)  # no language tokens in the data
            assert ids[:-1] == d.encode_pieces(tok.encode(lines[i]), append_eos=False)
            assert tok.decode(d.string(ids)) == tok.decode(tok.encode(lines[i]))


def test_workers_output_byte_identical(setup, tmp_path):
    one, two = tmp_path / "w1", tmp_path / "w2"
    pp.preprocess(cfg_for(setup, one, workers=1))
    pp.preprocess(cfg_for(setup, two, workers=2))
    files = sorted(p.name for p in one.iterdir())
    assert files == sorted(p.name for p in two.iterdir()) and any(f.endswith(".bin") for f in files)
    for f in files:
        assert (one / f).read_bytes() == (two / f).read_bytes(), f
    assert binfiles(two) == binfiles(one)  # no leftover part files


def test_flores_folder_prefix_and_comma_separated(setup, tmp_path):
    root, corpus, spmdir = setup
    dest = tmp_path / "b"
    pp.preprocess(
        cfg_for(
            setup,
            dest,
            trainpref=None,
            validpref=f"{corpus / 'dev'},{corpus / 'devtest'}",
            testpref=str(corpus / "devtest"),
        )
    )
    assert (
        IndexedDataset(bin_prefix(dest, "valid1", SRC, TGT, SRC)).sizes.tolist()
        == IndexedDataset(bin_prefix(dest, "test", SRC, TGT, SRC)).sizes.tolist()
    )
    assert len(IndexedDataset(dest / f"valid.{SRC}-{TGT}.{TGT}")) == 40
    assert pp.input_file(str(corpus / "dev"), "fra_Latn") == corpus / "dev" / "fra_Latn.dev"
    assert pp.input_file("x/train", "fra_Latn") == Path("x/train.fra_Latn")


def test_skip_when_up_to_date(setup, tmp_path, capsys):
    root, corpus, spmdir = setup
    dest = tmp_path / "b"
    c = cfg_for(setup, dest, validpref=None, testpref=None)
    assert len(pp.preprocess(c)) == 2
    capsys.readouterr()
    assert pp.preprocess(c) == []
    assert "exists, skipping" in capsys.readouterr().err
    # a newer input makes the split stale
    src = corpus / "train" / f"{SRC}-{TGT}.{SRC}"
    later = time.time() + 5
    os.utime(src, (later, later))
    try:
        assert len(pp.preprocess(c)) == 2
    finally:
        os.utime(src, None)


def test_multilingual_pairs_share_destdir_and_dict_mismatch(setup, tmp_path):
    root, corpus, spmdir = setup
    dest = tmp_path / "multi"
    for tgt in ("deu_Latn", "fra_Latn", "tzm_Tfng"):
        pp.preprocess(cfg_for(setup, dest, target_lang=tgt, trainpref=str(corpus / "train" / f"{SRC}-{tgt}")))
    assert (dest / f"train.{SRC}-tzm_Tfng.tzm_Tfng.bin").is_file()
    # a different dictionary for the next pair is refused before anything is written
    other = tmp_path / "other_dict.txt"
    d = Dictionary.load(spmdir / "dict.txt")
    d.symbols[10], d.symbols[11] = d.symbols[11], d.symbols[10]
    d.__post_init__()
    d.save(other)
    before = binfiles(dest)
    with pytest.raises(UserError) as ei:
        pp.preprocess(
            cfg_for(
                setup,
                dest,
                target_lang="rus_Cyrl",
                trainpref=str(corpus / "train" / f"{SRC}-rus_Cyrl"),
                srcdict=str(other),
            )
        )
    msg = str(ei.value)
    assert str(dest / "dict.txt") in msg or str(dest / f"dict.{SRC}.txt") in msg
    assert "index 10" in msg and "same dictionary" in msg
    assert binfiles(dest) == before


def test_line_count_mismatch(setup, tmp_path):
    a, b = tmp_path / "t.eng_Latn", tmp_path / "t.deu_Latn"
    a.write_text("one\ntwo\nthree\n")
    b.write_text("eins\nzwei\n")
    with pytest.raises(UserError) as ei:
        pp.preprocess(cfg_for(setup, tmp_path / "b", trainpref=str(tmp_path / "t"), validpref=None, testpref=None))
    msg = str(ei.value)
    assert str(a) in msg and str(b) in msg and "3 lines" in msg and "has 2" in msg and "line 3" in msg
    assert not (tmp_path / "b").exists()


def test_invalid_utf8_reports_line_and_byte_and_leaves_nothing(setup, tmp_path):
    root, corpus, spmdir = setup
    a, b = tmp_path / "t.eng_Latn", tmp_path / "t.deu_Latn"
    a.write_text("".join(f"line {i}\n" for i in range(50)))
    b.write_bytes("".join(f"Zeile {i}\n" for i in range(40)).encode() + b"caf\xe9 latin1\n" + b"ok\n" * 9)
    offset = len("".join(f"Zeile {i}\n" for i in range(40)).encode()) + 3
    for workers in (1, 2):
        dest = tmp_path / f"b{workers}"
        with pytest.raises(UserError) as ei:
            pp.preprocess(
                cfg_for(
                    setup,
                    dest,
                    trainpref=str(tmp_path / "t"),
                    validpref=str(corpus / "dev"),
                    testpref=None,
                    workers=workers,
                )
            )
        msg = str(ei.value)
        assert msg.startswith(f"{b}:41:") and f"byte {offset} of the file" in msg and "UTF-8" in msg
        assert not dest.exists()  # checked with the line counts: not even the dictionaries are written


def test_unknown_language_and_missing_file(setup, tmp_path):
    with pytest.raises(UserError, match="--target-lang.*unknown language code 'de'"):
        pp.preprocess(cfg_for(setup, tmp_path / "b", target_lang="de"))
    with pytest.raises(UserError) as ei:
        pp.preprocess(cfg_for(setup, tmp_path / "b", trainpref=str(tmp_path / "nope")))
    assert f"{tmp_path / 'nope'}.{SRC}: input file not found (--trainpref" in str(ei.value)
    assert not (tmp_path / "b").exists()


def test_pretokenized_input_and_built_dictionary(tmp_path, capsys):
    """Without --spm-model the input is space-separated pieces and a dictionary is built, as in fairseq."""
    (tmp_path / "t.eng_Latn").write_text("▁a ▁b ▁b\n▁b ▁c\n")
    (tmp_path / "t.deu_Latn").write_text("▁x ▁y\n▁x\n")
    (tmp_path / "v.eng_Latn").write_text("▁a ▁zzz\n")
    (tmp_path / "v.deu_Latn").write_text("▁x\n")
    assert (
        preprocess_main(
            [
                "--source-lang",
                SRC,
                "--target-lang",
                TGT,
                "--trainpref",
                str(tmp_path / "t"),
                "--validpref",
                str(tmp_path / "v"),
                "--destdir",
                str(tmp_path / "b"),
                "--joined-dictionary",
            ]
        )
        == 0
    )
    d = Dictionary.load(tmp_path / "b" / "dict.txt")
    assert d.symbols[4:] == ["▁b", "▁x", "▁a", "▁c", "▁y"]  # by count, ties alphabetical
    ds = IndexedDataset(tmp_path / "b" / f"valid.{SRC}-{TGT}.{SRC}")
    assert ds[0].tolist() == [d.index("▁a"), d.unk_index, d.eos_index]
    assert "[eng_Latn] valid" in capsys.readouterr().err
    # separate dictionaries
    assert (
        preprocess_main(["-s", SRC, "-t", TGT, "--trainpref", str(tmp_path / "t"), "--destdir", str(tmp_path / "c")])
        == 0
    )
    assert Dictionary.load(tmp_path / "c" / f"dict.{TGT}.txt").symbols[4:] == ["▁x", "▁y"]
    assert not (tmp_path / "c" / "dict.txt").exists()


def test_help_has_examples(capsys):
    with pytest.raises(SystemExit):
        preprocess_main(["--help"])
    out = capsys.readouterr().out
    assert "examples:" in out and "--spm-model" in out and "--joined-dictionary" in out
