"""A tiny GNU .mo writer for tests (the format as the gettext manual describes it).

Entries: ``(msgid, msgstr)``, or ``(msgid, msgstr, msgctxt)``, or a dict with keys msgid, msgstr (a
string or a list of plural forms), msgctxt, msgid_plural.
"""

from __future__ import annotations

from pathlib import Path

MAGIC = 0x950412DE


def mo_bytes(
    entries,
    charset: str = "UTF-8",
    byteorder: str = "little",
    header: bool = True,
    revision: int = 0,
    encoding: str | None = None,
) -> bytes:
    """``charset`` goes into the header; ``encoding`` (default: the charset) encodes the strings."""
    encoding = encoding or charset
    items: list[tuple[bytes, bytes]] = []
    if header:
        items.append((b"", f"Content-Type: text/plain; charset={charset}\nLanguage: xx\n".encode("ascii")))
    for e in entries:
        if not isinstance(e, dict):
            e = dict(zip(("msgid", "msgstr", "msgctxt"), e))
        orig = e["msgid"]
        if e.get("msgid_plural") is not None:
            orig += "\x00" + e["msgid_plural"]
        if e.get("msgctxt") is not None:
            orig = e["msgctxt"] + "\x04" + orig
        msgstr = e["msgstr"]
        trans = "\x00".join(msgstr) if isinstance(msgstr, (list, tuple)) else msgstr
        items.append((orig.encode(encoding), trans.encode(encoding)))
    items.sort(key=lambda kv: kv[0])  # msgfmt sorts by original string
    n = len(items)
    orig_off, trans_off = 28, 28 + 8 * n
    pos = 28 + 16 * n
    otab, ttab, blob = [], [], b""
    for table, idx in ((otab, 0), (ttab, 1)):
        for item in items:
            s = item[idx]
            table.append((len(s), pos + len(blob)))
            blob += s + b"\x00"

    def u32(x: int) -> bytes:
        return x.to_bytes(4, byteorder)

    out = u32(MAGIC) + u32(revision) + u32(n) + u32(orig_off) + u32(trans_off) + u32(0) + u32(pos)
    out += b"".join(u32(a) + u32(b) for a, b in otab) + b"".join(u32(a) + u32(b) for a, b in ttab)
    return out + blob


def write_mo(path: Path, entries, **kwargs) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(mo_bytes(entries, **kwargs))
    return path
