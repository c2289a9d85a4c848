"""fairseq's text output of ``fairseq-generate`` / ``fairseq-interactive``, line for line.

Per sentence ``i``::

    S-i<TAB>source (with its __src__ token)          T-i<TAB>reference (only when there is one)
    H-i<TAB>score<TAB>hypothesis (pieces, or text with --remove-bpe sentencepiece)
    D-i<TAB>score<TAB>detokenised hypothesis
    P-i<TAB>log-prob of each token, </s> last

H/D/P repeat for each of the ``--nbest`` hypotheses (an empty hypothesis for an empty source: every input
has its lines, so ``grep ^D-`` stays aligned with the input). Scores are base 2 (fairseq divides the nats by
ln 2): ``score`` is printed as the float32 value's Python repr, positional scores with 4 decimals —
exactly what fairseq's ``generate.py`` prints. Users grep these lines (``grep ^D- | sort -V | cut -f3``).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch

from mt.common.flags import arg
from mt.data.dictionary import Dictionary

LN2 = math.log(2)
REMOVE_BPE = ("sentencepiece",)


def remove_bpe_arg() -> Any:
    """The ``--remove-bpe`` config field of the decoding commands (``--post-process``: fairseq's newer name)."""
    return arg(
        None,
        "turn H-/S-/T- pieces into text (only 'sentencepiece'; the flag alone means that)",
        nargs="?",
        const="sentencepiece",
        aliases=("--post-process",),
    )


def post_process(pieces: str, remove_bpe: str | None) -> str:
    """fairseq's ``--remove-bpe sentencepiece`` (``--post-process``): pieces -> text."""
    if remove_bpe == "sentencepiece":
        return pieces.replace(" ", "").replace("\u2581", " ").strip()
    return pieces


def pieces_string(dictionary: Dictionary, ids: Sequence[int], escape_unk: bool = False) -> str:
    """Space-joined symbols; padding and ``</s>`` dropped, language tokens kept (fairseq's S- line)."""
    out = []
    for i in ids:
        i = int(i)
        if i in (dictionary.pad(), dictionary.eos()):
            continue
        out.append("<<unk>>" if escape_unk and i == dictionary.unk() else dictionary[i])
    return " ".join(out)


def score_str(score_nats: float) -> str:
    """fairseq's H-/D- score: float32 nats / ln 2, printed with ``{}``."""
    return "{}".format((torch.tensor(score_nats, dtype=torch.float32) / LN2).item())


def positional_str(scores_nats: Sequence[float]) -> str:
    return " ".join("{:.4f}".format(x) for x in (torch.tensor(scores_nats, dtype=torch.float32) / LN2).tolist())


def sentence_lines(
    sid: int,
    src: str | None,
    tgt: str | None,
    hyps: Sequence[tuple[float, str, str, Sequence[float]]],
) -> list[str]:
    """Lines for one sentence; ``hyps``: (score nats, H string, D string, positional scores nats)."""
    lines = []
    if src is not None:
        lines.append(f"S-{sid}\t{src}")
    if tgt is not None:
        lines.append(f"T-{sid}\t{tgt}")
    for score, h, d, pos in hyps:
        s = score_str(score)
        lines.append(f"H-{sid}\t{s}\t{h}")
        lines.append(f"D-{sid}\t{s}\t{d}")
        lines.append(f"P-{sid}\t{positional_str(pos)}")
    return lines


def bleu_string(score: float, precisions: Sequence[float], bp: float, sys_len: int, ref_len: int) -> str:
    """fairseq's BLEU result string (its ``bleu`` scorer, order 4), which scripts parse after ``BLEU4 = ``;
    ``precisions`` are the four n-gram precisions in percent."""
    ratio = sys_len / ref_len if ref_len else 0.0
    p1, p2, p3, p4 = precisions
    return (
        f"BLEU4 = {score:2.2f}, {p1:2.1f}/{p2:2.1f}/{p3:2.1f}/{p4:2.1f} "
        f"(BP={bp:.3f}, ratio={ratio:.3f}, syslen={sys_len}, reflen={ref_len})"
    )
