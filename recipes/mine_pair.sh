#!/usr/bin/env bash
# Mine one eng_Latn-LANG pair from a corpus's hidden-parallel mono/ files, then score it against the gold.
#
#   recipes/mine_pair.sh CORPUS LANG OUTDIR [ENCODER]
#
#   CORPUS   a corpus directory built by `mt-data build gettext` (reads mono/eng_Latn-LANG.eng_Latn,
#            mono/eng_Latn-LANG.LANG and mono/eng_Latn-LANG.gold.tsv)
#   LANG     FLORES-200 code of the other side, e.g. xho_Latn
#   OUTDIR   output folder, one per pair and encoder (e.g. work/demo/mined/auto/xho_Latn)
#   ENCODER  mine-embed --encoder spec: auto (default: the encoder measured best for LANG, mine-embed
#            --encoder auto:LANG), e5, use, ngram (weight-free, fast), laser2:DIR, ...
#
# Steps, each one CLI call, skipped when its output is there (outputs are written atomically, so a
# killed run resumes where it stopped; delete OUTDIR to start over):
#   1. mine-lid     drop the lines LID gives to another language its script allows (a language the LID
#                   model cannot predict, e.g. xho_Latn with lid.176, is passed through: --keep-uncovered)
#   2. mine-filter  normalise, length and script checks (words / CJK characters), exact and near-duplicate removal
#                   (1 and 2 write OUTDIR/{lang}.lines: each kept line's 0-based line in the mono file)
#   3. mine-embed   both sides -> OUTDIR/emb/{lang}.*
#   4. mine-knn     both directions (Flat index, k = $K) -> OUTDIR/knn/
#   5. mine-bitext  ratio margin, max mode, the cut calibrated for the encoder (mining/calibration.py;
#                   $CALIBRATION: a mine-eval bucc --calibrate file) or $THRESHOLD; OUTDIR/mined.meta.json
#                   says which cut and why -> OUTDIR/mined.tsv (score<TAB>eng<TAB>LANG)
#                   and OUTDIR/mined.eng_Latn / OUTDIR/mined.LANG for
#                   `mt-preprocess --source-lang eng_Latn --target-lang LANG --trainpref OUTDIR/mined ...`
#   6. mine-eval gold  precision / recall / F1 of the mined pairs against the gold -> OUTDIR/gold.json
#                   (recall counts every gold pair, also those whose lines LID or the filters dropped)
#
# Environment: K (4), THRESHOLD (ratio-margin cut; default: the encoder's calibrated one), CALIBRATION (a
# calibration file), LID_THRESHOLD (0.5), LID_REJECT (0.7: mine-lid --reject-threshold), THREADS (encoder and
# faiss CPU threads; default the encoder's own / all cores).
set -euo pipefail
if [ $# -lt 3 ] || [ $# -gt 4 ]; then
  sed -n '2,12p' "$0" >&2
  exit 2
fi
CORPUS=$1; TGT=$2; OUT=$3; ENCODER=${4:-auto}
SPEC=$ENCODER; [ "$ENCODER" = auto ] && SPEC="auto:$TGT"
K=${K:-4}; THRESHOLD=${THRESHOLD:-}; LID_THRESHOLD=${LID_THRESHOLD:-0.5}; LID_REJECT=${LID_REJECT:-0.7}
THREADS=${THREADS:-}
ENG=eng_Latn
MONO="$CORPUS/mono/$ENG-$TGT"
for f in "$MONO.$ENG" "$MONO.$TGT" "$MONO.gold.tsv"; do
  [ -f "$f" ] || { echo "mine_pair.sh: $f not found (build the corpus with: mt-data build gettext --out $CORPUS --langs $TGT)" >&2; exit 1; }
done
step() { echo "=== [$(date +%H:%M:%S)] mine_pair $ENG-$TGT ($ENCODER): $*" >&2; }
threads=(); [ -n "$THREADS" ] && threads=(--threads "$THREADS")
cut=(); [ -n "$THRESHOLD" ] && cut=(--threshold "$THRESHOLD")
[ -n "${CALIBRATION:-}" ] && cut+=(--calibration "$CALIBRATION")
mkdir -p "$OUT/emb"

for L in "$ENG" "$TGT"; do
  if [ ! -f "$OUT/$L.lid.txt" ]; then
    step "1. LID $L"
    mine-lid --lang "$L" --keep-uncovered --threshold "$LID_THRESHOLD" --reject-threshold "$LID_REJECT" --input "$MONO.$L" \
      --output "$OUT/$L.lid.txt" --line-numbers "$OUT/$L.lid.lines" --report "$OUT/$L.lid.json" --no-progress-bar
  fi
  if [ ! -f "$OUT/$L.txt" ]; then
    step "2. filter $L"
    mine-filter --lang "$L" --input "$OUT/$L.lid.txt" --input-line-numbers "$OUT/$L.lid.lines" \
      --output "$OUT/$L.txt" --line-numbers "$OUT/$L.lines" --report "$OUT/$L.filter.json" --no-progress-bar
  fi
  if [ ! -f "$OUT/emb/$L.meta.json" ]; then
    step "3. embed $L"
    mine-embed --encoder "$SPEC" --lang "$L" --input "$OUT/$L.txt" --output "$OUT/emb/$L" "${threads[@]}" --no-progress-bar
  fi
done

if [ ! -f "$OUT/knn/tgt2src.meta.json" ]; then
  step "4. k-NN both ways (k=$K)"
  mine-knn --src-emb "$OUT/emb/$ENG" --tgt-emb "$OUT/emb/$TGT" --out-dir "$OUT/knn" --k "$K" "${threads[@]}"
fi

if [ ! -f "$OUT/mined.tsv" ]; then
  step "5. margin mining (ratio margin, max mode)"
  mine-bitext --knn-dir "$OUT/knn" --margin ratio --mode max "${cut[@]}" \
    --src-text "$OUT/$ENG.txt" --tgt-text "$OUT/$TGT.txt" \
    --out "$OUT/mined.tsv" --pair-prefix "$OUT/mined" --src-lang "$ENG" --tgt-lang "$TGT"
fi

if [ ! -f "$OUT/gold.json" ]; then
  step "6. score against $MONO.gold.tsv"
  mine-eval gold --mined "$OUT/mined.tsv" --gold "$MONO.gold.tsv" \
    --src-text "$OUT/$ENG.txt" --src-line-numbers "$OUT/$ENG.lines" \
    --tgt-text "$OUT/$TGT.txt" --tgt-line-numbers "$OUT/$TGT.lines" --out "$OUT/gold.json" > /dev/null
fi
echo "mine_pair.sh: $OUT/mined.tsv ($(wc -l < "$OUT/mined.tsv") pairs), score in $OUT/gold.json" >&2
