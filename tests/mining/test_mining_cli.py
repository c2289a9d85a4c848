"""mining/cli.py: every mine-* command's flags come from its config; old spellings still parse (hidden)."""

import argparse
import re

import pytest

from mining import cli

COMMANDS = {
    "mine-lid": cli.lid_main,
    "mine-filter": cli.filter_main,
    "mine-embed": cli.embed_main,
}


def _parser(main, argv):
    """The parser ``main`` builds, caught when it starts parsing (nothing runs)."""
    caught = {}
    original = argparse.ArgumentParser.parse_args

    def catch(self, args=None, namespace=None):
        caught["parser"] = self
        raise KeyboardInterrupt

    argparse.ArgumentParser.parse_args = catch
    try:
        with pytest.raises(SystemExit):  # cli_entry: KeyboardInterrupt -> exit 130
            main(argv)
    finally:
        argparse.ArgumentParser.parse_args = original
    return caught["parser"]


EMBED = ["--input", "x", "--output", "y", "--lang", "deu_Latn"]
# command, the arguments it needs, old spelling (args), new spelling (args), dest
OLD_SPELLINGS = [
    ("mine-lid", ["--input", "x", "--lang", "deu_Latn"], ["--no-progress"], ["--no-progress-bar"], "no_progress_bar"),
    ("mine-filter", ["--input", "x"], ["--no-progress"], ["--no-progress-bar"], "no_progress_bar"),
    ("mine-embed", EMBED, ["--no-progress"], ["--no-progress-bar"], "no_progress_bar"),
    ("mine-embed", EMBED, ["--max-sentences", "8"], ["--batch-size", "8"], "batch_size"),
]


@pytest.mark.parametrize("name,base,old,new,dest", OLD_SPELLINGS, ids=[f"{c[0]} {c[2][0]}" for c in OLD_SPELLINGS])
def test_old_spelling_still_parses_and_is_hidden(name, base, old, new, dest):
    parser = _parser(COMMANDS[name], [*base, *new])
    default = getattr(parser.parse_args(base), dest)
    assert getattr(parser.parse_args([*base, *old]), dest) == getattr(parser.parse_args([*base, *new]), dest)
    assert getattr(parser.parse_args([*base, *new]), dest) != default
    text = parser.format_help()
    assert new[0] in text and not re.search(re.escape(old[0]) + r"(?![\w-])", text)


def test_gpu_and_cpu_flags_give_the_faiss_device_setting():
    from mining.index import FaissDevice
    from mt.common.flags import from_args

    for main, base in (
        (cli.index_main, ["--emb", "e"]),
        (cli.knn_main, ["--src-emb", "a", "--tgt-emb", "b", "--out-dir", "o"]),
    ):
        p = _parser(main, base)
        for extra, want in (([], None), (["--gpu"], True), (["--cpu"], False)):
            assert from_args(FaissDevice, p.parse_args([*base, *extra])).setting() is want
        with pytest.raises(SystemExit):
            p.parse_args([*base, "--gpu", "--cpu"])


def test_mine_bitext_threshold_and_negative_switches(capsys):
    base = ["--knn-dir", "k", "--out", "o.tsv"]
    p = _parser(cli.bitext_main, base)
    ns = p.parse_args([*base, "--threshold", "fit", "--no-dedup"])
    assert (ns.threshold, ns.dedup, p.parse_args(base).dedup) == ("fit", False, True)
    assert p.parse_args([*base, "--threshold", "1.06"]).threshold == 1.06
    with pytest.raises(SystemExit):
        p.parse_args([*base, "--threshold", "high"])
    assert "'high' is not a number, auto or fit" in capsys.readouterr().err
    f = _parser(cli.filter_main, ["--input", "x"])
    ns = f.parse_args(["--input", "x", "--no-normalize", "--no-dedup", "--no-near-dedup"])
    assert (ns.normalize, ns.dedup, ns.near_dedup) == (False, False, False)


def test_mine_eval_bucc_data_follows_corpus_and_build_flags_reach_the_build(monkeypatch, tmp_path):
    from mining import evaluate

    seen = {}
    monkeypatch.setattr(evaluate, "bucc_report", lambda cfg, out_dir=None: seen.update(cfg=cfg, out_dir=out_dir))
    monkeypatch.setattr(evaluate, "build_sets", lambda cfg: seen.update(build=cfg))
    assert cli.eval_main(["bucc", "--corpus", "C", "--seed", "7", "--pairs", "a-b, c-d", "--out-dir", "R"]) == 0
    cfg = seen["cfg"]
    assert (cfg.data, cfg.build.out, cfg.build.seed, cfg.build.corpus) == ("work/bucc-corpus",) * 2 + (7, "C")
    assert (cfg.pairs, seen["out_dir"], cfg.margins, cfg.k) == (["a-b", "c-d"], "R", ["ratio", "absolute"], 4)
    assert cli.eval_main(["bucc-build", "--langs", "all"]) == 0
    assert (seen["build"].out, seen["build"].langs, seen["build"].size) == ("work/bucc", ["all"], 5000)
