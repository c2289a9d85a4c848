"""mt-export: the HF M2M100 and CTranslate2 exports translate exactly like our model (greedy and beam search,
token for token), the code in their README.md runs and gives mt-translate's output, and an export never
deletes what it did not write."""

from __future__ import annotations

import ast
import json
import os
import random
import re
import subprocess
import sys

import pytest
import torch
from decode_fixtures import LANG_PAIRS, PAIRS, make_checkpoint
from train_fixtures import WORDS, make_corpus, one_thread  # noqa: F401 (autouse: one torch thread on the shared machine)

from mt.common.errors import UserError
from mt.common.files import temp_tag
from mt.formats import checkpoint as ckpt
from mt.generate.cli import export_main
from mt.generate.export import export
from mt.generate.search import SearchConfig
from mt.generate.translator import Translator
from mt.models.config import TransformerConfig
from mt.models.transformer import build_model
from mt.train.trainer import TrainConfig, train

SENTS = [
    "the cat sees the dog",
    "a big red house",
    "the old man eats bread and drinks water",
    "tree runs",
    "a green bird sings under the blue river stone",
    "Hello  world, ünïcödé!",
    "child eats",
]
MAX_NEW = 12


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    ck, data = make_checkpoint(root)
    return ck, Translator(ck), root


def _ours(tr: Translator, tgt: str) -> list[list[int]]:
    # at most MAX_NEW tokens before a forced </s>; compared with engines allowed MAX_NEW + 1 tokens
    return [h.ids for h in tr.translate(SENTS, "eng_Latn", tgt, beam=1, max_len_a=0, max_len_b=MAX_NEW)]


def _same(ours: list[int], theirs: list[int]) -> bool:
    """Equal, or (ours stopped by the length limit) theirs continues ours."""
    return theirs == ours or (len(ours) == MAX_NEW and theirs[:MAX_NEW] == ours)


def test_hf_export_logits_tokenizer_and_greedy_match(model, tmp_path):
    transformers = pytest.importorskip("transformers")
    ck, tr, _ = model
    out = tmp_path / "hf"
    export_main(["--format", "hf", "--path", str(ck), "--out", str(out)])
    assert {"config.json", "model.safetensors", "tokenizer.json", "spm.model", "dict.txt", "README.md"} <= {
        p.name for p in out.iterdir()
    }
    tok = transformers.AutoTokenizer.from_pretrained(out)
    hf = transformers.M2M100ForConditionalGeneration.from_pretrained(out).eval()
    d = tr.dictionary
    ours_src = [[tr.lang_token("eng_Latn"), *x, d.eos()] for x in tr.encode(SENTS)]
    enc = tok(["__eng_Latn__ " + s for s in SENTS])
    assert enc["input_ids"] == ours_src
    # logits on a padded batch with a decoder prefix
    batch = tok(["__eng_Latn__ " + s for s in SENTS], return_tensors="pt", padding=True)
    prev = torch.tensor([[tr.lang_token("deu_Latn"), *x[:3]] for x in ours_src])
    with torch.no_grad():
        theirs = hf(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], decoder_input_ids=prev).logits
        mine = tr.model(batch["input_ids"], prev)
    assert torch.allclose(theirs, mine, atol=1e-4), (theirs - mine).abs().max()
    # greedy generate: decoder_start_token_id is the target language token
    ended = 0
    for tgt in ("deu_Latn", "fra_Latn"):
        with torch.no_grad():
            gen = hf.generate(
                **batch,
                decoder_start_token_id=tok.convert_tokens_to_ids(f"__{tgt}__"),
                num_beams=1,
                do_sample=False,
                max_new_tokens=MAX_NEW + 1,
            )
        hf_ids = []
        for row in gen[:, 1:].tolist():
            row = [t for t in row if t != d.pad()]
            hf_ids.append(row[: row.index(d.eos())] if d.eos() in row else row)
        ours = _ours(tr, tgt)
        assert all(_same(a, b) for a, b in zip(ours, hf_ids)), list(zip(ours, hf_ids))
        ended += sum(len(a) < MAX_NEW for a in ours)
    assert ended > 0  # some hypotheses end with </s> on their own, not only at the length limit
    assert tok.decode(tok("__eng_Latn__ a big red house")["input_ids"], skip_special_tokens=True) == "a big red house"


def test_ct2_export_greedy_matches(model, tmp_path):
    ctranslate2 = pytest.importorskip("ctranslate2")
    ck, tr, _ = model
    out = export(ck, tmp_path / "ct2", "ctranslate2")
    assert json.loads((out / "config.json").read_text())["decoder_start_token"] is None
    ct = ctranslate2.Translator(str(out), device="cpu", compute_type="float32", intra_threads=1)
    src = [["__eng_Latn__", *tr.pieces(x), "</s>"] for x in tr.encode(SENTS)]
    ban = [[tr.dictionary[i]] for i in tr.banned]
    for tgt in ("deu_Latn", "fra_Latn"):
        res = ct.translate_batch(
            src,
            target_prefix=[[f"__{tgt}__"]] * len(src),
            beam_size=1,
            max_decoding_length=MAX_NEW + 1,
            suppress_sequences=ban,
        )
        theirs = [[tr.dictionary.index(p) for p in r.hypotheses[0]] for r in res]
        ours = _ours(tr, tgt)
        assert all(_same(a, b) for a, b in zip(ours, theirs)), list(zip(ours, theirs))


def test_moe_and_existing_output_are_refused(model, tmp_path):
    ck, _, root = model
    state = ckpt.load_checkpoint(ck)
    state["model_config"].update(moe_freq=2, moe_expert_count=4)
    state["model"] = build_model(TransformerConfig.from_dict(state["model_config"])).state_dict()
    moe = root / "ck" / "moe.pt"
    ckpt.save_checkpoint(state, moe)
    with pytest.raises(UserError, match="Mixture-of-Experts"):
        export(moe, tmp_path / "x", "hf")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "f").write_text("x")
    with pytest.raises(UserError, match="--force"):
        export(ck, tmp_path / "full", "hf")


# --- beam search and README code: a briefly trained model ------------------------------------------------
# A random-weight model repeats itself until the length limit, where the engines must differ (ours stops each
# sentence at 1.2 * src_len + 10 tokens, theirs at one fixed limit). 40 updates on the toy corpus (~5 s) give
# translations that end on their own, as a trained model's do; the tests compare those and check that nearly
# all end (how well 40 updates train moves with the CPU's kernels: on an AVX-512 Xeon one of the 40 German
# translations repeated itself to the limit, on the AVX2 EPYC none did).
BEAM_SENTS = [" ".join(random.Random(i).choices(WORDS, k=2 + i % 10)) for i in range(40)]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("export_trained")
    data = make_corpus(root, PAIRS, sizes={"eng_Latn-deu_Latn": 60, "eng_Latn-fra_Latn": 40}, n_valid=8, max_len=9)
    cfg = TrainConfig(
        data=str(data),
        lang_pairs=LANG_PAIRS,
        arch="transformer_tiny",
        save_dir=str(root / "ck"),
        max_tokens=512,
        lr=5e-3,
        warmup_updates=10,
        max_update=40,
        label_smoothing=0.0,
        model_overrides={"dropout": 0.0},
        no_progress_bar=True,
        no_epoch_checkpoints=True,
    )
    train(cfg)
    ck = root / "ck" / "checkpoint_last.pt"
    return ck, Translator(ck)


def _ours_beam(tr: Translator, sents: list[str], tgt: str) -> tuple[list, list[bool]]:
    """mt-translate's defaults (beam 4): the hypotheses, and which ended before the length limit (at least
    90% must: the toy model is trained)."""
    s = SearchConfig()
    hyps = tr.translate(sents, "eng_Latn", tgt)
    ended = [len(h.ids) < int(s.max_len_a * (len(ids) + 2) + s.max_len_b) for ids, h in zip(tr.encode(sents), hyps)]
    assert sum(ended) >= 0.9 * len(sents), [h.text for h, e in zip(hyps, ended) if not e]
    return hyps, ended


def test_hf_generation_config_reproduces_our_beam_search(trained, tmp_path):
    transformers = pytest.importorskip("transformers")
    ck, tr = trained
    out = tmp_path / "hf"
    export_main(["--format", "hf", "--path", str(ck), "--out", str(out)])
    tok = transformers.AutoTokenizer.from_pretrained(out)
    hf = transformers.M2M100ForConditionalGeneration.from_pretrained(out).eval()
    batch = tok(["__eng_Latn__ " + s for s in BEAM_SENTS], return_tensors="pt", padding=True)
    d = tr.dictionary
    for tgt in ("deu_Latn", "fra_Latn"):
        with torch.no_grad():  # nothing but the start token: every search setting comes from generation_config.json
            gen = hf.generate(**batch, decoder_start_token_id=tok.convert_tokens_to_ids(f"__{tgt}__"))
        theirs = [[t for t in row if t not in (d.pad(), d.eos())] for row in gen[:, 1:].tolist()]
        hyps, ended = _ours_beam(tr, BEAM_SENTS, tgt)
        ours = [h.ids for h in hyps]
        assert [t for t, e in zip(theirs, ended) if e] == [o for o, e in zip(ours, ended) if e], [
            i for i, (a, b, e) in enumerate(zip(ours, theirs, ended)) if e and a != b
        ]
        assert len({len(x) for x in ours}) > 3  # translations of many lengths, not one stopping point
    gc = json.loads((out / "generation_config.json").read_text())
    s = SearchConfig()
    assert (gc["num_beams"], gc["length_penalty"], gc["early_stopping"], gc["min_new_tokens"]) == (
        s.beam,
        s.lenpen,
        True,
        s.min_len,
    )
    assert gc["max_new_tokens"] == tr.model.cfg.max_target_positions and "forced_bos_token_id" not in gc


def _python_blocks(readme: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", readme, flags=re.S)


@pytest.mark.parametrize("fmt", ["hf", "ctranslate2"])
def test_readme_code_runs_and_gives_mt_translate_output(trained, tmp_path, fmt):
    """Every python block of the exported README.md, run as written from the export folder (our sentences in
    place of its example ones), prints what Translator gives with mt-translate's default settings."""
    pytest.importorskip("transformers" if fmt == "hf" else "ctranslate2")
    ck, tr = trained
    out = tmp_path / fmt
    export_main(["--format", fmt, "--path", str(ck), "--out", str(out)])
    blocks = _python_blocks((out / "README.md").read_text(encoding="utf-8"))
    assert blocks
    sents = BEAM_SENTS[:24] + ["Hello world.", "the  cat, sees ünïcödé!"]
    hyps, ended = _ours_beam(tr, sents, "deu_Latn")
    ours = [h.text for h in hyps]
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    for code in blocks:
        assert '"__eng_Latn__' in code and '"__deu_Latn__"' in code
        code, n = re.subn(r"^sentences = \[.*\].*$", f"sentences = {sents!r}", code, flags=re.M)
        assert n == 1, code
        run = subprocess.run(
            [sys.executable, "-c", code], cwd=out, env=env, capture_output=True, text=True, timeout=300
        )
        assert run.returncode == 0, run.stderr[-3000:]
        theirs = ast.literal_eval(run.stdout.strip().splitlines()[-1])
        assert len(theirs) == len(ours)
        assert [t for t, e in zip(theirs, ended) if e] == [o for o, e in zip(ours, ended) if e]


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@pytest.mark.parametrize("fmt", ["hf", "ctranslate2"])
def test_force_replaces_only_the_files_the_export_writes(model, tmp_path, fmt):
    """CTranslate2's converter deletes its output folder and save_pretrained deletes shard-like files: neither
    may touch --out. A killed export's staging folder is removed by the next one."""
    ck, _, _ = model
    out = tmp_path / "out"
    (out / ".ssh").mkdir(parents=True)
    keep = {"notes.txt": "mine", ".ssh/id_ed25519": "secret", "model-00001-of-00002.safetensors": "a shard of mine"}
    for name, text in keep.items():
        (out / name).write_text(text)
    (out / "config.json").write_text("{}")  # an earlier export's file: replaced
    host = temp_tag().rsplit("-", 1)[0]
    stale = out / f".mt-export.{host}-{_dead_pid()}.k3j4.tmp"
    (stale / "hf").mkdir(parents=True)
    (stale / "hf" / "model.safetensors").write_bytes(b"x" * 1000)
    with pytest.raises(UserError, match="--force"):
        export(ck, out, fmt)
    export_main(["--format", fmt, "--path", str(ck), "--out", str(out), "--force"])
    assert {name: (out / name).read_text() for name in keep} == keep
    assert json.loads((out / "config.json").read_text()) != {}
    assert (out / ("model.safetensors" if fmt == "hf" else "model.bin")).is_file() and (out / "README.md").is_file()
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]


def test_out_dot_keeps_the_working_directory(model, tmp_path, monkeypatch):
    ctranslate2 = pytest.importorskip("ctranslate2")
    ck, _, _ = model
    work = tmp_path / "work"
    (work / "src").mkdir(parents=True)
    (work / "src" / "main.py").write_text("print(1)\n")
    (work / "notes.txt").write_text("keep me\n")
    monkeypatch.chdir(work)
    export_main(["--format", "ctranslate2", "--path", str(ck), "--out", ".", "--force"])
    assert (work / "src" / "main.py").read_text() == "print(1)\n" and (work / "notes.txt").read_text() == "keep me\n"
    ctranslate2.Translator(str(work), device="cpu", intra_threads=1)  # and the export is there, complete
