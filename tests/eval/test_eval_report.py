"""eval/report.py: report.md renders with valid PNG figures from small hand-made inputs."""

import json

import matplotlib.image as mpimg
import pandas as pd
import pytest

from eval.cli import eval_main as main
from eval.train_stats import parse_train_log

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _run_dir(tmp_path, with_tiers=True):
    run = tmp_path / "run"
    run.mkdir()
    rows = [
        ("eng_Latn", "deu_Latn", "eng-xx", "deu_Latn", "high", 5000, 61.2, 35.1),
        ("eng_Latn", "swh_Latn", "eng-xx", "swh_Latn", "low", 40, 30.5, 8.2),
        ("eng_Latn", "ita_Latn", "eng-xx", "ita_Latn", "mid", 700, 48.0, 20.4),
        ("deu_Latn", "eng_Latn", "xx-eng", "deu_Latn", "high", 5000, 63.0, 38.0),
        ("swh_Latn", "eng_Latn", "xx-eng", "swh_Latn", "low", 40, 33.3, 9.9),
        ("deu_Latn", "swh_Latn", "xx-yy", "swh_Latn", "low", 40, 25.0, 5.0),
    ]
    df = pd.DataFrame(rows, columns=["src", "tgt", "group", "lang", "tier", "train_pairs", "chrf++", "spbleu"])
    df.insert(0, "direction", df["src"] + "-" + df["tgt"])
    df["n_lines"] = 100
    if not with_tiers:
        df = df.drop(columns=["tier", "train_pairs"])
    df.to_csv(run / "scores.csv", index=False)
    (run / "scores.json").write_text(json.dumps({"signatures": {"chrf++": "nrefs:1|nc:6|nw:2|version:x"}}))
    tox = pd.DataFrame(
        [
            ["eng_Latn-deu_Latn", "eng_Latn", "deu_Latn", "eng-xx", "deu_Latn", 100, True, True, 3, 3.0, 2, 2.0, "ok"],
            [
                "eng_Latn-swh_Latn",
                "eng_Latn",
                "swh_Latn",
                "eng-xx",
                "swh_Latn",
                100,
                True,
                False,
                None,
                None,
                None,
                None,
                "no list for swh_Latn",
            ],
        ],
        columns=[
            "direction",
            "src",
            "tgt",
            "group",
            "lang",
            "n_lines",
            "src_list",
            "tgt_list",
            "toxic_lines",
            "toxic_pct",
            "added_lines",
            "added_pct",
            "status",
        ],
    )
    tox.to_csv(run / "toxicity.csv", index=False)
    with open(run / "train_log.jsonl", "w") as fh:
        for u in range(0, 1001, 100):
            fh.write(json.dumps({"update": u, "loss": 8.0 - u / 200, "lr": 0.001}) + "\n")
            if u % 500 == 0:
                fh.write(
                    json.dumps(
                        {
                            "update": u,
                            "valid_loss": {"eng_Latn-deu_Latn": 8.5 - u / 250, "eng_Latn-swh_Latn": 9 - u / 300},
                        }
                    )
                    + "\n"
                )
        fh.write("not json\n")
    return run


def _images(md):
    return [line.split("](", 1)[1].rstrip(")") for line in md.splitlines() if line.startswith("![")]


def test_report_renders_tables_and_figures(tmp_path):
    run = _run_dir(tmp_path)
    pd.DataFrame(
        {
            "lang": ["deu_Latn", "deu_Latn", "swh_Latn", "swh_Latn"],
            "method": ["zero-shot", "translate-test"] * 2,
            "score": [55.0, 60.0, 30.0, 41.0],
        }
    ).to_csv(run / "translate_test.csv", index=False)
    assert main(["report", str(run)]) == 0
    md = (run / "report.md").read_text(encoding="utf-8")
    images = _images(md)
    assert len(images) == 4  # quality, toxicity, training, translate-test
    for rel in images:
        data = (run / rel).read_bytes()
        assert data.startswith(PNG_MAGIC)
        img = mpimg.imread(run / rel)
        assert img.shape[0] > 100 and img.shape[1] > 100
        assert img[..., :3].std() > 0.01  # not a blank canvas
    assert "| eng_Latn→xx |" in md and "| xx→yy |" in md
    assert "48.00 (1)" in md  # eng-xx mid tier: one direction
    assert "no list" in md and "2 (2.00%)" in md
    assert "1000 updates" in md and "skipped" in md  # the bad log line is mentioned
    assert "translate-test" in md and "41.00" in md
    assert "Skipped" not in md
    assert "`nrefs:1|nc:6|nw:2|version:x`" in md


def test_report_sections_are_optional(tmp_path):
    run = tmp_path / "empty_run"
    run.mkdir()
    assert main(["report", str(run)]) == 0
    md = (run / "report.md").read_text(encoding="utf-8")
    assert md.count("Skipped") == 3 and "Not run yet" in md
    assert _images(md) == []


def test_report_takes_tiers_from_stats(tmp_path):
    run = _run_dir(tmp_path, with_tiers=False)
    (run / "toxicity.csv").unlink()
    (run / "stats.tsv").write_text(
        "lang\ttrain_pairs\tdev\tdevtest\tmono\ttier\ndeu_Latn\t5000\t1\t1\t0\thigh\n"
        "ita_Latn\t700\t1\t1\t0\tmid\nswh_Latn\t40\t1\t1\t0\tlow\n"
    )
    assert main(["report", str(run)]) == 0
    md = (run / "report.md").read_text(encoding="utf-8")
    assert "| swh_Latn | low | 40 | 30.50 | 33.30 | 8.20 | 9.90 |" in md  # eng→xx and xx→eng side by side
    assert "| ita_Latn | mid | 700 | 48.00 | – |" in md  # no xx→eng direction: a dash, not a number
    assert "| deu_Latn-swh_Latn | low | 25.00 | 5.00 |" in md
    assert "Added toxicity" in md and "no toxicity.csv" in md


@pytest.mark.parametrize(
    "record",
    [
        {"update": 500, "valid_loss": 3.5},
        {"update": 500, "valid_loss": {"eng_Latn-deu_Latn": 3.5}},
        {"update": 500, "valid_loss/eng_Latn-deu_Latn": 3.5},
        {"num_updates": 500, "split": "valid", "direction": "eng_Latn-deu_Latn", "loss": 3.5},
        {"step": 500, "valid": {"eng_Latn-deu_Latn": {"loss": 3.5}}},
        {"type": "valid", "update": 500, "epoch": 1, "directions": {"eng_Latn-deu_Latn": {"loss": 3.5, "ntokens": 9}}},
    ],
)
def test_train_log_accepts_several_shapes(tmp_path, record):
    path = tmp_path / "log.jsonl"
    path.write_text(json.dumps({"update": 100, "loss": 5.0}) + "\n" + json.dumps(record) + "\n")
    train, valid, skipped = parse_train_log(path)
    assert train.to_dict("records") == [{"update": 100, "loss": 5.0}]
    assert valid["update"].tolist() == [500] and valid["loss"].tolist() == [3.5]
    assert skipped == 0


def test_mt_train_valid_records_are_validation_not_training_loss(tmp_path):
    """mt-train logs validation as {"type": "valid", "loss", "directions": {...}}: it was drawn as a training
    loss point (and no validation curve) because it has neither a split key nor valid_loss."""
    path = tmp_path / "train_log.jsonl"
    recs = [
        {"type": "train", "update": 100, "loss": 5.0},
        {
            "type": "valid",
            "update": 100,
            "epoch": 1,
            "loss": 6.0,
            "best": 6.0,
            "directions": {"eng_Latn-deu_Latn": {"loss": 5.5, "ntokens": 9}, "deu_Latn-eng_Latn": {"loss": 6.5}},
        },
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    train, valid, _ = parse_train_log(path)
    assert train.to_dict("records") == [{"update": 100, "loss": 5.0}]
    assert dict(zip(valid["direction"], valid["loss"])) == {
        "all": 6.0,
        "eng_Latn-deu_Latn": 5.5,
        "deu_Latn-eng_Latn": 6.5,
    }
