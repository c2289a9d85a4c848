"""mine-eval xsim: per-language error rates on an N-way split, with constructed embeddings."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mining.cli import eval_main
from mining.encoders.base import l2_normalize
from mining.xsim import XsimConfig, markdown_table, run_xsim
from mt.common.errors import UserError

eval_cli = eval_main.__wrapped__  # without cli_entry: a UserError is raised, not turned into exit status 2

N = 12


class TableEncoder:
    """Looks sentences up in a {sentence: vector} table (the constructed case)."""

    name = "table"

    def __init__(self, table: dict[str, np.ndarray]):
        self.table = table
        self.dim = len(next(iter(table.values())))

    def encode(self, sentences, lang):
        return l2_normalize(np.stack([self.table[s] for s in sentences]))


def _corpus(tmp_path, langs=("deu_Latn", "xho_Latn")):
    (tmp_path / "devtest").mkdir()
    for code in ("eng_Latn", *langs):
        (tmp_path / "devtest" / f"{code}.devtest").write_text("".join(f"{code} {i}\n" for i in range(N)))
    return tmp_path


def _table() -> dict[str, np.ndarray]:
    """English i = e_i (i >= 1) and a hub h for line 0. German = English with lines 0 and 1 swapped:
    2 errors of 12 whatever the margin. Xhosa i = e_i + 1.2 h: by cosine every line but 0 picks the hub
    (11 errors); the ratio margin discounts the hub, which is close to everything (0 errors)."""
    eye = np.eye(N + 1, dtype=np.float32)
    hub = eye[N]
    table = {}
    for i in range(N):
        eng = hub if i == 0 else eye[i]
        table[f"eng_Latn {i}"] = eng
        table[f"xho_Latn {i}"] = (eye[i] if i else 0 * hub) + 1.2 * hub
    for i in range(N):
        j = {0: 1, 1: 0}.get(i, i)
        table[f"deu_Latn {i}"] = table[f"eng_Latn {j}"]
    return table


@pytest.mark.parametrize("margin,xho_err", [("cosine", 11 / N), ("ratio", 0.0), ("distance", 0.0)])
def test_known_error_rates(tmp_path, margin, xho_err):
    corpus = _corpus(tmp_path)
    enc = TableEncoder(_table())
    rows = run_xsim(XsimConfig(encoder="table", corpus=str(corpus), margin=margin), encoder=enc)
    by = {r["lang"]: r for r in rows}
    assert set(by) == {"deu_Latn", "xho_Latn"} and by["deu_Latn"]["n"] == N
    assert by["deu_Latn"]["xsim_error"] == pytest.approx(2 / N)
    assert by["deu_Latn"]["xsim_error_rev"] == pytest.approx(2 / N)
    assert by["xho_Latn"]["xsim_error"] == pytest.approx(xho_err)
    table = markdown_table(rows)
    assert f"| deu_Latn | {N} | {200 / N:.2f} |" in table and "**mean**" in table


def test_english_side_from_another_encoder(tmp_path):
    """A student embeds its language, the teacher English: the English rows come from --eng-encoder."""
    corpus = _corpus(tmp_path, langs=("xho_Latn",))
    t = _table()
    student = TableEncoder({k: v for k, v in t.items()})
    teacher = TableEncoder({k: (np.roll(v, 1) if k.startswith("eng") else v) for k, v in t.items()})
    same = run_xsim(XsimConfig(encoder="s", corpus=str(corpus), margin="ratio"), encoder=student)
    other = run_xsim(
        XsimConfig(encoder="s", eng_encoder="t", corpus=str(corpus), margin="ratio"),
        encoder=student,
        eng_encoder=teacher,
    )
    assert same[0]["xsim_error"] == 0.0 and other[0]["xsim_error"] > 0.5


def test_bad_inputs(tmp_path):
    corpus = _corpus(tmp_path)
    enc = TableEncoder(_table())
    with pytest.raises(UserError, match="zul_Latn"):
        run_xsim(XsimConfig(encoder="t", corpus=str(corpus), langs=["zul_Latn"]), encoder=enc)
    with pytest.raises(UserError, match="no dev/ folder"):
        run_xsim(XsimConfig(encoder="t", corpus=str(corpus), split="dev"), encoder=enc)
    (corpus / "devtest" / "deu_Latn.devtest").write_text("deu_Latn 0\n")
    with pytest.raises(UserError, match="not N-way aligned"):
        run_xsim(XsimConfig(encoder="t", corpus=str(corpus), langs=["deu_Latn"]), encoder=enc)


def test_mine_eval_xsim_cli(tmp_path, capsys):
    corpus = _corpus(tmp_path)
    out = tmp_path / "x.json"
    assert (
        eval_cli(
            [
                "xsim",
                "--encoder",
                "ngram:256",
                "--corpus",
                str(corpus),
                "--langs",
                "deu_Latn",
                "--margin",
                "cosine",
                "--json",
                str(out),
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "| deu_Latn | 12 |" in printed and "ngram:256" in printed
    saved = json.loads(out.read_text())
    assert saved["config"]["margin"] == "cosine" and saved["rows"][0]["lang"] == "deu_Latn"
