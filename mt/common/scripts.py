"""Which Unicode script a text is written in, from a compact range table (no extra dependency).

Used by LID (``zh`` -> ``zho_Hans`` or ``zho_Hant``, ``sr`` -> ``srp_Cyrl`` or ``srp_Latn``) and by the
script filter (share of the text in the script a FLORES-200 code declares: ``deu_Latn`` -> Latn).

Shares are counted in *units*, not letters (:func:`script_units`): a word of an alphabetic script (a run
of its letters) is one unit, and so is each Han, kana or Hangul character and each letter of the scripts
written without spaces between words (Thai, Lao, Khmer, Myanmar). Counting letters made a Chinese line
with a Latin product name "mostly Latin" (``使用 GNOME 桌面的 Nautilus 文件管理器``: 10 Han characters,
13 Latin letters; in units 10 against 2).
Scripts are ISO 15924 names; Han is ``Hani`` and the code scripts ``Hans``/``Hant``/``Jpan``/``Kore``
expand to the raw scripts they are written with.
"""

from __future__ import annotations

import bisect
import functools
import re
import unicodedata
from collections import Counter

# (first, last, script): letters and script-specific marks. Common/Inherited code points (digits,
# punctuation, combining diacritics U+0300..U+036F) are deliberately absent: they belong to no script.
_RANGES: list[tuple[int, int, str]] = sorted(
    [
        (0x0041, 0x005A, "Latn"),
        (0x0061, 0x007A, "Latn"),
        (0x00AA, 0x00AA, "Latn"),
        (0x00BA, 0x00BA, "Latn"),
        (0x00C0, 0x00D6, "Latn"),
        (0x00D8, 0x00F6, "Latn"),
        (0x00F8, 0x02AF, "Latn"),
        (0x1D00, 0x1D7F, "Latn"),
        (0x1E00, 0x1EFF, "Latn"),
        (0x2C60, 0x2C7F, "Latn"),
        (0xA720, 0xA7FF, "Latn"),
        (0xAB30, 0xAB6F, "Latn"),
        (0xFB00, 0xFB06, "Latn"),
        (0xFF21, 0xFF3A, "Latn"),
        (0xFF41, 0xFF5A, "Latn"),
        (0x0370, 0x03FF, "Grek"),
        (0x1F00, 0x1FFF, "Grek"),
        (0x0400, 0x052F, "Cyrl"),
        (0x1C80, 0x1C8F, "Cyrl"),
        (0x2DE0, 0x2DFF, "Cyrl"),
        (0xA640, 0xA69F, "Cyrl"),
        (0x0530, 0x058F, "Armn"),
        (0xFB13, 0xFB17, "Armn"),
        (0x0590, 0x05FF, "Hebr"),
        (0xFB1D, 0xFB4F, "Hebr"),
        (0x0600, 0x06FF, "Arab"),
        (0x0750, 0x077F, "Arab"),
        (0x0870, 0x08FF, "Arab"),
        (0xFB50, 0xFDFF, "Arab"),
        (0xFE70, 0xFEFF, "Arab"),
        (0x0700, 0x074F, "Syrc"),
        (0x0780, 0x07BF, "Thaa"),
        (0x07C0, 0x07FF, "Nkoo"),
        (0x0900, 0x097F, "Deva"),
        (0xA8E0, 0xA8FF, "Deva"),
        (0x0980, 0x09FF, "Beng"),
        (0x0A00, 0x0A7F, "Guru"),
        (0x0A80, 0x0AFF, "Gujr"),
        (0x0B00, 0x0B7F, "Orya"),
        (0x0B80, 0x0BFF, "Taml"),
        (0x0C00, 0x0C7F, "Telu"),
        (0x0C80, 0x0CFF, "Knda"),
        (0x0D00, 0x0D7F, "Mlym"),
        (0x0D80, 0x0DFF, "Sinh"),
        (0x0E00, 0x0E7F, "Thai"),
        (0x0E80, 0x0EFF, "Laoo"),
        (0x0F00, 0x0FFF, "Tibt"),
        (0x1000, 0x109F, "Mymr"),
        (0xA9E0, 0xA9FF, "Mymr"),
        (0xAA60, 0xAA7F, "Mymr"),
        (0x10A0, 0x10FF, "Geor"),
        (0x1C90, 0x1CBF, "Geor"),
        (0x2D00, 0x2D2F, "Geor"),
        (0x1100, 0x11FF, "Hang"),
        (0x3130, 0x318F, "Hang"),
        (0xA960, 0xA97F, "Hang"),
        (0xAC00, 0xD7FF, "Hang"),
        (0xFFA0, 0xFFDC, "Hang"),
        (0x1200, 0x139F, "Ethi"),
        (0x2D80, 0x2DDF, "Ethi"),
        (0xAB00, 0xAB2F, "Ethi"),
        (0x13A0, 0x13FF, "Cher"),
        (0x1400, 0x167F, "Cans"),
        (0x1780, 0x17FF, "Khmr"),
        (0x19E0, 0x19FF, "Khmr"),
        (0x1800, 0x18AF, "Mong"),
        (0x1A20, 0x1AAF, "Lana"),
        (0x1B00, 0x1B7F, "Bali"),
        (0x1B80, 0x1BBF, "Sund"),
        (0x1C50, 0x1C7F, "Olck"),
        (0x1680, 0x169F, "Ogam"),
        (0x16A0, 0x16FF, "Runr"),
        (0x10450, 0x1047F, "Shaw"),
        (0x2C80, 0x2CFF, "Copt"),
        (0x2D30, 0x2D7F, "Tfng"),
        (0x3041, 0x309F, "Hira"),
        (0x30A0, 0x30FF, "Kana"),
        (0x31F0, 0x31FF, "Kana"),
        (0xFF66, 0xFF9D, "Kana"),
        (0x3100, 0x312F, "Bopo"),
        (0x31A0, 0x31BF, "Bopo"),
        (0x2E80, 0x2FDF, "Hani"),
        (0x3005, 0x3007, "Hani"),
        (0x3021, 0x3029, "Hani"),
        (0x3038, 0x303B, "Hani"),
        (0x3400, 0x4DBF, "Hani"),
        (0x4E00, 0x9FFF, "Hani"),
        (0xF900, 0xFAFF, "Hani"),
        (0x20000, 0x3134F, "Hani"),
        (0xA000, 0xA4CF, "Yiii"),
        (0xA500, 0xA63F, "Vaii"),
        (0xA6A0, 0xA6FF, "Bamu"),
        (0xA980, 0xA9DF, "Java"),
        (0xAAE0, 0xAAFF, "Mtei"),
        (0xABC0, 0xABFF, "Mtei"),
        (0x1E900, 0x1E95F, "Adlm"),
    ]
)
_STARTS = [r[0] for r in _RANGES]

# The share of a line's units a language's script must hold for the line to be in that language (mine-filter's
# --min-script-fraction default, and the labels mine-lid lets compete). Measured on the gettext catalogues,
# 0.5 dropped 4% of the Russian, 3.8% of the Arabic, 7% of the Hebrew translations (product names kept in
# Latin: 'ملف FLTK Fluid', 'Ноутбук Hewlett-Packard Mini 110'); 0.25 drops 0.4%, 0.1%, 0.5%. A line in
# another script (an untranslated English string: share 0) still fails.
MIN_SCRIPT_SHARE = 0.25

# Scripts whose every letter counts as a word (script_units): logographic / syllabic ones, and the ones
# written without spaces between words.
PER_CHARACTER = frozenset({"Hani", "Hira", "Kana", "Hang", "Bopo", "Yiii", "Thai", "Laoo", "Khmr", "Mymr"})

# Scripts a FLORES-200 code's script part is written with (anything else maps to itself).
CODE_SCRIPTS: dict[str, frozenset[str]] = {
    "Hans": frozenset({"Hani"}),
    "Hant": frozenset({"Hani", "Bopo"}),
    "Jpan": frozenset({"Hani", "Hira", "Kana"}),
    "Kore": frozenset({"Hang", "Hani"}),
    "Hang": frozenset({"Hang", "Hani"}),
}

# Frequent characters that differ between Simplified and Traditional Chinese (same position = same word).
_SIMPLIFIED = (
    "个们这来时为说国会对发后过动现经开关问点学长还进种没样实体机当从与电么员条设书无将应业东车网语请选择"
    "项错误显档删复输载据库类认证码户钮调试页标签编辑图帮启击览储态传连线络协议级间区变转换数计单话视频声乐"
    "讯邮账号组织统处务访执构报导资队让给见觉写读听买卖钱门马鸟鱼龙爱气华县历总众观边远运达热办万亿节药医术"
    "农厂广产岁飞风阳阴归汉虽却难验险脑闭获确属护权际纪练终结红绿蓝黄预题颜额领头滚几于"
)
_TRADITIONAL = (
    "個們這來時為說國會對發後過動現經開關問點學長還進種沒樣實體機當從與電麼員條設書無將應業東車網語請選擇"
    "項錯誤顯檔刪復輸載據庫類認證碼戶鈕調試頁標簽編輯圖幫啟擊覽儲態傳連線絡協議級間區變轉換數計單話視頻聲樂"
    "訊郵帳號組織統處務訪執構報導資隊讓給見覺寫讀聽買賣錢門馬鳥魚龍愛氣華縣歷總眾觀邊遠運達熱辦萬億節藥醫術"
    "農廠廣產歲飛風陽陰歸漢雖卻難驗險腦閉獲確屬護權際紀練終結紅綠藍黃預題顏額領頭滾幾於"
)
assert len(_SIMPLIFIED) == len(_TRADITIONAL)
_SIMP_SET = frozenset(_SIMPLIFIED)
_TRAD_SET = frozenset(_TRADITIONAL)


def char_script(ch: str) -> str | None:
    """ISO 15924 script of one character, or None for Common/Inherited/unknown ones."""
    cp = ord(ch)
    i = bisect.bisect_right(_STARTS, cp) - 1
    if i >= 0 and cp <= _RANGES[i][1]:
        return _RANGES[i][2]
    return None


def _is_letter(ch: str) -> bool:
    cat = unicodedata.category(ch)
    return cat[0] == "L" or (cat[0] == "M" and char_script(ch) is not None)


def script_counts(text: str) -> Counter:
    """Letters and script-specific combining marks per script (a Devanagari vowel sign counts as Deva, so
    ``नमस्ते`` is 6); ``"Zyyy"`` counts letters of no listed script. Inherited marks (U+0300..U+036F) and
    digits, punctuation, spaces count nowhere."""
    c: Counter = Counter()
    for ch in text:
        if ch.isascii():
            if ch.isalpha():
                c["Latn"] += 1
            continue
        if _is_letter(ch):
            c[char_script(ch) or "Zyyy"] += 1
    return c


def expected_scripts(script: str) -> frozenset[str]:
    """Raw scripts a code's script part allows: ``Hans`` -> {Hani}, ``Jpan`` -> {Hani, Hira, Kana}."""
    return CODE_SCRIPTS.get(script, frozenset({script}))


@functools.lru_cache(maxsize=None)
def _foreign_letter_re(script: str) -> re.Pattern:
    """A letter outside the ranges of ``script`` (a code's script part): one regex, so C speed."""
    allowed = expected_scripts(script)
    cls = "".join(f"{re.escape(chr(a))}-{re.escape(chr(b))}" for a, b, s in _RANGES if s in allowed)
    return re.compile(rf"(?![{cls}])[^\W\d_]" if cls else r"[^\W\d_]")


def only_letters_of(text: str, script: str) -> bool:
    """True when every letter of ``text`` is in ``script`` (a code's script part, ``Jpan`` = Han + kana).

    The quick exit of the script checks: most translations are all in their own script, and a regex
    answers that without the per-character loop of :func:`script_counts`."""
    if script == "Latn" and text.isascii():
        return True
    return _foreign_letter_re(script).search(text) is None


def script_units(text: str) -> Counter:
    """Words per script: a run of letters of one alphabetic script counts 1; in the scripts of
    ``PER_CHARACTER`` every letter counts 1 (a Han character is a word or a syllable, and Thai, Lao, Khmer
    and Myanmar put no spaces between words, so a run there can be a whole clause). Marks count 0."""
    c: Counter = Counter()
    prev = None  # script of the run the previous character belongs to
    for ch in text:
        if ch.isascii():
            if ch.isalpha():
                if prev != "Latn":
                    c["Latn"] += 1
                prev = "Latn"
            else:
                prev = None
            continue
        cat = unicodedata.category(ch)
        script = char_script(ch)
        if cat[0] == "M" and (script is None or script == prev):
            continue  # a combining mark belongs to the letter before it
        if cat[0] != "L" and not (cat[0] == "M" and script is not None):
            prev = None
            continue
        script = script or "Zyyy"
        if script in PER_CHARACTER:
            if cat[0] == "L":
                c[script] += 1
        elif script != prev:
            c[script] += 1
        prev = script
    return c


def script_fraction(text: str, script: str) -> float:
    """Share of the units (:func:`script_units`) of ``text`` written in ``script`` (a code's script
    part); 0.0 with no letters."""
    c = script_units(text)
    total = sum(c.values())
    if not total:
        return 0.0
    allowed = expected_scripts(script)
    return sum(n for s, n in c.items() if s in allowed) / total


def han_variant(text: str) -> str | None:
    """``Hans`` or ``Hant`` from characters that differ between the two; None when nothing tells."""
    s = sum(ch in _SIMP_SET for ch in text)
    t = sum(ch in _TRAD_SET for ch in text)
    if s == t:
        return None
    return "Hans" if s > t else "Hant"


def dominant_script(text: str) -> str | None:
    """The script most units of ``text`` are in (Han refined to Hans/Hant, kana -> Jpan), or None."""
    c = script_units(text)
    if not c:
        return None
    if c["Hira"] or c["Kana"]:
        jp = c.pop("Hira", 0) + c.pop("Kana", 0) + c.pop("Hani", 0)
        c["Jpan"] = jp
    script, _ = c.most_common(1)[0]
    if script == "Hani":
        return han_variant(text) or "Hans"
    return script


def text_width(text: str) -> int:
    """Characters, an East Asian wide or fullwidth one (Han, kana, Hangul) counting two: the length
    bounds of mine-filter use it, so a 4-character Chinese sentence is not "shorter" than ``Open``."""
    return len(text) + sum(1 for ch in text if ord(ch) >= 0x1100 and unicodedata.east_asian_width(ch) in "WF")
