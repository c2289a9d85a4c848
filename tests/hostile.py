"""The hostile-input harness: run a CLI on bad input and check that it fails the way users are promised.

Each case must end with a one-line ``error: ...`` (no traceback), a non-zero exit, no partial output,
and nothing touched outside the folder the command may write. CLIs run in-process through their
console-script entry points (the same function ``mt-translate`` runs), so a case costs milliseconds.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
from importlib.metadata import entry_points
from pathlib import Path
from typing import Iterable


def cli(name: str):
    """The function behind console script ``name`` (``mt-translate`` -> ``mt.generate.cli:translate_main``)."""
    (ep,) = [e for e in entry_points(group="console_scripts") if e.name == name]
    return ep.load()


def run_cli(name: str, args: list[str]) -> tuple[int, str, str]:
    """Run console script ``name`` in-process: (exit status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = cli(name)([str(a) for a in args])
        except SystemExit as exc:
            rc = exc.code if isinstance(exc.code, int) else 1
    return int(rc or 0), out.getvalue(), err.getvalue()


def snapshot(root: str | os.PathLike) -> dict[str, str]:
    """Every file and folder under ``root``: relative path -> content hash (files) or ``dir``."""
    root = Path(root)
    state: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for d in dirnames:
            state[os.path.relpath(os.path.join(dirpath, d), root)] = "dir"
        for f in filenames:
            p = os.path.join(dirpath, f)
            if os.path.islink(p):
                state[os.path.relpath(p, root)] = "link:" + os.readlink(p)
            else:
                state[os.path.relpath(p, root)] = hashlib.sha256(Path(p).read_bytes()).hexdigest()
    return state


def assert_refused(
    name: str,
    args: list[str],
    root: str | os.PathLike,
    outputs: Iterable[str | os.PathLike] = (),
    expect: str | None = None,
    allow: Iterable[str] = (),
) -> str:
    """Run ``name args`` and check the refusal; returns the error line.

    ``root``: the folder the test owns (everything in it is compared before and after). ``outputs``: the
    paths the command would write; each must be absent or unchanged afterwards. ``expect``: a piece of
    text the error line must contain. ``allow``: relative paths under ``root`` that may change (a log).
    """
    root = Path(root)
    before = snapshot(root)
    rc, _, err = run_cli(name, args)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc != 0, f"{name} {args}: exit status 0 on hostile input; stderr:\n{err}"
    assert "Traceback" not in err, f"{name} {args}: traceback instead of a one-line error:\n{err}"
    assert lines and lines[-1].startswith("error: ") or any(": error: " in ln for ln in lines[-1:]), (
        f"{name} {args}: the last line is not an error line:\n{err}"
    )
    message = lines[-1]
    if expect is not None:
        assert expect.lower() in message.lower(), f"{name}: expected {expect!r} in the error, got: {message}"
    after = snapshot(root)
    allow = tuple(str(a) for a in allow)
    changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k) and not k.startswith(allow))
    assert not changed, f"{name} {args}: changed files on a refused run: {changed[:10]}\n{message}"
    for out in outputs:
        out = Path(out)
        assert not out.exists() or os.path.relpath(out, root) in before, f"{name}: partial output {out}"
    return message
