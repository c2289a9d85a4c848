"""A tiny multilingual corpus in the FLORES layout (train/{src}-{tgt}.{lang}, dev/, devtest/), built by tests."""

from __future__ import annotations

import random
from pathlib import Path

# word lists per language, incl. a non-Latin script with few sentences (the low-resource case)
WORDS = {
    "eng_Latn": "the file is open save close window print new folder name user settings error".split(),
    "deu_Latn": "die Datei ist offen speichern schließen Fenster drucken neuer Ordner Name Benutzer Fehler".split(),
    "fra_Latn": "le fichier est ouvert enregistrer fermer fenêtre imprimer nouveau dossier nom utilisateur".split(),
    "rus_Cyrl": "файл открыт сохранить закрыть окно печать новый папка имя пользователь ошибка".split(),
    "tzm_Tfng": "ⴰⵣⵓⵍ ⴰⴼⴰⵢⵍⵓ ⵉⵍⴰ ⵔⵥⵎ ⵇⵇⵏ ⵜⴰⵙⵔⵜⵢ ⵙⵙⵉⴳⵣ ⴰⵎⴰⵢⵏⵓ".split(),
}
SIZES = {"deu_Latn": 400, "fra_Latn": 300, "rus_Cyrl": 150, "tzm_Tfng": 30}


def sentence(rng: random.Random, lang: str) -> str:
    words = WORDS[lang]
    return " ".join(rng.choice(words) for _ in range(rng.randint(3, 9))) + f" {rng.randint(0, 999)}"


def make_corpus(root: Path, seed: int = 0, dev_lines: int = 40) -> Path:
    rng = random.Random(seed)
    (root / "train").mkdir(parents=True, exist_ok=True)
    for lang, n in SIZES.items():
        src = [sentence(rng, "eng_Latn") for _ in range(n)]
        tgt = [sentence(rng, lang) for _ in range(n)]
        (root / "train" / f"eng_Latn-{lang}.eng_Latn").write_text("\n".join(src) + "\n", encoding="utf-8")
        (root / "train" / f"eng_Latn-{lang}.{lang}").write_text("\n".join(tgt) + "\n", encoding="utf-8")
    for split in ("dev", "devtest"):
        (root / split).mkdir(exist_ok=True)
        for lang in WORDS:
            lines = [sentence(rng, lang) for _ in range(dev_lines)]
            (root / split / f"{lang}.{split}").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root
