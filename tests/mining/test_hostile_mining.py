"""Hostile input for the mining chain and data prep: every case must end in one ``error:`` line, a non-zero
exit, no partial output and nothing changed in the test's folder (``tests/hostile.py``).

Covers mine-lid, mine-filter, mine-embed (ngram encoder: no weights, milliseconds), mine-index, mine-knn,
mine-bitext, mine-eval, mine-train-encoder, mt-spm and mt-preprocess on: text that is not UTF-8, binary
files, empty input where the command cannot work, an output that names an input (or another output), an
output under an existing file, truncated / object-dtype / foreign ``.npy`` shards and malformed meta files,
binary and malformed ``dict.txt``, and line counts that do not match.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Callable

import numpy as np
import pytest
from hostile import assert_refused
from mining_helpers import clustered, write_emb, write_knn

GERMAN = [
    "Das ist ein guter Satz.",
    "Noch ein Satz steht hier.",
    "Der dritte Satz ist auch da.",
    "Heute scheint die Sonne.",
    "Wir gehen morgen in den Wald.",
]
ENGLISH = [
    "This is a good sentence.",
    "Here is another sentence.",
    "The third sentence is here too.",
    "The sun is shining today.",
    "Tomorrow we walk in the forest.",
]
BINARY = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)) * 4  # an image: not text at all


@pytest.fixture
def w(tmp_path, monkeypatch) -> SimpleNamespace:
    """The test's folder: good inputs, bad inputs, a file in the way; HOME and the working directory inside."""
    (tmp_path / "home").mkdir()
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("NLLB_MINI_HOME", str(tmp_path / "home" / "nllb"))
    monkeypatch.chdir(tmp_path)
    p = SimpleNamespace(root=tmp_path)
    p.de, p.en = tmp_path / "de.txt", tmp_path / "en.txt"
    p.de.write_text("".join(s + "\n" for s in GERMAN), encoding="utf-8")
    p.en.write_text("".join(s + "\n" for s in ENGLISH), encoding="utf-8")
    p.latin1 = tmp_path / "latin1.txt"
    p.latin1.write_bytes("Ein schöner Satz ist hier.\nÜber den Fluß gehen wir.\n".encode("latin-1"))
    p.binary = tmp_path / "image.png"
    p.binary.write_bytes(BINARY)
    p.empty = tmp_path / "empty.txt"
    p.empty.write_bytes(b"")
    p.afile = tmp_path / "afile"  # a plain file where an output folder would go
    p.afile.write_text("keep me\n")
    return p


def refused(name: str, args: list, w: SimpleNamespace, expect: str | None = None, outputs: tuple = ()) -> str:
    return assert_refused(name, [str(a) for a in args], w.root, outputs=outputs, expect=expect)


# --------------------------------------------------------------------------------------------------
# mine-filter and mine-lid: outputs that name inputs, encodings, files in the way

FILTER = ["--lang", "deu_Latn", "--no-progress-bar"]
LID = ["--lang", "deu_Latn", "--no-progress-bar"]


@pytest.mark.parametrize("name,base", [("mine-filter", FILTER), ("mine-lid", LID)])
def test_an_output_that_names_an_input_is_refused(w, name, base):
    lines = w.root / "de.lines"
    lines.write_text("".join(f"{i}\n" for i in range(len(GERMAN))))
    refused(name, [*base, "--input", w.de, "--output", w.de], w, expect="--output")
    refused(
        name,
        [*base, "--input", w.de, "--output", "o.txt", "--dropped", w.de],
        w,
        expect="same file as --input",
        outputs=["o.txt"],
    )
    refused(
        name,
        [*base, "--input", w.de, "--output", "o.txt", "--report", "./de.txt"],
        w,
        expect="--report",
        outputs=["o.txt"],
    )
    refused(
        name,
        [*base, "--input", w.de, "--input-line-numbers", lines, "--line-numbers", lines, "--output", "o.txt"],
        w,
        expect="same file as --input-line-numbers",
        outputs=["o.txt"],
    )
    refused(
        name,
        [*base, "--input", w.de, "--output", "o.txt", "--dropped", "o.txt"],
        w,
        expect="one would replace the other",
        outputs=["o.txt"],
    )


@pytest.mark.parametrize("name,base", [("mine-filter", FILTER), ("mine-lid", LID)])
def test_text_that_is_not_utf8_or_binary(w, name, base):
    refused(
        name,
        [*base, "--input", w.latin1, "--output", "o.txt"],
        w,
        expect="latin1.txt:1: not valid UTF-8",
        outputs=["o.txt"],
    )
    refused(
        name,
        [*base, "--input", w.binary, "--output", "o.txt", "--dropped", "d.txt"],
        w,
        expect="not valid UTF-8",
        outputs=["o.txt", "d.txt"],
    )


@pytest.mark.parametrize("name,base", [("mine-filter", FILTER), ("mine-lid", LID)])
def test_an_output_under_a_file_leaves_nothing(w, name, base):
    refused(name, [*base, "--input", w.de, "--output", w.afile / "o.txt"], w, expect="is a file, not a folder")
    # the main output's new folder must not appear when a later output (written last) cannot be
    refused(
        name,
        [*base, "--input", w.de, "--output", "new/o.txt", "--report", w.afile / "r.json"],
        w,
        expect="--report",
        outputs=["new"],
    )


def test_filter_line_numbers_and_columns_that_do_not_match(w):
    short = w.root / "short.lines"
    short.write_text("0\n1\n")
    refused(
        "mine-filter",
        [*FILTER, "--input", w.de, "--input-line-numbers", short, "--output", "o.txt", "--line-numbers", "o.lines"],
        w,
        expect="only 2 line numbers",
        outputs=["o.txt", "o.lines"],
    )
    refused(
        "mine-filter",
        ["--src-lang", "eng_Latn", "--tgt-lang", "deu_Latn", "--no-progress-bar", "--input", w.de, "--output", "o.tsv"],
        w,
        expect="de.txt:1: expected src<TAB>tgt",
        outputs=["o.tsv"],
    )


def test_lid_thresholds_and_model_that_are_not_what_they_claim(w):
    refused(
        "mine-lid",
        [*LID, "--input", w.de, "--thresholds", w.binary, "--output", "o.txt"],
        w,
        expect="image.png:",
        outputs=["o.txt"],
    )
    refused(
        "mine-lid",
        [*LID, "--input", w.de, "--thresholds", w.latin1, "--output", "o.txt"],
        w,
        expect="latin1.txt:1: not valid UTF-8",
        outputs=["o.txt"],
    )
    refused(
        "mine-lid",
        [*LID, "--input", w.de, "--thresholds", w.de, "--output", w.de],
        w,
        expect="same file as --thresholds",
    )
    refused(
        "mine-lid",
        [*LID, "--input", w.de, "--lid-model", w.binary, "--output", "o.txt"],
        w,
        expect="not a fastText model",
        outputs=["o.txt"],
    )
    refused(
        "mine-lid",
        [*LID, "--input", w.de, "--reject-threshold", "1.5", "--output", "o.txt"],
        w,
        expect="--reject-threshold 1.5 is outside [0, 1]",
        outputs=["o.txt"],
    )


# --------------------------------------------------------------------------------------------------
# mine-embed (ngram encoder)

EMBED = ["--encoder", "ngram", "--lang", "deu_Latn", "--no-progress-bar"]


def test_embed_refuses_bad_text_before_writing_anything(w):
    # the line count runs first and checks the encoding: no run.json, no shard of the lines before the bad one
    refused(
        "mine-embed",
        [*EMBED, "--input", w.latin1, "--output", "emb/de"],
        w,
        expect="latin1.txt:1: not valid",
        outputs=["emb"],
    )
    refused(
        "mine-embed", [*EMBED, "--input", w.binary, "--output", "emb/de"], w, expect="not valid UTF-8", outputs=["emb"]
    )
    refused(
        "mine-embed", [*EMBED, "--input", w.empty, "--output", "emb/de"], w, expect="input is empty", outputs=["emb"]
    )
    refused("mine-embed", [*EMBED, "--input", w.de, "--output", w.afile / "de"], w, expect="afile")


# --------------------------------------------------------------------------------------------------
# mine-index / mine-knn / mine-bitext: shards, meta files, outputs


@pytest.fixture
def emb(w) -> SimpleNamespace:
    w.a = write_emb(w.root / "emb" / "a", clustered(12, 8, 0), shard_rows=5)
    w.b = write_emb(w.root / "emb" / "b", clustered(10, 8, 1), shard_rows=5)
    return w


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-7])


def _object_array(path: Path) -> None:
    np.save(path, np.array([{"x": 1}] * 5, dtype=object), allow_pickle=True)  # a pickle inside a .npy


def _foreign(path: Path) -> None:
    path.write_bytes(BINARY)


def _meta(text: str | bytes) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        meta = Path(str(path).replace(".0001.npy", ".meta.json"))
        meta.write_bytes(text if isinstance(text, bytes) else text.encode())

    return write


SHARD_DAMAGE = {
    "truncated": (_truncate, "truncated or not a .npy array"),
    "object-dtype": (_object_array, "Python objects (a pickle), which are never loaded"),
    "not-npy": (_foreign, "never loaded"),  # numpy takes any non-.npy file for a pickle: refused all the same
    "binary-meta": (_meta(BINARY), "corrupt embedding set meta file"),
    "list-meta": (_meta("[1, 2]"), "unknown embedding set format 'list'"),
    "meta-without-shards": (
        _meta('{"format": "nllb-mini-embeddings/1", "dim": 8, "total": 12}'),
        "malformed meta file (KeyError 'shards')",
    ),
    "meta-shard-not-a-dict": (
        _meta('{"format": "nllb-mini-embeddings/1", "dim": 8, "total": 1, "shards": [3]}'),
        "malformed meta file (TypeError",
    ),
}


@pytest.mark.parametrize("damage", list(SHARD_DAMAGE))
def test_index_and_knn_refuse_a_damaged_embedding_set(emb, damage):
    spoil, expect = SHARD_DAMAGE[damage]
    spoil(emb.root / "emb" / "b.0001.npy")  # the second shard: the first one is fine
    message = refused("mine-index", ["--emb", emb.b, "--out", "b.faiss"], emb, expect=expect, outputs=["b.faiss"])
    assert "b." in message and ("re-run mine-embed" in message)
    # mine-knn checks both sets before it builds or writes anything: no --out-dir, no half-built index
    refused(
        "mine-knn", ["--src-emb", emb.a, "--tgt-emb", emb.b, "--out-dir", "knn"], emb, expect=expect, outputs=["knn"]
    )


def test_index_outputs_that_cannot_be_written(emb):
    refused("mine-index", ["--emb", emb.a, "--out", emb.afile / "a.faiss"], emb, expect="is a file, not a folder")
    refused(
        "mine-index",
        ["--emb", emb.a, "--out", emb.root / "emb" / "a.0001.npy", "--force"],
        emb,
        expect="same file as --emb shard 1",
    )
    refused(
        "mine-index",
        ["--emb", emb.a, "--out", emb.root / "emb" / "a.meta.json", "--force"],
        emb,
        expect="same file as --emb",
    )
    refused(
        "mine-knn",
        ["--src-emb", emb.a, "--tgt-emb", emb.b, "--out-dir", emb.afile],
        emb,
        expect="is a file, not a folder",
    )
    empty = write_emb(emb.root / "emb" / "empty", np.zeros((0, 8), dtype=np.float32))
    refused("mine-index", ["--emb", empty, "--out", "e.faiss"], emb, expect="empty", outputs=["e.faiss"])
    other = write_emb(emb.root / "emb" / "wide", clustered(6, 16, 2))
    refused(
        "mine-knn", ["--src-emb", emb.a, "--tgt-emb", other, "--out-dir", "knn"], emb, expect="dim", outputs=["knn"]
    )


@pytest.fixture
def knn(w) -> SimpleNamespace:
    """Hand-made k-NN results for 5 German and 5 English lines (each line's neighbours: itself, the next)."""
    n = len(GERMAN)
    ids = np.stack([np.arange(n), (np.arange(n) + 1) % n], axis=1)
    sims = np.tile(np.array([0.9, 0.5], dtype=np.float32), (n, 1))
    w.knn = w.root / "knn"
    w.knn.mkdir()
    for d in ("src2tgt", "tgt2src"):
        write_knn(w.knn / d, ids, sims, ntotal=n)
    return w


KNN_DAMAGE = {
    "truncated-ids": ("src2tgt.0000.ids.npy", _truncate, "truncated or not a .npy array"),
    "object-sims": ("tgt2src.0000.sims.npy", _object_array, "Python objects (a pickle)"),
    "foreign-avg": ("src2tgt.0000.avg.npy", _foreign, "never loaded"),
    "binary-meta": ("tgt2src.meta.json", lambda p: p.write_bytes(BINARY), "corrupt k-NN result meta file"),
    "meta-without-k": (
        "src2tgt.meta.json",
        lambda p: p.write_text('{"format": "nllb-mini-knn/1", "total": 5, "shards": []}'),
        "malformed meta file",
    ),
    "meta-rows-do-not-add-up": (
        "src2tgt.meta.json",
        lambda p: p.write_text(
            json.dumps({"format": "nllb-mini-knn/1", "k": 2, "total": 5, "shards": [{"start": 0, "rows": 3}]})
        ),
        "shards of 3 rows",
    ),
}


@pytest.mark.parametrize("damage", list(KNN_DAMAGE))
def test_bitext_refuses_damaged_knn_results(knn, damage):
    name, spoil, expect = KNN_DAMAGE[damage]
    spoil(knn.knn / name)
    message = refused(
        "mine-bitext",
        ["--knn-dir", knn.knn, "--src-text", knn.de, "--tgt-text", knn.en, "--out", "mined.tsv"],
        knn,
        expect=expect,
        outputs=["mined.tsv"],
    )
    assert "mine-knn" in message


def test_bitext_outputs_that_name_its_texts(knn):
    args = ["--knn-dir", knn.knn, "--src-text", knn.de, "--tgt-text", knn.en, "--threshold", "0"]
    refused("mine-bitext", [*args, "--out", knn.de], knn, expect="same file as --src-text")
    pair = knn.root / "de.txt"  # --pair-prefix de with language "txt" would write de.txt: the source text
    refused(
        "mine-bitext",
        [*args, "--out", "m.tsv", "--pair-prefix", knn.root / "de", "--src-lang", "txt", "--tgt-lang", "eng_Latn"],
        knn,
        expect=f"--pair-prefix (txt) {pair}",
        outputs=["m.tsv"],
    )
    refused("mine-bitext", [*args, "--out", knn.afile / "m.tsv"], knn, expect="is a file, not a folder")
    short = knn.root / "short.txt"
    short.write_text("one line\n")
    refused(
        "mine-bitext",
        [*args, "--src-text", short, "--out", "m.tsv"],
        knn,
        expect="1 lines but the source",
        outputs=["m.tsv"],
    )
    # a calibration file that is not one (binary, not JSON, JSON of something else): refused before any output
    refused(
        "mine-bitext",
        [*args[:-2], "--calibration", knn.root / "none.json", "--out", "m.tsv"],
        knn,
        expect="none.json: calibration file not found",
        outputs=["m.tsv"],
    )
    bad = knn.root / "bad.json"
    for content in (
        BINARY,
        b"{not json",
        b'{"format": "x", "encoders": {}}',
        b'{"format": "nllb-mini-calibration/1", "encoders": {"e5": {"default": "high"}}}',
    ):
        bad.write_bytes(content)
        refused(
            "mine-bitext",
            [*args[:-2], "--calibration", bad, "--out", "m.tsv"],
            knn,
            expect="bad.json: ",
            outputs=["m.tsv", "m.meta.json"],
        )


# --------------------------------------------------------------------------------------------------
# mine-eval


def test_eval_gold_refuses_bad_files_and_an_output_over_an_input(w):
    mined = w.root / "mined.tsv"
    mined.write_text("".join(f"1.2\t{d}\t{e}\n" for d, e in zip(GERMAN, ENGLISH)))
    gold = w.root / "gold.tsv"
    gold.write_text("".join(f"{i}\t{i}\n" for i in range(len(GERMAN))))
    args = ["gold", "--src-text", w.de, "--tgt-text", w.en]
    refused("mine-eval", [*args, "--mined", mined, "--gold", gold, "--out", mined], w, expect="same file as --mined")
    refused(
        "mine-eval",
        [*args, "--mined", mined, "--gold", gold, "--out", w.afile / "g.json"],
        w,
        expect="is a file, not a folder",
    )
    refused(
        "mine-eval",
        [*args, "--mined", mined, "--gold", w.latin1, "--out", "g.json"],
        w,
        expect="latin1.txt:1: not valid UTF-8",
        outputs=["g.json"],
    )
    refused(
        "mine-eval",
        [*args, "--mined", w.binary, "--gold", gold, "--out", "g.json"],
        w,
        expect="image.png:1: expected score<TAB>src<TAB>tgt",
        outputs=["g.json"],
    )
    refused(
        "mine-eval",
        ["gold", "--src-text", w.latin1, "--tgt-text", w.en, "--mined", mined, "--gold", gold],
        w,
        expect="latin1.txt:1: not valid UTF-8",
    )


def test_eval_bucc_files_that_are_binary_or_not_utf8(w):
    data = w.root / "bucc"
    data.mkdir()
    base = data / "deu_Latn-eng_Latn.test"
    Path(f"{base}.deu_Latn").write_text("".join(f"deu-{i}\t{s}\n" for i, s in enumerate(GERMAN)))
    Path(f"{base}.eng_Latn").write_text("".join(f"eng-{i}\t{s}\n" for i, s in enumerate(ENGLISH)))
    Path(f"{base}.gold").write_bytes(b"deu-0\teng-0\ndeu-1\teng-\xe9\n")
    score = ["bucc-score", "--data", data, "--pair", "deu_Latn-eng_Latn", "--candidates"]
    refused("mine-eval", [*score, w.binary], w, expect="test.gold:2: not valid UTF-8")
    Path(f"{base}.gold").write_text("deu-0\teng-0\n")
    refused("mine-eval", [*score, w.binary], w, expect="image.png:1: expected src_id<TAB>tgt_id")
    refused(
        "mine-eval",
        ["bucc", "--data", data, "--pairs", "deu_Latn-eng_Latn", "--work", "work", "--out-dir", w.afile / "report"],
        w,
        expect="--out-dir",
        outputs=["work"],
    )
    refused(
        "mine-eval", ["bucc-build", "--corpus", "corpus", "--langs", "deu_Latn", "--out", w.afile], w, expect="--out"
    )
    refused(
        "mine-eval",
        ["bucc", "--data", data, "--pairs", "deu_Latn-eng_Latn", "--work", "work", "--calibrate", w.binary],
        w,
        expect="image.png: not a calibration file",
        outputs=["work"],
    )
    (data / "info.json").write_bytes(BINARY)
    refused(
        "mine-eval",
        ["bucc", "--data", data, "--pairs", "deu_Latn-eng_Latn", "--work", "work"],
        w,
        expect="info.json: corrupt",
        outputs=["work"],
    )
    (data / "info.json").write_text("[]")
    refused(
        "mine-eval",
        ["bucc", "--data", data, "--pairs", "deu_Latn-eng_Latn", "--work", "work"],
        w,
        expect="not a BUCC set description",
        outputs=["work"],
    )


# --------------------------------------------------------------------------------------------------
# mine-train-encoder


@pytest.fixture
def corpus(w) -> SimpleNamespace:
    """Two languages against English; the Xhosa side of the second pair one line short."""
    train = w.root / "corpus" / "train"
    train.mkdir(parents=True)
    for lang, lines in (("deu_Latn", GERMAN), ("xho_Latn", ["Molo.", "Enkosi.", "Hamba kakuhle.", "Ewe."])):
        Path(train / f"eng_Latn-{lang}.eng_Latn").write_text("".join(s + "\n" for s in ENGLISH))
        Path(train / f"eng_Latn-{lang}.{lang}").write_text("".join(s + "\n" for s in lines))
    w.corpus = w.root / "corpus"
    return w


def test_train_encoder_refuses_a_bad_corpus_before_writing(corpus):
    args = ["laser", "--corpus", corpus.corpus, "--save-dir", "enc", "--cpu", "--max-update", "1", "--no-progress-bar"]
    refused("mine-train-encoder", args, corpus, expect="not line-aligned", outputs=["enc"])
    xho = corpus.corpus / "train" / "eng_Latn-xho_Latn.xho_Latn"
    xho.write_bytes(b"Molo.\nEnkosi.\nHamba \xe9.\nEwe.\nYebo.\n")
    refused("mine-train-encoder", args, corpus, expect="xho_Latn:3: not valid UTF-8", outputs=["enc"])
    refused(
        "mine-train-encoder",
        ["laser", "--corpus", corpus.root / "nowhere", "--save-dir", "enc"],
        corpus,
        expect="no train/ folder",
        outputs=["enc"],
    )
    xho.write_text("Molo.\nEnkosi.\nHamba kakuhle.\nEwe.\nYebo.\n")
    refused(
        "mine-train-encoder", [*args[:4], corpus.afile / "enc", *args[5:]], corpus, expect="is a file, not a folder"
    )


def test_train_encoder_export_refuses_to_overwrite_its_inputs(w):
    save = w.root / "enc"
    (save / "data" / "spm").mkdir(parents=True)
    (save / "data" / "spm" / "spm.model").write_bytes(b"model")
    (save / "checkpoints").mkdir()
    ckpt = save / "checkpoints" / "checkpoint_last.pt"
    ckpt.write_bytes(b"weights")
    refused(
        "mine-train-encoder", ["export", "--checkpoint", ckpt, "--out", ckpt], w, expect="same file as --checkpoint"
    )
    refused("mine-train-encoder", ["export", "--checkpoint", ckpt, "--out", "enc.bin"], w, expect="must end in .pt")
    refused(
        "mine-train-encoder",
        ["export", "--checkpoint", ckpt, "--out", w.afile / "e.pt"],
        w,
        expect="is a file, not a folder",
    )


# --------------------------------------------------------------------------------------------------
# mt-spm and mt-preprocess


def test_spm_train_refuses_bad_text_and_leaves_no_folder(w):
    train = ["train", "--vocab-size", "30", "--no-progress"]
    refused("mt-spm", [*train, "--input", w.latin1, "--out", "spm"], w, expect="latin1.txt:1:", outputs=["spm"])
    refused("mt-spm", [*train, "--input", w.binary, "--out", "spm"], w, expect="image.png:1:", outputs=["spm"])
    refused("mt-spm", [*train, "--input", w.empty, "--out", "spm"], w, expect="no non-empty lines", outputs=["spm"])
    refused("mt-spm", [*train, "--input", w.de, "--out", w.afile / "spm"], w, expect="is a file, not a folder")
    refused("mt-spm", [*train, "--input", w.de, "--out", w.afile], w, expect="is a file, not a folder")
    # a failing SentencePiece run (too big a vocabulary) removes the --out folder it created
    refused(
        "mt-spm",
        ["train", "--vocab-size", "100000", "--no-progress", "--input", w.de, "--out", "new/spm"],
        w,
        expect="--vocab-size 100000",
        outputs=["new"],
    )


def test_spm_train_refuses_an_input_among_its_outputs(w):
    (w.root / "spm").mkdir()
    mine = w.root / "spm" / "dict.txt"
    mine.write_text("".join(s + "\n" for s in GERMAN))
    refused(
        "mt-spm",
        ["train", "--vocab-size", "30", "--no-progress", "--input", mine, "--out", "spm"],
        w,
        expect="same file as --input",
    )
    refused("mt-spm", ["encode", "--model", w.binary], w, expect="not a SentencePiece model")


@pytest.fixture
def pre(w) -> SimpleNamespace:
    w.pref = w.root / "t"
    Path(f"{w.pref}.eng_Latn").write_text("▁a ▁b\n▁b ▁c\n▁c\n")
    Path(f"{w.pref}.deu_Latn").write_text("▁x ▁y\n▁y\n▁x\n")
    w.dict = w.root / "dict.txt"
    w.dict.write_text("▁a 3\n▁b 2\n▁c 2\n▁x 2\n▁y 2\n")
    w.args = ["-s", "eng_Latn", "-t", "deu_Latn", "--trainpref", w.pref, "--joined-dictionary"]
    return w


@pytest.mark.parametrize(
    "content,expect",
    [
        (BINARY, "dict.txt:1: not valid UTF-8"),
        (b"\x00" * 64 + b" 3\n", "dict.txt:1: a NUL byte: this is a binary file"),
        ("▁a 3\nÜber 2\n".encode("latin-1", "replace").replace(b"?", b"_"), "dict.txt:2: not valid UTF-8"),
        (b"\xe2\x96\x81a 3\nlonely\n", "dict.txt:2: expected 'token count'"),
        (b"\xe2\x96\x81a 3\n\xe2\x96\x81b many\n", "dict.txt:2: count 'many' is not an integer"),
    ],
)
def test_preprocess_refuses_a_binary_or_malformed_dictionary(pre, content, expect):
    pre.dict.write_bytes(content)
    refused(
        "mt-preprocess", [*pre.args, "--srcdict", pre.dict, "--destdir", "bin"], pre, expect=expect, outputs=["bin"]
    )


def test_preprocess_refuses_bad_text_and_unusable_destdirs(pre):
    Path(f"{pre.pref}.deu_Latn").write_bytes(b"\xe2\x96\x81x\n\xe9t\xe9\n\xe2\x96\x81x\n")
    # found with the line counts, before the dictionaries are written
    refused(
        "mt-preprocess",
        [*pre.args, "--srcdict", pre.dict, "--destdir", "bin"],
        pre,
        expect="t.deu_Latn:2: not valid UTF-8",
        outputs=["bin"],
    )
    Path(f"{pre.pref}.deu_Latn").write_text("▁x ▁y\n▁y\n")
    refused(
        "mt-preprocess",
        [*pre.args, "--srcdict", pre.dict, "--destdir", "bin"],
        pre,
        expect="not line-aligned",
        outputs=["bin"],
    )
    Path(f"{pre.pref}.deu_Latn").write_text("▁x ▁y\n▁y\n▁x\n")
    refused(
        "mt-preprocess",
        [*pre.args, "--srcdict", pre.dict, "--destdir", pre.afile / "bin"],
        pre,
        expect="is a file, not a folder",
    )
    refused("mt-preprocess", [*pre.args, "--srcdict", pre.dict, "--destdir", pre.afile], pre, expect="--destdir")
    refused(
        "mt-preprocess",
        [*pre.args, "--spm-model", pre.binary, "--destdir", "bin"],
        pre,
        expect="not a SentencePiece model",
        outputs=["bin"],
    )
