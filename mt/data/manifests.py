"""``mt-data list | fetch | verify | register``: the corpora described in ``data_manifests/*.toml``.

The work is done in :mod:`mt.data.manifest_registry` (manifests, the registry of local copies, ``resolve``)
and :mod:`mt.data.manifest_download` (download, verify, unpack, fetch, register); their public names are
imported here, so ``from mt.data.manifests import resolve`` (the README's way to find a corpus) keeps working.
"""

from __future__ import annotations

import argparse
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
    "read_registry",
    "register",
    "registry_path",
    "resolve",
    "unpack",
    "verify",
]


# --------------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------------
_EPILOG = """examples:
  mt-data list
  mt-data fetch flores200                      # to $NLLB_MINI_HOME/data/flores200 (default ~/.cache/nllb-mini)
  mt-data fetch flores200 --dest /data/flores  # somewhere else; resume by running it again
  mt-data register flores200 ~/Downloads/flores200_dataset.tar.gz   # offline: use a copy you have
  mt-data register flores200 /data/flores200_dataset                # ... or an unpacked folder
  mt-data register gettext work/demo/corpus    # after `mt-data build gettext --out work/demo/corpus`
  mt-data register user-tsv my_bitext.tsv      # your own src<TAB>tgt file
  mt-data verify flores200                     # the registered/fetched copy
  mt-data verify flores200 flores200_dataset.tar.gz

Python: `from mt.data.manifests import resolve; resolve("flores200") / "devtest" / "eng_Latn.devtest"`.
"""


def _print_list(out: IO[str]) -> None:
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


def cli(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="mt-data",
        description="List, fetch, verify and register the corpora described in data_manifests/.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("list", help="list the manifests and where their local copies are")
    p = sub.add_parser(
        "fetch",
        help="download with resume, checksum, unpack, register",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("id")
    p.add_argument("--dest", help="folder for the download and its unpacked files (default: $NLLB_MINI_HOME/data/ID)")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for the server (default 10)")
    p.add_argument("--retries", type=int, default=3, help="resumes after a lost connection (default 3)")
    p.add_argument("--no-progress", action="store_true")
    p = sub.add_parser(
        "verify",
        help="checksum an archive or check an unpacked folder's layout",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("id")
    p.add_argument("path", nargs="?", help="archive, folder or file (default: the registered or fetched copy)")
    p = sub.add_parser(
        "register",
        help="point an ID at a local copy (verified first)",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("id")
    p.add_argument("path")
    p.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)

    if args.cmd == "list":
        _print_list(sys.stdout)
    elif args.cmd == "fetch":
        data = fetch(args.id, args.dest, timeout=args.timeout, retries=args.retries, progress=not args.no_progress)
        print(f"{args.id}: ready at {data} (registered in {registry_path()})")
    elif args.cmd == "verify":
        print(verify(args.id, args.path))
    elif args.cmd == "register":
        data = register(args.id, args.path, progress=not args.no_progress)
        print(f"{args.id}: registered {data} in {registry_path()}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    from mt.common.errors import cli_entry

    raise SystemExit(cli_entry(cli)(None))
