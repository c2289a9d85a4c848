"""File names of a generation directory: ``{src}-{tgt}.hyp``, one file of detokenised hypotheses per direction.

``mt-generate --results-path`` writes them and ``mt-eval`` (``eval/gendir.py``) finds them; both go through
this pair of functions so the writer and the reader cannot drift apart.
"""

from __future__ import annotations

import re

HYP_SUFFIX = ".hyp"
_CODE = r"[a-z]{3}_[A-Z][a-z]{3}"  # the shape of a FLORES-200 code, e.g. deu_Latn
_HYP_RE = re.compile(rf"^({_CODE})-({_CODE}){re.escape(HYP_SUFFIX)}$")


def hyp_name(src: str, tgt: str) -> str:
    """``eng_Latn``, ``deu_Latn`` -> ``eng_Latn-deu_Latn.hyp``."""
    return f"{src}-{tgt}{HYP_SUFFIX}"


def parse_hyp_name(name: str) -> tuple[str, str] | None:
    """``eng_Latn-deu_Latn.hyp`` -> ``("eng_Latn", "deu_Latn")``; None for any other file name."""
    m = _HYP_RE.match(name)
    return (m.group(1), m.group(2)) if m else None
