"""Round trips of imported NLLB-200 models: mt-export --format hf gives back the Hugging Face folder they
were imported from (tensors, dtypes, config, tokenizer); the HF and CTranslate2 exports of a fine-tuned
imported model translate as ours (CTranslate2 through its own NLLB conversion), and their README code runs."""

from __future__ import annotations

import ast
import contextlib
import io
import json
import random
import re

import pytest
import torch

pytest.importorskip("transformers")
import nllb_fixtures as nf  # noqa: E402
from train_fixtures import WORDS, one_thread  # noqa: E402,F401 (one_thread: autouse)

from mt.data.cli import preprocess_main as preprocess_cli  # noqa: E402
from mt.generate.cli import export_main  # noqa: E402
from mt.generate.search import SearchConfig  # noqa: E402
from mt.generate.translator import Translator  # noqa: E402
from mt.importing.cli import import_main  # noqa: E402
from mt.train.cli import train_main  # noqa: E402

PAIR = ("eng_Latn", "deu_Latn")
KNOWN = [w for w in WORDS if set(w) <= set("".join(nf.WORDS["eng_Latn"]))]  # no <unk> with the fixtures' spm
SENTS = [" ".join(random.Random(i).choices(KNOWN, k=1 + i % 6)) for i in range(30)]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return nf.built(tmp_path_factory)


def _safetensors(path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path))


@pytest.mark.parametrize("dtype", ["keep", "bfloat16"])
def test_hf_export_gives_back_the_imported_folder(files, tmp_path, dtype):
    """mt-import then mt-export --format hf: the same tensor names, shapes, dtypes and values, an equivalent
    config.json, and tokenizer files that give NllbTokenizer's ids; importing the export gives the same model."""
    from transformers import AutoTokenizer, M2M100Config

    imported = files["out"]
    if dtype != "keep":
        imported = tmp_path / "imp"
        assert import_main(["--format", "hf", str(files["hf"]), "--out", str(imported), "--dtype", dtype]) == 0
    out = tmp_path / "hf"
    assert export_main(["--format", "hf", "--path", str(imported / "checkpoint.pt"), "--out", str(out)]) == 0
    want, got = _safetensors(files["hf"] / "model.safetensors"), _safetensors(out / "model.safetensors")
    assert want.keys() == got.keys()
    for k, v in want.items():
        v = v if dtype == "keep" else v.to(torch.bfloat16)
        assert got[k].dtype == v.dtype and got[k].shape == v.shape and torch.equal(got[k], v), k
    a, b = (M2M100Config.from_pretrained(p).to_dict() for p in (files["hf"], out))
    a.pop("_name_or_path"), b.pop("_name_or_path")
    if dtype != "keep":
        assert b.pop("dtype") == "bfloat16"
        a.pop("dtype")
    assert a == b
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["decoder_start_token_id"] == 2 and cfg["tokenizer_class"] == "NllbTokenizer"

    lines = nf.sentences(20, seed=31)
    theirs, ours = AutoTokenizer.from_pretrained(files["hf"]), AutoTokenizer.from_pretrained(out)
    for lang in dict.fromkeys(lang for lang, _ in lines):
        theirs.src_lang = ours.src_lang = lang
        texts = [s for code, s in lines if code == lang]
        assert ours(texts).input_ids == theirs(texts).input_ids, lang
    assert ours.convert_tokens_to_ids(nf.LANGS) == theirs.convert_tokens_to_ids(nf.LANGS)

    assert import_main(["--format", "hf", str(out), "--out", str(tmp_path / "again")]) == 0
    assert (tmp_path / "again" / "dict.txt").read_text() == (files["out"] / "dict.txt").read_text()
    x, y = (torch.load(p / "checkpoint.pt", weights_only=True) for p in (imported, tmp_path / "again"))
    assert x["model_config"] == y["model_config"] and all(torch.equal(v, y["model"][k]) for k, v in x["model"].items())


def test_legacy_layout_round_trips(files, tmp_path):
    folder = tmp_path / "hf-legacy"
    nf.make_hf_folder(folder, files["spm"], files["model"], legacy=True)
    assert import_main(["--format", "hf", str(folder), "--out", str(tmp_path / "imp")]) == 0
    assert (
        export_main(
            ["--format", "hf", "--path", str(tmp_path / "imp" / "checkpoint.pt"), "--out", str(tmp_path / "hf")]
        )
        == 0
    )
    assert json.loads((tmp_path / "hf" / "tokenizer_config.json").read_text())["legacy_behaviour"] is True
    assert import_main(["--format", "hf", str(tmp_path / "hf"), "--out", str(tmp_path / "again")]) == 0
    assert Translator(tmp_path / "again" / "checkpoint.pt").model.cfg.source_langtok == "last"


@pytest.fixture(scope="module")
def tuned(files, tmp_path_factory):
    """The imported model fine-tuned briefly on a toy task (copy the English words): its translations end on
    their own (a random model's run to the length limit, where the engines' rules differ)."""
    root = tmp_path_factory.mktemp("tuned")
    rng = random.Random(0)
    for split, n in (("train", 300), ("valid", 8)):
        rows = [rng.choices(KNOWN, k=rng.randint(1, 6)) for _ in range(n)]
        for lang in PAIR:
            (root / f"{split}.{lang}").write_text("\n".join(" ".join(ws) for ws in rows) + "\n")
    out = files["out"]
    assert (
        preprocess_cli(
            [
                "-s",
                PAIR[0],
                "-t",
                PAIR[1],
                "--trainpref",
                str(root / "train"),
                "--validpref",
                str(root / "valid"),
                "--destdir",
                str(root / "bin"),
                "--srcdict",
                str(out / "dict.txt"),
                "--joined-dictionary",
                "--spm-model",
                str(out / "spm.model"),
            ]
        )
        == 0
    )
    assert (
        train_main(
            [
                str(root / "bin"),
                "--lang-pairs",
                "-".join(PAIR),
                "--finetune-from-model",
                str(out / "checkpoint.pt"),
                "--save-dir",
                str(root / "ck"),
                "--max-update",
                "200",
                "--lr",
                "2e-2",
                "--warmup-updates",
                "10",
                "--label-smoothing",
                "0",
                "--dropout",
                "0",
                "--attention-dropout",
                "0",
                "--max-tokens",
                "600",
                "--cpu",
                "--no-progress-bar",
                "--no-epoch-checkpoints",
                "--log-interval",
                "20",
            ]
        )
        == 0
    )
    ck = root / "ck" / "checkpoint_last.pt"
    tr = Translator(ck)
    return ck, tr, _ours(tr, 4), root


def _capped(tr: Translator, hyps: list) -> list[bool]:
    """Which translations stopped at mt-translate's length limit (1.2 x source + 10 tokens)?"""
    s = SearchConfig()
    return [len(h.ids) >= int(s.max_len_a * (len(ids) + 2) + s.max_len_b) for ids, h in zip(tr.encode(SENTS), hyps)]


def _ours(tr: Translator, beam: int) -> list:
    """mt-translate's settings; at beam 4 none of the translations may reach the length limit."""
    hyps = tr.translate(SENTS, *PAIR, beam=beam)
    assert beam == 1 or not any(_capped(tr, hyps))
    assert len({len(h.ids) for h in hyps}) > 3
    return hyps


def test_hf_export_generates_our_translations(tuned, tmp_path):
    from transformers import AutoTokenizer, M2M100ForConditionalGeneration

    ck, tr, ours, _ = tuned
    out = tmp_path / "hf"
    assert export_main(["--format", "hf", "--path", str(ck), "--out", str(out)]) == 0
    tok = AutoTokenizer.from_pretrained(out, src_lang=PAIR[0])
    hf = M2M100ForConditionalGeneration.from_pretrained(out).eval()
    batch = tok(SENTS, return_tensors="pt", padding=True)
    with torch.no_grad():  # only the target language: every search setting comes from generation_config.json
        gen = hf.generate(**batch, forced_bos_token_id=tok.convert_tokens_to_ids(PAIR[1]))
    assert gen[:, :2].tolist() == [[2, tr.lang_token(PAIR[1])]] * len(SENTS)
    assert [[t for t in row if t not in (1, 2)] for row in gen[:, 2:].tolist()] == [h.ids for h in ours]


def test_ct2_export_translates_as_ours(tuned, tmp_path):
    """CTranslate2's own NLLB conversion of the HF export: greedy and beam 4 equal ours token for token."""
    ctranslate2 = pytest.importorskip("ctranslate2")
    ck, tr, ours4, _ = tuned
    out = tmp_path / "ct2"
    assert export_main(["--format", "ctranslate2", "--path", str(ck), "--out", str(out)]) == 0
    assert json.loads((out / "config.json").read_text())["decoder_start_token"] == "</s>"
    ct = ctranslate2.Translator(str(out), device="cpu", compute_type="float32", intra_threads=1)
    src = [[PAIR[0], *tr.pieces(x), "</s>"] for x in tr.encode(SENTS)]
    for beam, ours in ((1, _ours(tr, 1)), (4, ours4)):
        res = ct.translate_batch(src, target_prefix=[[PAIR[1]]] * len(src), beam_size=beam)
        assert all(r.hypotheses[0][0] == PAIR[1] for r in res)
        theirs = [[tr.dictionary.index(p) for p in r.hypotheses[0][1:]] for r in res]
        for a, b, capped in zip((h.ids for h in ours), theirs, _capped(tr, ours)):
            assert a == b or (capped and b[: len(a)] == a), (beam, a, b)  # greedy: theirs has no per-sentence limit


@pytest.mark.parametrize("fmt", ["hf", "ctranslate2"])
def test_readme_code_runs_and_gives_mt_translate_output(tuned, tmp_path, fmt, monkeypatch):
    """Every python block of the export's README.md, run as written from the export folder (in this process,
    our sentences in place of its example ones), prints mt-translate's translations."""
    pytest.importorskip("transformers" if fmt == "hf" else "ctranslate2")
    ck, _, ours, _ = tuned
    out = tmp_path / fmt
    assert export_main(["--format", fmt, "--path", str(ck), "--out", str(out)]) == 0
    blocks = re.findall(r"```python\n(.*?)```", (out / "README.md").read_text(encoding="utf-8"), flags=re.S)
    assert blocks
    monkeypatch.chdir(out)
    for code in blocks:
        assert '"eng_Latn"' in code and '"deu_Latn"' in code
        code, n = re.subn(r"^sentences = \[.*\].*$", f"sentences = {SENTS!r}", code, flags=re.M)
        assert n == 1, code
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            exec(compile(code, "README.md", "exec"), {})
        assert ast.literal_eval(printed.getvalue().strip().splitlines()[-1]) == [h.text for h in ours]


def test_a_vocabulary_of_mostly_filler_rows_is_assembled_in_linear_time():
    """bench/nllb.py's model: a small SentencePiece model under the released 256,206 embedding rows, so almost
    every row is a madeupword filler; naming them once took rows x symbols string comparisons (minutes)."""
    import time
    from pathlib import Path

    from mt.importing.vocab import _assemble

    t0 = time.perf_counter()
    d = _assemble({0: "<s>", 1: "<pad>", 2: "</s>", 3: "<unk>", 5: "madeupword0001"}, 40_000, Path("x"))
    assert time.perf_counter() - t0 < 2.0
    assert len(set(d.symbols)) == len(d) == 40_000 and d.symbols[4:7] == [
        "madeupword0000",
        "madeupword0001",
        "madeupword0002",
    ]
