"""mt-data merge-bitext: seed + mined bitext of a pair, duplicates and dev/devtest sentences removed."""

from __future__ import annotations

from pathlib import Path

import pytest

from mt.common.errors import UserError
from mt.data.cli import data_main
from mt.data.merge import MergeConfig, merge_bitext


def _bitext(prefix: Path, pairs: list[tuple[str, str]]) -> str:
    prefix.parent.mkdir(parents=True, exist_ok=True)
    Path(f"{prefix}.eng_Latn").write_text("".join(s + "\n" for s, _ in pairs), encoding="utf-8")
    Path(f"{prefix}.deu_Latn").write_text("".join(t + "\n" for _, t in pairs), encoding="utf-8")
    return str(prefix)


@pytest.fixture
def work(tmp_path):
    seed = _bitext(
        tmp_path / "corpus/train/eng_Latn-deu_Latn", [("Open the file", "Datei öffnen"), ("Save", "Sichern")]
    )
    mined = _bitext(
        tmp_path / "mined/deu_Latn/mined",
        [
            ("Open the file", "Datei öffnen"),  # the seed's pair again: duplicate
            ("Close the  WINDOW", "Fenster schließen"),  # a dev sentence, up to case and spaces: decontaminated
            ("Print the page", "Seite drucken"),  # kept
            ("Quit now", "Beenden"),  # a devtest sentence of the target language: decontaminated
            ("Print the page", "Seite drucken"),  # mined twice: duplicate
            ("Open the file", "Die Datei öffnen"),  # another translation: a different pair, kept
        ],
    )
    for split, eng, deu in (("dev", "close the window", "Fenster zu"), ("devtest", "Go away", "Beenden")):
        (tmp_path / split).mkdir()
        (tmp_path / split / f"eng_Latn.{split}").write_text(eng + "\n", encoding="utf-8")
        (tmp_path / split / f"deu_Latn.{split}").write_text(deu + "\n", encoding="utf-8")
    return tmp_path, seed, mined


def test_merge_keeps_the_first_copy_and_leaves_out_eval_sentences(work, capsys):
    root, seed, mined = work
    out = root / "bitext/train/eng_Latn-deu_Latn"
    argv = ["merge-bitext", "-s", "eng_Latn", "-t", "deu_Latn", "--inputs", f"{seed},{mined}"]
    assert data_main([*argv, "--eval-dirs", f"{root / 'dev'},{root / 'devtest'}", "--out", str(out)]) == 0
    assert Path(f"{out}.eng_Latn").read_text().splitlines() == [
        "Open the file",
        "Save",
        "Print the page",
        "Open the file",
    ]
    assert Path(f"{out}.deu_Latn").read_text().splitlines() == [
        "Datei öffnen",
        "Sichern",
        "Seite drucken",
        "Die Datei öffnen",
    ]
    err = capsys.readouterr().err
    assert "2 from eng_Latn-deu_Latn + 6 from mined -> 4 pairs kept; removed 2 decontaminated, 2 duplicate" in err
    assert sorted(p.name for p in out.parent.iterdir()) == ["eng_Latn-deu_Latn.deu_Latn", "eng_Latn-deu_Latn.eng_Latn"]


def test_the_seed_alone_comes_out_unchanged(work):
    root, seed, _ = work
    res = merge_bitext(MergeConfig("eng_Latn", "deu_Latn", [seed], str(root / "out"), [str(root / "dev")]))
    assert (res.kept, dict(res.removed)) == (2, {"decontaminated": 0, "duplicate": 0})
    assert Path(f"{root}/out.deu_Latn").read_bytes() == Path(f"{seed}.deu_Latn").read_bytes()


def test_bad_inputs_are_refused_before_anything_is_written(work):
    root, seed, mined = work
    out = str(root / "out")
    Path(f"{mined}.deu_Latn").write_text("nur eine Zeile\n", encoding="utf-8")
    with pytest.raises(UserError, match=r"mined.eng_Latn has 6 lines but .*mined.deu_Latn has 1"):
        merge_bitext(MergeConfig("eng_Latn", "deu_Latn", [seed, mined], out))
    Path(f"{mined}.deu_Latn").write_bytes(b"caf\xe9\n" * 6)
    with pytest.raises(UserError, match=r"mined.deu_Latn:1: not valid UTF-8"):
        merge_bitext(MergeConfig("eng_Latn", "deu_Latn", [seed, mined], out))
    with pytest.raises(UserError, match="missing.eng_Latn: input file not found"):
        merge_bitext(MergeConfig("eng_Latn", "deu_Latn", [str(root / "missing")], out))
    with pytest.raises(UserError, match="--eval-dirs .*nowhere: no such folder"):
        merge_bitext(MergeConfig("eng_Latn", "deu_Latn", [seed], out, [str(root / "nowhere")]))
    with pytest.raises(UserError, match="--out"):
        merge_bitext(MergeConfig("eng_Latn", "deu_Latn", [seed], seed))
    with pytest.raises(UserError, match="unknown language code 'deu'"):
        merge_bitext(MergeConfig("eng_Latn", "deu", [seed], out))
    assert not list(root.glob("out*"))
