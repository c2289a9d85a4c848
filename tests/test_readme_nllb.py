"""README "Using the released NLLB-200 models": every command of the section runs, in order, as written, on
a tiny model of the released layout (an HF folder and fairseq files built by nllb_fixtures) laid out under
the section's file names. Only sizes change (update counts), and the one language the tiny model lacks
(als_Latn, whose row initialises the new aln_Latn) is swapped for one it has."""

from __future__ import annotations

import contextlib
import io
import re
import shlex
import shutil
import sys
from pathlib import Path

import pytest

pytest.importorskip("transformers")
import nllb_fixtures as nf  # noqa: E402
from hostile import run_cli  # noqa: E402
from train_fixtures import one_thread  # noqa: E402,F401 (autouse: one torch thread on the shared machine)

README = Path(__file__).resolve().parent.parent / "README.md"
SECTION = "## Using the released NLLB-200 models"
SIZES = {"--max-update 2000": "--max-update 3", "--eval-chrf 100": "--eval-chrf 4", "als_Latn": "deu_Latn"}
pytestmark = pytest.mark.filterwarnings("ignore::mt.generate.translator.TranslatorWarning")


def section_blocks() -> list[tuple[str, str]]:
    """(language, code) of the fenced blocks of the section, in order."""
    text = README.read_text(encoding="utf-8")
    start = text.index(SECTION)
    end = text.index("\n## ", start + len(SECTION))
    return re.findall(r"```(bash|python)\n(.*?)```", text[start:end], flags=re.S)


def commands(code: str) -> list[list[str]]:
    """The command lines of a bash block (continuations joined, comments and blank lines dropped)."""
    lines = code.replace("\\\n", " ").splitlines()
    return [shlex.split(line) for line in lines if line.strip() and not line.lstrip().startswith("#")]


@pytest.fixture
def workdir(tmp_path_factory, tmp_path, monkeypatch):
    """The section's inputs under their names: the HF folder, fairseq files + langs.txt, docs/, FLORES-200
    devtest files, a small eng_Latn-aln_Latn corpus."""
    files = nf.built(tmp_path_factory)
    shutil.copytree(files["hf"], tmp_path / "nllb-200-distilled-600M")
    nf.make_fairseq_files(tmp_path / "nllb600m-fs", files["model"], files["spm"])
    shutil.copy(tmp_path / "nllb600m-fs" / "langs.txt", tmp_path / "langs.txt")
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.txt").write_text("the file is open\nsave close window\n", encoding="utf-8")
    flores = tmp_path / "flores200_dataset" / "devtest"
    flores.mkdir(parents=True)
    for lang in ("eng_Latn", "fra_Latn"):
        (flores / f"{lang}.devtest").write_text("\n".join(s for _, s in nf.sentences(6, 3, [lang])) + "\n")
    (tmp_path / "corpus").mkdir()
    for split, n in (("train", 16), ("dev", 4)):
        for lang, like in (("eng_Latn", "eng_Latn"), ("aln_Latn", "deu_Latn")):
            (tmp_path / "corpus" / f"{split}.{lang}").write_text(
                "\n".join(s for _, s in nf.sentences(n, 4, [like])) + "\n"
            )
    moe = nf.built_moe(tmp_path_factory)  # the sparse subsection: NLLB-MoE's HF folder and fairseq files
    shutil.copytree(moe["hf"], tmp_path / "nllb-moe-54b")
    nf.make_fairseq_moe_files(tmp_path / "nllb-moe-fs", moe["model"], moe["spm"])
    (tmp_path / "flores200_dataset" / "dev").mkdir()
    (tmp_path / "flores200_dataset" / "dev" / "eng_Latn.dev").write_text(
        "\n".join(s for _, s in nf.sentences(8, 5, ["eng_Latn"])) + "\n"
    )
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_every_command_of_the_section_runs(workdir, monkeypatch):
    blocks = section_blocks()
    assert [lang for lang, _ in blocks] == ["bash", "python", "bash"]
    ran = []
    for lang, code in blocks:
        if lang == "python":
            printed = io.StringIO()
            with contextlib.redirect_stdout(printed):
                exec(compile(code, "README.md", "exec"), {})
            assert len(eval(printed.getvalue().strip().splitlines()[-1])) == 2
            continue
        for cmd in commands(code):
            line = " ".join(cmd)
            for a, b in SIZES.items():
                line = line.replace(a, b)
            cmd = shlex.split(line)
            if cmd[0] == "mt-interactive":  # reads sentences from stdin
                monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"the file is open\n"), encoding="utf-8"))
            rc, out, err = run_cli(cmd[0], cmd[1:])
            assert rc == 0, f"{line}\n{err[-2000:]}"
            ran.append(cmd[0])
            if cmd[0] == "mt-interactive":
                assert len(out.splitlines()) == 1
    assert ran.count("mt-import") == 4 and "mt-train" in ran and "mt-export" in ran and ran[-1] == "mt-translate"
    assert len(list((workdir / "models" / "nllb-moe").glob("checkpoint-rank-*.pt"))) == 8  # one file per expert
    pruned = list((workdir / "models" / "nllb-moe-eng-deu").glob("checkpoint-rank-*.pt"))
    assert 0 < len(pruned) < 8
    assert (workdir / "translated-moe" / "deu_Latn" / "a.txt").is_file()
    assert (workdir / "translated-pruned" / "deu_Latn" / "a.txt").is_file()
    assert all((workdir / "translated" / lang / "a.txt").is_file() for lang in ("deu_Latn", "fra_Latn"))
    assert (workdir / "translated-aln" / "aln_Latn" / "a.txt").is_file()
    assert (workdir / "gen" / "eng_Latn-fra_Latn.hyp").is_file() and (workdir / "gen" / "scores.md").is_file()
