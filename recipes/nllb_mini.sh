#!/usr/bin/env bash
# The NLLB recipe on the embedded gettext corpus. Every step is a CLI call and skips work already done.
set -euo pipefail
WORK=${WORK:-work/demo}
echo "demo: outputs under $WORK (set WORK=... to change)"
mkdir -p "$WORK"
