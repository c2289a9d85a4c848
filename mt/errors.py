"""One exception type for mistakes a user can fix; CLIs print it as one line, without a traceback."""

from __future__ import annotations

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
    """Wrap a CLI ``main(argv)``: a UserError becomes ``error: ...`` on stderr and exit status 2."""

    @functools.wraps(main)
    def wrapper(argv: list[str] | None = None) -> int:
        try:
            rc = main(argv)
        except UserError as exc:
            print(f"error: {exc}", file=sys.stderr)
            raise SystemExit(2) from None
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            raise SystemExit(130) from None
        except BrokenPipeError:  # `mt-data --help | head`: the reader left; not an error of ours
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise SystemExit(141) from None
        return int(rc or 0)

    return wrapper
