"""Cleaning rules for gettext (English, translation) pairs: small pure functions, one reason code each.

Two kinds of functions:

* transforms, applied to both sides first: :func:`normalize_ws` (collapse whitespace, drop control
  characters: a segment never holds a newline or a tab) and :func:`strip_accelerators` (``_File``,
  ``&File``, ``O_pen``, CJK ``(_F)`` suffixes; never ``&amp;``, ``AT&T`` or ``snake_case``);
* filters, each a predicate named by its reason code in :data:`REASONS`; :func:`clean_pair` applies them
  to the English side, then to the translation, and reports the first that fires, so drop counts add up
  to the number of pairs dropped.

The corpus builder adds three reasons of its own: ``duplicate`` (dedup per pair), ``decontaminated``
(sentence of dev/devtest) and ``excluded`` (sentence of an ``--exclude`` file).

:func:`norm_key` (casefold + whitespace) is the one normalisation used for every comparison:
dedup of eval sentences, decontamination and ``--exclude``.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from mt.common.scripts import expected_scripts, only_letters_of, script_counts

# Reason codes of clean_pair, in the order the rules are checked.
REASONS: tuple[str, ...] = (
    "empty",  # nothing left after whitespace/accelerator normalisation
    "placeholders",  # mostly format specifiers: %s, %1$d, {0}, %(name)s, $VAR
    "markup",  # XML/HTML tags or entities
    "path_url_email",  # file paths, URLs, e-mail addresses
    "min_words",  # fewer than min_words words on the English side (placeholders do not count)
    "max_words",  # more than max_words words on the English side (help screens, licences)
    "untranslated",  # translation identical to the English, or only English words copied over
    "script",  # translation not written in the script its language code says (see script_mismatch)
)


@dataclass
class CleanConfig:
    min_words: int = 3
    max_words: int = 100


# ---------------------------------------------------------------------------------------------- transforms

_CONTROL = {cp: None for cp in range(0x20) if chr(cp) not in "\t\n\r\f\v"} | {0x7F: None}
_CONTROL.update({cp: None for cp in range(0x80, 0xA0)})


def normalize_ws(text: str) -> str:
    """Collapse every run of whitespace (newlines, tabs, NBSP) to one space, strip, drop control chars."""
    text = " ".join(text.split())
    return text if text.isprintable() else " ".join(text.translate(_CONTROL).split())


def norm_key(text: str) -> str:
    """The comparison key for dedup, decontamination and --exclude: casefold + collapsed whitespace."""
    return " ".join(text.casefold().split())


_ACCEL_SUFFIX_RE = re.compile(r"\s*\([_&][^\W_]\)")  # CJK style: "ファイル(_F)", "打开(&O)"
_ACCEL_START_RE = re.compile(r"(?<![\w&])(?:_|&(?![A-Za-z]+;|#\d+;|#x[0-9A-Fa-f]+;))(?=[^\W_])")
_ACCEL_MID_RE = re.compile(r"(?<![\w&])([^\W_]+)[_&]([^\W_]+)(?![\w&])")


def _mid_word(m: re.Match) -> str:
    left, right = m.group(1), m.group(2)
    word = left + right
    capitalised = word[0].isupper() and (len(word) == 1 or word[1:].islower())
    caseless = not any(c.isupper() or c.islower() for c in left) and not left.isascii()
    return word if capitalised or caseless else m.group(0)


def strip_accelerators(text: str) -> str:
    """Remove keyboard accelerators: ``_File`` / ``&File`` / ``O_pen`` / ``Ö&ffnen`` / ``ファイル(_F)``.

    A mid-word ``_`` or ``&`` is an accelerator only when the word reads as a capitalised word once it is
    removed (``O_pen``) or is in a caseless script (``खो_लें``); ``snake_case``, ``MAX_SIZE`` and ``AT&T``
    stay. Entities (``&amp;``) are markup, not accelerators.
    """
    if "_" not in text and "&" not in text:
        return text
    text = _ACCEL_SUFFIX_RE.sub("", text)
    text = _ACCEL_START_RE.sub("", text)
    return _ACCEL_MID_RE.sub(_mid_word, text)


# ------------------------------------------------------------------------------------------------- filters

PLACEHOLDER_RE = re.compile(
    r"%\([^)\s]+\)[-+ #0]*\d*(?:\.\d+)?[A-Za-z]"  # python %(name)s
    r"|%(?:\d+\$)?[-+#0']*(?:\d+|\*)?(?:\.(?:\d+|\*))?(?:hh|ll|[hlLqjztI])?[A-Za-z%]"  # printf/strftime
    r"|%L?\d+"  # Qt %1
    r"|\{\d*\}|\{[A-Za-z_][\w.]*(?:![rsa])?(?::[^{}]*)?\}"  # {0} {} {name} {name:>8}
    r"|\$\{?[A-Za-z_]\w*\}?"  # $VAR ${VAR}
)
_WORD_RE = re.compile(r"\w+")
_LETTER_RE = re.compile(r"[^\W\d_]")
_MARKUP_RE = re.compile(r"</?[A-Za-z][\w:.-]*(?:\s[^<>]*)?/?>|&(?:[A-Za-z]+|#\d+|#x[0-9A-Fa-f]+);")
_URL_RE = re.compile(r"\b(?:https?|ftp|file)://|\bwww\.\w")
_EMAIL_RE = re.compile(r"[\w.+-]+@[\w-]+\.[\w.-]*\w")
_PATH_RE = re.compile(
    r"(?:^|[\s\"'(\[=])(?:~|\.{1,2})?/[\w.-]+(?:/[\w.*-]*)+"  # /usr/x, ~/.config/x
    r"|\b[A-Za-z]:\\"
)  # C:\


def _may_have_placeholders(text: str) -> bool:
    return "%" in text or "{" in text or "$" in text


def count_placeholders(text: str) -> int:
    return len(PLACEHOLDER_RE.findall(text)) if _may_have_placeholders(text) else 0


def without_placeholders(text: str) -> str:
    return PLACEHOLDER_RE.sub(" ", text) if _may_have_placeholders(text) else text


def count_words(text: str) -> int:
    """Whitespace tokens that hold a letter once format specifiers are removed."""
    return sum(_LETTER_RE.search(tok) is not None for tok in without_placeholders(text).split())


def is_mostly_placeholders(text: str) -> bool:
    """At least as many format specifiers as words: ``%s: %s``, ``%s of %s``, ``%a %b %e %H:%M``."""
    n = count_placeholders(text)
    return n > 0 and n >= count_words(text)


def has_markup(text: str) -> bool:
    return _MARKUP_RE.search(text) is not None


def has_path_url_email(text: str) -> bool:
    """A URL (``https://``, ``www.``), an e-mail address or a file path (``/usr/share/x``, ``C:\\``)."""
    if "@" in text and _EMAIL_RE.search(text):
        return True
    if "/" in text and (_URL_RE.search(text) or _PATH_RE.search(text)):
        return True
    if "www." in text and _URL_RE.search(text):
        return True
    return ":\\" in text and _PATH_RE.search(text) is not None


@functools.lru_cache(maxsize=1 << 16)
def copied_words(src: str) -> frozenset[str]:
    """Casefolded words of the English (cached: one English string recurs in ~100 catalogues)."""
    return frozenset(_WORD_RE.findall(without_placeholders(src).casefold()))


def own_text(tgt: str, src: str) -> str:
    """The translation without the words copied from the English (product names, acronyms, %s), casefolded."""
    copied = copied_words(src)
    return " ".join([w for w in _WORD_RE.findall(without_placeholders(tgt).casefold()) if w not in copied])


def is_untranslated(src: str, tgt: str, own: str | None = None) -> bool:
    """Identical to the English (casefolded), or no letter outside words copied from the English.

    ``own`` is :func:`own_text` when the caller already has it.
    """
    if norm_key(src) == norm_key(tgt):
        return True
    return _LETTER_RE.search(own_text(tgt, src) if own is None else own) is None


# ------------------------------------------------------------------------------------------------- scripts


def script_mismatch(tgt: str, src: str, script: str, min_share: float = 0.5, own: str | None = None) -> str | None:
    """None if the translation's own letters are mostly in ``script``; else the script they are in.

    Only letters outside words copied from the English count, so ``Ошибка MDI`` is Cyrillic. Letters and
    script marks are counted by :func:`mt.common.scripts.script_counts`, the one script table of the tree.
    """
    own = own_text(tgt, src) if own is None else own
    if only_letters_of(own, script):
        return None
    counts = script_counts(own)
    total = sum(counts.values())
    if total == 0:
        return None
    allowed = expected_scripts(script)
    if sum(n for s, n in counts.items() if s in allowed) >= min_share * total:
        return None
    return counts.most_common(1)[0][0]


# -------------------------------------------------------------------------------------------------- driver


def _form_reason(text: str) -> str | None:
    """The rules both sides share, on normalised text: empty, mostly placeholders, markup, paths/URLs/e-mail."""
    if not text:
        return "empty"
    if is_mostly_placeholders(text):
        return "placeholders"
    if has_markup(text):
        return "markup"
    if has_path_url_email(text):
        return "path_url_email"
    return None


def clean_source(src: str, cfg: CleanConfig | None = None) -> tuple[str, str | None]:
    """The English-side half of :func:`clean_pair`: ``(normalised src, reason or None)``.

    Split out because one English string recurs in up to ~170 catalogues: the builder caches it.
    """
    cfg = cfg or CleanConfig()
    src = normalize_ws(strip_accelerators(src))
    reason = _form_reason(src)
    if reason is not None:
        return src, reason
    n = count_words(src)
    if n < cfg.min_words:
        return src, "min_words"
    if n > cfg.max_words:
        return src, "max_words"
    return src, None


def clean_target(src: str, tgt: str, script: str | None = None) -> tuple[str, str | None]:
    """The translation-side half of :func:`clean_pair`; ``src`` is the already cleaned English."""
    tgt = normalize_ws(strip_accelerators(tgt))
    reason = _form_reason(tgt)
    if reason is not None:
        return tgt, reason
    own = own_text(tgt, src)
    if is_untranslated(src, tgt, own):
        return tgt, "untranslated"
    if script is not None and script_mismatch(tgt, src, script, own=own) is not None:
        return tgt, "script"
    return tgt, None


def clean_pair(
    src: str, tgt: str, script: str | None = None, cfg: CleanConfig | None = None
) -> tuple[str, str, str | None]:
    """Normalise one pair and check the filters: ``(src, tgt, reason)``, reason None when the pair is kept.

    English-side rules are checked first, then the translation's. ``script`` is the ISO 15924 script of
    the translation's language code (``Cyrl`` for ``rus_Cyrl``); None skips the script check.
    """
    src, reason = clean_source(src, cfg)
    if reason is not None:
        return src, normalize_ws(strip_accelerators(tgt)), reason
    tgt, reason = clean_target(src, tgt, script)
    return src, tgt, reason
