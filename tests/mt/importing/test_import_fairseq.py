"""mt-import --format fairseq: a checkpoint.pt in the released NLLB-200 dense key layout, with an argparse
``args``, an omegaconf ``cfg`` (omegaconf is not installed: the pickle names its classes) and an
optimizer state, imports to the same checkpoint as the equivalent HF folder; a pickle naming any other
global is refused before anything it names runs."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

pytest.importorskip("transformers")
import hostile  # noqa: E402
import nllb_fixtures as nf  # noqa: E402

from mt.common import pagemem  # noqa: E402
from mt.generate.translator import Translator  # noqa: E402
from mt.importing import fairseq, safe_pickle  # noqa: E402
from mt.importing.cli import import_main as main  # noqa: E402


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return nf.built(tmp_path_factory)


@pytest.fixture
def import_cli(monkeypatch):
    """``hostile.assert_refused`` finds console scripts by name; mt-import is not installed in the venv yet."""
    orig = hostile.cli
    monkeypatch.setattr(hostile, "cli", lambda name: main if name == "mt-import" else orig(name))


@pytest.mark.parametrize("style", ["omegaconf", "args", "both"])
def test_imports_like_the_hf_folder(files, tmp_path, style):
    ckpt = nf.make_fairseq_files(tmp_path / "fs", files["model"], files["spm"], cfg_style=style)
    assert main(["--format", "fairseq", str(ckpt), "--out", str(tmp_path / "out")]) == 0
    a = torch.load(files["out"] / "checkpoint.pt", weights_only=True)
    b = torch.load(tmp_path / "out" / "checkpoint.pt", weights_only=True)
    assert a["model"].keys() == b["model"].keys()
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert a["dict_checksum"] == b["dict_checksum"]
    assert a["model_config"] == b["model_config"]
    lines = [s for _, s in nf.sentences(5, seed=2, langs=["fra_Latn", "kor_Hang"])]
    want = Translator(files["out"] / "checkpoint.pt").translate(lines, "fra_Latn", "ell_Grek", beam=3)
    got = Translator(tmp_path / "out" / "checkpoint.pt").translate(lines, "fra_Latn", "ell_Grek", beam=3)
    assert [h.ids for h in got] == [h.ids for h in want]


def test_config_objects_become_plain_values(files, tmp_path):
    ckpt = nf.make_fairseq_files(tmp_path, files["model"], files["spm"], cfg_style="omegaconf")
    code = (
        "import sys; from mt.importing import safe_pickle, fairseq\n"
        f"state = safe_pickle.load_checkpoint({str(ckpt)!r})\n"
        "cfg = safe_pickle.to_plain(state['cfg'])\n"
        f"opts = fairseq.flat_options(state, {str(ckpt)!r})\n"
        "assert cfg['task']['langs'] == opts['langs'] and cfg['optimization']['lr'] == [0.0001], cfg\n"
        "assert cfg['common'] == {'fp16': True, 'seed': 2, 'ddp_backend': 'c10d'}, cfg['common']\n"
        "assert opts['encoder_normalize_before'] is True and opts['extra_data'] == {'mono_dae': '/data/dae'}\n"
        "assert 'last_optimizer_state' not in state and state['extra_state']['val_loss'] == 2.5\n"
        "assert not [m for m in sys.modules if m.split('.')[0] in ('omegaconf', 'fairseq')]\n"
        "print(','.join(opts['langs']))\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == ",".join(nf.LANGS)


def test_optimizer_state_is_never_read(files, tmp_path):
    """Zip checkpoints are memory-mapped: a 32 MiB optimizer moment is never brought into memory."""
    big = {"last_optimizer_state": {"state": {0: {"exp_avg": torch.ones(8 << 20)}}}}
    ckpt = nf.make_fairseq_files(tmp_path, files["model"], files["spm"], extra=big)
    state = safe_pickle.load_checkpoint(ckpt, drop=())
    moment = state["last_optimizer_state"]["state"][0]["exp_avg"]
    present = pagemem.present_bytes([pagemem.tensor_range(moment)])
    if present is None:
        pytest.skip("no /proc/self/pagemap here")
    assert present <= (2 << 20), f"{present} bytes of the optimizer state were read"
    assert safe_pickle.load_checkpoint(ckpt).keys() == state.keys() - {"last_optimizer_state"}


class _Call:
    """Unpickles by calling ``func(*args)``: what a malicious checkpoint does."""

    def __init__(self, func, *args) -> None:
        self.func, self.args = func, args

    def __reduce__(self):
        return (self.func, self.args)


def _payloads(marker):
    import builtins

    return {
        "os.system": (_Call(os.system, f"touch {marker}"), "system"),
        "builtins.open": (_Call(builtins.open, str(marker), "w"), "io.open"),  # builtins.open is io.open
        "builtins.exec": (_Call(builtins.exec, f"open({str(marker)!r}, 'w').close()"), "builtins.exec"),
    }


@pytest.mark.parametrize(
    "name,legacy", [("os.system", False), ("builtins.open", False), ("builtins.exec", False), ("os.system", True)]
)
def test_other_globals_are_refused_and_nothing_runs(tmp_path, import_cli, name, legacy):
    marker = tmp_path / "pwned"
    payload, shown = _payloads(marker)[name]
    ckpt = nf.nasty_checkpoint(tmp_path / "checkpoint.pt", payload, legacy_format=legacy)
    torch.load(ckpt, weights_only=False)  # an unrestricted load does run it...
    assert marker.exists()
    marker.unlink()
    msg = hostile.assert_refused(
        "mt-import",
        ["--format", "fairseq", str(ckpt), "--out", str(tmp_path / "out")],
        tmp_path,
        outputs=[tmp_path / "out"],
        expect="refused to load",
    )
    assert shown in msg and not marker.exists()  # ...mt-import names it and runs nothing


def test_fairseq_options_our_transformer_lacks_are_refused(files, tmp_path, import_cli):
    args = nf.fairseq_args(files["model"].config.to_dict())
    args.layernorm_embedding = True
    ckpt = nf.make_fairseq_files(tmp_path, files["model"], files["spm"], cfg_style="args")
    state = torch.load(ckpt, weights_only=False)
    state["args"] = args
    torch.save(state, ckpt)
    hostile.assert_refused(
        "mt-import",
        ["--format", "fairseq", str(ckpt), "--out", str(tmp_path / "out")],
        tmp_path,
        outputs=[tmp_path / "out"],
        expect="--layernorm-embedding",
    )


def test_language_list_from_langs_file(files, tmp_path, import_cli):
    ckpt = nf.make_fairseq_files(tmp_path, files["model"], files["spm"], cfg_style="args")
    state = torch.load(ckpt, weights_only=False)
    del state["args"].langs
    torch.save(state, ckpt)
    out = tmp_path / "out"
    hostile.assert_refused(
        "mt-import", ["--format", "fairseq", str(ckpt), "--out", str(out)], tmp_path, outputs=[out], expect="--langs"
    )
    assert main(["--format", "fairseq", str(ckpt), "--out", str(out), "--langs", str(tmp_path / "langs.txt")]) == 0
    assert Translator(out / "checkpoint.pt").langs == nf.LANGS
    wrong = ",".join(reversed(nf.LANGS))
    state["args"].langs = list(nf.LANGS)
    torch.save(state, ckpt)
    hostile.assert_refused(
        "mt-import",
        ["--format", "fairseq", str(ckpt), "--out", str(tmp_path / "o2"), "--langs", wrong],
        tmp_path,
        outputs=[tmp_path / "o2"],
        expect="differs",
    )


def test_flat_options_merge_cfg_sections():
    state = {"args": None, "cfg": {"model": {"encoder_layers": 3}, "task": {"langs": ["eng_Latn"]}}}
    assert fairseq.flat_options(state, "x") == {"encoder_layers": 3, "langs": ["eng_Latn"]}
