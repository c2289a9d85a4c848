"""mt-eval build-classification: the task format, the gettext software-kind builder, the chatterbot builder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _mo_writer import write_mo

from eval.chatterbot import ChatterbotTaskConfig, build_chatterbot_task
from eval.classification import Example, read_examples, read_task, write_task
from eval.cli import eval_main as main
from eval.gettext_domains import GettextTaskConfig, build_gettext_task, domain_label
from mt.common.errors import UserError
from mt.data.clean import norm_key

# catalogue -> (label, topic words); every English message is "<topic> <noun> number <i> is ready"
DOMAINS = {
    "gtk20": ("desktop-ui", "window"),
    "git": ("version-control", "commit"),
    "postgres-15": ("database", "table"),
    "coreutils": ("system-tools", "file"),
}
WORDS = {"deu_Latn": "etwas", "fra_Latn": "chose", "xho_Latn": "into"}
LOCALES = {"de": "deu_Latn", "fr": "fra_Latn", "xh": "xho_Latn"}


def _english(domain: str, i: int) -> str:
    return f"The {DOMAINS[domain][1]} item number {i} is ready"


def _translation(lang: str, english: str) -> str:
    # distinct per language and per English message; shares no word with the English (not "untranslated")
    i = english.split()[4]
    return f"{WORDS[lang]} zahl {i} {english.split()[1][::-1]}k {lang[:3]}"


def _locale_tree(root: Path, n: int = 30) -> tuple[Path, dict[str, dict[str, str]]]:
    """de and fr translate every catalogue; xh only gtk20. Returns the tree and {lang: {translation: English}}."""
    back: dict[str, dict[str, str]] = {lang: {} for lang in LOCALES.values()}
    for loc, lang in LOCALES.items():
        for domain in DOMAINS:
            if loc == "xh" and domain != "gtk20":
                continue
            entries = []
            for i in range(n):
                en = _english(domain, i)
                tr = _translation(lang, en)
                entries.append((en, tr))
                back[lang][tr] = en
            if domain == "gtk20":  # one message in two labelled catalogues: ambiguous, never used
                entries.append(("Shared message across two programs", f"{WORDS[lang]} geteilt zwei"))
            if domain == "git":
                entries.append(("Shared message across two programs", f"{WORDS[lang]} geteilt zwei"))
            write_mo(root / loc / "LC_MESSAGES" / f"{domain}.mo", entries)
        write_mo(root / loc / "LC_MESSAGES" / "iso_3166.mo", [("Republic of Nowhere Land", f"{WORDS[lang]} Land")])
    return root, back


def _cfg(tmp_path: Path, out: str = "task", **kw) -> GettextTaskConfig:
    base = dict(
        out=str(tmp_path / out),
        locale_dir=str(tmp_path / "locale"),
        langs="deu_Latn,fra_Latn,xho_Latn",
        train_per_label=12,
        test_per_label=6,
        min_per_label=3,
        workers=1,
        progress=False,
    )
    base.update(kw)
    return GettextTaskConfig(**base)


@pytest.fixture
def tree(tmp_path):
    return _locale_tree(tmp_path / "locale")


def _label_of_english(en: str) -> str:
    word = en.split()[1]
    return next(label for label, w in DOMAINS.values() if w == word)


def test_domain_labels():
    assert domain_label("gtk20") == "desktop-ui"
    assert domain_label("psql-15") == "database" and domain_label("pg_dump-16") == "database"
    assert domain_label("gtk20-properties") == "toolkit-api-docs"
    assert domain_label("iso_639-3") is None and domain_label("unknown-thing") is None


def test_gettext_task_labels_split_and_no_leakage(tmp_path, tree, capsys):
    _, back = tree
    res = build_gettext_task(_cfg(tmp_path))
    out = capsys.readouterr().out
    assert "train.eng_Latn" in out and "test.deu_Latn" in out  # the stats printout
    task = read_task(res.out)
    assert task.labels == sorted(label for label, _ in DOMAINS.values())
    train_keys = {norm_key(e.text) for e in task.train}
    for e in task.train:  # every label is the one of the message's catalogue
        assert e.label == _label_of_english(e.text)
    assert len(task.train) == 4 * 12
    assert "Shared message across two programs" not in {e.text for e in task.train}
    # xho translates one catalogue only: one label measures nothing, so it is not tested
    assert task.test_langs == ["deu_Latn", "fra_Latn"]
    assert any("xho_Latn" in n and "not tested" in n for n in res.notes)
    for lang in task.test_langs:
        ex = task.test[lang]
        assert len(ex) == 4 * 6
        for e in ex:
            en = back[lang][e.text]  # the English source of this test message
            assert norm_key(en) not in train_keys  # split by English msgid: no leakage
            assert e.label == _label_of_english(en)
    for e in task.test["eng_Latn"]:
        assert norm_key(e.text) not in train_keys and e.label == _label_of_english(e.text)
    # the same English messages serve every language (the N-way-first order)
    assert {back["deu_Latn"][e.text] for e in task.test["deu_Latn"]} == {
        back["fra_Latn"][e.text] for e in task.test["fra_Latn"]
    }
    exclude = set((res.out / "exclude.txt").read_text(encoding="utf-8").splitlines())
    for lang in ("eng_Latn", *task.test_langs):
        assert {e.text for e in task.test[lang]} <= exclude
    assert not ({e.text for e in task.train} & exclude)
    labels_tsv = (res.out / "labels.tsv").read_text(encoding="utf-8").splitlines()
    assert labels_tsv[0].split("\t") == ["label", "train.eng_Latn", "test.deu_Latn", "test.eng_Latn", "test.fra_Latn"]


def test_gettext_task_is_deterministic_and_seeded(tmp_path, tree):
    a = build_gettext_task(_cfg(tmp_path, "a"))
    b = build_gettext_task(_cfg(tmp_path, "b"))
    c = build_gettext_task(_cfg(tmp_path, "c", seed=7))
    names = sorted(p.name for p in a.out.iterdir())
    assert names == sorted(p.name for p in b.out.iterdir())
    for name in names:
        assert (a.out / name).read_bytes() == (b.out / name).read_bytes(), name
    assert (a.out / "test.deu_Latn.tsv").read_bytes() != (c.out / "test.deu_Latn.tsv").read_bytes()
    assert not list(a.out.glob(".*.tmp"))  # atomic writes leave no temp files


def test_gettext_task_decontaminates_against_corpus(tmp_path, tree):
    _, back = tree
    corpus = tmp_path / "corpus"
    (corpus / "train").mkdir(parents=True)
    # the MT corpus trains on the first 10 git and gtk20 messages of German
    en_de = {tr: en for tr, en in back["deu_Latn"].items()}
    trained = [
        (en, tr)
        for tr, en in sorted(en_de.items())
        if en.split()[1] in ("commit", "window") and int(en.split()[4]) < 10
    ]
    (corpus / "train" / "eng_Latn-deu_Latn.eng_Latn").write_text("".join(en + "\n" for en, _ in trained))
    (corpus / "train" / "eng_Latn-deu_Latn.deu_Latn").write_text("".join(tr + "\n" for _, tr in trained))
    (corpus / "stats.tsv").write_text(
        f"lang\ttrain_pairs\tdev\tdevtest\tmono\ttier\ndeu_Latn\t{len(trained)}\t0\t0\t0\tlow\n"
    )
    res = build_gettext_task(_cfg(tmp_path, corpus=str(corpus), english_train="unseen"))
    task = read_task(res.out)
    trained_keys = {norm_key(en) for en, _ in trained} | {norm_key(tr) for _, tr in trained}
    assert not trained_keys & {norm_key(e.text) for e in task.test["deu_Latn"]}
    assert not trained_keys & {norm_key(back["deu_Latn"][e.text]) for e in task.test["deu_Latn"]}
    assert res.contaminated["deu_Latn"] == len(trained)
    # unseen: English the corpus trains on is not in the English training set either
    assert not {norm_key(en) for en, _ in trained} & {norm_key(e.text) for e in task.train}
    meta = json.loads((res.out / "task.json").read_text())
    assert meta["tiers"] == {"deu_Latn": "low"} and meta["contaminated_dropped"]["deu_Latn"] == len(trained)
    # French has no train files in the corpus: nothing to decontaminate, but noted
    assert any("fra_Latn" in n and "no train files" in n for n in res.notes)


def test_gettext_task_errors(tmp_path, tree):
    with pytest.raises(UserError, match="--english-train unseen needs --corpus"):
        build_gettext_task(_cfg(tmp_path, english_train="unseen"))
    with pytest.raises(UserError, match="--langs zul_Latn"):
        build_gettext_task(_cfg(tmp_path, langs="zul_Latn"))
    with pytest.raises(UserError, match="no test language has two labels"):
        build_gettext_task(_cfg(tmp_path, langs="xho_Latn"))


def test_cli_build_classification(tmp_path, tree, capsys):
    rc = main(
        [
            "build-classification",
            "--out",
            str(tmp_path / "cli"),
            "--locale-dir",
            str(tmp_path / "locale"),
            "--langs",
            "deu_Latn,fra_Latn",
            "--train-per-label",
            "8",
            "--test-per-label",
            "4",
            "--min-per-label",
            "2",
            "--no-progress-bar",
        ]
    )
    assert rc == 0
    assert "wrote" in capsys.readouterr().out
    assert len(read_examples(tmp_path / "cli" / "train.eng_Latn.tsv")) == 4 * 8


# ------------------------------------------------------------------------------------------ the format


def test_read_task_reports_bad_lines_and_unknown_labels(tmp_path):
    d = tmp_path / "t"
    write_task(d, [Example("a", "one two"), Example("b", "three four")], {"deu_Latn": [Example("a", "eins zwei")]}, {})
    assert read_task(d).test_langs == ["deu_Latn"]
    (d / "test.fra_Latn.tsv").write_text("a\tun deux\nno tab here\n", encoding="utf-8")
    with pytest.raises(UserError, match=r"test\.fra_Latn\.tsv:2: expected label<TAB>text"):
        read_task(d)
    (d / "test.fra_Latn.tsv").write_text("c\tun deux\n", encoding="utf-8")
    with pytest.raises(UserError, match="label\\(s\\) c never occur"):
        read_task(d)
    (d / "test.fra_Latn.tsv").unlink()
    with pytest.raises(UserError, match="no test file for xho_Latn"):
        read_task(d, ["xho_Latn"])
    (d / "train.eng_Latn.tsv").write_text("a\tone\n", encoding="utf-8")
    with pytest.raises(UserError, match="at least two labels"):
        read_task(d)


# ------------------------------------------------------------------------------------------ chatterbot


def _yml(path: Path, topic: str, convs: list[list[str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    body = "".join("- - " + c[0] + "\n" + "".join(f"  - {u}\n" for u in c[1:]) for c in convs)
    path.write_text(f"categories:\n- {topic}\nconversations:\n{body}", encoding="utf-8")


def test_chatterbot_task_splits_by_conversation_index(tmp_path):
    data = tmp_path / "cb"
    topics = {"food": "eat", "money": "pay"}
    for topic, w in topics.items():
        _yml(data / "english" / f"{topic}.yml", topic, [[f"do you {w} {i}", f"yes I {w} {i}"] for i in range(10)])
        _yml(
            data / "german" / f"{topic}.yml",
            topic,
            [[f"deutsch {w} {i} frage", f"deutsch {w} {i} antwort"] for i in range(10)],
        )
    _yml(data / "german" / "music.yml", "music", [["deutsch musik eins"]])  # English lacks the topic
    res = build_chatterbot_task(
        ChatterbotTaskConfig(out=str(tmp_path / "task"), chatterbot_dir=str(data), min_per_label=2)
    )
    task = read_task(res.out)
    assert task.labels == ["food", "money"] and task.test_langs == ["deu_Latn"]
    train_idx = {(e.label, e.text.split()[3]) for e in task.train}  # "do you eat 3" / "yes I eat 3"
    test_idx = {(e.label, e.text.split()[2]) for e in task.test["deu_Latn"]}
    assert train_idx and test_idx and not train_idx & test_idx  # German test conversations are not trained on
    assert len(test_idx) == 10  # half of each topic's 10 conversations
    assert any("music" in n for n in res.notes)
    assert json.loads((res.out / "task.json").read_text())["aligned_test"]["deu_Latn"] == 20
