"""mt-import --format hf: a random M2M100ForConditionalGeneration shaped like the released NLLB-200 dense
models (reduced sizes) becomes our checkpoint, and our code then computes what transformers computes:
the same logits, the same greedy and beam-4 translations (transformers' generate with its stopping rule
set to ours), the same token ids as transformers' NllbTokenizer (current and legacy layout)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers")
import nllb_fixtures as nf  # noqa: E402

from mt.data.rows import decoder_prefix, source_row  # noqa: E402
from mt.generate.loading import load_model  # noqa: E402
from mt.generate.search import SearchConfig  # noqa: E402
from mt.generate.translator import Translator  # noqa: E402
from mt.importing.cli import import_main as main  # noqa: E402

DIRECTIONS = {
    "eng_Latn": "deu_Latn",
    "deu_Latn": "rus_Cyrl",
    "rus_Cyrl": "zho_Hans",
    "zho_Hans": "arb_Arab",
    "arb_Arab": "hin_Deva",
    "hin_Deva": "eng_Latn",
}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return nf.built(tmp_path_factory)


@pytest.fixture(scope="module")
def translator(files):
    return Translator(files["out"] / "checkpoint.pt")


def _rows(tr: Translator, data: list[tuple[str, str]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded source rows as our Translator lays them out, and their attention mask."""
    rows = [
        source_row(ids, tr.lang_token(lang), 2, tr.model.cfg.source_langtok)
        for (lang, _), ids in zip(data, tr.encode([s for _, s in data]))
    ]
    src = torch.full((len(rows), max(map(len, rows))), 1)
    for i, r in enumerate(rows):
        src[i, : len(r)] = torch.tensor(r)
    return src, src.ne(1).long()


def test_imported_config_and_vocabulary(files, translator):
    cfg = translator.model.cfg
    assert (cfg.decoder_start, cfg.source_langtok) == ("eos_lang", "first")
    assert cfg.vocab_size == files["model"].config.vocab_size
    assert translator.langs == nf.LANGS  # the language order of the tokenizer files, not sorted
    d, n = translator.dictionary, nf.piece_count(files["spm"])
    assert [d[i] for i in range(5)] == ["<s>", "<pad>", "</s>", "<unk>", translator.spm.sp.id_to_piece(3)]
    assert d.index("__eng_Latn__") == n + 1 and d[n + 1 + len(nf.LANGS)] == "<mask>"
    assert d[len(d) - 1] == "madeupword0001" and len(d) == cfg.vocab_size  # the two spare embedding rows


def test_logits_equal_transformers(files, translator):
    hf = files["model"]
    data = nf.sentences(4, seed=3, langs=list(DIRECTIONS))
    src, mask = _rows(translator, data)
    targets = translator.encode([s for _, s in nf.sentences(4, seed=4, langs=list(DIRECTIONS.values()))])
    tgt = [
        decoder_prefix(translator.lang_token(DIRECTIONS[lang]), 2, "eos_lang") + ids
        for (lang, _), ids in zip(data, targets)
    ]
    prev = torch.full((len(tgt), max(map(len, tgt))), 1)
    for i, t in enumerate(tgt):
        prev[i, : len(t)] = torch.tensor(t)
    with torch.no_grad():
        want = hf(input_ids=src, attention_mask=mask, decoder_input_ids=prev).logits
        got = translator.model(src, prev)
    real = prev.ne(1)
    assert bool(mask.eq(0).any()) and bool(real.eq(0).any())  # padding on both sides is exercised
    assert (got[real] - want[real]).abs().max().item() <= 1e-4


class OurRules:
    """transformers LogitsProcessor with our search's rules (``mt.generate.search``): no <s>, <pad> or
    language token after the forced one; no </s> as the first output token (``--min-len 1``); and at the
    length limit ``a * src_len + b`` (per sentence) </s> is forced and keeps its log-prob."""

    def __init__(self, banned: list[int], maxlen: torch.Tensor, beams: int) -> None:
        self.banned, self.maxlen = torch.tensor(banned), maxlen.repeat_interleave(beams)

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        step = input_ids.shape[1] - 2  # generated tokens after </s> and the forced language token
        if step < 0:
            return scores
        scores[:, self.banned] = -float("inf")
        if step < 1:
            scores[:, 2] = -float("inf")
        cap = self.maxlen <= step
        if bool(cap.any()):
            eos = scores[cap, 2].clamp(min=-1e4)
            scores[cap] = -float("inf")
            scores[cap, 2] = eos
        return scores


@pytest.mark.parametrize("beam", [1, 4])
def test_translations_equal_transformers_generate(files, translator, beam):
    from transformers import GenerationConfig, LogitsProcessorList

    hf = files["model"]
    data = nf.sentences(20, seed=7, langs=list(DIRECTIONS))  # 120 sentences in 6 languages, 6 directions
    cfg = SearchConfig(beam=beam, max_len_a=0.5, max_len_b=6)
    ours = translator.translate_ids(
        translator.encode([s for _, s in data]), [lang for lang, _ in data], [DIRECTIONS[lang] for lang, _ in data], cfg
    )
    natural = capped = 0
    for src_lang, tgt_lang in DIRECTIONS.items():
        idx = [i for i, (lang, _) in enumerate(data) if lang == src_lang]
        src, mask = _rows(translator, [data[i] for i in idx])
        maxlen = (mask.sum(1).double() * cfg.max_len_a + cfg.max_len_b).long()
        gc = GenerationConfig(
            num_beams=beam,
            early_stopping=True,
            length_penalty=cfg.lenpen,
            do_sample=False,
            max_new_tokens=200,
            decoder_start_token_id=2,
            forced_bos_token_id=translator.lang_token(tgt_lang),
            eos_token_id=2,
            pad_token_id=1,
            bos_token_id=0,
            output_scores=True,
            return_dict_in_generate=True,
        )
        with torch.no_grad():
            out = hf.generate(
                input_ids=src,
                attention_mask=mask,
                generation_config=gc,
                logits_processor=LogitsProcessorList([OurRules(translator.banned, maxlen, beam)]),
            )
        for j, i in enumerate(idx):
            seq = out.sequences[j].tolist()
            assert seq[:2] == [2, translator.lang_token(tgt_lang)]
            seq = seq[2 : seq.index(2, 2)]
            assert ours[i][0].tokens == seq, f"sentence {i} ({src_lang}->{tgt_lang})"
            if beam > 1:  # same length normalisation: the forced language token counts, with log-prob 0
                assert abs(ours[i][0].score - out.sequences_scores[j].item()) < 1e-4
            natural += len(seq) < maxlen[j]
            capped += len(seq) == maxlen[j]
    assert natural >= 10 and capped >= 10  # both ways of ending are compared


@pytest.mark.parametrize("legacy", [False, True])
def test_token_ids_equal_nllb_tokenizer(files, tmp_path, legacy):
    """1,000 lines in 10 languages; legacy_behaviour in tokenizer_config.json sets the imported layout."""
    folder = files["hf"]
    if legacy:
        folder = tmp_path / "hf-legacy"
        shutil.copytree(files["hf"], folder)
        nf.write_tokenizer_files(folder, files["spm"], legacy=True)
        assert main(["--format", "hf", str(folder), "--out", str(tmp_path / "out")]) == 0
        tr = Translator(tmp_path / "out" / "checkpoint.pt")
        assert tr.model.cfg.source_langtok == "last"
    else:
        tr = Translator(files["out"] / "checkpoint.pt")
    tok = nf.nllb_tokenizer(folder, legacy=legacy)
    data = nf.sentences(100, seed=11)
    assert len(data) == 1000 and len({lang for lang, _ in data}) == 10
    ours = tr.encode([s for _, s in data])
    for (lang, text), ids in zip(data, ours):
        tok.src_lang = lang
        want = tok(text).input_ids
        assert source_row(ids, tr.lang_token(lang), 2, tr.model.cfg.source_langtok) == want, text
    # end to end, text in: the Translator's greedy translations are generate's on the tokenizer's rows
    from transformers import GenerationConfig, LogitsProcessorList

    lines = [text for lang, text in data if lang == "fra_Latn"][:12]
    tok.src_lang = "fra_Latn"
    enc = tok(lines, return_tensors="pt", padding=True)
    cfg = SearchConfig(beam=1, max_len_a=0.5, max_len_b=6)
    maxlen = (enc["attention_mask"].sum(1).double() * cfg.max_len_a + cfg.max_len_b).long()
    gc = GenerationConfig(
        num_beams=1,
        do_sample=False,
        max_new_tokens=200,
        decoder_start_token_id=2,
        eos_token_id=2,
        forced_bos_token_id=tr.lang_token("ell_Grek"),
        pad_token_id=1,
        bos_token_id=0,
    )
    with torch.no_grad():
        out = files["model"].generate(
            **enc, generation_config=gc, logits_processor=LogitsProcessorList([OurRules(tr.banned, maxlen, 1)])
        )
    got = tr.translate(lines, "fra_Latn", "ell_Grek", beam=1, max_len_a=0.5, max_len_b=6)
    assert [h.ids for h in got] == [row[2 : row.index(2, 2)] for row in out.tolist()]


def test_tokenizer_follows_sentencepiece(translator):
    """Where transformers' (tokenizers-based) NllbTokenizer departs from the SentencePiece model the released
    models were trained with (a trailing space becomes a piece; a run of unknown characters one <unk>),
    our ids are SentencePiece's + 1, as fairseq's and HF's SentencePiece-based tokenizer gave them."""
    sp = translator.spm.sp
    for text in ["die Datei ist offen ", "ⴰⵣⵓⵍ ЖЖЖ 文件 QQ"]:
        assert translator.encode([text])[0] == [i + 1 if i > 2 else 3 for i in sp.encode(text)]


@pytest.mark.parametrize("layout", ["sharded", "bin", "sharded-bin"])
def test_weight_files_import_identically(files, tmp_path, layout):
    folder = nf.make_hf_folder(tmp_path / layout, files["spm"], files["model"], weights=layout)
    names = {p.name for p in folder.iterdir()}
    assert ("model.safetensors.index.json" in names) == (layout == "sharded")
    assert ("pytorch_model.bin.index.json" in names) == (layout == "sharded-bin")
    assert main(["--format", "hf", str(folder), "--out", str(tmp_path / "out"), "--dtype", "float32"]) == 0
    a = torch.load(files["out"] / "checkpoint.pt", weights_only=True)
    b = torch.load(tmp_path / "out" / "checkpoint.pt", weights_only=True)
    assert a["model"].keys() == b["model"].keys()
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert (a["model_config"], a["dict_checksum"]) == (b["model_config"], b["dict_checksum"])


def test_bfloat16_import_and_load(files, tmp_path):
    assert main(["--format", "hf", str(files["hf"]), "--out", str(tmp_path), "--dtype", "bfloat16"]) == 0
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert {v.dtype for v in state["model"].values()} == {torch.bfloat16}
    assert load_model(tmp_path / "checkpoint.pt").model.cfg.decoder_start == "eos_lang"


def test_commands_run_on_the_imported_folder(files, translator, tmp_path, capsys):
    """mt-translate, mt-interactive and mt-generate (on data binarized with the imported dict.txt) give
    the Translator's translations."""
    from mt.data.cli import preprocess_main as preprocess_cli
    from mt.generate.cli import generate_main, interactive_main, translate_main

    ckpt = files["out"] / "checkpoint.pt"
    lines = [s for _, s in nf.sentences(6, seed=5, langs=["eng_Latn"])]
    want = [h.text for h in translator.translate(lines, "eng_Latn", "deu_Latn", beam=2)]
    (tmp_path / "in.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert (
        translate_main(
            [
                "--path",
                str(ckpt),
                str(tmp_path / "in.txt"),
                "--out",
                str(tmp_path / "tr"),
                "-s",
                "eng_Latn",
                "-t",
                "deu_Latn",
                "--beam",
                "2",
                "--cpu",
                "--no-progress-bar",
            ]
        )
        == 0
    )
    assert (tmp_path / "tr" / "deu_Latn" / "in.txt").read_text(encoding="utf-8").splitlines() == want
    capsys.readouterr()
    assert (
        interactive_main(
            [
                "--path",
                str(ckpt),
                "-s",
                "eng_Latn",
                "-t",
                "deu_Latn",
                "--beam",
                "2",
                "--cpu",
                "--input",
                str(tmp_path / "in.txt"),
                "--buffer-size",
                "4",
            ]
        )
        == 0
    )
    assert capsys.readouterr().out.splitlines() == want
    flores = tmp_path / "devtest"
    flores.mkdir()
    for lang in ("eng_Latn", "deu_Latn"):
        (flores / f"{lang}.devtest").write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert (
        preprocess_cli(
            [
                "-s",
                "eng_Latn",
                "-t",
                "deu_Latn",
                "--testpref",
                str(flores),
                "--destdir",
                str(tmp_path / "bin"),
                "--srcdict",
                str(files["out"] / "dict.txt"),
                "--joined-dictionary",
                "--spm-model",
                str(files["out"] / "spm.model"),
            ]
        )
        == 0
    )
    assert (
        generate_main(
            [
                str(tmp_path / "bin"),
                "--path",
                str(ckpt),
                "-s",
                "eng_Latn",
                "-t",
                "deu_Latn",
                "--beam",
                "2",
                "--cpu",
                "--results-path",
                str(tmp_path / "gen"),
                "--no-progress-bar",
            ]
        )
        == 0
    )
    assert (tmp_path / "gen" / "eng_Latn-deu_Latn.hyp").read_text(encoding="utf-8").splitlines() == want


def test_import_records_its_source(files):
    state = torch.load(files["out"] / "checkpoint.pt", weights_only=True)
    assert state["imported"]["format"] == "hf" and state["imported"]["model_type"] == "m2m_100"
    assert json.loads((files["hf"] / "config.json").read_text())["vocab_size"] == state["model_config"]["vocab_size"]


def test_search_paths_agree_with_a_two_token_prefix(files, translator):
    """The incremental decoder (which steps over </s> first), the cached and the uncached reference paths
    of ``search`` give the same hypotheses for a ``</s> __tgt__`` prefix."""
    from mt.generate.search import search

    data = nf.sentences(3, seed=9, langs=list(DIRECTIONS))
    src, _ = _rows(translator, data)
    prefix = torch.tensor([decoder_prefix(translator.lang_token("fra_Latn"), 2, "eos_lang")] * len(data))
    cfg = SearchConfig(beam=3, max_len_a=0.5, max_len_b=6, nbest=3)
    runs = [
        search(translator.model, src, prefix, cfg, 2, banned=translator.banned, fast=fast, use_cache=cache)
        for fast, cache in ((True, True), (False, True), (False, False))
    ]
    for other in runs[1:]:
        assert [[h.tokens for h in hs] for hs in other] == [[h.tokens for h in hs] for hs in runs[0]]
        assert all(abs(a.score - b.score) < 1e-4 for x, y in zip(runs[0], other) for a, b in zip(x, y))


def test_peak_memory_is_one_copy_of_the_weights(files, tmp_path):
    """Source files are memory-mapped and each tensor's pages are given back once copied: an import's peak
    RSS grows by about one copy of the weights (two copies would be the naive mmap, or torch.load, path)."""
    import os
    import subprocess
    import sys

    if not Path("/proc/self/clear_refs").exists():
        pytest.skip("needs Linux /proc/self/clear_refs to reset the peak RSS")
    model = nf.random_m2m100(nf.hf_config(files["model"].config.vocab_size, d=256, layers=2, ffn=4096, heads=4))
    size = sum(p.numel() * p.element_size() for p in model.parameters())
    big = {
        "hf": nf.make_hf_folder(tmp_path / "hf", files["spm"], model),
        "fairseq": nf.make_fairseq_files(tmp_path / "fs", model, files["spm"], cfg_style="args"),
    }
    small = {"hf": files["hf"], "fairseq": nf.make_fairseq_files(tmp_path / "small", files["model"], files["spm"])}
    del model
    code = "import sys; from pathlib import Path; from mt.common import pagemem; from mt.importing import cli\n"
    for fmt in ("hf", "fairseq"):  # a small import first: the code pages of torch it runs count in RSS too
        code += (
            f"cli.import_model({fmt!r}, Path({str(small[fmt])!r}), Path({str(tmp_path / ('warm-' + fmt))!r}))\n"
            "open('/proc/self/clear_refs', 'w').write('5')\n"
            "base = pagemem.current_rss()\n"
            f"cli.import_model({fmt!r}, Path({str(big[fmt])!r}), Path({str(tmp_path / ('out-' + fmt))!r}))\n"
            "print(pagemem.peak_rss() - base)\n"
        )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    for fmt, grew in zip(("hf", "fairseq"), map(int, proc.stdout.split())):
        assert 0.8 * size < grew < 1.35 * size, f"{fmt}: peak RSS +{grew >> 20} MiB for {size >> 20} MiB of weights"


@pytest.mark.parametrize("source", ["tokenizer.json", "no ids"])
def test_language_ids_from_each_tokenizer_file(files, tmp_path, source):
    """The language tokens' ids come from tokenizer.json (as saved by transformers), else from
    tokenizer_config.json's added_tokens_decoder, else from the order of additional_special_tokens."""
    folder = tmp_path / "hf"
    shutil.copytree(files["hf"], folder)
    if source == "tokenizer.json":
        nf.nllb_tokenizer(files["hf"]).save_pretrained(folder)
        assert json.loads((folder / "tokenizer.json").read_text())["added_tokens"]
    else:
        nf.write_tokenizer_files(folder, files["spm"], with_ids=False)
    assert main(["--format", "hf", str(folder), "--out", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "dict.txt").read_text() == (files["out"] / "dict.txt").read_text()
