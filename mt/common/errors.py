"""One exception type for mistakes a user can fix; CLIs print it as one line, without a traceback."""

from __future__ import annotations

import errno
import functools
import os
import sys
from typing import Callable


class UserError(Exception):
    """Bad input or setup: the message names the file/line/value and the fix."""


def located(path: object, line: int | None, message: str) -> UserError:
    """A UserError that starts with ``path:line:`` the way compilers report errors."""
    where = f"{path}:{line}" if line is not None else f"{path}"
    return UserError(f"{where}: {message}")


def cli_entry(main: Callable[[list[str] | None], int | None]) -> Callable[[list[str] | None], int]:
    """Wrap a CLI ``main(argv)``: a UserError becomes ``error: ...`` on stderr and exit status 2; an OSError
    a user can fix (full disk, a file where a folder belongs, ...) one such line and exit status 1."""

    @functools.wraps(main)
    def wrapper(argv: list[str] | None = None) -> int:
        try:
            rc = main(argv)
        except BrokenPipeError:  # `mt-data --help | head`: the reader left; not an error of ours
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise SystemExit(141) from None
        except UserError as exc:
            print(f"error: {exc}", file=sys.stderr)
            raise SystemExit(2) from None
        except OSError as exc:
            message = os_error_message(exc)
            if message is None:
                raise
            print(f"error: {message}", file=sys.stderr)
            raise SystemExit(1) from None
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            raise SystemExit(130) from None
        return int(rc or 0)

    return wrapper


_OS_HINTS = {
    errno.ENOSPC: "the disk is full: free space and re-run (finished work is kept and skipped)",
    errno.EDQUOT: "the disk quota is exceeded: free space and re-run (finished work is kept and skipped)",
    errno.ENOTDIR: "a part of this path is a file, not a folder: choose another path",
    errno.EEXIST: "a file of that name is in the way: choose another path or move the file",
    errno.EISDIR: "this is a folder where a file is expected: give the file's path",
    errno.EACCES: "permission denied: choose a path you can write, or fix its permissions",
    errno.EPERM: "operation not permitted: choose a path you can write, or fix its permissions",
    errno.EROFS: "the file system is read-only: choose a writable path",
    errno.ENAMETOOLONG: "the name is too long: choose a shorter path",
    errno.ENOENT: "no such file or folder: check the path",
}


def os_error_message(exc: OSError) -> str | None:
    """One line for an OSError a user can fix (full disk, a file in the way, ...); None for the others."""
    hint = _OS_HINTS.get(exc.errno or -1)
    if hint is None:
        return None
    where = " -> ".join(str(f) for f in (exc.filename, exc.filename2) if f is not None)
    return f"{where}: {hint}" if where else f"{exc.strerror or exc}: {hint}"


def warn_once(tool: str) -> Callable[[str], None]:
    """A warning printer for CLIs: each distinct message once, as one ``{tool}: warning: ...`` line on stderr
    (a Python warning prints two lines with a source location, and repeats per batch or chunk)."""
    seen: set[str] = set()

    def warn(message: str) -> None:
        if message not in seen:
            seen.add(message)
            print(f"{tool}: warning: {message}", file=sys.stderr, flush=True)

    return warn
