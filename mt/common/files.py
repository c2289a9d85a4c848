"""Small shared helpers: atomic writes, stale temp files, locks, file identity and hashing."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import tempfile
import time
from pathlib import Path
from typing import IO, Iterator

from mt.common.errors import UserError, located

_HOST = socket.gethostname().replace(".", "_").replace("-", "_") or "host"


def temp_tag() -> str:
    """``{host}-{pid}``: put in a temp file's name so a later run can tell a dead writer's leftovers."""
    return f"{_HOST}-{os.getpid()}"


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists on this machine (a zombie or another user's counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def temp_name(name: str) -> str:
    """``.{name}.{host}-{pid}.{random}.tmp``: the one temp-name form, so any run can spot a dead writer's leftovers."""
    return f".{name}.{temp_tag()}.{os.urandom(4).hex()}.tmp"


def is_stale_temp(name: str) -> bool:
    """A ``temp_name`` whose writer ran on this machine and no longer runs.

    Writers on other machines (a shared file system) or still running are never stale: only they
    know whether their file is finished.
    """
    parts = name.split(".")
    if len(parts) < 4 or parts[-1] != "tmp":
        return False
    host, sep, pid = parts[-3].rpartition("-")
    return bool(sep) and host == _HOST and pid.isdigit() and not pid_alive(int(pid))


def remove_stale_temps(folder: str | os.PathLike, prefix: str) -> int:
    """Delete temp files/folders in ``folder`` whose names start with ``prefix`` and whose writer died.

    A killed save leaves a full-size temp file behind; the next write of the same target calls this.
    Returns the number removed.
    """
    folder = Path(folder)
    removed = 0
    with contextlib.suppress(FileNotFoundError, NotADirectoryError):
        for p in folder.iterdir():
            if p.name.startswith(prefix) and is_stale_temp(p.name):
                with contextlib.suppress(FileNotFoundError):
                    if p.is_dir() and not p.is_symlink():
                        import shutil

                        shutil.rmtree(p, ignore_errors=True)
                    else:
                        p.unlink()
                    removed += 1
    return removed


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO]:
    """Write to a temp file beside ``path`` and rename it into place only on success.

    A crash or kill mid-write leaves the old file (or none), never a half-written one; the temp file a
    killed writer left behind is removed by the next write of the same path. An OSError raised by a write
    into the file (a full disk) gets ``path`` as its ``filename``, so the one-line error names the file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path.parent, f".{path.name}.")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{temp_tag()}.", suffix=".tmp", dir=path.parent)
    os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; the final file gets the usual permissions
    kwargs = {} if "b" in mode else {"encoding": encoding, "newline": "\n"}
    try:
        with os.fdopen(fd, mode, **kwargs) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(exc, OSError) and exc.filename is None:
            exc.filename = str(path)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


FULL_HASH_LIMIT = 256 << 20  # bytes: files up to this size are hashed whole
_EDGE = 8 << 20  # bytes hashed at each end of a larger file


def file_identity(path: str | os.PathLike) -> dict:
    """What a file *is*, for deciding whether earlier work on it may be reused.

    Files up to ``FULL_HASH_LIMIT`` are identified by size and a hash of their content (a same-size
    edit is seen, a ``touch`` or a copy is not a change). Larger ones by size, modification time and a
    hash of their first and last 8 MiB: an in-place edit that keeps size, mtime, head and tail is the
    only change missed.
    """
    st = os.stat(path)
    if st.st_size <= FULL_HASH_LIMIT:
        return {"size": st.st_size, "sha256": sha256_file(path)}
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        h.update(fh.read(_EDGE))
        fh.seek(st.st_size - _EDGE)
        h.update(fh.read(_EDGE))
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256_head_tail": h.hexdigest()}


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Whether two paths name one file (through links, ``..`` or another spelling); False if either is missing."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return Path(a).resolve() == Path(b).resolve()


def refuse_overwriting_input(
    inputs: dict[str, str | os.PathLike | None], output: str | os.PathLike, output_flag: str
) -> None:
    """A UserError when ``output`` is one of ``inputs`` ({flag: path}): writing it would destroy the input."""
    for flag, path in inputs.items():
        if path and same_file(path, output):
            raise UserError(
                f"{output_flag} {output} is the same file as {flag} {path}: writing it would replace "
                f"the input; choose another {output_flag}"
            )


def refuse_file_in_the_way(path: str | os.PathLike, flag: str, folder: bool = False) -> None:
    """A UserError, before any work, when ``path`` cannot be written: a file stands where one of its folders
    belongs (``--out results.txt/x``), or a folder where the file goes. Checking first leaves no partial output
    (the OSError the write would raise comes after the folders and the work before it)."""
    target = Path(path)
    if target.is_dir() and not folder:
        raise UserError(f"{flag} {path} is a folder: give the path of a file")
    if target.exists() and not target.is_dir() and folder:
        raise UserError(f"{flag} {path} is a file, not a folder: choose another {flag}")
    parent = target.absolute().parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise UserError(f"{flag} {path}: {parent} is a file, not a folder: choose another {flag}")


def read_marked_json(path: str | os.PathLike, fmt: str, what: str, fix: str) -> dict:
    """The JSON object in ``path`` whose ``"format"`` is ``fmt``; else a UserError naming the file, ``what`` it
    should be ("routing statistics") and the ``fix`` ("write them with mt-moe-stats")."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"{path}: cannot read {what} ({exc}); {fix}") from None
    if not isinstance(data, dict) or data.get("format") != fmt:
        raise UserError(f"{path}: not {what} (no '{fmt}' format marker); {fix}")
    return data


def scan_text(path: str | os.PathLike, check_utf8: bool = True, digest: bool = True) -> tuple[int, str]:
    """(lines, SHA-256 of the text) of a plain or ``.gz`` file in one pass of 1 MiB blocks (``digest=False``:
    the hash is skipped and returned as "", for a line count alone).

    A last line without a newline counts. The hash is of the decompressed bytes, so ``x.txt.gz`` and its
    gunzipped copy hash alike (what a step's output was computed from). ``check_utf8``: a UserError
    ``path:line:`` at the first line that is not UTF-8, so a command refuses a bad file before it writes
    anything (instead of failing halfway through).
    """
    import codecs
    import gzip

    opener = gzip.open if str(path).endswith(".gz") else open
    decoder = codecs.getincrementaldecoder("utf-8")()
    h, n, last = hashlib.sha256() if digest else None, 0, b"\n"
    with opener(path, "rb") as fh:
        try:
            while block := fh.read(1 << 20):
                if h is not None:
                    h.update(block)
                n += block.count(b"\n")
                last = block[-1:]
                if check_utf8:
                    decoder.decode(block)
            if check_utf8:
                decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            pass
        else:
            return n + (last != b"\n"), h.hexdigest() if h is not None else ""
        fh.seek(0)
        offset = 0
        for lineno, raw in enumerate(fh, 1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise located(
                    path,
                    lineno,
                    f"not valid UTF-8 ({exc.reason} at byte {exc.start} of the line, byte "
                    f"{offset + exc.start} of the file): convert the file with iconv -f "
                    "ENCODING -t UTF-8",
                ) from None
            offset += len(raw)
    raise AssertionError("unreachable: the block decoder and the line decoder disagree")  # pragma: no cover


@contextlib.contextmanager
def exclusive_lock(target: str | os.PathLike, what: str, wait: bool = False) -> Iterator[Path]:
    """Hold an exclusive ``flock`` on ``{target}.lock`` (or ``target/.lock`` for a folder) while the block runs.

    ``wait=False`` fails at once with a UserError naming the holder (another ``mt-train`` on the same
    ``--save-dir``); ``wait=True`` queues (parallel ``mt-data register`` calls each get their turn). The
    lock dies with its process, so a killed holder never blocks the next run.
    """
    import fcntl

    target = Path(target)
    lock = target / ".lock" if target.is_dir() else target.with_name(target.name + ".lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            try:
                info = json.loads(os.pread(fd, 512, 0).decode("utf-8", "replace"))
                holder = f"pid {info['pid']} on {info['host']} (since {info['since']})"
            except (ValueError, KeyError, TypeError):
                holder = "another process"
            raise UserError(
                f"{what} is in use by {holder}: wait for it to finish, or stop it (lock file {lock})"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(
            fd,
            json.dumps(
                {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%d %H:%M:%S")}
            ).encode(),
            0,
        )
        yield lock
    finally:
        os.close(fd)


OWNED_MARKER = ".written-by-nllb-mini"


def owned_dir(path: str | os.PathLike) -> Path:
    """Create folder ``path`` for the toolkit's own output and mark it, so a later run may replace it.

    An existing folder that holds anything but not the mark is someone else's: a UserError, never reused.
    """
    path = Path(path)
    if path.is_dir() and any(path.iterdir()) and not (path / OWNED_MARKER).is_file():
        raise UserError(f"{path} exists and was not written by this toolkit: move it away or choose another folder")
    path.mkdir(parents=True, exist_ok=True)
    (path / OWNED_MARKER).touch()
    return path


def remove_owned_dir(path: str | os.PathLike) -> None:
    """Delete a folder that ``owned_dir`` made (stale output of an earlier run); refuse any other folder."""
    import shutil

    path = Path(path)
    if not path.exists():
        return
    if not (path / OWNED_MARKER).is_file() and (not path.is_dir() or any(path.iterdir())):
        raise UserError(
            f"{path} is in the way of this run's output and was not written by this toolkit (or by a "
            "version before it marked its folders): move it away or delete it yourself"
        )
    shutil.rmtree(path)
