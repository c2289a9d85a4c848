"""mt-translate: formats, bad lines, sharding, resume after SIGKILL or a full disk, refusal to mix models,
inputs or settings, output-name collisions."""

from __future__ import annotations

import contextlib
import errno
import gzip
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from decode_fixtures import make_checkpoint
from train_fixtures import WORDS, one_thread  # noqa: F401 (one_thread: autouse)

from mt.common.errors import UserError
from mt.common.files import sha256_file
from mt.formats import checkpoint as ckpt
from mt.generate.batch_job import TranslateConfig, translate_job
from mt.generate.cli import translate_main
from mt.generate.search import SearchConfig
from mt.generate.translator import Translator

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    ck, data = make_checkpoint(tmp_path_factory.mktemp("tr"))
    return ck, data, Translator(ck)


def _sentences(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 7))) for _ in range(n)]


SEARCH = dict(beam=2, max_len_b=6)


def _cfg(inputs, out, ck, **kw) -> TranslateConfig:
    base = dict(
        inputs=[str(p) for p in inputs],
        out=str(out),
        path=str(ck),
        src_lang="eng_Latn",
        tgt_langs=["deu_Latn"],
        chunk_size=4,
        search=SearchConfig(**SEARCH),
        progress=False,
    )
    base.update(kw)
    return TranslateConfig(**base)


def test_text_with_bad_lines_keeps_line_count_and_order(model, tmp_path):
    ck, _, tr = model
    good = _sentences(13)
    lines = [good[0].encode(), b"", good[1].encode(), b"bad \xff\xfe utf8", b"   ", " ".join(["house"] * 40).encode()]
    lines += [s.encode() for s in good[2:]]
    inp = tmp_path / "mono.txt"
    inp.write_bytes(b"\r\n".join(lines[:3]) + b"\r\n" + b"\n".join(lines[3:]))  # CRLF, LF, no final newline
    out = tmp_path / "job"
    translate_job(_cfg([inp], out, ck, tgt_langs=["deu_Latn", "fra_Latn"], max_source_positions=30))
    n = len(lines)
    expect_bad = {2: "empty", 4: "invalid-utf8", 5: "empty", 6: "too-long"}
    for tgt in ("deu_Latn", "fra_Latn"):
        got = (out / tgt / "mono.txt").read_text(encoding="utf-8").split("\n")
        assert got[-1] == "" and len(got) - 1 == n
        want = tr.translate(
            [line.decode() for i, line in enumerate(lines, 1) if i not in expect_bad], "eng_Latn", tgt, **SEARCH
        )
        assert [g for i, g in enumerate(got[:-1], 1) if i not in expect_bad] == [h.text for h in want]
        assert all(got[i - 1] == "" for i in expect_bad)
    bad = [r.split("\t") for r in (out / "bad_lines.tsv").read_text(encoding="utf-8").splitlines()]
    assert bad[0] == ["file", "line", "reason"]
    assert {int(r[1]): r[2].split()[0] for r in bad[1:]} == expect_bad
    assert all(r[0] == "mono.txt" for r in bad[1:])


def test_bad_lines_copy(model, tmp_path):
    ck, _, _ = model
    inp = tmp_path / "in.txt"
    inp.write_text("a big house\n" + " ".join(["tree"] * 40) + "\n\n", encoding="utf-8")
    translate_job(_cfg([inp], tmp_path / "o", ck, bad_lines="copy", max_source_positions=20))
    got = (tmp_path / "o" / "deu_Latn" / "in.txt").read_text(encoding="utf-8").splitlines()
    assert got[1] == " ".join(["tree"] * 40) and got[2] == "" and len(got) == 3


def test_formats_and_directories(model, tmp_path):
    ck, _, tr = model
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    s = _sentences(9, seed=3)
    (src / "a.tsv").write_text(f"1\t{s[0]}\n2\t{s[1]}\nonly-one-field\n", encoding="utf-8")
    (src / "sub" / "b.jsonl").write_text(
        json.dumps({"text": s[2]})
        + "\n{broken\n"
        + json.dumps({"other": 1})
        + "\n"
        + json.dumps({"text": s[3]})
        + "\n",
        encoding="utf-8",
    )
    (src / ".hidden.txt").write_text("ignored\n", encoding="utf-8")
    out = tmp_path / "o"
    translate_job(_cfg([src / "a.tsv"], out / "tsv", ck, column="2"))
    translate_job(_cfg([src / "sub" / "b.jsonl"], out / "jsonl", ck, json_field="text"))
    pd.DataFrame({"id": [1, 2, 3], "sentence": [s[4], None, s[5]]}).to_parquet(tmp_path / "c.parquet")
    translate_job(_cfg([tmp_path / "c.parquet"], out / "pq", ck, column="sentence"))
    t = {x: h.text for x, h in zip(s, tr.translate(s, "eng_Latn", "deu_Latn", **SEARCH))}
    assert (out / "tsv" / "deu_Latn" / "a.tsv.txt").read_text().splitlines() == [t[s[0]], t[s[1]], ""]
    assert (out / "jsonl" / "deu_Latn" / "b.jsonl.txt").read_text().splitlines() == [t[s[2]], "", "", t[s[3]]]
    assert (out / "pq" / "deu_Latn" / "c.parquet.txt").read_text().splitlines() == [t[s[4]], "", t[s[5]]]
    reasons = [line.split("\t")[2] for line in (out / "jsonl" / "bad_lines.tsv").read_text().splitlines()[1:]]
    assert reasons == ["bad-json", "missing-field text"]
    # a directory: every file, recursively, sorted; hidden files skipped; names mirrored
    (src / "sub" / "b.jsonl").unlink()
    (src / "sub" / "c.txt").write_text(f"{s[6]}\n{s[7]}\n", encoding="utf-8")
    (src / "z.txt").write_text(f"{s[8]}\n", encoding="utf-8")
    translate_job(_cfg([src], out / "dir", ck, column="2"))
    files = sorted(
        p.relative_to(out / "dir" / "deu_Latn").as_posix() for p in (out / "dir" / "deu_Latn").rglob("*") if p.is_file()
    )
    assert files == ["a.tsv.txt", "sub/c.txt", "z.txt"]
    assert (out / "dir" / "deu_Latn" / "sub" / "c.txt").read_text().splitlines() == [t[s[6]], t[s[7]]]
    (tmp_path / "x.jsonl").write_text("{}\n", encoding="utf-8")
    with pytest.raises(UserError, match="--field"):
        translate_job(_cfg([tmp_path / "x.jsonl"], out / "e", ck))


def test_shards_merge_to_the_unsharded_output(model, tmp_path, capsys):
    ck, _, _ = model
    inp = tmp_path / "in.txt"
    inp.write_text("\n".join(_sentences(30, seed=5)) + "\n", encoding="utf-8")
    translate_job(_cfg([inp], tmp_path / "one", ck))
    ref = (tmp_path / "one" / "deu_Latn" / "in.txt").read_text(encoding="utf-8")
    sharded = tmp_path / "three"
    for i in range(3):
        translate_job(_cfg([inp], sharded, ck, shard_index=i, num_shards=3))
        if i < 2:
            assert not (sharded / "deu_Latn" / "in.txt").exists()  # merged only when every chunk exists
    assert (sharded / "deu_Latn" / "in.txt").read_text(encoding="utf-8") == ref
    chunks = sorted((sharded / "chunks" / "deu_Latn").glob("chunk-*.txt"))
    assert len(chunks) == 8 and "".join(p.read_text(encoding="utf-8") for p in chunks) == ref
    assert "other shards" in capsys.readouterr().err


def test_rerun_skips_done_chunks_and_refuses_other_settings(model, tmp_path, capsys):
    ck, _, _ = model
    inp = tmp_path / "in.txt"
    inp.write_text("\n".join(_sentences(10, seed=6)) + "\n", encoding="utf-8")
    out = tmp_path / "o"
    translate_job(_cfg([inp], out, ck))
    stamp = {p: p.stat().st_mtime_ns for p in (out / "chunks").rglob("chunk-*.txt")}
    summary = translate_job(_cfg([inp], out, ck))
    assert summary["translated"] == 0 and {p: p.stat().st_mtime_ns for p in stamp} == stamp
    assert "3 of 3 chunks already done" in capsys.readouterr().err
    for change in (dict(search=SearchConfig(beam=3, max_len_b=6)), dict(chunk_size=5)):
        with pytest.raises(UserError, match="other settings"):
            translate_job(_cfg([inp], out, ck, **change))
    inp.write_text("\n".join(_sentences(11, seed=6)) + "\n", encoding="utf-8")
    with pytest.raises(UserError, match="input in.txt changed"):
        translate_job(_cfg([inp], out, ck))
    # a new target language in the same job is fine: only its chunks are translated
    summary = translate_job(_cfg([tmp_path / "in.txt"], tmp_path / "o2", ck))
    summary = translate_job(_cfg([tmp_path / "in.txt"], tmp_path / "o2", ck, tgt_langs=["deu_Latn", "fra_Latn"]))
    assert summary["translated"] == 11


@pytest.mark.slow
def test_sigkill_mid_job_then_resume_gives_the_uninterrupted_output(model, tmp_path):
    ck, _, _ = model
    inp = tmp_path / "in.txt"
    inp.write_text("\n".join(_sentences(160, seed=7)) + "\n", encoding="utf-8")
    args = [
        str(inp),
        "--path",
        str(ck),
        "-s",
        "eng_Latn",
        "-t",
        "deu_Latn,fra_Latn",
        "--chunk-size",
        "4",
        "--beam",
        "3",
        "--max-len-b",
        "40",
        "--max-len-a",
        "0",
        "--min-len",
        "30",
        "--no-progress-bar",
    ]
    translate_main(args + ["--out", str(tmp_path / "ref")])
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONPATH=str(REPO))
    cmd = [sys.executable, "-c", "import sys; from mt.generate.cli import translate_main; translate_main(sys.argv[1:])"]
    out = tmp_path / "run"
    proc = subprocess.Popen(
        cmd + args + ["--out", str(out)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    t0 = time.time()
    while len(list((out / "chunks").rglob("chunk-*.txt"))) < 6:
        assert proc.poll() is None, proc.stderr.read().decode()
        assert time.time() - t0 < 120
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = len(list((out / "chunks").rglob("chunk-*.txt")))
    assert 6 <= done < 80 and not (out / "deu_Latn" / "in.txt").exists()
    translate_main(args + ["--out", str(out)])
    for tgt in ("deu_Latn", "fra_Latn"):
        assert (out / tgt / "in.txt").read_bytes() == (tmp_path / "ref" / tgt / "in.txt").read_bytes()
    assert not [p for p in (out / "chunks").rglob("*.tmp")]


def test_output_folder_inside_the_input_folder_is_not_read(model, tmp_path):
    ck, _, _ = model
    src = tmp_path / "corpus"
    src.mkdir()
    (src / "a.txt").write_text("\n".join(_sentences(5, seed=8)) + "\n", encoding="utf-8")
    translate_job(_cfg([src], src / "bt", ck))
    summary = translate_job(_cfg([src], src / "bt", ck))  # the outputs under corpus/bt are not new inputs
    assert summary["records"] == 5 and summary["translated"] == 0


def _copy_checkpoint(ck: Path, dest: Path) -> Path:
    """A checkpoint of its own for a test that replaces it (the module's one is shared)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(ck, dest)
    return dest


def _retrain(path: Path, seed: int, save=ckpt.save_checkpoint) -> None:
    """Replace ``path`` by another model of the same shape, as more training does (the file keeps its size)."""
    state = torch.load(path, weights_only=True)
    torch.manual_seed(seed)
    for v in state["model"].values():  # in place: tied weights stay one tensor, as in a saved model
        if v.is_floating_point():
            v.add_(0.01 * torch.randn_like(v))
    save(state, path)


def test_a_model_saved_again_is_never_reused_or_mixed(model, tmp_path):
    """checkpoint_last.pt keeps its name and size while training goes on: the job must see another model."""
    ck = _copy_checkpoint(model[0], tmp_path / "run" / "checkpoint_last.pt")
    inp = tmp_path / "in.txt"
    inp.write_text("\n".join(_sentences(12, seed=9)) + "\n", encoding="utf-8")
    out = tmp_path / "o"
    translate_job(_cfg([inp], out, ck, shard_index=0, num_shards=2))  # chunks 0 and 2, then a "kill"
    done = {p: p.read_bytes() for p in (out / "chunks").rglob("chunk-*.txt")}
    assert len(done) == 2
    size = ck.stat().st_size
    _retrain(ck, seed=1)
    assert ck.stat().st_size == size  # what the old job identity looked at
    for shard in (1, 0):  # the other shard would mix two models in one file; this one would merge the old chunks
        with pytest.raises(UserError, match="started with another model"):
            translate_job(_cfg([inp], out, ck, shard_index=shard, num_shards=2))
    assert {p: p.read_bytes() for p in (out / "chunks").rglob("chunk-*.txt")} == done  # finished work kept
    assert not (out / "deu_Latn").exists()


def test_a_checkpoint_without_a_save_id_is_known_by_its_hash(model, tmp_path):
    """Checkpoints written before save ids existed: the job falls back to the file's SHA-256."""
    ck = tmp_path / "old.pt"
    state = torch.load(model[0], weights_only=True)
    state.pop("save_id")
    torch.save(state, ck)
    assert ckpt.model_id(ck) == f"sha256:{sha256_file(ck)}"
    inp = tmp_path / "in.txt"
    inp.write_text("\n".join(_sentences(5, seed=10)) + "\n", encoding="utf-8")
    translate_job(_cfg([inp], tmp_path / "o", ck))
    assert translate_job(_cfg([inp], tmp_path / "o", ck))["translated"] == 0
    _retrain(ck, seed=2, save=lambda st, p: torch.save({k: v for k, v in st.items() if k != "save_id"}, p))
    with pytest.raises(UserError, match="started with another model"):
        translate_job(_cfg([inp], tmp_path / "o", ck))


def test_same_size_edit_of_an_input_is_seen(model, tmp_path):
    ck, _, _ = model
    inp = tmp_path / "in.txt"
    inp.write_text("the cat sees a dog\nthe red house\n", encoding="utf-8")
    translate_job(_cfg([inp], tmp_path / "o", ck))
    inp.write_text("the dog sees a cat\nthe red house\n", encoding="utf-8")  # same size, same line count
    with pytest.raises(UserError, match="input in.txt changed since the job started"):
        translate_job(_cfg([inp], tmp_path / "o", ck))
    # the same content under another path is the same input
    moved = tmp_path / "elsewhere" / "in.txt"
    moved.parent.mkdir()
    moved.write_text("the cat sees a dog\nthe red house\n", encoding="utf-8")
    assert translate_job(_cfg([moved], tmp_path / "o", ck))["translated"] == 0


def test_job_of_the_previous_version_or_without_job_json_is_refused(model, tmp_path):
    ck, _, _ = model
    inp = tmp_path / "in.txt"
    inp.write_text("a big house\n", encoding="utf-8")
    out = tmp_path / "o"
    translate_job(_cfg([inp], out, ck))
    v2 = json.loads((out / "job.json").read_text(encoding="utf-8"))
    v1 = {
        "version": 1,
        "inputs": [{"name": "in.txt", "path": str(inp.resolve()), "format": "text", "bytes": 12}],
        "column": None,
        "field": None,
        "chunk_size": 4,
        "source_lang": "eng_Latn",
        "checkpoint": {"path": str(Path(ck).resolve()), "bytes": Path(ck).stat().st_size},
        "search": v2["search"],
        "bf16": False,
        "max_source_positions": v2["max_source_positions"],
        "bad_lines": "empty",
    }
    (out / "job.json").write_text(json.dumps(v1), encoding="utf-8")
    with pytest.raises(UserError, match="older mt-translate"):
        translate_job(_cfg([inp], out, ck))
    (out / "job.json").unlink()
    with pytest.raises(UserError, match="finished chunks but no"):
        translate_job(_cfg([inp], out, ck))
    assert (out / "chunks" / "deu_Latn" / "chunk-000000.txt").is_file()


def test_inputs_whose_outputs_collide_are_refused_before_any_work(model, tmp_path):
    ck, _, _ = model
    (tmp_path / "corpus.txt").write_text("a big house\n", encoding="utf-8")
    with gzip.open(tmp_path / "corpus.txt.gz", "wt", encoding="utf-8") as fh:
        fh.write("the red tree\n")
    both = r"inputs .*corpus.txt and .*corpus.txt.gz would both be written to OUT/\{tgt\}/corpus.txt"
    with pytest.raises(UserError, match=both):
        translate_job(_cfg([tmp_path / "corpus.txt", tmp_path / "corpus.txt.gz"], tmp_path / "o", ck))
    assert not (tmp_path / "o").exists()
    (tmp_path / "sub").write_text("a file named like a folder\n", encoding="utf-8")
    (tmp_path / "d" / "sub").mkdir(parents=True)
    (tmp_path / "d" / "sub" / "b.txt").write_text("the cat\n", encoding="utf-8")
    with pytest.raises(UserError, match="would have to be a folder"):
        translate_job(_cfg([tmp_path / "sub", tmp_path / "d"], tmp_path / "o", ck))
    assert not (tmp_path / "o").exists()


def test_empty_input_gets_an_empty_output(model, tmp_path):
    ck, _, _ = model
    (tmp_path / "empty.txt").write_bytes(b"")
    (tmp_path / "one.txt").write_text("a big house\n", encoding="utf-8")
    summary = translate_job(_cfg([tmp_path / "empty.txt"], tmp_path / "o", ck))
    assert summary["records"] == 0 and (tmp_path / "o" / "deu_Latn" / "empty.txt").read_bytes() == b""
    translate_job(_cfg([tmp_path / "empty.txt", tmp_path / "one.txt"], tmp_path / "o2", ck))
    assert (tmp_path / "o2" / "deu_Latn" / "empty.txt").read_bytes() == b""
    assert len((tmp_path / "o2" / "deu_Latn" / "one.txt").read_text(encoding="utf-8").splitlines()) == 1


def test_full_disk_is_one_line_keeps_finished_chunks_and_resumes(model, tmp_path, monkeypatch):
    from hostile import run_cli

    from mt.generate import batch_job

    ck, _, _ = model
    inp = tmp_path / "in.txt"
    inp.write_text("\n".join(_sentences(18, seed=11)) + "\n", encoding="utf-8")
    args = [
        inp,
        "--path",
        ck,
        "-s",
        "eng_Latn",
        "-t",
        "deu_Latn",
        "--chunk-size",
        "4",
        "--beam",
        "2",
        "--max-len-b",
        "6",
    ]
    assert run_cli("mt-translate", args + ["--out", tmp_path / "ref", "--no-progress-bar"])[0] == 0
    real = batch_job.atomic_write

    class Full:
        def __init__(self, fh):
            self.fh = fh

        def write(self, text):
            self.fh.write(text[:5])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        def writelines(self, lines):
            self.write("".join(lines))

    @contextlib.contextmanager
    def disk_full_at_chunk_2(path, *a, **kw):
        with real(path, *a, **kw) as fh:
            yield Full(fh) if Path(path).name == "chunk-000002.txt" else fh

    monkeypatch.setattr(batch_job, "atomic_write", disk_full_at_chunk_2)
    out = tmp_path / "run"
    rc, _, err = run_cli("mt-translate", args + ["--out", out])  # with the progress bar: it must end its line
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == 1 and "Traceback" not in err
    full = out / "chunks" / "deu_Latn" / "chunk-000002.txt"
    assert lines[-1] == f"error: {full}: the disk is full: free space and re-run (finished work is kept and skipped)"
    chunks = sorted(p.name for p in (out / "chunks" / "deu_Latn").iterdir())
    assert chunks == ["chunk-000000.txt", "chunk-000001.txt"]  # finished ones kept, nothing half-written
    assert not list(out.rglob("*.tmp")) and not (out / "deu_Latn").exists()
    monkeypatch.undo()
    rc, _, err = run_cli("mt-translate", args + ["--out", out, "--no-progress-bar"])
    assert rc == 0 and "2 of 5 chunks already done" in err
    assert (out / "deu_Latn" / "in.txt").read_bytes() == (tmp_path / "ref" / "deu_Latn" / "in.txt").read_bytes()


def test_an_untrained_direction_is_one_warning_line_for_the_whole_job(model, tmp_path, capfd):
    """mt-translate says once, in one line, that a direction was never trained (not per chunk, not as a
    Python warning with a source location)."""
    ck, _, _ = model
    src = tmp_path / "in.txt"
    src.write_text("\n".join(_sentences(10)) + "\n")
    translate_main(
        [
            str(src),
            "--out",
            str(tmp_path / "out"),
            "--path",
            str(ck),
            "-s",
            "fra_Latn",
            "-t",
            "eng_Latn",
            "--chunk-size",
            "3",
            "--beam",
            "1",
            "--max-len-b",
            "3",
            "--no-progress-bar",
        ]
    )
    err = capfd.readouterr().err
    warnings = [ln for ln in err.splitlines() if "not trained on" in ln]
    assert len(warnings) == 1 and warnings[0].startswith("mt-translate: warning: "), err
    assert "TranslatorWarning" not in err


def test_shards_starting_together_with_different_models_never_both_record_a_job(model, tmp_path, monkeypatch):
    """Shard B checks for job.json, finds none, and is about to write its own when shard A (another model)
    writes first: B must then compare with A's job and refuse, not overwrite it."""
    import threading

    from mt.generate import batch_job

    inp = tmp_path / "in.txt"
    inp.write_text("\n".join(_sentences(8, seed=4)) + "\n", encoding="utf-8")
    ck_a = _copy_checkpoint(model[0], tmp_path / "a" / "checkpoint_last.pt")
    ck_b = _copy_checkpoint(model[0], tmp_path / "b" / "checkpoint_last.pt")
    _retrain(ck_b, seed=3)
    translate_job(_cfg([inp], tmp_path / "ref", ck_a, shard_index=0, num_shards=2, merge=False))
    job_a = (tmp_path / "ref" / "job.json").read_text()
    out = tmp_path / "o"
    real_lock, at_lock, go = batch_job.exclusive_lock, threading.Event(), threading.Event()

    def slow_lock(*a, **kw):  # B has seen no job.json: let A's land now
        at_lock.set()
        go.wait(30)
        return real_lock(*a, **kw)

    monkeypatch.setattr(batch_job, "exclusive_lock", slow_lock)
    errors: list[BaseException] = []

    def shard_b():
        try:
            translate_job(_cfg([inp], out, ck_b, shard_index=1, num_shards=2, merge=False))
        except BaseException as exc:  # noqa: BLE001 (collected for the assertion below)
            errors.append(exc)

    t = threading.Thread(target=shard_b)
    t.start()
    assert at_lock.wait(60)
    out.mkdir(exist_ok=True)
    (out / "job.json").write_text(job_a)  # shard A, model A, was quicker
    go.set()
    t.join(60)
    assert len(errors) == 1 and "started with another model" in str(errors[0]), errors
    assert (out / "job.json").read_text() == job_a
