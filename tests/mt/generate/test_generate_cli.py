"""mt-generate (fairseq output, chrF, eval layout) and mt-interactive, run in-process on a tiny model."""

from __future__ import annotations

import math
import re
import shutil

import pytest
from decode_fixtures import make_checkpoint
from sacrebleu.metrics import BLEU, CHRF
from train_fixtures import one_thread  # noqa: F401 (autouse: one torch thread on the shared machine)

from mt.data.dictionary import Dictionary
from mt.data.pair_dataset import load_direction
from mt.generate.cli import export_main, generate_main, interactive_main, translate_main
from mt.generate.translator import Translator


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("cli"))


def _parse(lines: list[str]) -> dict[int, dict[str, list[list[str]]]]:
    out: dict[int, dict[str, list[list[str]]]] = {}
    for line in lines:
        m = re.match(r"^([STHDPW])-(\d+)\t(.*)$", line)
        if m:
            out.setdefault(int(m.group(2)), {}).setdefault(m.group(1), []).append(m.group(3).split("\t"))
    return out


def test_generate_writes_fairseq_lines_hyp_file_and_chrf(model, tmp_path, capsys):
    ck, data = model
    res = tmp_path / "gen"
    generate_main(
        [
            str(data),
            "--path",
            str(ck),
            "--gen-subset",
            "dev",
            "-s",
            "eng_Latn",
            "-t",
            "deu_Latn",
            "--beam",
            "3",
            "--nbest",
            "2",
            "--remove-bpe",
            "--results-path",
            str(res),
            "--no-progress-bar",
            "--max-len-b",
            "6",
        ]
    )
    text = (res / "generate-dev.txt").read_text(encoding="utf-8").splitlines()
    d = Dictionary.load(data / "dict.txt")
    n = len(load_direction(data, "valid", "eng_Latn-deu_Latn", d, d.langs()))
    parsed = _parse(text)
    assert sorted(parsed) == list(range(n))
    for sid, kinds in parsed.items():
        assert {k: len(v) for k, v in kinds.items()} == {"S": 1, "T": 1, "H": 2, "D": 2, "P": 2}
        assert kinds["S"][0][0].startswith("__eng_Latn__ ")
        for h, dd, p in zip(kinds["H"], kinds["D"], kinds["P"]):
            assert h[0] == dd[0]  # same score on H and D
            assert all(re.fullmatch(r"-?\d+\.\d{4}", x) for x in p[0].split())
        assert float(kinds["H"][0][0]) >= float(kinds["H"][1][0])
    # a sentence's lines are contiguous and in fairseq's order: S T (H D P)*
    first = [line.split("-")[0] for line in text if line.startswith(("S-", "T-", "H-", "D-", "P-"))][:8]
    assert first == ["S", "T", "H", "D", "P", "H", "D", "P"]
    score_line = text[-1]
    m = re.fullmatch(r"Generate dev with beam=3: chrF2\+\+ = (\d+\.\d+)", score_line)
    assert m, score_line
    assert capsys.readouterr().out.strip().splitlines()[-1] == score_line
    # the eval layout: detokenised best hypotheses in input order, line-aligned with the references
    hyps = (res / "eng_Latn-deu_Latn.hyp").read_text(encoding="utf-8").splitlines()
    assert hyps == [parsed[i]["D"][0][1] for i in range(n)]
    refs = [parsed[i]["T"][0][0] for i in range(n)]
    assert float(m.group(1)) == pytest.approx(CHRF(word_order=2).corpus_score(hyps, [refs]).score, abs=0.01)
    # scores are fairseq's base 2: the same translation from the Python API, in nats
    tr = Translator(ck)
    src0 = parsed[0]["S"][0][0].split(" ", 1)[1]
    best = tr.translate_batch([src0], "eng_Latn", "deu_Latn", beam=3, nbest=2, max_len_b=6)[0][0]
    assert best.text == parsed[0]["D"][0][1]
    assert float(parsed[0]["H"][0][0]) == pytest.approx(best.score / math.log(2), abs=1e-4)
    pos = [float(x) for x in parsed[0]["P"][0][0].split()]
    assert pos == pytest.approx([x / math.log(2) for x in best.positional_scores], abs=1e-4)


def test_generate_several_pairs_and_stdout(model, tmp_path, capsys):
    ck, data = model
    generate_main(
        [
            str(data),
            "--path",
            str(ck),
            "--gen-subset",
            "valid",
            "--lang-pairs",
            "eng_Latn-deu_Latn,eng_Latn-fra_Latn",
            "--beam",
            "2",
            "--results-path",
            str(tmp_path / "g"),
            "--no-progress-bar",
            "--max-len-b",
            "4",
            "--quiet",
        ]
    )
    out = capsys.readouterr().out.strip().splitlines()
    assert [line.split(":")[0] for line in out] == ["eng_Latn-deu_Latn", "eng_Latn-fra_Latn"]
    assert {p.name for p in (tmp_path / "g").iterdir()} == {
        "eng_Latn-deu_Latn.hyp",
        "eng_Latn-fra_Latn.hyp",
        "generate-valid.eng_Latn-deu_Latn.txt",
        "generate-valid.eng_Latn-fra_Latn.txt",
    }
    generate_main(
        [
            str(data),
            "--path",
            str(ck),
            "--gen-subset",
            "dev",
            "-s",
            "eng_Latn",
            "-t",
            "fra_Latn",
            "--beam",
            "1",
            "--no-progress-bar",
            "--max-len-b",
            "4",
        ]
    )
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1].startswith("Generate dev with beam=1: chrF2++ = ")
    assert any(line.startswith("H-0\t") for line in lines) and any(line.startswith("T-0\t") for line in lines)


BLEU_LINE = re.compile(
    r"Generate dev with beam=2: BLEU4 = (\d+\.\d\d), (\d+\.\d)/(\d+\.\d)/(\d+\.\d)/(\d+\.\d) "
    r"\(BP=(\d\.\d{3}), ratio=(\d+\.\d{3}), syslen=(\d+), reflen=(\d+)\)"
)


def test_generate_scoring_bleu_prints_fairseqs_bleu4_line(model, tmp_path, capsys):
    ck, data = model
    res = tmp_path / "gen"
    generate_main(
        [
            str(data),
            "--path",
            str(ck),
            "--gen-subset",
            "dev",
            "-s",
            "eng_Latn",
            "-t",
            "deu_Latn",
            "--beam",
            "2",
            "--remove-bpe",
            "--results-path",
            str(res),
            "--no-progress-bar",
            "--max-len-b",
            "6",
            "--scoring",
            "bleu",
        ]
    )
    cap = capsys.readouterr()
    m = BLEU_LINE.fullmatch(cap.out.strip().splitlines()[-1])
    assert m, cap.out
    text = (res / "generate-dev.txt").read_text(encoding="utf-8").splitlines()
    assert text[-1] == m.group(0)
    parsed = _parse(text)
    hyps = (res / "eng_Latn-deu_Latn.hyp").read_text(encoding="utf-8").splitlines()
    refs = [parsed[i]["T"][0][0] for i in range(len(hyps))]
    bleu = BLEU().corpus_score(hyps, [refs])
    assert float(m.group(1)) == pytest.approx(bleu.score, abs=0.005)
    assert [float(x) for x in m.group(2, 3, 4, 5)] == pytest.approx(bleu.precisions, abs=0.05)
    assert (int(m.group(8)), int(m.group(9))) == (bleu.sys_len, bleu.ref_len)
    assert "sacrebleu signature nrefs:1|case:mixed|eff:no|tok:13a|" in cap.err


def test_generate_bleu_is_tokenised_for_the_target_language():
    from mt.generate.generate import corpus_score

    refs = ["我们今天去公园散步。", "他在学校学习中文。", "这是一个很好的问题。"]
    hyps = ["我们今天去公园玩。", "他在学校学习英文。", "这是一个好问题。"]
    score, line, sig, _ = corpus_score(hyps, refs, "bleu", "zho_Hans")
    assert "tok:zh" in sig and line.startswith("BLEU4 = ")
    assert score == pytest.approx(BLEU(tokenize="zh").corpus_score(hyps, [refs]).score)
    assert score > 20 > BLEU(tokenize="13a").corpus_score(hyps, [refs]).score


def test_generate_prints_every_sentence_an_empty_source_included(model, tmp_path, capsys):
    import sentencepiece as spm

    from mt.data.indexed import IndexedDatasetWriter
    from mt.data.layout import bin_prefix

    ck, data = model
    sub = tmp_path / "bin"
    sub.mkdir()
    for name in ("dict.txt", "spm.model"):
        shutil.copy(data / name, sub / name)
    d, sp = Dictionary.load(sub / "dict.txt"), spm.SentencePieceProcessor(model_file=str(sub / "spm.model"))
    rows = {"eng_Latn": ["a big house", "", "the cat"], "deu_Latn": ["ein grosses Haus", "", "die Katze"]}
    for lang, texts in rows.items():
        with IndexedDatasetWriter(bin_prefix(sub, "test", "deu_Latn", "eng_Latn", lang)) as w:
            for t in texts:
                w.add(d.encode_pieces(sp.encode(t, out_type=str)))
    generate_main(
        [
            str(sub),
            "--path",
            str(ck),
            "-s",
            "eng_Latn",
            "-t",
            "deu_Latn",
            "--beam",
            "2",
            "--max-len-b",
            "4",
            "--no-progress-bar",
            "--remove-bpe",
        ]
    )
    out = capsys.readouterr().out.splitlines()
    ids = [line.split("\t")[0] for line in out if line.startswith("D-")]
    assert ids[0] == "D-1" and sorted(ids) == ["D-0", "D-1", "D-2"]  # the empty one first, then by length
    parsed = _parse(out)
    assert parsed[1]["S"] == [["__eng_Latn__"]] and parsed[1]["D"] == [["0.0", ""]]


def test_generate_warns_about_an_untrained_direction(model, capsys):
    ck, data = model
    generate_main(
        [
            str(data),
            "--path",
            str(ck),
            "--gen-subset",
            "dev",
            "-s",
            "fra_Latn",
            "-t",
            "eng_Latn",
            "--beam",
            "1",
            "--no-progress-bar",
            "--max-len-b",
            "3",
            "--quiet",
        ]
    )
    err = capsys.readouterr().err
    assert "mt-generate: warning: fra_Latn-eng_Latn: " in err and "not trained on" in err


def test_interactive_plain_and_fairseq(model, tmp_path, capsys):
    ck, _ = model
    inp = tmp_path / "in.txt"
    inp.write_bytes(
        "the cat sees the dog\n\nbad \xff line\n  \na big red house\n".encode("utf-8").replace(b"\xc3\xbf", b"\xff")
    )
    interactive_main(
        [
            "--path",
            str(ck),
            "-s",
            "eng_Latn",
            "-t",
            "deu_Latn",
            "--input",
            str(inp),
            "--buffer-size",
            "2",
            "--beam",
            "2",
            "--max-len-b",
            "5",
        ]
    )
    cap = capsys.readouterr()
    lines = cap.out.split("\n")[:-1]
    assert len(lines) == 5 and lines[1] == lines[2] == lines[3] == "" and lines[0] and lines[4]
    assert "in.txt:3: invalid UTF-8" in cap.err
    tr = Translator(ck)
    assert lines[4] == tr.translate(["a big red house"], "eng_Latn", "deu_Latn", beam=2, max_len_b=5)[0].text
    interactive_main(
        [
            "--path",
            str(ck),
            "-s",
            "eng_Latn",
            "-t",
            "deu_Latn",
            "--input",
            str(inp),
            "--output-format",
            "fairseq",
            "--nbest",
            "2",
            "--beam",
            "2",
            "--max-len-b",
            "5",
        ]
    )
    parsed = _parse(capsys.readouterr().out.splitlines())
    assert sorted(parsed) == [0, 1, 2, 3, 4]
    assert {k: len(v) for k, v in parsed[0].items()} == {"S": 1, "W": 1, "H": 2, "D": 2, "P": 2}
    assert parsed[4]["D"][0][1] == lines[4]


def test_interactive_fairseq_lines_for_every_input_line(model, tmp_path, capsys):
    """grep ^D- must stay line-aligned with the input: empty and undecodable lines get an empty hypothesis."""
    ck, _ = model
    inp = tmp_path / "in.txt"
    inp.write_bytes(b"the cat sees the dog\n\nbad \xff line\n  \na big red house\n")
    interactive_main(
        [
            "--path",
            str(ck),
            "-s",
            "eng_Latn",
            "-t",
            "deu_Latn",
            "--input",
            str(inp),
            "--output-format",
            "fairseq",
            "--buffer-size",
            "3",
            "--beam",
            "2",
            "--max-len-b",
            "5",
        ]
    )
    out = capsys.readouterr().out.splitlines()
    parsed = _parse(out)
    for i in range(5):
        assert {k: len(v) for k, v in parsed[i].items()} == {"S": 1, "W": 1, "H": 1, "D": 1, "P": 1}, i
    assert [line.split("\t")[0] for line in out if line.startswith("D-")] == [f"D-{i}" for i in range(5)]
    for i in (1, 2, 3):
        assert parsed[i]["H"] == [["0.0", ""]] and parsed[i]["D"] == [["0.0", ""]] and parsed[i]["P"] == [[""]]
        assert parsed[i]["S"] == [["__eng_Latn__"]]
    assert parsed[0]["D"][0][1] and parsed[4]["D"][0][1]


def test_interactive_takes_the_data_directory_first_as_fairseq_does(model, tmp_path, capsys):
    ck, data = model
    inp = tmp_path / "in.txt"
    inp.write_bytes(b"a big red house\n")
    want = Translator(ck).translate("a big red house", "eng_Latn", "deu_Latn", beam=2, max_len_b=5).text
    argv = [
        "--path",
        str(ck),
        "-s",
        "eng_Latn",
        "-t",
        "deu_Latn",
        "--input",
        str(inp),
        "--beam",
        "2",
        "--max-len-b",
        "5",
    ]
    interactive_main([str(data), *argv])
    assert capsys.readouterr().out == want + "\n"
    interactive_main([*argv, "--data", str(data)])  # the flag still works
    assert capsys.readouterr().out == want + "\n"
    with pytest.raises(SystemExit):
        interactive_main([str(data), *argv, "--data", str(tmp_path)])
    assert "two data directories" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # DATA is where the dictionary is looked for
        interactive_main([str(tmp_path), *argv])
    assert f"tried {tmp_path / 'dict.txt'}" in capsys.readouterr().err


def test_interactive_says_when_it_cuts_a_line_or_leaves_the_trained_directions(model, tmp_path, capsys):
    ck, _ = model
    inp = tmp_path / "in.txt"
    inp.write_text("a cat\n" + " ".join(["house"] * 600) + "\n", encoding="utf-8")
    interactive_main(
        [
            "--path",
            str(ck),
            "-s",
            "fra_Latn",
            "-t",
            "eng_Latn",
            "--input",
            str(inp),
            "--beam",
            "1",
            "--max-len-a",
            "0",
            "--max-len-b",
            "2",
        ]
    )
    cap = capsys.readouterr()
    assert len(cap.out.split("\n")) == 3
    assert "in.txt:2: 600 tokens, more than the model's 510: cut to fit" in cap.err
    assert cap.err.count("not trained on fra_Latn-eng_Latn") == 1


def test_translate_and_interactive_inputs_drop_a_bom(tmp_path):
    import io

    from mt.generate.interactive import _lines
    from mt.generate.readers import InputFile, iter_file

    f = tmp_path / "in.txt"
    f.write_bytes(b"\xef\xbb\xbfHello\nWorld\n")
    assert [r.text for r in iter_file(InputFile(f, "in.txt", "text"), 0)] == ["Hello", "World"]
    assert list(_lines(io.BytesIO(f.read_bytes()), "in.txt")) == ["Hello", "World"]


def test_interactive_turns_a_line_that_is_not_utf8_into_an_empty_translation(capsys):
    import io

    from mt.generate.interactive import _lines

    assert list(_lines(io.BytesIO(b"a\n\xff b\nc\n"), "-")) == ["a", None, "c"]
    assert "mt-interactive: -:2: invalid UTF-8 at byte 0: empty translation" in capsys.readouterr().err


def test_errors_are_one_line(model, tmp_path, capsys):
    ck, data = model
    lone = tmp_path / "lone" / "ck.pt"
    lone.parent.mkdir()
    shutil.copy(ck, lone)
    cases = [
        (generate_main, [str(data), "--path", str(ck), "-s", "eng_Latn"], "go together"),
        (generate_main, [str(data), "--path", str(ck), "-s", "eng_Latn", "-t", "zul_Latn"], "zul_Latn"),
        (
            generate_main,
            [str(data), "--path", str(tmp_path / "nope.pt"), "-s", "eng_Latn", "-t", "deu_Latn"],
            "checkpoint not found",
        ),
        (
            interactive_main,
            ["--path", str(lone), "-s", "eng_Latn", "-t", "deu_Latn", "--data", str(tmp_path)],
            "dict.txt",
        ),
        (
            interactive_main,
            ["--path", str(ck), "-s", "eng_Latn", "-t", "deu_Latn", "--data", str(data), "--nbest", "5"],
            "--nbest",
        ),
        (
            translate_main,
            [
                str(tmp_path / "missing.txt"),
                "--path",
                str(ck),
                "-s",
                "eng_Latn",
                "-t",
                "deu_Latn",
                "--out",
                str(tmp_path / "o"),
            ],
            "no such input",
        ),
        (
            export_main,
            ["--path", str(ck), "--out", str(tmp_path / "e"), "--format", "hf", "--quantization", "int8"],
            "ctranslate2 only",
        ),
    ]
    for fn, argv, msg in cases:
        with pytest.raises(SystemExit) as exc:
            fn(argv)
        assert exc.value.code == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and msg in err and "\n" not in err, err


@pytest.mark.parametrize("fn", [generate_main, interactive_main, translate_main, export_main])
def test_help_has_examples(fn, capsys):
    with pytest.raises(SystemExit):
        fn(["--help"])
    assert "examples:" in capsys.readouterr().out
