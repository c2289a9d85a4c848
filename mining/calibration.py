"""The default cut of ``mine-bitext`` (``--threshold`` left out): calibrated per encoder on BUCC-style sets.

Why not one number: a ratio margin of 1.06 (NLLB's cut on LASER embeddings) means something else in
another encoder's space. With e5 and USE it kept nearly every max-mode pair of a BUCC-style set (F1
0.41-0.57 where the best cut reaches 0.82-0.95). So each encoder's cut is *measured*: ``mine-eval bucc
--calibrate FILE`` mines the tuning split of BUCC-style sets (``mine-eval bucc-build`` makes them from the
gettext catalogues or from a corpus's hidden-parallel ``mono/`` files), takes per language pair the cut
with the best F1 against the gold, and for the encoder the median over its pairs. ``mine-bitext
--calibration FILE`` reads such a file; the cuts in ``SHIPPED`` come from the same command on the
gettext sets (bench/bucc.py, README "Mining defaults").

Lookup order (``resolve_cut``): ``--threshold`` given > the calibrated cut of this (encoder, pair) >
the encoder's median over its calibrated pairs > LASER's 1.06 for LASER encoders > a cut fitted to this
pair's own margin scores (two-component Gaussian mixture, the cut with the best F1 the mixture predicts:
less reliable, it takes near-paraphrases for translations) for an encoder nobody calibrated. Whatever is
chosen is logged with its reason and written to the mined TSV's ``.meta.json``.

Pairs are keyed without direction (``deu_Latn-eng_Latn`` = ``eng_Latn-deu_Latn``): max-mode mining with
the margin is symmetric. Only the ratio margin in max mode is calibrated; other settings get no default cut
but a fitted one when ``--threshold fit`` asks.
"""

from __future__ import annotations

import json
import math
import os
import statistics
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from mt.common.errors import UserError
from mt.common.files import atomic_write

FORMAT = "nllb-mini-calibration/1"
LASER_RATIO_CUT = 1.06  # NLLB / stopes' cut for the ratio margin on LASER embeddings
MIN_PAIR_GOLD = 40  # a pair's own cut is used when its calibration set had this many gold pairs (else the
# encoder's median): on the gettext sets the pair's own cut beat the median for 48-77 gold pairs too

# Measured with `mine-eval bucc --calibrate` (bench/bucc.py) on BUCC-style sets built from the gettext
# catalogues by `mine-eval bucc-build --size 3000 --gold 300` (smaller languages: all their pairs), training
# split, ratio margin, max mode, k = 4. Replace or extend with `mine-bitext --calibration FILE`.
SHIPPED: dict = {
    "format": FORMAT,
    "encoders": {
        "e5": {
            "default": 1.012803,
            "data": "gettext BUCC-style sets (training split)",
            "pairs": {
                "arb_Arab-eng_Latn": {"cut": 1.011585, "f1": 0.7178, "gold": 159},
                "deu_Latn-eng_Latn": {"cut": 1.016814, "f1": 0.6878, "gold": 300},
                "eng_Latn-fra_Latn": {"cut": 1.013546, "f1": 0.6979, "gold": 300},
                "eng_Latn-hin_Deva": {"cut": 1.015853, "f1": 0.8014, "gold": 153},
                "eng_Latn-khk_Cyrl": {"cut": 1.011183, "f1": 0.4318, "gold": 48},
                "eng_Latn-mya_Mymr": {"cut": 1.011807, "f1": 0.6512, "gold": 77},
                "eng_Latn-rus_Cyrl": {"cut": 1.019853, "f1": 0.6619, "gold": 300},
                "eng_Latn-xho_Latn": {"cut": 1.012803, "f1": 0.3333, "gold": 53},
                "eng_Latn-zho_Hans": {"cut": 1.007179, "f1": 0.5809, "gold": 300},
            },
        },
        "use": {
            "default": 1.23212,
            "data": "gettext BUCC-style sets (training split)",
            "pairs": {
                "arb_Arab-eng_Latn": {"cut": 1.2352, "f1": 0.7194, "gold": 159},
                "deu_Latn-eng_Latn": {"cut": 1.249563, "f1": 0.6609, "gold": 300},
                "eng_Latn-fra_Latn": {"cut": 1.2632, "f1": 0.7521, "gold": 300},
                "eng_Latn-hin_Deva": {"cut": 1.206184, "f1": 0.1047, "gold": 153},
                "eng_Latn-khk_Cyrl": {"cut": 1.23212, "f1": 0.3125, "gold": 48},
                "eng_Latn-mya_Mymr": {"cut": 1.105718, "f1": 0.1967, "gold": 77},
                "eng_Latn-rus_Cyrl": {"cut": 1.250891, "f1": 0.6801, "gold": 300},
                "eng_Latn-xho_Latn": {"cut": 1.183846, "f1": 0.1667, "gold": 53},
                "eng_Latn-zho_Hans": {"cut": 1.204851, "f1": 0.7174, "gold": 300},
            },
        },
        "ngram": {
            "default": 1.277038,
            "data": "gettext BUCC-style sets (training split)",
            "pairs": {
                "arb_Arab-eng_Latn": {"cut": 1.251038, "f1": 0.32, "gold": 159},
                "deu_Latn-eng_Latn": {"cut": 1.176249, "f1": 0.4248, "gold": 300},
                "eng_Latn-fra_Latn": {"cut": 1.142327, "f1": 0.4636, "gold": 300},
                "eng_Latn-hin_Deva": {"cut": 1.198254, "f1": 0.0939, "gold": 153},
                "eng_Latn-khk_Cyrl": {"cut": 1.41823, "f1": 0.1429, "gold": 48},
                "eng_Latn-mya_Mymr": {"cut": 1.492091, "f1": 0.1647, "gold": 77},
                "eng_Latn-rus_Cyrl": {"cut": 1.300389, "f1": 0.1966, "gold": 300},
                "eng_Latn-xho_Latn": {"cut": 1.297779, "f1": 0.1017, "gold": 53},
                "eng_Latn-zho_Hans": {"cut": 1.277038, "f1": 0.2876, "gold": 300},
            },
        },
    },
}


@dataclass
class Cut:
    """A score cut and where it came from (``given``, ``pair``, ``encoder``, ``laser``, ``fitted``, ``none``)."""

    value: float | None
    source: str
    why: str

    def as_dict(self) -> dict:
        return asdict(self)


def pair_key(a: str, b: str) -> str:
    return "-".join(sorted((a, b)))


def _family(encoder: str | None) -> str:
    return (encoder or "").strip()


def read_calibration(path: str | os.PathLike) -> dict:
    """A calibration file written by ``mine-eval bucc --calibrate`` (checked: one-line errors)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: calibration file not found (write one with mine-eval bucc --calibrate {path})")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"{path}: not a calibration file ({exc}); write one with mine-eval bucc --calibrate") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("encoders"), dict):
        raise UserError(
            f"{path}: not a calibration file (format {FORMAT!r} expected); write one with mine-eval bucc --calibrate"
        )
    for enc, entry in data["encoders"].items():
        cuts = [entry.get("default"), *(p.get("cut") for p in entry.get("pairs", {}).values())]
        if not all(isinstance(c, (int, float)) and math.isfinite(c) for c in cuts):
            raise UserError(f"{path}: encoder {enc!r} has a cut that is not a finite number")
    return data


def encoder_entry(pairs: dict[str, dict], **info: object) -> dict:
    """The calibration of one encoder from its per-pair results ``{pair: {"cut", "f1", "gold"}}``."""
    if not pairs:
        raise UserError("no language pair to calibrate on")
    return {"default": round(statistics.median(p["cut"] for p in pairs.values()), 6), "pairs": pairs, **info}


def write_calibration(path: str | os.PathLike, encoder: str, entry: dict) -> None:
    """Add or replace ``encoder``'s entry in the calibration file ``path`` (created when missing)."""
    path = Path(path)
    data = read_calibration(path) if path.exists() else {"format": FORMAT, "encoders": {}}
    data["encoders"][encoder] = entry
    with atomic_write(path) as fh:
        json.dump(data, fh, indent=1, ensure_ascii=False)
        fh.write("\n")


def calibrated_cut(
    encoder: str | None, src_lang: str | None, tgt_lang: str | None, tables: list[tuple[str, dict]]
) -> Cut | None:
    """The calibrated cut of ``encoder`` for this pair (or its median), from the first table that has the
    encoder; ``tables`` are (name, calibration) in order of preference. None: not calibrated."""
    fam = _family(encoder)
    for name, table in tables:
        entry = table.get("encoders", {}).get(fam)
        if entry is None:
            continue
        pair = entry.get("pairs", {}).get(pair_key(src_lang, tgt_lang)) if src_lang and tgt_lang else None
        if pair is not None and pair.get("gold", MIN_PAIR_GOLD) >= MIN_PAIR_GOLD:
            return Cut(
                float(pair["cut"]),
                "pair",
                f"calibrated for {fam} on {pair_key(src_lang, tgt_lang)} ({name}: best-F1 cut on "
                f"{pair.get('gold', '?')} gold pairs of {entry.get('data', 'a BUCC-style set')})",
            )
        n = len(entry.get("pairs", {}))
        return Cut(
            float(entry["default"]),
            "encoder",
            f"calibrated for {fam}: median of the best-F1 cuts of its {n} calibrated pair(s) ({name}"
            + (f"; {pair_key(src_lang, tgt_lang)} itself had too few gold pairs" if pair else "")
            + ")",
        )
    return None


# --------------------------------------------------------------------------------------------------
# the fallback: a cut fitted to the pair's own score distribution


def fit_cut(scores: np.ndarray, iters: int = 200) -> Cut:
    """Two-component Gaussian mixture on the candidate scores (noise low, translations high), by EM;
    the cut with the best F1 the mixture's posteriors predict. Used only for uncalibrated encoders."""
    x = np.asarray(scores, dtype=np.float64)
    x = x[np.isfinite(x)]
    if len(x) < 20 or float(x.std()) == 0.0:
        return Cut(None, "none", f"too few distinct candidate scores ({len(x)}) to fit a cut: every pair kept")
    mu = np.array([np.quantile(x, 0.3), np.quantile(x, 0.95)])
    sd = np.full(2, x.std() / 2)
    pi = np.array([0.8, 0.2])
    for _ in range(iters):
        dens = pi[:, None] * np.exp(-0.5 * ((x[None] - mu[:, None]) / sd[:, None]) ** 2) / sd[:, None]
        post = dens / np.maximum(dens.sum(axis=0), 1e-300)
        nk = np.maximum(post.sum(axis=1), 1e-12)
        pi, mu = nk / len(x), (post * x).sum(axis=1) / nk
        sd = np.maximum(np.sqrt((post * (x[None] - mu[:, None]) ** 2).sum(axis=1) / nk), 1e-6)
    hi = int(np.argmax(mu))
    order = np.argsort(-x)
    tp = np.cumsum(post[hi][order])
    f1 = 2 * tp / (np.arange(1, len(x) + 1) + post[hi].sum())
    i = int(np.argmax(f1))
    cut = float((x[order][i] + x[order][min(i + 1, len(x) - 1)]) / 2)
    return Cut(
        round(cut, 6),
        "fitted",
        f"fitted to this pair's {len(x)} candidate scores (2-Gaussian mixture: translations at "
        f"{mu[hi]:.3f} +- {sd[hi]:.3f}, {100 * pi[hi]:.0f}% of candidates; noise at {mu[1 - hi]:.3f} "
        f"+- {sd[1 - hi]:.3f}): no calibration for this encoder, calibrate it with mine-eval bucc --calibrate",
    )


def resolve_cut(
    threshold: float | str | None,
    margin: str,
    mode: str,
    encoder: str | None,
    src_lang: str | None,
    tgt_lang: str | None,
    scores: np.ndarray,
    calibration: str | None = None,
) -> Cut:
    """The cut mine-bitext applies (see the module docstring for the order)."""
    if isinstance(threshold, (int, float)):
        return Cut(float(threshold), "given", "--threshold given")
    if threshold == "fit":
        return fit_cut(scores)
    if threshold not in (None, "auto"):
        raise UserError(f"--threshold {threshold!r}: give a number, 'auto' or 'fit'")
    if margin != "ratio" or mode != "max":
        return Cut(
            None,
            "none",
            f"no calibrated cut for the {margin} margin in {mode} mode: every pair kept (pass --threshold)",
        )
    tables = ([(str(calibration), read_calibration(calibration))] if calibration else []) + [("shipped", SHIPPED)]
    cut = calibrated_cut(encoder, src_lang, tgt_lang, tables)
    if cut is not None:
        return cut
    fam = _family(encoder)
    if fam == "laser2" or fam.startswith("laser3"):
        return Cut(LASER_RATIO_CUT, "laser", f"{fam}: NLLB's ratio-margin cut for LASER embeddings")
    return fit_cut(scores)
