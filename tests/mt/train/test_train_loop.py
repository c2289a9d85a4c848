"""mt-train end to end on tiny data: overfitting, exact kill-and-resume, DDP, checkpoint errors, log, CLI."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from train_fixtures import make_corpus, one_thread, subprocess_env, tiny_train_args, wait_for_update  # noqa: F401 (autouse)

from mt.common.errors import UserError
from mt.common.files import exclusive_lock
from mt.data.dictionary import Dictionary
from mt.data.pair_dataset import collate, load_direction
from mt.formats.checkpoint import load_checkpoint
from mt.formats.trainlog import TrainLog
from mt.generate.greedy import greedy_decode
from mt.models.config import TransformerConfig
from mt.models.transformer import Transformer
from mt.train.cli import train_main as main
from mt.train.trainer import TrainConfig, train

PAIRS = (("deu_Latn", "eng_Latn"), ("eng_Latn", "fra_Latn"))
REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("loop")
    return make_corpus(root, PAIRS, sizes={"deu_Latn-eng_Latn": 48, "eng_Latn-fra_Latn": 24}, n_valid=8, max_len=10)


def _cfg(data, save_dir, **kw) -> TrainConfig:
    base = dict(
        data=str(data),
        lang_pairs=["eng_Latn-deu_Latn", "deu_Latn-eng_Latn"],
        arch="transformer_tiny",
        save_dir=str(save_dir),
        max_tokens=256,
        lr=3e-3,
        warmup_updates=5,
        log_interval=1,
        no_progress_bar=True,
        no_epoch_checkpoints=True,
    )
    base.update(kw)
    return TrainConfig(**base)


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path)["model"]


def test_tiny_model_overfits_tiny_corpus(tmp_path):
    root = tmp_path / "of"
    data = make_corpus(root, (("deu_Latn", "eng_Latn"),), sizes={"deu_Latn-eng_Latn": 32}, n_valid=4, seed=1)
    cfg = _cfg(
        data,
        root / "ck",
        lang_pairs=["eng_Latn-deu_Latn"],
        max_tokens=512,
        max_update=120,
        lr=5e-3,
        warmup_updates=10,
        label_smoothing=0.0,
        model_overrides={"dropout": 0.0},
        log_interval=10,
    )
    summary = train(cfg)
    assert summary["num_updates"] == 120
    log = [r for r in TrainLog(root / "ck" / "train_log.jsonl").read() if r["type"] == "train"]
    assert log[0]["nll_loss"] > 4.0  # starts near log2(V)
    assert log[-1]["nll_loss"] < 0.4, log[-1]
    # the memorised training sentences come back under greedy decoding
    state = load_checkpoint(root / "ck" / "checkpoint_last.pt")
    model = Transformer(TransformerConfig.from_dict(state["model_config"]))
    model.load_state_dict(state["model"])
    d = Dictionary.load(data / "dict.txt")
    ds = load_direction(data, "train", "eng_Latn-deu_Latn", d, d.langs())
    items = [(*ds.item(i), ds, 0) for i in range(16)]
    batch = collate(items, d.pad())
    hyps = greedy_decode(model, batch.src_tokens, torch.full((16,), ds.tgt_lang_token), d.eos())
    exact = sum(h == t[:-1].tolist() for h, (_, t, _, _) in zip(hyps, items))
    assert exact >= 12, exact


@pytest.mark.slow
def test_sigkill_anywhere_then_resume_gives_bitwise_equal_weights(data, tmp_path):
    """Kill -9 mid-way between checkpoints (twice), resume, and end with the uninterrupted run's weights.

    The run mixes everything that carries state: dropout (torch RNG), --update-freq 2, virtual epochs of
    ~15 updates (so resumes start mid-epoch), a pair joining through the curriculum at update 13
    (the epoch's remainder is re-planned), validation every 7 updates and checkpoint_last every 6.
    """
    curriculum = tmp_path / "curr.tsv"
    curriculum.write_text("eng_Latn-fra_Latn\t13\n")
    extra = [
        "--max-update",
        "34",
        "--update-freq",
        "2",
        "--save-interval-updates",
        "6",
        "--virtual-epoch-size",
        "400",
        "--validate-interval-updates",
        "7",
        "--curriculum",
        str(curriculum),
        "--dropout",
        "0.2",
        "--attention-dropout",
        "0.1",
        "--keep-last-epochs",
        "1",
    ]
    cmd = [sys.executable, "-m", "mt.train"]
    ref = tmp_path / "ref"
    assert main(tiny_train_args(data, ref, *extra)) == 0  # in-process (same code, same single thread): saves a start-up

    run = tmp_path / "run"
    log = run / "train_log.jsonl"
    killed_at = []
    for kill_after in (14, 20):  # between checkpoints (12 and 18, 18 and 24)
        proc = subprocess.Popen(
            cmd + tiny_train_args(data, run, *extra), env=subprocess_env(), stderr=subprocess.PIPE, text=True, cwd=REPO
        )
        killed_at.append(wait_for_update(log, proc, kill_after))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert all(u < 34 for u in killed_at), killed_at
    done = subprocess.run(
        cmd + tiny_train_args(data, run, *extra), env=subprocess_env(), capture_output=True, text=True, cwd=REPO
    )
    assert done.returncode == 0, done.stderr
    assert "resumed from" in done.stderr

    a, b = _weights(ref / "checkpoint_last.pt"), _weights(run / "checkpoint_last.pt")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs after kill+resume (killed at updates {killed_at})"
    # the log was cut back on resume: the same train records as the uninterrupted run
    ref_losses = [(r["update"], r["loss"]) for r in TrainLog(ref / "train_log.jsonl").read() if r["type"] == "train"]
    run_losses = [(r["update"], r["loss"]) for r in TrainLog(log).read() if r["type"] == "train"]
    assert run_losses == ref_losses
    recs = TrainLog(log).read()
    assert {"start", "train", "valid", "curriculum"} <= {r["type"] for r in recs}
    assert [r["update"] for r in recs if r["type"] == "curriculum"] == [13]
    starts = [r for r in recs if r["type"] == "start" and r["resumed_from"]]  # the resumes started mid-epoch
    assert len(starts) == 2 and all(r["data_state"]["position"] > 0 for r in starts), starts
    assert any(r["data_state"]["consumed_before_plan"] > 0 for r in starts)  # ... and after a re-plan
    assert sorted(p.name for p in run.glob("checkpoint*.pt")) == sorted(p.name for p in ref.glob("checkpoint*.pt"))


@pytest.mark.slow
def test_two_process_gloo_matches_one_process(data, tmp_path):
    """torchrun with 2 CPU ranks on the same global batches gives the single-process weights."""
    # --batch-size 3 splits batches 2+1 across ranks (uneven shards); long sentences make 1-sentence
    # batches (rank 1 runs a zero-weight dummy); dropout off so both runs do the same arithmetic.
    extra = [
        "--max-update",
        "8",
        "--batch-size",
        "3",
        "--max-tokens",
        "24",
        "--dropout",
        "0",
        "--update-freq",
        "2",
        "--validate-interval-updates",
        "4",
    ]
    one, two = tmp_path / "one", tmp_path / "two"
    subprocess.run(
        [sys.executable, "-m", "mt.train", *tiny_train_args(data, one, *extra)],
        check=True,
        env=subprocess_env(),
        cwd=REPO,
        capture_output=True,
    )
    torchrun = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "mt.train",
    ]
    res = subprocess.run(
        torchrun + tiny_train_args(data, two, *extra), env=subprocess_env(), cwd=REPO, capture_output=True, text=True
    )
    assert res.returncode == 0, res.stderr[-3000:]
    a, b = _weights(one / "checkpoint_last.pt"), _weights(two / "checkpoint_last.pt")
    # Attention key biases get a gradient that is exactly 0 in exact arithmetic (adding the same q·b_k to
    # every score of a query leaves the softmax unchanged), so it is pure round-off (~1e-10) whose sign
    # depends on summation order, and Adam's normalisation turns that into ±lr steps. Compare the rest.
    for k in a:
        if k.endswith("qkv_proj.bias"):
            d = a[k].numel() // 3
            a[k], b[k] = torch.cat([a[k][:d], a[k][2 * d :]]), torch.cat([b[k][:d], b[k][2 * d :]])
        elif k.endswith("kv_proj.bias"):
            d = a[k].numel() // 2
            a[k], b[k] = a[k][d:], b[k][d:]
    worst = max(float((a[k] - b[k]).abs().max()) for k in a)
    assert worst < 1e-4, worst
    la = [r["loss"] for r in TrainLog(one / "train_log.jsonl").read() if r["type"] == "train"]
    lb = [r["loss"] for r in TrainLog(two / "train_log.jsonl").read() if r["type"] == "train"]
    assert len(la) == len(lb) == 8 and all(x == pytest.approx(y, rel=1e-5) for x, y in zip(la, lb))
    va = [r["loss"] for r in TrainLog(one / "train_log.jsonl").read() if r["type"] == "valid"]
    vb = [r["loss"] for r in TrainLog(two / "train_log.jsonl").read() if r["type"] == "valid"]
    assert va == pytest.approx(vb, rel=1e-4)
    st = load_checkpoint(two / "checkpoint_last.pt")
    assert len(st["rng"]) == 2 and not torch.equal(st["rng"][0]["torch"], st["rng"][1]["torch"])


def test_checkpoint_contents_and_resume_finished_run(data, tmp_path, capsys):
    save = tmp_path / "ck"
    train(_cfg(data, save, max_update=6, save_interval_updates=3, no_epoch_checkpoints=False, keep_last_epochs=1))
    state = torch.load(save / "checkpoint_last.pt", weights_only=True)  # loads without pickle of classes
    assert state["num_updates"] == 6
    assert state["lang_pairs"] == ["eng_Latn-deu_Latn", "deu_Latn-eng_Latn"]
    assert state["dict_checksum"] == Dictionary.load(data / "dict.txt").checksum()
    assert state["model_config"]["encoder_layers"] == 2 and state["code_version"].startswith("0.")
    assert {"python", "numpy", "torch"} <= set(state["rng"][0])
    assert (save / "checkpoint_best.pt").is_file()
    epochs = sorted(save.glob("checkpoint[0-9]*.pt"))
    assert len(epochs) == 1  # --keep-last-epochs 1
    for p in save.glob("checkpoint*.pt"):
        torch.load(p, weights_only=True)
    assert not list(save.glob(".*tmp"))  # no temp files left behind
    capsys.readouterr()
    summary = train(_cfg(data, save, max_update=6))
    assert summary["num_updates"] == 6
    assert "already finished" in capsys.readouterr().err


def test_checkpoint_of_a_run_with_relative_paths_loads_from_anywhere(data, tmp_path, monkeypatch):
    """mt-train run with a relative data path: the checkpoint records it resolved, plus a fresh save id."""
    from mt.formats.checkpoint import model_id
    from mt.generate.loading import load_model

    monkeypatch.chdir(Path(data).parent)
    train(_cfg(Path(data).name, os.path.relpath(tmp_path / "ck"), max_update=1))
    last = tmp_path / "ck" / "checkpoint_last.pt"
    state = torch.load(last, weights_only=True)
    assert state["resolved_paths"]["data"] == str(Path(data).resolve()) and len(state["save_id"]) == 32
    assert model_id(last) == f"save:{state['save_id']}"
    monkeypatch.chdir(tmp_path)
    assert load_model(last).data_dir.resolve() == Path(data).resolve()


def test_corrupt_and_truncated_checkpoint_is_a_clear_error(data, tmp_path):
    save = tmp_path / "ck"
    train(_cfg(data, save, max_update=2, save_interval_updates=2))
    last = save / "checkpoint_last.pt"
    blob = last.read_bytes()
    last.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(UserError, match="corrupt or truncated"):
        train(_cfg(data, save, max_update=4))
    last.write_bytes(b"\x00" * 100)
    with pytest.raises(UserError, match="corrupt or truncated") as e:
        train(_cfg(data, save, max_update=4))
    assert str(last) in str(e.value) and "\n" not in str(e.value)
    torch.save({"model": {}}, last)
    with pytest.raises(UserError, match="not an mt-train checkpoint"):
        train(_cfg(data, save, max_update=4))


def test_mismatched_checkpoint_is_a_clear_error(data, tmp_path):
    save = tmp_path / "ck"
    train(_cfg(data, save, max_update=2))
    with pytest.raises(UserError, match="another architecture: encoder_layers=2 \\(this run: 3\\)"):
        train(_cfg(data, save, max_update=4, model_overrides={"encoder_layers": 3}))
    other = make_corpus(tmp_path / "other", PAIRS, vocab_size=90, seed=5)
    with pytest.raises(UserError, match="another dictionary"):
        train(_cfg(other, save, max_update=4))
    with pytest.raises(UserError, match="--lang-pairs"):
        train(_cfg(data, save, max_update=4, lang_pairs=["eng_Latn-deu_Latn"]))


def test_cli_errors_are_one_line(data, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main([str(data), "--lang-pairs", "eng_Latn-deu_Latn,eng_Latn-zul_Latn", "--save-dir", str(tmp_path / "x")])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "zul_Latn" in err and err.count("\n") == 1
    with pytest.raises(SystemExit):
        main([str(data), "--lang-pairs", "eng_Latn-deu_Latn", "--best-checkpoint-metric", "chrf"])
    assert "--eval-chrf" in capsys.readouterr().err


def test_help_has_examples(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for flag in (
        "--max-tokens",
        "--sampling-temperature",
        "--curriculum",
        "--eval-chrf",
        "--encoder-ffn-embed-dim",
        "torchrun",
    ):
        assert flag in out


def test_validation_chrf_and_log_records(data, tmp_path):
    save = tmp_path / "ck"
    summary = train(
        _cfg(data, save, max_update=4, validate_interval_updates=2, eval_chrf=4, best_checkpoint_metric="chrf")
    )
    recs = TrainLog(save / "train_log.jsonl").read()
    valid = [r for r in recs if r["type"] == "valid"]
    assert [r["update"] for r in valid][:2] == [2, 4]
    for r in valid:
        assert set(r["directions"]) == {"eng_Latn-deu_Latn", "deu_Latn-eng_Latn"}
        for d in r["directions"].values():
            assert 0 <= d["chrf"] <= 100 and d["loss"] > 0 and d["ppl"] == pytest.approx(2 ** d["nll_loss"])
    assert summary["best"]["metric"] == "chrf"
    train_recs = [r for r in recs if r["type"] == "train"]
    assert {"update", "epoch", "loss", "nll_loss", "ppl", "lr", "tokens_per_s", "wall", "aux"} <= set(train_recs[0])
    missing_spm = tmp_path / "nope.model"
    with pytest.raises(UserError, match="SentencePiece model not found"):
        train(_cfg(data, tmp_path / "ck2", max_update=2, eval_chrf=2, spm_model=str(missing_spm)))


def _children(pid: int) -> list[int]:
    """Pids of the live processes whose parent is ``pid`` (from /proc)."""
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text()
            except OSError:
                continue
            fields = stat.rsplit(")", 1)[1].split()  # after "pid (comm)": state, ppid, ...
            if int(fields[1]) == pid and fields[0] != "Z":
                out.append(int(d.name))
    return out


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has exited
    except OSError:
        return False


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
def test_killing_only_the_torchrun_launcher_stops_its_workers(data, tmp_path, capsys):
    """kill -9 of torchrun alone: its 2 workers (own session, so the kill does not reach them) must not train on.
    While they run, a second mt-train on the same --save-dir is refused at once, naming the holder."""
    run = tmp_path / "run"
    log = run / "train_log.jsonl"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "mt.train",
        *tiny_train_args(data, run, "--max-update", "100000", "--save-interval-updates", "3", "--dropout", "0"),
    ]
    with open(tmp_path / "torchrun.out", "w") as out:
        launcher = subprocess.Popen(cmd, env=subprocess_env(), cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
    workers: list[int] = []
    try:
        t0 = time.time()
        while not (log.is_file() and '"update": 4,' in log.read_text()):
            assert launcher.poll() is None and time.time() - t0 < 120, (tmp_path / "torchrun.out").read_text()[-3000:]
            time.sleep(0.02)
        workers = _children(launcher.pid)
        assert len(workers) == 2, workers
        capsys.readouterr()
        with pytest.raises(SystemExit) as e:
            main(tiny_train_args(data, run, "--max-update", "1"))
        err = capsys.readouterr().err
        assert e.value.code == 2 and "--save-dir" in err and "in use by pid" in err and err.count("\n") == 1, err
        launcher.send_signal(signal.SIGKILL)
        launcher.wait()
        t_kill = time.time()
        while any(_alive(p) for p in workers) and time.time() - t_kill < 20:
            time.sleep(0.05)
        assert not any(_alive(p) for p in workers), f"workers {workers} still training 20 s after the launcher died"
    finally:
        for p in workers:
            if _alive(p):
                os.kill(p, signal.SIGKILL)
        if launcher.poll() is None:
            launcher.kill()
            launcher.wait()
    stopped = load_checkpoint(run / "checkpoint_last.pt")  # intact: the workers saved on their way out
    assert stopped["num_updates"] >= 4
    assert (
        "launcher" in (tmp_path / "torchrun.out").read_text()
        or "got signal 15" in (tmp_path / "torchrun.out").read_text()
    )
    # their lock died with them: the same command resumes at once (here as one process)
    assert main(tiny_train_args(data, run, "--max-update", str(stopped["num_updates"] + 1), "--dropout", "0")) == 0
    assert load_checkpoint(run / "checkpoint_last.pt")["num_updates"] == stopped["num_updates"] + 1


def test_a_second_run_on_a_busy_save_dir_fails_at_once(data, tmp_path):
    save = tmp_path / "ck"
    train(_cfg(data, save, max_update=2))
    before = {p.name: p.read_bytes() for p in save.iterdir() if p.name != ".lock"}
    with exclusive_lock(save, "the test's stand-in for a running mt-train"):
        with pytest.raises(UserError) as e:
            train(_cfg(data, save, max_update=4))
    assert f"--save-dir {save} is in use by pid {os.getpid()}" in str(e.value) and "\n" not in str(e.value)
    assert {p.name: p.read_bytes() for p in save.iterdir() if p.name != ".lock"} == before
    assert train(_cfg(data, save, max_update=4))["num_updates"] == 4  # once released, it resumes


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
@pytest.mark.parametrize("failure", ["torch", "os"])
def test_full_disk_while_saving_is_one_line_and_keeps_the_previous_checkpoint(data, tmp_path, monkeypatch, failure):
    """torch.save on a full disk raises its own RuntimeError ("unexpected pos ..."), or the file's OSError
    (ENOSPC) surfaces on flush: either way one line that says what is intact and how to go on."""
    save = tmp_path / "ck"
    train(_cfg(data, save, max_update=2))
    last = save / "checkpoint_last.pt"
    before = last.read_bytes()
    real_save = torch.save

    def full_disk(obj, f, *args, **kwargs):
        f.write(before[:4096])  # the disk fills part-way through the temp file
        if failure == "torch":
            real_save(obj, "/dev/full")  # the error torch itself gives when writes fail with ENOSPC
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(UserError) as e:
        train(_cfg(data, save, max_update=4, save_interval_updates=2))
    msg = str(e.value)
    assert "\n" not in msg and "could not save the checkpoint of update 4" in msg, msg
    assert f"{last} from update 2 is intact" in msg and "free space and run the same command to resume" in msg, msg
    assert last.read_bytes() == before
    assert not [p.name for p in save.iterdir() if p.name.endswith(".tmp")]


class _RunsCode:
    """Pickles as a call of os.system: what a tampered checkpoint would carry."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_tampered_checkpoint_is_refused_without_running_it(data, tmp_path):
    save = tmp_path / "ck"
    train(_cfg(data, save, max_update=2))
    last = save / "checkpoint_last.pt"
    state = torch.load(last, weights_only=True)
    marker = tmp_path / "the-checkpoint-ran-code"
    state["best"] = _RunsCode(marker)
    torch.save(state, last)
    for cfg in (
        _cfg(data, save, max_update=4),
        _cfg(data, tmp_path / "ft", max_update=2, finetune_from_model=str(last)),
    ):
        with pytest.raises(UserError) as e:
            train(cfg)
        msg = str(e.value)
        assert msg.startswith(f"{last}: refused to load it") and "system" in msg and "tampered" in msg, msg
        assert "corrupt" not in msg and "delete" not in msg and "\n" not in msg
    assert not marker.exists()
