"""Fine-tuning an imported NLLB-200 model with mt-train: data binarized by mt-preprocess with the imported
dict.txt, training rows laid out as the released models were trained (HF's labels / fairseq's targets),
--freeze-base with hyper-adapters, --add-langs."""

from __future__ import annotations

import json
import math

import pytest
import torch

pytest.importorskip("transformers")
import nllb_fixtures as nf  # noqa: E402
from hostile import assert_refused  # noqa: E402
from train_fixtures import one_thread  # noqa: E402,F401 (autouse: one torch thread on the shared machine)

from mt.data.cli import preprocess_main as preprocess_cli  # noqa: E402
from mt.data.dictionary import Dictionary  # noqa: E402
from mt.data.indexed import IndexedDataset  # noqa: E402
from mt.data.pair_dataset import collate, load_direction  # noqa: E402
from mt.formats.checkpoint import load_checkpoint  # noqa: E402
from mt.generate.translator import Translator  # noqa: E402
from mt.train.cli import train_main  # noqa: E402
from mt.train.criterion import LabelSmoothedCrossEntropy  # noqa: E402
from mt.train.validate import Validator  # noqa: E402

PAIR = ("eng_Latn", "deu_Latn")
pytestmark = pytest.mark.filterwarnings("ignore::mt.generate.translator.TranslatorWarning")  # zero-shot directions


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return nf.built(tmp_path_factory)


@pytest.fixture(scope="module")
def data(files, tmp_path_factory):
    """train / valid text of eng_Latn-deu_Latn binarized with the imported dict.txt and spm.model."""
    root = tmp_path_factory.mktemp("ft_data")
    text = {}
    for split, n, seed in (("train", 24, 1), ("valid", 12, 2)):
        for lang in PAIR:
            lines = [s.strip() for _, s in nf.sentences(n, seed=seed + len(lang), langs=[lang])]
            text[split, lang] = lines
            (root / f"{split}.{lang}").write_text("\n".join(lines) + "\n", encoding="utf-8")
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
    return root / "bin", text


def _train(args: list[str]) -> None:
    defaults = [
        "--max-tokens",
        "400",
        "--warmup-updates",
        "2",
        "--lr",
        "3e-3",
        "--cpu",
        "--no-progress-bar",
        "--no-epoch-checkpoints",
        "--log-interval",
        "1",
    ]
    assert train_main([*map(str, args[:1]), *defaults, *map(str, args[1:])]) == 0  # later flags win


def test_binarized_data_and_training_rows_are_the_released_models(files, data):
    """mt-preprocess with the imported dict.txt gives NllbTokenizer's ids; the collated batch is what HF trains
    NLLB on (input_ids; labels = [tgt_lang] y </s>; decoder_input_ids = shift_tokens_right(labels, </s>)), and
    our validation loss on it is M2M100ForConditionalGeneration's loss."""
    from transformers.models.m2m_100.modeling_m2m_100 import shift_tokens_right

    bin_dir, text = data
    tr = Translator(files["out"] / "checkpoint.pt")
    tok = nf.nllb_tokenizer(files["hf"])
    src_texts, tgt_texts = text["valid", PAIR[0]], text["valid", PAIR[1]]
    stored = IndexedDataset(bin_dir / f"valid.{PAIR[0]}-{PAIR[1]}.{PAIR[1]}")
    assert [stored[i].tolist() for i in range(len(stored))] == [ids + [2] for ids in tr.encode(tgt_texts)]

    d, cfg = tr.dictionary, tr.model.cfg
    ds = load_direction(
        bin_dir,
        "valid",
        "-".join(PAIR),
        d,
        d.langs(),
        source_langtok=cfg.source_langtok,
        decoder_start=cfg.decoder_start,
    )
    batch = collate([(*ds.item(i), ds, 0) for i in range(len(ds))], d.pad())
    tok.src_lang, tok.tgt_lang = PAIR
    enc = tok(src_texts, text_target=tgt_texts, padding=True, return_tensors="pt")
    labels = enc["labels"]
    assert labels[0, 0].item() == d.lang_index(PAIR[1])  # [tgt_lang] y </s>
    assert torch.equal(batch.src_tokens, enc["input_ids"])
    assert torch.equal(batch.target, labels)
    assert torch.equal(
        batch.prev_output_tokens, shift_tokens_right(labels, d.pad(), 2).masked_fill(labels.eq(d.pad()), d.pad())
    )
    assert batch.ntokens == int(labels.ne(d.pad()).sum()) == int(ds.tgt_sizes.sum())

    hf = files["model"]
    with torch.no_grad():
        want = hf(
            input_ids=enc["input_ids"],
            attention_mask=enc["attention_mask"],
            labels=labels.masked_fill(labels.eq(d.pad()), -100),
        ).loss.item()
    v = Validator({0: ds}, d, 10_000, 1024, 1024, LabelSmoothedCrossEntropy(0.0))
    got = v.losses(tr.model, torch.device("cpu"), 0, 1, False)["-".join(PAIR)]
    assert abs(got["nll_loss"] * math.log(2) - want) < 1e-5, (got, want)


def test_legacy_source_rows(files, data):
    """source_langtok="last" (HF's legacy_behaviour): x </s> __src__."""
    bin_dir, _ = data
    d = Dictionary.load(files["out"] / "dict.txt")
    ds = load_direction(bin_dir, "valid", "-".join(PAIR), d, d.langs(), source_langtok="last", decoder_start="eos_lang")
    batch = collate([(*ds.item(i), ds, 0) for i in range(3)], d.pad())
    for b in range(3):
        s = ds.item(b)[0].tolist()
        assert batch.src_tokens[b, : len(s) + 1].tolist() == [*s, d.lang_index(PAIR[0])]


def test_freeze_base_with_hyper_adapters_changes_only_adapters(files, data, tmp_path):
    """--finetune-from-model on the imported checkpoint, no --arch: the imported model (its shape and rows)
    with hyper-adapters; every imported tensor stays bitwise as it was, the adapters train, chrF validation
    decodes, and resuming (still without --arch) continues the same model."""
    bin_dir, _ = data
    base = load_checkpoint(files["out"] / "checkpoint.pt")["model"]
    save = tmp_path / "ha"
    args = [
        bin_dir,
        "--lang-pairs",
        "-".join(PAIR),
        "--finetune-from-model",
        files["out"] / "checkpoint.pt",
        "--hyper-adapters",
        "--hyper-adapter-bottleneck",
        "8",
        "--hyper-adapter-hidden-dim",
        "8",
        "--freeze-base",
        "--save-dir",
        save,
        "--eval-chrf",
        "4",
    ]
    _train([*args, "--max-update", "2"])
    first = load_checkpoint(save / "checkpoint_last.pt")
    assert first["model_config"]["decoder_start"] == "eos_lang" and first["num_updates"] == 2
    _train([*args, "--max-update", "4"])  # resumes checkpoint_last.pt
    tuned = load_checkpoint(save / "checkpoint_last.pt")
    assert tuned["num_updates"] == 4
    adapters = [k for k in tuned["model"] if ".adapter." in k]
    assert adapters and set(tuned["model"]) - set(adapters) == set(base)
    for k, v in base.items():
        assert torch.equal(v, tuned["model"][k]), f"{k} changed under --freeze-base"
    assert any(not torch.equal(first["model"][k], tuned["model"][k]) for k in adapters)
    log = [json.loads(line) for line in (save / "train_log.jsonl").read_text().splitlines()]
    assert [r["update"] for r in log if r["type"] == "train"] == [1, 2, 3, 4]
    assert all("chrf" in r for r in log if r["type"] == "valid")
    # the fine-tuned model translates with its own rows (and finds dict.txt / spm.model through the data dir)
    assert Translator(save / "checkpoint_last.pt").translate(["the file is open"], *PAIR, beam=2)[0].ids


def test_finetune_starts_a_fresh_optimizer_schedule_and_counters(files, data, tmp_path):
    """fairseq's --finetune-from-model: only the weights come along."""
    bin_dir, _ = data
    _train(
        [
            bin_dir,
            "--lang-pairs",
            "-".join(PAIR),
            "--finetune-from-model",
            files["out"] / "checkpoint.pt",
            "--save-dir",
            tmp_path / "a",
            "--max-update",
            "3",
        ]
    )
    _train(
        [
            bin_dir,
            "--lang-pairs",
            "-".join(PAIR),
            "--finetune-from-model",
            tmp_path / "a" / "checkpoint_last.pt",
            "--save-dir",
            tmp_path / "b",
            "--max-update",
            "1",
        ]
    )
    state = load_checkpoint(tmp_path / "b" / "checkpoint_last.pt")
    assert state["num_updates"] == 1 and state["data_state"]["epoch"] == 1
    first = [
        json.loads(line) for line in (tmp_path / "b" / "train_log.jsonl").read_text().splitlines() if '"train"' in line
    ][0]
    assert first["update"] == 1 and abs(first["lr"] - 3e-3 / 2) < 1e-12  # warmup restarts: update 1 of 2
    assert all(s["step"] == 1 for s in state["optimizer"]["state"].values() if "step" in s)


def test_add_langs_keeps_old_translations(files, data, tmp_path):
    """--add-langs appends the new language tokens after every old id (<mask> and the madeupword rows
    included): old rows bitwise equal, new ones initialised from the mean of the language rows or the named
    language; with the weights otherwise untouched (lr 0) every old direction translates token for token as
    the imported model, greedy and beam 4; the new language is a target like any other, also through
    mt-generate on the data binarized with the old dict.txt."""
    bin_dir, _ = data
    save = tmp_path / "add"
    _train(
        [
            bin_dir,
            "--lang-pairs",
            "-".join(PAIR),
            "--finetune-from-model",
            files["out"] / "checkpoint.pt",
            "--add-langs",
            "fuv_Latn,xho_Latn=deu_Latn",
            "--lr",
            "0",
            "--max-update",
            "1",
            "--save-dir",
            save,
        ]
    )
    old = load_checkpoint(files["out"] / "checkpoint.pt")
    new = load_checkpoint(save / "checkpoint_last.pt")
    d_old = Dictionary.load(files["out"] / "dict.txt")
    n = len(d_old)
    assert new["dict_added"] == ["__fuv_Latn__", "__xho_Latn__"] and new["model_config"]["vocab_size"] == n + 2
    e_old, e_new = old["model"]["embed_tokens.weight"], new["model"]["embed_tokens.weight"]
    assert torch.equal(e_new[:n], e_old)
    lang_rows = [d_old.lang_index(c) for c in d_old.langs()]
    assert torch.allclose(e_new[n], e_old[lang_rows].mean(0)) and torch.equal(
        e_new[n + 1], e_old[d_old.lang_index("deu_Latn")]
    )
    assert all(torch.equal(v, new["model"][k]) for k, v in old["model"].items() if k != "embed_tokens.weight")

    a, b = Translator(files["out"] / "checkpoint.pt"), Translator(save / "checkpoint_last.pt")
    assert b.dictionary.symbols[:n] == d_old.symbols and b.langs == [*a.langs, "fuv_Latn", "xho_Latn"]
    sents = nf.sentences(8, seed=21, langs=["eng_Latn", "rus_Cyrl", "zho_Hans"])
    for src, tgt in (("eng_Latn", "deu_Latn"), ("rus_Cyrl", "fra_Latn"), ("zho_Hans", "hin_Deva")):
        lines = [s for lang, s in sents if lang == src]
        for beam in (1, 4):
            ha, hb = (t.translate(lines, src, tgt, beam=beam) for t in (a, b))
            assert [h.ids for h in ha] == [h.ids for h in hb], (src, tgt, beam)
            assert max(abs(x.score - y.score) for x, y in zip(ha, hb)) < 1e-3
    assert all(h.text is not None for h in b.translate(["the file is open"], "eng_Latn", "fuv_Latn", beam=2))
    from mt.generate.cli import generate_main

    assert (
        generate_main(
            [
                str(bin_dir),
                "--path",
                str(save / "checkpoint_last.pt"),
                "-s",
                "eng_Latn",
                "-t",
                "deu_Latn",
                "--gen-subset",
                "valid",
                "--beam",
                "2",
                "--cpu",
                "--no-progress-bar",
                "--results-path",
                str(tmp_path / "gen"),
            ]
        )
        == 0
    )
    # and mt-export --format hf lists the new languages with their ids (after the madeupword rows)
    from transformers import AutoTokenizer

    from mt.generate.export import export

    tok = AutoTokenizer.from_pretrained(export(save / "checkpoint_last.pt", tmp_path / "hf", "hf"), src_lang="fuv_Latn")
    assert tok.convert_tokens_to_ids(["fuv_Latn", "xho_Latn", "eng_Latn"]) == [n, n + 1, d_old.lang_index("eng_Latn")]
    assert tok("the file is open").input_ids[0] == n


def test_add_langs_refusals(files, data, tmp_path):
    bin_dir, _ = data
    ck = str(files["out"] / "checkpoint.pt")
    common = [bin_dir, "--lang-pairs", "-".join(PAIR), "--save-dir", tmp_path / "s", "--max-update", "1", "--cpu"]
    for extra, expect in (
        (["--add-langs", "fuv_Latn"], "--finetune-from-model"),
        (["--finetune-from-model", ck, "--add-langs", "deu_Latn"], "already has the language token __deu_Latn__"),
        (["--finetune-from-model", ck, "--add-langs", "fuv_Latn=yor_Latn"], "no __yor_Latn__"),
        (["--finetune-from-model", ck, "--add-langs", "fuv_Latn,fuv_Latn"], "twice"),
        (["--finetune-from-model", ck, "--add-langs", "Fulfulde"], "unknown language code"),
    ):
        assert_refused("mt-train", [*common, *extra], tmp_path, expect=expect)
