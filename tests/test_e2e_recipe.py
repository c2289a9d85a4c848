"""recipes/nllb_mini.sh end to end on a tiny slice: two languages (high + low resource), the weight-free
ngram encoder, a tiny MoE model and a few updates. Checks the report has every section, the copy-the-source
baseline is scored for every direction, and a second run skips every finished step."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parent.parent

TINY = {
    "LANGS": "deu_Latn,xho_Latn",
    "ENCODER": "ngram",
    "THREADS": "1",
    "DEV_SIZE": "40",
    "DEVTEST_SIZE": "50",
    "MONO_SIZE": "40",
    "VOCAB": "600",
    "ARCH": "transformer_tiny",
    "EXPERTS": "2",
    "MAX_UPDATE": "12",
    "WARMUP": "4",
    "MAX_TOKENS": "1024",
    "BEAM": "1",
    "TT_TEST_PER_LABEL": "4",
    "TT_TRAIN_PER_LABEL": "20",
    "TT_MIN_PER_LABEL": "2",
}


def _run(work: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, WORK=str(work), PYTHONUNBUFFERED="1", **TINY)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.pop("WORLD_SIZE", None)
    return subprocess.run(["bash", str(REPO / "recipes" / "nllb_mini.sh")], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=600)  # fmt: skip


@pytest.mark.slow
def test_recipe_end_to_end_on_a_tiny_slice(tmp_path):
    work = tmp_path / "demo"
    proc = _run(work)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    run = work / "model"
    report = (run / "report.md").read_text(encoding="utf-8")
    for section in ("Translation quality", "Against the baseline (copy-the-source)", "Added toxicity", "Training",
                    "Translate-test vs zero-shot", "Bitext mining", "Run time"):  # fmt: skip
        assert f". {section}" in report, section
    assert "Skipped" not in report and "Not run yet" not in report
    figures = [line.split("](", 1)[1].rstrip(")") for line in report.splitlines() if line.startswith("![")]
    assert len(figures) >= 4 and all((run / f).stat().st_size > 1000 for f in figures)

    directions = {"eng_Latn-deu_Latn", "deu_Latn-eng_Latn", "eng_Latn-xho_Latn", "xho_Latn-eng_Latn"}
    model = pd.read_csv(run / "gen" / "scores.csv")
    copy = pd.read_csv(run / "copy_source" / "scores.csv")
    assert set(model["direction"]) == directions == set(copy["direction"])
    assert (copy["chrf++"] > 0).all()
    for l in ("deu_Latn", "xho_Latn"):
        assert (work / "mined" / "ngram" / l / "gold.json").is_file()
        seed = sum(1 for _ in open(work / "corpus" / "train" / f"eng_Latn-{l}.eng_Latn", encoding="utf-8"))
        mined = sum(1 for _ in open(work / "mined" / "ngram" / l / "mined.eng_Latn", encoding="utf-8"))
        merged = sum(1 for _ in open(work / "bitext" / "train" / f"eng_Latn-{l}.eng_Latn", encoding="utf-8"))
        assert merged == seed + mined and mined > 0
    timings = pd.read_csv(work / "timings.tsv", sep="\t")
    assert {"corpus", "spm", "train", "generate"} <= set(timings["step"]) and (timings["rc"] == 0).all()
    assert "already finished" not in proc.stderr

    # re-running skips every finished step: no new mining, SentencePiece, binarizing or decoding
    before = len(timings)
    again = _run(work)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    new = pd.read_csv(work / "timings.tsv", sep="\t").iloc[before:]
    assert set(new["step"]) <= {"corpus", "train", "toxicity lists"}, set(new["step"])
    assert "training already finished" in again.stderr
