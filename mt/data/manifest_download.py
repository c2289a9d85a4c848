"""Getting a local copy of a corpus its manifest describes: download with resume, checksum and layout
checks (``verify``), safe unpacking, and ``fetch`` / ``register``, which record the copy in the registry
(:mod:`mt.data.manifest_registry`).

Archives may come from strangers: members that land or point outside the destination are refused before
anything is written, and an unpack replaces only what an earlier unpack placed.
"""

from __future__ import annotations

import glob
import http.client
import os
import posixpath
import re
import shutil
import socket
import stat
import sys
import tarfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
import zlib
from pathlib import Path

from tqdm import tqdm

from mt.common.errors import UserError
from mt.common.files import atomic_write, exclusive_lock, remove_stale_temps, sha256_file, temp_name
from mt.data.manifest_registry import (
    Manifest,
    check_layout,
    data_root,
    default_dest,
    how_to_get,
    langs_in,
    load_manifest,
    read_registry,
    record_copy,
    resolve,
)

_CHUNK = 1 << 16


# --------------------------------------------------------------------------------------------------
# checksum checks
# --------------------------------------------------------------------------------------------------
def _listed(problems: list[str], most: int) -> str:
    """The first ``most`` problems of a layout check, for a one-line error."""
    more = f" ... ({len(problems)} problems)" if len(problems) > most else ""
    return "; ".join(problems[:most]) + more


def check_tsv(path: Path, columns: int = 2) -> tuple[int, list[str]]:
    """(number of lines, problems) of a ``src<TAB>tgt`` file; stops listing after a few problems."""
    problems: list[str] = []
    n = 0
    with open(path, "rb") as fh:
        for n, raw in enumerate(fh, 1):
            try:
                line = raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError as exc:
                problems.append(
                    f"{path}:{n}: invalid UTF-8 at byte {exc.start} of the line; re-encode the file as UTF-8"
                )
                continue
            got = len(line.split("\t"))
            if got != columns:
                problems.append(f"{path}:{n}: {got} tab-separated columns, expected {columns} (src<TAB>tgt)")
            if len(problems) >= 10:
                problems.append("... (stopped after 10 problems)")
                break
    if n == 0:
        problems.append(f"{path}: empty file")
    return n, problems


def check_archive(m: Manifest, path: Path) -> str:
    """sha256 + size of an archive against the manifest; returns the sha256, raises on mismatch."""
    size = path.stat().st_size
    if m.source.size is not None and size != m.source.size:
        raise UserError(
            f"{path}: size {size:,} bytes, but {m.path} expects {m.source.size:,} bytes: the file is truncated or a "
            f"different version; download it again (`mt-data fetch {m.id}`)"
        )
    got = sha256_file(path)
    if m.source.sha256 and got != m.source.sha256:
        raise UserError(
            f"{path}: sha256 mismatch: expected {m.source.sha256} ({m.path}), got {got}; the file is corrupt or a "
            f"different release: delete it and run `mt-data fetch {m.id}`, or update sha256 in {m.path} if you "
            f"trust this copy"
        )
    return got


def verify(corpus_id: str, path: str | os.PathLike | None = None) -> str:
    """Check a copy (archive, unpacked folder or TSV) against the manifest; a one-line summary or UserError."""
    m = load_manifest(corpus_id)
    if path is None:
        entry = read_registry().get(m.id)
        if entry and Path(entry["path"]).is_file() and m.is_archive:
            target = Path(entry["path"])
        elif m.source.local_glob and not entry:
            hits = glob.glob(m.source.local_glob)
            if not hits:
                raise UserError(f"{m.id}: no files match {m.source.local_glob} ({m.path}); {how_to_get(m)}")
            return f"{m.id}: {len(hits)} source files match {m.source.local_glob}; {how_to_get(m)}"
        else:
            target = resolve(m.id)
    else:
        target = Path(path)
    if not target.exists():
        raise UserError(f"{target}: no such file or directory")
    if m.layout.format == "tsv" and not target.is_file():
        raise UserError(f"{target} is a folder, but {m.id} ({m.path}) is a single TSV file: pass the file")
    if target.is_file() and m.layout.format == "tsv":
        n, problems = check_tsv(target, m.layout.columns or 2)
        if problems:
            raise UserError(f"{target} is not a valid {m.id} bitext:\n  " + "\n  ".join(problems))
        return f"{m.id}: OK, {target} has {n:,} {m.layout.columns or 2}-column lines"
    if target.is_file():
        if not m.is_archive:
            raise UserError(f"{target}: {m.id} ({m.path}) is not an archive; pass its unpacked folder")
        got = check_archive(m, target)
        note = "" if m.source.sha256 else f' (the manifest has no sha256: add sha256 = "{got}" to {m.path})'
        size_note = "" if m.source.size is not None else f" (add size = {target.stat().st_size} to {m.path})"
        return f"{m.id}: OK, {target} ({target.stat().st_size:,} bytes, sha256 {got}){note}{size_note}"
    data = data_root(m, target)
    assert data is not None
    problems = check_layout(m, data)
    if problems:
        shown = problems[:20] + ([f"... and {len(problems) - 20} more"] if len(problems) > 20 else [])
        raise UserError(
            f"{data} does not have the layout of {m.id} ({m.path}): {len(problems)} problem(s):\n  "
            + "\n  ".join(shown)
        )
    nlang = len(langs_in(m, data))
    return f"{m.id}: OK, {data} has the expected layout ({nlang} languages, {', '.join(m.layout.files)})"


# --------------------------------------------------------------------------------------------------
# download with resume
# --------------------------------------------------------------------------------------------------
class _Offline(Exception):
    pass


def _open(url: str, offset: int, timeout: float):
    headers = {"User-Agent": "nllb-mini/0.1 (mt-data fetch)"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416:
            return exc  # range not satisfiable: the .part is already complete (or bigger than the file)
        raise
    except (urllib.error.URLError, socket.timeout, ConnectionError) as exc:
        raise _Offline(getattr(exc, "reason", exc)) from exc


def _content_range(header: str | None) -> tuple[int | None, int | None, int | None]:
    """(first byte, last byte, file size) of a ``Content-Range`` header; None for what it does not say."""
    m = re.fullmatch(r"bytes\s+(?:(\d+)-(\d+)|\*)/(\d+|\*)", (header or "").strip())
    if not m:
        return None, None, None
    first, last, size = (int(g) if g and g.isdigit() else None for g in m.groups())
    return first, last, size


def download(
    url: str,
    dest: str | os.PathLike,
    *,
    sha256: str | None = None,
    size: int | None = None,
    timeout: float = 10.0,
    retries: int = 3,
    progress: bool = True,
    context: str = "",
    corpus_id: str = "ID",
) -> Path:
    """Download ``url`` to ``dest`` via ``dest.part`` with HTTP Range resume; rename only once verified.

    ``context`` names the manifest in errors. Connection failures before any byte arrives fail at once
    (offline machines should not wait); a connection lost mid-way is resumed up to ``retries`` times.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    attempt = 0
    while True:
        offset = part.stat().st_size if part.exists() else 0
        if size is not None and offset > size:
            part.unlink()
            offset = 0
        if size is not None and offset == size:
            break  # a previous run got every byte; only verification is left
        try:
            resp = _open(url, offset, timeout)
        except _Offline as exc:
            host = urllib.parse.urlparse(url).netloc
            kept = f" ({offset:,} bytes received so far are kept in {part}: run again to resume)" if offset else ""
            raise UserError(
                f"cannot reach {host} ({exc}){' for ' + context if context else ''}. This machine looks offline: "
                f"download {url} on another machine and run `mt-data register {corpus_id} PATH` with it, or change the "
                f"url in the manifest{kept}"
            ) from None
        except urllib.error.HTTPError as exc:
            raise UserError(
                f"{url}: the server answered HTTP {exc.code} {exc.reason}{' (' + context + ')' if context else ''}; "
                "the URL may have moved: fix it in the manifest or register a local copy with "
                f"`mt-data register {corpus_id} PATH`"
            ) from None
        if isinstance(resp, urllib.error.HTTPError):  # 416: the range starts at or past the end of the file
            server_size = _content_range(resp.headers.get("Content-Range"))[2]
            resp.close()
            if offset and server_size == offset:
                break  # the server confirms the .part holds the whole file
            part.unlink(missing_ok=True)  # bigger than (or unconfirmed against) the server's file: start again
            attempt += 1
            if attempt > retries:
                raise UserError(f"{url}: the server refuses the byte range of {part}; delete it and retry")
            continue
        with resp:
            start, _, server_size = (
                _content_range(resp.headers.get("Content-Range")) if resp.status == 206 else (0, None, None)
            )
            if start is None or start not in (0, offset):  # a part we did not ask for: appending it would corrupt
                part.unlink(missing_ok=True)
                attempt += 1
                if attempt > retries:
                    raise UserError(
                        f"{url}: the server answers resume requests with the wrong bytes (HTTP 206, "
                        f"Content-Range {resp.headers.get('Content-Range')!r}); report it to its owner"
                    )
                print(
                    f"the server sent another byte range than asked ({resp.headers.get('Content-Range')!r}); "
                    f"downloading {dest.name} again from the start",
                    file=sys.stderr,
                )
                continue
            if offset and start == 0:
                print(
                    f"the server ignored the resume request; downloading {dest.name} again from the start",
                    file=sys.stderr,
                )
                offset = 0
            length = resp.headers.get("Content-Length")
            total = server_size or (offset + int(length) if length is not None and length.isdigit() else size)
            mode = "ab" if offset else "wb"
            got_bytes = offset
            try:
                with (
                    open(part, mode) as fh,
                    tqdm(
                        total=total,
                        initial=offset,
                        unit="B",
                        unit_scale=True,
                        unit_divisor=1024,
                        desc=dest.name,
                        disable=not progress,
                        file=sys.stderr,
                        leave=False,
                    ) as bar,
                ):
                    while chunk := resp.read(_CHUNK):
                        fh.write(chunk)
                        got_bytes += len(chunk)
                        bar.update(len(chunk))
                complete = total is None or got_bytes >= total
            except (OSError, http.client.HTTPException) as exc:
                complete, reason = False, exc
            else:
                reason = "connection closed early"
        if complete:
            break
        attempt += 1
        if attempt > retries:
            raise UserError(
                f"{url}: download interrupted {retries + 1} times ({reason}); {part} keeps the "
                f"{part.stat().st_size:,} bytes received: run the same command again to resume"
            )
        print(
            f"connection lost at {got_bytes:,} bytes ({reason}); resuming (attempt {attempt + 1}/{retries + 1})",
            file=sys.stderr,
        )
        time.sleep(min(0.2 * attempt, 2.0))
    _verify_part(part, dest, url=url, sha256=sha256, size=size, context=context)
    os.replace(part, dest)
    return dest


def _verify_part(part: Path, dest: Path, *, url: str, sha256: str | None, size: int | None, context: str) -> None:
    """Size and checksum of a finished ``.part``; a bad one is deleted (resuming it cannot help)."""
    where = f" ({context})" if context else ""
    got_size = part.stat().st_size
    if size is not None and got_size != size:
        part.unlink()
        raise UserError(
            f"{url}: got {got_size:,} bytes, expected {size:,}{where}; nothing was kept at {dest}: run the command "
            f"again, and if it persists the file changed upstream (update size/sha256 in the manifest)"
        )
    if sha256:
        got = sha256_file(part)
        if got != sha256:
            part.unlink()
            raise UserError(
                f"checksum mismatch for {url}{where}: expected sha256 {sha256}, got {got}; the download was deleted "
                f"and nothing was written to {dest}. Run the command again; if it fails the same way the file changed "
                f"upstream: check it, then update sha256 in the manifest or register a trusted copy"
            )
    else:
        print(f"warning: no sha256 in the manifest{where}; the file's sha256 is {sha256_file(part)}", file=sys.stderr)


# --------------------------------------------------------------------------------------------------
# unpack
# --------------------------------------------------------------------------------------------------
# Archives are checked member by member before anything is written, and extracted into a temp folder
# inside the destination, so a refused or killed unpack leaves nothing half-done; tarfile's "data"
# filter then catches what a look at the names cannot see (a link that leaves through an earlier link).
_FILTER_ERROR = getattr(tarfile, "FilterError", ())
_ABSOLUTE_RE = re.compile(r"[/\\]|[A-Za-z]:")


def member_problem(name: str, link: str | None = None, hard: bool = False) -> str | None:
    """Why an archive member may not be unpacked (it lands or points outside the destination), or None.

    ``link``: the target of a symbolic link (relative to the member's folder) or, with ``hard``, of a hard
    link (relative to the archive's root).
    """
    if _ABSOLUTE_RE.match(name):
        return "has an absolute path, which points outside the destination"
    if ".." in re.split(r"[/\\]", name):
        return "has a '..' in its path, which points outside the destination"
    if link is not None:
        if _ABSOLUTE_RE.match(link):
            return f"is a link to the absolute path {link!r}, which points outside the destination"
        target = posixpath.normpath(posixpath.join("" if hard else posixpath.dirname(name), link))
        if target == ".." or target.startswith("../"):
            return f"is a link to {link!r}, which points outside the destination"
    return None


def _refused(archive: Path, member: str, reason: str) -> UserError:
    return UserError(
        f"{archive}: refused to unpack member {member!r}: it {reason}; nothing was unpacked: the "
        f"archive is unsafe, get it from a source you trust"
    )


def _damaged(archive: Path, fmt: str, exc: BaseException) -> UserError:
    return UserError(
        f"{archive}: cannot unpack as {fmt} ({exc}); the file is damaged or not a {fmt} archive: "
        f"fetch it again, or check archive_format in the manifest"
    )


def _filter_reason(exc: Exception) -> str:
    """tarfile's filter refusal as the rest of a sentence that starts with the member's name."""
    kind = type(exc).__name__
    if kind in ("OutsideDestinationError", "LinkOutsideDestinationError", "AbsoluteLinkError", "AbsolutePathError"):
        return f"points outside the destination ({exc})"
    if kind == "SpecialFileError":
        return "is a special file (a device or FIFO), which a corpus never needs"
    return f"was refused by tarfile's safety filter ({exc})"


def _untar(archive: Path, tmp: Path, fmt: str, progress: bool) -> None:
    mode = "r:gz" if fmt in ("tar.gz", "tgz") else "r:"
    try:
        with tarfile.open(archive, mode) as tf:
            members = tf.getmembers()
            for mem in members:
                link = mem.linkname if mem.issym() or mem.islnk() else None
                why = member_problem(mem.name, link, hard=mem.islnk())
                if why is None and not (mem.isfile() or mem.isdir() or link is not None):
                    why = "is a special file (a device or FIFO), which a corpus never needs"
                if why is None and link is not None and not hasattr(tarfile, "data_filter"):
                    why = "is a link, and this Python (before 3.10.12) cannot check where links lead"
                if why:
                    raise _refused(archive, mem.name, why)
            for mem in tqdm(members, desc=f"unpack {archive.name}", disable=not progress, file=sys.stderr, leave=False):
                if hasattr(tarfile, "data_filter"):
                    tf.extract(mem, tmp, filter="data")
                else:
                    tf.extract(mem, tmp)
    except _FILTER_ERROR as exc:
        raise _refused(archive, exc.tarinfo.name, _filter_reason(exc)) from None
    except (tarfile.TarError, EOFError, zlib.error) as exc:
        raise _damaged(archive, fmt, exc) from None
    except OSError as exc:
        if exc.errno is not None:  # full disk, permissions: not the archive's fault (cli_entry says what)
            raise
        raise _damaged(archive, fmt, exc) from None  # gzip.BadGzipFile and friends


def _unzip(archive: Path, tmp: Path, fmt: str, progress: bool) -> None:
    try:
        with zipfile.ZipFile(archive) as zf:
            infos = zf.infolist()
            for info in infos:
                is_link = stat.S_ISLNK(info.external_attr >> 16)
                why = member_problem(info.filename, zf.read(info).decode("utf-8", "replace") if is_link else None)
                if why:
                    raise _refused(archive, info.filename, why)
            for info in tqdm(infos, desc=f"unpack {archive.name}", disable=not progress, file=sys.stderr, leave=False):
                zf.extract(info, tmp)
    except (zipfile.BadZipFile, EOFError, zlib.error) as exc:
        raise _damaged(archive, fmt, exc) from None
    except (NotImplementedError, RuntimeError, zipfile.LargeZipFile) as exc:  # encrypted, unknown compression
        raise UserError(
            f"{archive}: cannot unpack this zip ({exc}): unpack it with another tool and register the "
            f"folder (`mt-data register ID DIR`)"
        ) from None
    except OSError as exc:
        if exc.errno is not None:
            raise
        raise _damaged(archive, fmt, exc) from None


def _marker(archive: Path, dest: Path) -> Path:
    return dest / f".{archive.name}.unpacked"


def _read_marker(marker: Path) -> tuple[str, list[str]]:
    """(sha256 of the unpacked archive, or "pending" while its files are being moved; top-level names placed)."""
    try:
        lines = marker.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return "", []
    return (lines[0].strip() if lines else ""), [name for name in lines[1:] if name]


def _write_marker(marker: Path, sha: str, names: list[str]) -> None:
    with atomic_write(marker) as fh:
        fh.write("".join(f"{line}\n" for line in [sha, *names]))


def unpack(archive: Path, dest: Path, fmt: str, progress: bool = True, sha: str = "") -> list[str]:
    """Extract ``archive`` into ``dest`` via a temp folder, so a killed run leaves no half-unpacked tree.

    Members that would land or point outside ``dest`` are refused before anything is written. An entry of
    ``dest`` is only replaced when an earlier unpack placed it there (its marker lists it): what the user
    keeps in ``--dest`` is never deleted. Returns the top-level names placed; the marker records them.
    """
    dest.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(dest, ".unpack.")  # the full-size leftovers of a killed unpack
    marker = _marker(archive, dest)
    ours = {name for mk in dest.glob(".*.unpacked") for name in _read_marker(mk)[1]}
    tmp = dest / temp_name("unpack")
    tmp.mkdir()
    try:
        (_unzip if fmt == "zip" else _untar)(archive, tmp, fmt, progress)
        names = sorted(child.name for child in tmp.iterdir())
        for name in names:
            target = dest / name
            if (target.exists() or target.is_symlink()) and name not in ours:
                raise UserError(
                    f"{target} already exists and was not unpacked by mt-data, and {archive} holds "
                    f"{name!r}: move it away, or unpack into another folder (mt-data fetch ID --dest DIR)"
                )
        _write_marker(marker, "pending", sorted(set(names) | set(_read_marker(marker)[1])))  # a kill from here on
        for name in names:  # leaves a marker that lets the next run replace what this one placed
            target = dest / name
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            elif target.exists() or target.is_symlink():
                target.unlink()
            os.replace(tmp / name, target)
        _write_marker(marker, sha or sha256_file(archive), names)
        return names
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _unpack_once(m: Manifest, archive: Path, dest: Path, sha: str, progress: bool) -> Path:
    """Unpack unless this archive (by sha256) already is; the caller holds ``_folder_lock(dest)``."""
    if not (_read_marker(_marker(archive, dest))[0] == sha and data_root(m, dest) is not None):
        print(f"unpacking {archive} into {dest}", file=sys.stderr)
        unpack(archive, dest, m.source.archive_format or "", progress=progress, sha=sha)
    data = data_root(m, dest)
    assert data is not None
    problems = check_layout(m, data)
    if problems:
        raise UserError(
            f"{archive} unpacked into {dest}, but it lacks the layout of {m.id} ({m.path}): " + _listed(problems, 5)
        )
    return data


def _folder_lock(dest: Path):
    """One fetch/register at a time per download folder (two would append to one ``.part``, unpack over each other)."""
    dest.mkdir(parents=True, exist_ok=True)
    return exclusive_lock(dest, f"the corpus folder {dest} (another `mt-data fetch` or `mt-data register`)")


# --------------------------------------------------------------------------------------------------
# fetch and register
# --------------------------------------------------------------------------------------------------
def fetch(
    corpus_id: str,
    dest: str | os.PathLike | None = None,
    *,
    timeout: float = 10.0,
    retries: int = 3,
    progress: bool = True,
) -> Path:
    """Download (resuming), verify, unpack and register a corpus; returns what ``resolve`` will return."""
    m = load_manifest(corpus_id)
    if not m.source.remote:
        raise UserError(f"{m.id} ({m.path}) is a local corpus, there is nothing to download: {how_to_get(m)}")
    read_registry()  # a broken registry: say so before downloading, not after
    dest_dir = Path(dest) if dest else default_dest(m.id)
    archive = dest_dir / m.source.download_name()  # a plain name (checked when the manifest was read)
    context = f"manifest {m.path}"
    with _folder_lock(dest_dir):
        if archive.is_file():
            print(f"{archive} exists, verifying", file=sys.stderr)
            sha = check_archive(m, archive)
        else:
            download(
                m.source.url or "",
                archive,
                sha256=m.source.sha256,
                size=m.source.size,
                timeout=timeout,
                retries=retries,
                progress=progress,
                context=context,
                corpus_id=m.id,
            )
            sha = m.source.sha256 or sha256_file(archive)
            print(f"downloaded {archive} ({archive.stat().st_size:,} bytes, sha256 OK)", file=sys.stderr)
        data = _unpack_once(m, archive, dest_dir, sha, progress) if m.is_archive else archive
        record_copy(m.id, archive, data, "fetch", sha)
    return data


def register(corpus_id: str, path: str | os.PathLike, *, progress: bool = True) -> Path:
    """Point ``corpus_id`` at a local copy (archive, unpacked folder or file) after verifying it."""
    m = load_manifest(corpus_id)
    read_registry()  # a broken registry: say so before unpacking, not after
    p = Path(path).expanduser()
    if not p.exists():
        raise UserError(f"{p}: no such file or directory (mt-data register {m.id} PATH)")
    sha = None
    if p.is_file() and m.is_archive:
        sha = check_archive(m, p)
        with _folder_lock(default_dest(m.id)):
            data = _unpack_once(m, p, default_dest(m.id), sha, progress)
    elif p.is_file():
        if m.layout.format == "tsv":
            _, problems = check_tsv(p, m.layout.columns or 2)
            if problems:
                raise UserError(f"{p} is not a valid {m.id} bitext:\n  " + "\n  ".join(problems))
        data = p
    else:
        data = data_root(m, p) or p
        if m.layout.format == "tsv":
            raise UserError(f"{p} is a folder, but {m.id} ({m.path}) is a single TSV file: pass the file")
        problems = check_layout(m, data)
        if problems:
            raise UserError(f"{data} does not have the layout of {m.id} ({m.path}): " + _listed(problems, 10))
    record_copy(m.id, p, data, "register", sha)
    return data
