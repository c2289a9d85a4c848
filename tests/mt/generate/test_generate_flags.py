"""The decoding commands' flags come from their configs; shared options from one dataclass; old spellings work."""

import re

import pytest

from mt.common.errors import UserError
from mt.common.flags import from_args
from mt.generate import cli
from mt.generate.batch_job import TranslateConfig
from mt.generate.export import ExportConfig
from mt.generate.generate import GenerateConfig
from mt.generate.interactive import InteractiveConfig
from mt.generate.moe_inference import MoEInferenceConfig
from mt.generate.moe_prune import PruneConfig
from mt.generate.moe_stats import MoEStatsConfig
from mt.generate.search import SearchConfig


def _generate(*argv):
    args = cli.build_generate_parser().parse_args(["bin", "--path", "c.pt", "--cpu", *argv])
    return cli._decoding(args, GenerateConfig, lang_pairs=from_args(cli.Direction, args).pairs(args.lang_pairs))


def test_generate_defaults_are_the_configs():
    cfg = _generate("-s", "eng_Latn", "-t", "deu_Latn")
    assert cfg == GenerateConfig(data="bin", path="c.pt", lang_pairs=["eng_Latn-deu_Latn"], device="cpu")
    assert cfg.search == SearchConfig() and cfg.moe == MoEInferenceConfig()


def test_generate_flags_reach_their_fields():
    cfg = _generate(
        "--lang-pairs",
        "eng_Latn-deu_Latn,deu_Latn-eng_Latn",
        "--beam",
        "2",
        "--nbest",
        "2",
        "--max-tokens",
        "99",
        "--batch-size",
        "3",
        "--remove-bpe",
        "--moe-inference-gating",
        "static",
        "--expert-placement",
        "",
        "--scoring",
        "bleu",
        "--quiet",
        "--threads",
        "2",
        "--bf16",
    )
    assert cfg.lang_pairs == ["eng_Latn-deu_Latn", "deu_Latn-eng_Latn"]
    assert (cfg.search.beam, cfg.search.nbest, cfg.max_tokens, cfg.batch_size) == (2, 2, 99, 3)
    assert (cfg.remove_bpe, cfg.moe.moe_gating, cfg.scoring, cfg.quiet, cfg.threads, cfg.bf16) == (
        "sentencepiece",
        "static",
        "bleu",
        True,
        2,
        True,
    )
    with pytest.raises(UserError, match="not both"):
        _generate("-s", "eng_Latn", "-t", "deu_Latn", "--lang-pairs", "eng_Latn-deu_Latn")


@pytest.mark.parametrize(
    ("build", "old", "new"),
    [
        (cli.build_generate_parser, ["--post-process", "sentencepiece"], ["--remove-bpe", "sentencepiece"]),
        (cli.build_interactive_parser, ["--post-process"], ["--remove-bpe"]),
        (cli.build_translate_parser, ["--max-sentences", "7"], ["--batch-size", "7"]),
        (cli.build_translate_parser, ["--no-progress"], ["--no-progress-bar"]),
        (cli.build_moe_stats_parser, ["--no-progress"], ["--no-progress-bar"]),
        (cli.build_generate_parser, ["--no-progress"], ["--no-progress-bar"]),
    ],
)
def test_old_spellings_still_work_and_are_hidden(build, old, new):
    p = build()
    base = {
        "mt-generate": ["bin", "--path", "c.pt"],
        "mt-interactive": ["-s", "eng_Latn", "-t", "deu_Latn", "--path", "c.pt"],
        "mt-translate": ["in.txt", "--out", "o", "-s", "eng_Latn", "-t", "deu_Latn", "--path", "c.pt"],
        "mt-moe-stats": ["--input", "x", "-s", "eng_Latn", "-t", "deu_Latn", "--out", "s.json", "--path", "c.pt"],
    }[p.prog]
    assert vars(p.parse_args(base + old)) == vars(p.parse_args(base + new)) != vars(p.parse_args(base))
    assert not re.search(re.escape(old[0]) + r"(?![-\w])", p.format_help())


def test_translate_interactive_and_moe_stats():
    args = cli.build_translate_parser().parse_args(
        [
            "a.txt",
            "b/",
            "--out",
            "o",
            "-s",
            "eng_Latn",
            "-t",
            "fra_Latn,deu_Latn",
            "--path",
            "c.pt",
            "--cpu",
            "--format",
            "jsonl",
            "--field",
            "text",
            "--no-merge",
        ]
    )
    cfg = cli._decoding(args, TranslateConfig, merge=not args.no_merge)
    assert (cfg.inputs, cfg.tgt_langs, cfg.fmt, cfg.json_field, cfg.merge) == (
        ["a.txt", "b/"],
        ["fra_Latn", "deu_Latn"],
        "jsonl",
        "text",
        False,
    )
    args = cli.build_interactive_parser().parse_args(["bin", "-s", "eng_Latn", "-t", "deu_Latn", "--path", "c.pt"])
    cfg = cli._decoding(args, InteractiveConfig, data=args.data_dir)
    assert (cfg.src_lang, cfg.tgt_lang, cfg.data, cfg.input) == ("eng_Latn", "deu_Latn", "bin", "-")
    assert not hasattr(args, "expert_placement")
    args = cli.build_moe_stats_parser().parse_args(
        ["--input", "x", "-s", "eng_Latn", "-t", "deu_Latn", "--out", "s.json", "--path", "c.pt", "--seed", "5"]
    )
    cfg = cli._decoding(args, MoEStatsConfig, seed=args.seed)
    assert (cfg.seed, cfg.search.seed, cfg.tgt_langs, cfg.search.beam) == (5, 5, ["deu_Latn"], 4)


def test_export_and_prune_configs():
    args = cli.build_export_parser().parse_args(["--format", "ctranslate2", "--path", "c.pt", "--out", "o"])
    assert from_args(ExportConfig, args) == ExportConfig(fmt="ctranslate2", path="c.pt", out="o")
    args = cli.build_moe_prune_parser().parse_args(
        ["--path", "c", "--stats", "a.json,b.json", "--keep-share", "0.5", "--out", "o"]
    )
    assert from_args(PruneConfig, args) == PruneConfig(path="c", stats=["a.json", "b.json"], keep_share=0.5, out="o")
