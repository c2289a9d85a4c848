"""The corpora described in ``data_manifests/*.toml`` (``mt-data list | fetch | verify | register``).

The work is done in :mod:`mt.data.manifest_registry` (manifests, the registry of local copies, ``resolve``)
and :mod:`mt.data.manifest_download` (download, verify, unpack, fetch, register); their public names are
imported here, so ``from mt.data.manifests import resolve`` (the README's way to find a corpus) keeps working.
"""

from __future__ import annotations

import sys
from typing import IO

from mt.common.errors import UserError
from mt.data.manifest_download import check_archive, download, fetch, register, unpack, verify
from mt.data.manifest_registry import (
    Manifest,
    check_layout,
    default_dest,
    list_manifests,
    load_manifest,
    manifest_dirs,
    read_registry,
    registry_path,
    resolve,
)

__all__ = [
    "Manifest",
    "check_archive",
    "check_layout",
    "default_dest",
    "download",
    "fetch",
    "list_manifests",
    "load_manifest",
    "print_list",
    "read_registry",
    "register",
    "registry_path",
    "resolve",
    "unpack",
    "verify",
]


def print_list(out: IO[str]) -> None:
    """``mt-data list``: each manifest, its kind, languages and local copy."""
    reg = read_registry()
    rows = []
    problems: list[UserError] = []
    manifests = list_manifests(problems)
    for exc in problems:  # one bad manifest must not hide the others
        print(f"warning: skipped a manifest: {exc}", file=sys.stderr)
    for m in manifests:
        langs = m.languages if isinstance(m.languages, str) else str(len(m.languages))
        if m.id in reg:
            where = reg[m.id].get("data", reg[m.id]["path"])
        elif m.source.remote:
            where = "not fetched"
        else:
            where = "not registered"
        rows.append((m.id, m.kind, langs, where, m.description))
    if not rows:
        print(f"no manifests found in {', '.join(map(str, manifest_dirs()))}", file=out)
        return
    widths = [max(len(r[i]) for r in rows + [("id", "kind", "langs", "local copy", "")]) for i in range(4)]
    header = ("id", "kind", "langs", "local copy")
    print("  ".join(h.ljust(w) for h, w in zip(header, widths)) + "  description", file=out)
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r[:4], widths)) + "  " + r[4], file=out)
