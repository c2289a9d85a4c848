"""docs/cli.md and the README's command table are generated from every console script's --help: they must
not drift from the code (regenerate with `python recipes/gen_cli_reference.py`)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_cli_reference_is_up_to_date():
    proc = subprocess.run(
        [sys.executable, str(REPO / "recipes" / "gen_cli_reference.py"), "--check"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, (
        "run `python recipes/gen_cli_reference.py`:\n" + proc.stdout[-2000:] + proc.stderr[-2000:]
    )
