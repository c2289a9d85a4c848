"""``mt-data merge-bitext``: the training text of one pair from several bitexts (seed + mined).

NLLB trains on the human-translated seed and the mined pairs together. Concatenating the files is not
enough: mining can find a pair twice or find a pair the seed already has, and a mined sentence can be a
dev/devtest sentence, which would then be scored after being trained on. So the merge keeps the first
copy of each pair (the inputs' order: seed first) and drops every pair whose source or target is a
sentence of the evaluation sets, comparing with :func:`mt.data.clean.norm_key` as the corpus builder
does. A duplicate is the same two strings: the seed keeps case variants the builder chose to keep
(``Open file`` / ``Open File``, 0.2% of the demo's pairs), so merging the seed alone changes nothing.
Both output files are written to temporary names and renamed, and the counts per reason are reported,
so they add up to the pairs read.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from mt.common.errors import UserError
from mt.common.files import atomic_write
from mt.common.flags import arg
from mt.common.langs import check_code, is_code
from mt.common.textio import check_outputs, count_lines, read_lines
from mt.data.clean import norm_key

# Why a pair is left out, in the order the checks run (each removed pair counts once).
REASONS = ("decontaminated", "duplicate")


@dataclass
class MergeConfig:
    source_lang: str = arg("", help="source language of the pair (FLORES-200 code)", short="-s", required=True)
    target_lang: str = arg("", help="target language of the pair (FLORES-200 code)", short="-t", required=True)
    inputs: list[str] = arg(
        [],
        help="bitexts to merge, in order (the seed first: its copy of a duplicate is kept): each PREFIX names "
        "PREFIX.SRC and PREFIX.TGT, line-aligned",
        metavar="PREFIX,...",
        required=True,
    )
    out: str = arg("", help="output prefix: writes OUT.SRC and OUT.TGT", metavar="PREFIX", required=True)
    eval_dirs: list[str] = arg(
        [],
        help="FLORES-layout folders (LANG.dev, LANG.devtest, ...): a pair whose source or target is one of "
        "their sentences, in any language, is removed",
        metavar="DIR,...",
    )


@dataclass
class MergeResult:
    read: dict[str, int]  # input prefix -> pairs read
    kept: int
    removed: Counter  # reason (REASONS) -> pairs

    def summary(self, out: str) -> str:
        parts = " + ".join(f"{n} from {Path(p).name}" for p, n in self.read.items())
        removed = ", ".join(f"{self.removed[r]} {r}" for r in REASONS)
        return f"merge-bitext {out}: {parts} -> {self.kept} pairs kept; removed {removed}"


def eval_keys(dirs: list[str]) -> set[str]:
    """Comparison keys of every sentence of the ``LANG.SPLIT`` files in ``dirs``."""
    keys: set[str] = set()
    for d in dirs:
        folder = Path(d)
        if not folder.is_dir():
            raise UserError(f"--eval-dirs {d}: no such folder; pass the dev/devtest folders (FLORES layout)")
        files = sorted(p for p in folder.iterdir() if p.is_file() and is_code(p.name.split(".")[0]))
        if not files:
            raise UserError(f"--eval-dirs {d}: no LANG.SPLIT files (eng_Latn.dev, ...) in it")
        for path in files:
            keys.update(k for k in map(norm_key, read_lines(path, progress=False)) if k)
    return keys


def _check_inputs(cfg: MergeConfig) -> list[tuple[Path, Path]]:
    """The (src, tgt) files of each input, after checking they exist, are UTF-8 and line-aligned."""
    files = []
    for prefix in cfg.inputs:
        src, tgt = Path(f"{prefix}.{cfg.source_lang}"), Path(f"{prefix}.{cfg.target_lang}")
        n_src, n_tgt = count_lines(src), count_lines(tgt)
        if n_src != n_tgt:
            raise UserError(f"{src} has {n_src} lines but {tgt} has {n_tgt}: the bitext is not line-aligned")
        files.append((src, tgt))
    return files


def merge_bitext(cfg: MergeConfig) -> MergeResult:
    """Write ``cfg.out``.{src,tgt}: the inputs' pairs less duplicates and evaluation sentences."""
    check_code(cfg.source_lang, "--source-lang")
    check_code(cfg.target_lang, "--target-lang")
    if not cfg.inputs:
        raise UserError("--inputs: give at least one bitext prefix (the seed corpus's train/SRC-TGT)")
    files = _check_inputs(cfg)
    outs = {lang: f"{cfg.out}.{lang}" for lang in (cfg.source_lang, cfg.target_lang)}
    check_outputs(
        {f"--inputs {p}": p for pair in files for p in pair}, {f"--out ({lang})": o for lang, o in outs.items()}
    )
    blocked = eval_keys(cfg.eval_dirs)
    seen: set[tuple[str, str]] = set()
    read: dict[str, int] = {}
    removed: Counter = Counter({r: 0 for r in REASONS})
    kept = 0
    with contextlib.ExitStack() as stack:
        out_src, out_tgt = (stack.enter_context(atomic_write(o)) for o in outs.values())
        for prefix, (src, tgt) in zip(cfg.inputs, files):
            read[prefix] = 0
            for s, t in zip(read_lines(src, progress=False), read_lines(tgt, progress=False)):
                read[prefix] += 1
                if norm_key(s) in blocked or norm_key(t) in blocked:
                    removed["decontaminated"] += 1
                elif (s, t) in seen:
                    removed["duplicate"] += 1
                else:
                    seen.add((s, t))
                    out_src.write(s + "\n")
                    out_tgt.write(t + "\n")
                    kept += 1
    return MergeResult(read, kept, removed)
