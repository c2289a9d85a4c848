#!/usr/bin/env bash
# The NLLB recipe on the embedded gettext corpus. Every step is a CLI call and skips work already done,
# so re-running resumes. Outputs live under $WORK (default work/demo).
set -euo pipefail
WORK=${WORK:-work/demo}
LANGS=${LANGS:-demo}            # FLORES codes, "demo" (11 languages, 3 tiers) or "all"
VOCAB=${VOCAB:-8000}
step() { echo; echo "=== [$(date +%H:%M:%S)] $*"; }
mkdir -p "$WORK"
echo "demo: outputs under $WORK (set WORK=... to change)"

step "1. corpus: gettext catalogues -> $WORK/corpus"
mt-data build gettext --out "$WORK/corpus" --langs "$LANGS"

step "2. SentencePiece (T=5 sampling across languages) -> $WORK/spm"
mt-spm train --corpus "$WORK/corpus" --vocab-size "$VOCAB" --out "$WORK/spm"

step "3. binarize every eng_Latn-xx pair -> $WORK/data-bin"
for f in "$WORK"/corpus/train/eng_Latn-*.eng_Latn; do
  pair=$(basename "$f" .eng_Latn); tgt=${pair#eng_Latn-}
  valid=(); [ -f "$WORK/corpus/dev/$tgt.dev" ] && valid=(--validpref "$WORK/corpus/dev" --testpref "$WORK/corpus/devtest")
  mt-preprocess --source-lang eng_Latn --target-lang "$tgt" --trainpref "$WORK/corpus/train/$pair" "${valid[@]}" \
    --spm-model "$WORK/spm/spm.model" --srcdict "$WORK/spm/dict.txt" --joined-dictionary --destdir "$WORK/data-bin"
done
cp -p "$WORK/spm/spm.model" "$WORK/data-bin/spm.model"
echo "binarized data: $WORK/data-bin"
