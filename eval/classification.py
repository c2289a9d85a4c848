"""The labelled-text task format every translate-test task is written in and read from.

A task is a directory::

    train.eng_Latn.tsv    label<TAB>text, the English training set (the only training labels)
    test.{lang}.tsv       label<TAB>text, one test set per language (FLORES-200 code in the name)
    test.eng_Latn.tsv     optional: English test set, the no-transfer reference
    task.json             optional: how it was built (source, labels, tiers, notes); never needed to run
    labels.tsv            optional: examples per label per file (the builder's stats printout)

Any labelled set plugs in by writing these files: one example a line, the label before the first tab,
the text after it (no tab or newline inside). ``mt-eval build-classification`` writes them from the
gettext catalogues (:mod:`eval.gettext_domains`) or chatterbot-corpus (:mod:`eval.chatterbot`).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from mt.common.errors import UserError, located
from mt.common.files import atomic_write
from mt.common.langs import ENGLISH, is_code
from mt.data.clean import normalize_ws

TRAIN_FILE = f"train.{ENGLISH}.tsv"
_TEST_RE = re.compile(r"^test\.(?P<lang>[^.]+)\.tsv$")


@dataclass
class Example:
    label: str
    text: str


@dataclass
class Task:
    """A loaded task: English training examples and test examples per language (English included if given)."""

    path: Path
    train: list[Example]
    test: dict[str, list[Example]]  # lang -> examples, sorted by lang
    meta: dict = field(default_factory=dict)  # task.json, {} when absent

    @property
    def labels(self) -> list[str]:
        return sorted({e.label for e in self.train})

    @property
    def test_langs(self) -> list[str]:
        """Languages with a test file, English excluded (it is the reference, not a transfer target)."""
        return [lang for lang in self.test if lang != ENGLISH]


def read_examples(path: str | Path) -> list[Example]:
    """``label<TAB>text`` lines; blank lines are skipped, anything else malformed is an error naming the line."""
    path = Path(path)
    out: list[Example] = []
    try:
        with open(path, encoding="utf-8-sig") as fh:  # -sig: a byte-order mark is not part of the first label
            for i, line in enumerate(fh, start=1):
                line = line.rstrip("\n").rstrip("\r")
                if not line.strip():
                    continue
                label, sep, text = line.partition("\t")
                label, text = label.strip(), text.strip()
                if not sep or not label or not text:
                    raise located(path, i, "expected label<TAB>text (a label, one tab, then the text)")
                out.append(Example(label, text))
    except UnicodeDecodeError as exc:
        raise located(path, None, f"not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise located(path, None, f"cannot read ({exc.strerror})") from None
    return out


def write_examples(path: str | Path, examples: list[Example]) -> None:
    """Write ``label<TAB>text`` lines atomically; whitespace inside a text is collapsed to single spaces."""
    with atomic_write(path) as fh:
        for e in examples:
            text = normalize_ws(e.text)
            if "\t" in e.label or not e.label or not text:
                raise ValueError(f"bad example {e!r}: empty field or tab in the label")
            fh.write(f"{e.label}\t{text}\n")


def read_task(path: str | Path, langs: list[str] | None = None) -> Task:
    """Load a task directory (see the module docstring); ``langs`` restricts the test languages."""
    root = Path(path)
    if not root.is_dir():
        raise UserError(f"{root}: no such task directory; build one with `mt-eval build-classification --out DIR`")
    train_path = root / TRAIN_FILE
    if not train_path.is_file():
        raise UserError(
            f"{root}: no {TRAIN_FILE} (label<TAB>text English training set); "
            "is this a task directory written by `mt-eval build-classification`?"
        )
    train = read_examples(train_path)
    if len({e.label for e in train}) < 2:
        raise located(train_path, None, "needs at least two labels to train a classifier")
    test: dict[str, list[Example]] = {}
    for p in sorted(root.glob("test.*.tsv")):
        m = _TEST_RE.match(p.name)
        if not m:
            continue
        lang = m.group("lang")
        if not is_code(lang):
            raise UserError(f"{p}: {lang!r} is not a FLORES-200 code; name test files test.deu_Latn.tsv etc.")
        if langs is None or lang in langs or lang == ENGLISH:
            test[lang] = read_examples(p)
    if langs is not None:
        missing = [lang for lang in langs if lang not in test]
        if missing:
            have = ", ".join(lang for lang in test if lang != ENGLISH) or "none"
            raise UserError(f"{root}: no test file for {', '.join(missing)} (test languages here: {have})")
    known = set(e.label for e in train)
    for lang, examples in test.items():
        unknown = sorted({e.label for e in examples} - known)
        if unknown:
            raise UserError(
                f"{root / f'test.{lang}.tsv'}: label(s) {', '.join(unknown)} never occur in "
                f"{TRAIN_FILE}; a classifier trained on English cannot predict them"
            )
    if not any(lang != ENGLISH for lang in test):
        raise UserError(f"{root}: no test.{{lang}}.tsv files besides English")
    meta: dict = {}
    if (root / "task.json").is_file():
        try:
            meta = json.loads((root / "task.json").read_text(encoding="utf-8"))
        except ValueError as exc:
            raise located(root / "task.json", None, f"not valid JSON ({exc})") from None
    return Task(root, train, test, meta)


# ------------------------------------------------------------------------------------------------- stats


def label_counts(files: dict[str, list[Example]]) -> tuple[list[str], dict[str, Counter]]:
    """(labels, {file name: Counter(label)}) for a stats table."""
    counts = {name: Counter(e.label for e in ex) for name, ex in files.items()}
    labels = sorted({label for c in counts.values() for label in c})
    return labels, counts


def stats_table(files: dict[str, list[Example]]) -> str:
    """Examples per label (rows) per file (columns), aligned for a terminal, with totals."""
    labels, counts = label_counts(files)
    names = list(files)
    width = max([len("label"), len("total"), *map(len, labels)])
    cols = [max(len(n), 5) for n in names]
    lines = ["  ".join([f"{'label':<{width}}", *(f"{n:>{w}}" for n, w in zip(names, cols))])]
    for label in labels:
        lines.append("  ".join([f"{label:<{width}}", *(f"{counts[n][label]:>{w}}" for n, w in zip(names, cols))]))
    lines.append("  ".join([f"{'total':<{width}}", *(f"{sum(counts[n].values()):>{w}}" for n, w in zip(names, cols))]))
    return "\n".join(lines)


def write_task(out: str | Path, train: list[Example], test: dict[str, list[Example]], meta: dict) -> list[Path]:
    """Write a task directory atomically file by file; stale test files of an earlier build are removed.

    ``test`` may hold ``eng_Latn`` (written as ``test.eng_Latn.tsv``). Returns the paths written.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)
    written = [out / TRAIN_FILE]
    write_examples(out / TRAIN_FILE, train)
    for lang in sorted(test):
        path = out / f"test.{lang}.tsv"
        write_examples(path, test[lang])
        written.append(path)
    for old in out.glob("test.*.tsv"):  # languages of an earlier build that this one does not have
        if old not in written:
            old.unlink()
    files = {"train." + ENGLISH: train, **{f"test.{lang}": test[lang] for lang in sorted(test)}}
    labels, counts = label_counts(files)
    with atomic_write(out / "labels.tsv") as fh:
        fh.write("\t".join(["label", *files]) + "\n")
        for label in labels:
            fh.write("\t".join([label, *(str(counts[n][label]) for n in files)]) + "\n")
    written.append(out / "labels.tsv")
    with atomic_write(out / "task.json") as fh:
        json.dump(meta, fh, indent=1, sort_keys=True, ensure_ascii=False)
        fh.write("\n")
    written.append(out / "task.json")
    return written
