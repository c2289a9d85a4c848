"""Throughput of mt-spm train and mt-preprocess (sentences/s per worker count). Measures, never asserts.

    python bench/bench_dataprep.py --corpus work/demo/corpus --pair eng_Latn-fra_Latn --vocab-size 16000
    python bench/bench_dataprep.py --synthetic 200000          # no corpus needed

Writes under --work (default /tmp/bench_dataprep) and prints one TSV row per measurement.
"""

from __future__ import annotations

import argparse
import random
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mt.common.textio import count_lines  # noqa: E402
from mt.data import preprocess as pp  # noqa: E402
from mt.data import spm  # noqa: E402


def synthetic_corpus(root: Path, n: int) -> Path:
    rng = random.Random(0)
    vocab = {lang: [f"{lang[:3]}{i}" for i in range(3000)] for lang in ("eng_Latn", "fra_Latn")}
    (root / "train").mkdir(parents=True, exist_ok=True)
    for lang in ("eng_Latn", "fra_Latn"):
        with open(root / "train" / f"eng_Latn-fra_Latn.{lang}", "w") as fh:
            for _ in range(n):
                fh.write(" ".join(rng.choice(vocab[lang]) for _ in range(rng.randint(3, 20))) + "\n")
    return root


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", help="corpus dir in FLORES layout (train/{src}-{tgt}.{lang})")
    ap.add_argument("--pair", default="eng_Latn-fra_Latn", help="pair to binarize")
    ap.add_argument("--synthetic", type=int, default=0, help="build a synthetic eng-fra corpus of N lines instead")
    ap.add_argument("--vocab-size", type=int, default=8000)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--work", default="/tmp/bench_dataprep")
    a = ap.parse_args()
    work = Path(a.work)
    shutil.rmtree(work, ignore_errors=True)
    corpus = Path(a.corpus) if a.corpus else synthetic_corpus(work / "corpus", a.synthetic or 100_000)
    src, tgt = a.pair.split("-")

    print("what\tsetting\tsentences\tseconds\tsentences_per_s")
    t0 = time.perf_counter()
    res = spm.train(
        spm.SpmTrainConfig(out=str(work / "spm"), corpus=str(corpus), vocab_size=a.vocab_size), progress=False
    )
    dt = time.perf_counter() - t0
    n = sum(r["sampled"] for r in res.table)
    print(f"spm_train\tvocab={a.vocab_size}\t{n}\t{dt:.2f}\t{n / dt:.0f}")

    prefix = corpus / "train" / f"{src}-{tgt}"
    lines = 2 * count_lines(Path(f"{prefix}.{src}"))
    for w in a.workers:
        dest = work / f"bin_w{w}"
        t0 = time.perf_counter()
        pp.preprocess(
            pp.PreprocessConfig(
                source_lang=src,
                target_lang=tgt,
                trainpref=str(prefix),
                destdir=str(dest),
                srcdict=str(work / "spm" / "dict.txt"),
                joined_dictionary=True,
                spm_model=str(work / "spm" / "spm.model"),
                workers=w,
            )
        )
        dt = time.perf_counter() - t0
        print(f"preprocess\tworkers={w}\t{lines}\t{dt:.2f}\t{lines / dt:.0f}")


if __name__ == "__main__":
    main()
