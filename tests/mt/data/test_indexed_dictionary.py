import numpy as np
import pytest

from mt.common.errors import UserError
from mt.data.dictionary import Dictionary
from mt.data.indexed import IndexedDataset, IndexedDatasetWriter, best_dtype


def test_roundtrip_random_access(tmp_path):
    rng = np.random.default_rng(0)
    seqs = [rng.integers(0, 60000, size=rng.integers(0, 50)).tolist() for _ in range(500)]
    with IndexedDatasetWriter(tmp_path / "train.eng_Latn-deu_Latn.eng_Latn", best_dtype(60000)) as w:
        w.add_many(seqs)
    ds = IndexedDataset(tmp_path / "train.eng_Latn-deu_Latn.eng_Latn")
    assert len(ds) == 500
    assert ds.sizes.tolist() == [len(s) for s in seqs]
    for i in [0, 499, 250, 17]:
        assert ds[i].tolist() == seqs[i]


def test_int32_for_big_vocab(tmp_path):
    with IndexedDatasetWriter(tmp_path / "x", best_dtype(100000)) as w:
        w.add([99999, 3])
    assert IndexedDataset(tmp_path / "x")[0].tolist() == [99999, 3]


def test_truncated_bin_is_reported(tmp_path):
    with IndexedDatasetWriter(tmp_path / "x") as w:
        w.add([1, 2, 3, 4])
    data = (tmp_path / "x.bin").read_bytes()
    (tmp_path / "x.bin").write_bytes(data[:-2])
    with pytest.raises(UserError, match="truncated"):
        IndexedDataset(tmp_path / "x")


def test_failed_write_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError):
        with IndexedDatasetWriter(tmp_path / "x") as w:
            w.add([1])
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_dictionary_fairseq_layout(tmp_path):
    p = tmp_path / "dict.txt"
    p.write_text("▁the 10\n▁Haus 3\n__deu_Latn__ 1\n__eng_Latn__ 1\n", encoding="utf-8")
    d = Dictionary.load(p)
    assert (d.bos(), d.pad(), d.eos(), d.unk()) == (0, 1, 2, 3)
    assert d.index("▁the") == 4 and d.index("nope") == 3
    assert d.langs() == ["deu_Latn", "eng_Latn"]
    assert d.lang_index("eng_Latn") == 7
    assert d.string([7, 4, 5, 2]) == "▁the ▁Haus"
    d.save(tmp_path / "copy.txt")
    assert (tmp_path / "copy.txt").read_text(encoding="utf-8") == p.read_text(encoding="utf-8")
    assert Dictionary.load(tmp_path / "copy.txt").checksum() == d.checksum()


def test_dictionary_errors(tmp_path):
    p = tmp_path / "dict.txt"
    p.write_text("a 1\nb x\n", encoding="utf-8")
    with pytest.raises(UserError, match=r"dict.txt:2: count 'x'"):
        Dictionary.load(p)
    with pytest.raises(UserError, match="not in the dictionary"):
        Dictionary().lang_index("fra_Latn")


@pytest.mark.parametrize(
    "content,where,what",
    [
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xd8", "dict.txt:1:", "not valid UTF-8"),  # an image
        (b"a 1\n\x00\x00\x00\x00 7\n", "dict.txt:2:", "binary file"),  # zeros decode as UTF-8: NUL says binary
        (b"a 1\nb 2\ncaf\xe9 3\n", "dict.txt:3:", "not valid UTF-8"),  # Latin-1
        (b"a 1\nlonely\n", "dict.txt:2:", "expected 'token count'"),  # no count
        (b"a 1\nb 2.5\n", "dict.txt:2:", "count '2.5' is not an integer"),
        (b"a 1\n" + b"x" * 5000 + b"\n", "dict.txt:2:", "..."),  # a huge line is cut in the message
    ],
)
def test_a_binary_or_malformed_dictionary_is_a_located_error(tmp_path, content, where, what):
    p = tmp_path / "dict.txt"
    p.write_bytes(content)
    with pytest.raises(UserError) as err:
        Dictionary.load(p)
    message = str(err.value)
    assert where in message and what in message and "\n" not in message and len(message) < 400


def test_crlf_and_overwrite_lines_still_load(tmp_path):
    p = tmp_path / "dict.txt"
    p.write_bytes(b"a 1\r\nb 2\r\na 3 #fairseq:overwrite\r\n\r\n")
    d = Dictionary.load(p)
    assert d.symbols[4:] == ["a", "b"] and d.counts[4:] == [4, 2]


def test_add_dataset_merges_in_order(tmp_path):
    parts = [[[1, 2], [3]], [[], [4, 5, 6]]]
    for k, seqs in enumerate(parts):
        with IndexedDatasetWriter(tmp_path / f"p{k}") as w:
            w.add_many(seqs)
    with IndexedDatasetWriter(tmp_path / "all") as w:
        w.add([9])
        for k in range(2):
            w.add_dataset(tmp_path / f"p{k}")
    ds = IndexedDataset(tmp_path / "all")
    assert [ds[i].tolist() for i in range(len(ds))] == [[9], [1, 2], [3], [], [4, 5, 6]]
    with IndexedDatasetWriter(tmp_path / "i32", np.int32) as w:
        with pytest.raises(ValueError):
            w.add_dataset(tmp_path / "p0")


def test_a_killed_writers_full_size_temp_files_are_removed_by_the_next_writer(tmp_path):
    """A kill between open and finalize leaves ``.x.bin.{host}-{pid}...tmp``; the next writer of ``x`` removes it."""
    import subprocess
    import sys

    code = (
        "import os, sys; from mt.data.indexed import IndexedDatasetWriter\n"
        "w = IndexedDatasetWriter(sys.argv[1]); w.add(list(range(50000))); w._bin.flush(); os._exit(9)\n"
    )
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "x")], check=False)
    left = [p.name for p in tmp_path.iterdir()]
    assert len(left) == 1 and left[0].startswith(".x.bin.") and left[0].endswith(".tmp"), left
    with IndexedDatasetWriter(tmp_path / "x") as w:
        w.add([1, 2])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.bin", "x.idx"]
