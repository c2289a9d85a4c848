#!/usr/bin/env bash
# The papers' claims at small scale, on the demo's data: each study is a table in $ABL/report.md where
# every row gets the same data, the same number of updates and the same seeds.
#
#   recipes/ablations.sh [STUDY ...]      studies: moe temperature adapters mining translate_test mixing stability
#                                         (default: the first five)
#
#   moe            dense | MoE | MoE+EOM | MoE+FOM | MoE+CMR          (chrF++ low- vs high-resource)
#   temperature    T=1 | T=5 | T=100 sampling (MoE+EOM)               (high- vs low-resource trade-off)
#   adapters       per-language adapters vs hyper-adapters, ~equal adapter parameters, trained on top of
#                  the frozen dense model of `moe` (--freeze-base --finetune-from-model)
#   mining         ratio margin vs cosine, BUCC-style F1 (mine-eval bucc --margins ratio,absolute)
#   translate_test translate-test vs zero-shot with the MoE+EOM models of every seed (mt-eval translate-test)
#   mixing         T=1 | T=5 | T=100 | UniMax N=1 | UniMax N=5 | UtiliMax N=5 at an equal budget (dense model);
#                  UtiliMax's utilities come from short runs in mixing_utility/ (each language up-weighted vs
#                  `uniform`, mt-eval utilities); chrF++ by tier and the epochs each direction was drawn
#   stability      a small model made unstable on purpose (tiny Adam eps, high peak learning rate) without and
#                  with --spike-rollback, beside the same model trained stably; spikes, rollbacks, the monitor's
#                  statistics before the first spike, and mt-eval report's figure of one rollback run
#
# Needs the demo's data first (`make demo`, or recipes/nllb_mini.sh up to step 5). Every run is a CLI
# call timed by `python -m mt.train.timed` into $ABL/timings.tsv (which also records the exact command) and
# skipped when finished: re-running resumes, and the lead can rerun only what is missing. Ends with
# `mt-eval ablations $ABL` -> $ABL/report.md.
#
# Per-run size (environment): ABL_LANGS (comma-separated corpus languages, default all of them; fewer
# languages give every direction more updates), ABL_UPDATES (600), ABL_SEEDS ("1 2"), ABL_MAX_TOKENS (2048),
# ABL_ARCH (transformer_mini), ABL_MODEL_ARGS (extra model flags), ABL_LR (0.005), ABL_WARMUP (100), ABL_BEAM (1),
# ABL_EXPERTS (4), ABL_REG (0.2: EOM/FOM/CMR-gate-drop probability), ABL_TEMP (5), ABL_ADAPTER_UPDATES
# (ABL_UPDATES / 2), ABL_LANG_ADAPTER_R (30), ABL_BUCC_ENCODERS ("ngram e5"), ABL_BUCC_SIZE (1000 sentences per side), THREADS (1),
# ABL_PRECISION (--bf16, empty = fp32, or auto (default): --bf16 where the CPU has bfloat16 units);
# mixing: ABL_UNIMAX_N ("1 5"), ABL_UTILIMAX_N (5), ABL_UTIL_UPDATES (ABL_UPDATES / 2: the utility runs);
# stability: ABL_STAB_ARCH (transformer_tiny), ABL_STAB_LR (0.2), ABL_STAB_WARMUP (200: the peak), ABL_STAB_EPS (1e-12),
# ABL_STAB_UPDATES (ABL_UPDATES), ABL_STAB_ROLLBACK (20), ABL_STAB_SKIP (20).
# A run takes ~ABL_UPDATES x 0.4 s of CPU for the default model, plus ~1 min of decoding.
set -euo pipefail
WORK=${WORK:-work/demo}
ABL=${ABL:-work/ablations}
ENCODER=${ENCODER:-e5}
THREADS=${THREADS:-1}
ABL_LANGS=${ABL_LANGS:-}
ABL_UPDATES=${ABL_UPDATES:-600}; ABL_SEEDS=${ABL_SEEDS:-1 2}; ABL_MAX_TOKENS=${ABL_MAX_TOKENS:-2048}
ABL_ARCH=${ABL_ARCH:-transformer_mini}; ABL_MODEL_ARGS=${ABL_MODEL_ARGS:-}; ABL_LR=${ABL_LR:-0.005}
ABL_WARMUP=${ABL_WARMUP:-100}; ABL_BEAM=${ABL_BEAM:-1}; ABL_EXPERTS=${ABL_EXPERTS:-4}; ABL_REG=${ABL_REG:-0.2}
ABL_TEMP=${ABL_TEMP:-5}; ABL_ADAPTER_UPDATES=${ABL_ADAPTER_UPDATES:-$((ABL_UPDATES / 2))}
ABL_LANG_ADAPTER_R=${ABL_LANG_ADAPTER_R:-30}
ABL_BUCC_ENCODERS=${ABL_BUCC_ENCODERS:-ngram e5}; ABL_BUCC_SIZE=${ABL_BUCC_SIZE:-1000}
ABL_PRECISION=${ABL_PRECISION-auto}
if [ "$ABL_PRECISION" = auto ]; then ABL_PRECISION=$(python -m mt.common.cpu bf16-flag); fi
ABL_UNIMAX_N=${ABL_UNIMAX_N:-1 5}; ABL_UTILIMAX_N=${ABL_UTILIMAX_N:-5}; ABL_UTIL_UPDATES=${ABL_UTIL_UPDATES:-$((ABL_UPDATES / 2))}
ABL_STAB_ARCH=${ABL_STAB_ARCH:-transformer_tiny}; ABL_STAB_LR=${ABL_STAB_LR:-0.2}; ABL_STAB_WARMUP=${ABL_STAB_WARMUP:-200}
ABL_STAB_EPS=${ABL_STAB_EPS:-1e-12}; ABL_STAB_UPDATES=${ABL_STAB_UPDATES:-$ABL_UPDATES}
ABL_STAB_ROLLBACK=${ABL_STAB_ROLLBACK:-20}; ABL_STAB_SKIP=${ABL_STAB_SKIP:-20}
STUDIES=("$@"); [ ${#STUDIES[@]} -gt 0 ] || STUDIES=(moe temperature adapters mining translate_test)

export OMP_NUM_THREADS=$THREADS MKL_NUM_THREADS=$THREADS
ENG=eng_Latn; CORPUS=$WORK/corpus; DATA=$WORK/data-bin
[ -f "$DATA/dict.txt" ] || { echo "ablations.sh: $DATA/dict.txt not found: run make demo (or recipes/nllb_mini.sh) first" >&2; exit 1; }
mkdir -p "$ABL"
timed() { local name=$1; shift; python -m mt.train.timed --log "$ABL/timings.tsv" --step "$name" -- "$@"; }
stale() { local out=$1 f; shift; [ -f "$out" ] || return 0; for f in "$@"; do [ "$f" -nt "$out" ] && return 0; done; return 1; }
wants() { local s; for s in "${STUDIES[@]}"; do [ "$s" = "$1" ] && return 0; done; return 1; }
pairs=""; langs=()
if [ -n "$ABL_LANGS" ]; then
  for l in ${ABL_LANGS//,/ }; do
    [ -f "$DATA/train.$ENG-$l.$l.idx" ] || { echo "ablations.sh: ABL_LANGS: $l is not binarized in $DATA" >&2; exit 1; }
    pairs+="$ENG-$l,$l-$ENG,"; langs+=("$l")
  done
else
  for f in "$CORPUS"/train/$ENG-*.$ENG; do l=$(basename "$f" ".$ENG"); l=${l#$ENG-}; pairs+="$ENG-$l,$l-$ENG,"; langs+=("$l"); done
fi
pairs=${pairs%,}
MOE=(--moe-freq 2 --moe-expert-count "$ABL_EXPERTS")
UNSTABLE=(--arch "$ABL_STAB_ARCH" --lr "$ABL_STAB_LR" --warmup-updates "$ABL_STAB_WARMUP" --adam-eps "$ABL_STAB_EPS"
          --adam-betas "(0.9, 0.999)" --log-interval 5 --save-interval-updates 10)
UTILITIES=$ABL/mixing_utility/utilities.tsv

# train (resumable) -> decode devtest -> chrF++ per direction, for one row and seed
# usage: run STUDY CONFIG SEED UPDATES [mt-train flags...]
run() {
  local study=$1 config=$2 seed=$3 updates=$4; shift 4
  local dir=$ABL/$study/$config/seed$seed
  if stale "$dir/gen/scores.csv" "$dir/checkpoint_last.pt"; then
    echo "=== [$(date +%H:%M:%S)] $study/$config seed $seed"
    # shellcheck disable=SC2086  # ABL_MODEL_ARGS is a list of flags
    timed "$study/$config/seed$seed train" mt-train "$DATA" --lang-pairs "$pairs" --arch "$ABL_ARCH" $ABL_MODEL_ARGS \
      --max-tokens "$ABL_MAX_TOKENS" --lr "$ABL_LR" --warmup-updates "$ABL_WARMUP" --max-update "$updates" $ABL_PRECISION \
      --label-smoothing 0.0 \
      --seed "$seed" --save-dir "$dir" --save-interval-updates 50 --no-epoch-checkpoints --log-interval 50 \
      --no-progress-bar "$@"
    timed "$study/$config/seed$seed generate" mt-generate "$DATA" --path "$dir/checkpoint_last.pt" --gen-subset test \
      --lang-pairs "$pairs" --beam "$ABL_BEAM" $ABL_PRECISION --threads "$THREADS" --results-path "$dir/gen" --quiet --no-progress-bar
    timed "$study/$config/seed$seed score" mt-eval dir "$dir/gen" --ref-dir "$CORPUS/devtest" --stats "$CORPUS/stats.tsv" \
      --metrics chrf++ > /dev/null
  fi
}

for seed in $ABL_SEEDS; do
  if wants moe || wants adapters || wants temperature || wants translate_test; then
    run moe dense "$seed" "$ABL_UPDATES" --sampling-temperature "$ABL_TEMP"
  fi
  if wants moe; then
    run moe moe "$seed" "$ABL_UPDATES" --sampling-temperature "$ABL_TEMP" "${MOE[@]}"
  fi
  if wants moe || wants temperature || wants translate_test; then
    run moe moe_eom "$seed" "$ABL_UPDATES" --sampling-temperature "$ABL_TEMP" "${MOE[@]}" --moe-eom "$ABL_REG"
  fi
  if wants moe; then
    run moe moe_fom "$seed" "$ABL_UPDATES" --sampling-temperature "$ABL_TEMP" "${MOE[@]}" --moe-fom "$ABL_REG"
    run moe moe_cmr "$seed" "$ABL_UPDATES" --sampling-temperature "$ABL_TEMP" "${MOE[@]}" --moe-cmr --cmr-gate-drop "$ABL_REG"
  fi
  if wants temperature; then
    run temperature T1 "$seed" "$ABL_UPDATES" --sampling-temperature 1 "${MOE[@]}" --moe-eom "$ABL_REG"
    if [ ! -e "$ABL/temperature/T$ABL_TEMP/seed$seed" ]; then  # T=ABL_TEMP is the moe_eom row: reuse it
      mkdir -p "$ABL/temperature/T$ABL_TEMP"
      timed "temperature/T$ABL_TEMP/seed$seed reuse" ln -s "../../moe/moe_eom/seed$seed" "$ABL/temperature/T$ABL_TEMP/seed$seed"
    fi
    run temperature T100 "$seed" "$ABL_UPDATES" --sampling-temperature 100 "${MOE[@]}" --moe-eom "$ABL_REG"
  fi
  if wants adapters; then
    # equal adapter parameters: hyper-adapters r=16, k=64 are ~292k for transformer_mini with 6 languages, as
    # are per-language adapters of bottleneck 30 (ABL_LANG_ADAPTER_R; re-match it for another model or
    # language set); `mt-eval ablations` prints both models' parameter counts
    base=$ABL/moe/dense/seed$seed/checkpoint_last.pt
    run adapters lang_adapters "$seed" "$ABL_ADAPTER_UPDATES" --sampling-temperature "$ABL_TEMP" \
      --lang-adapters lang --lang-adapter-bottleneck "$ABL_LANG_ADAPTER_R" --freeze-base --finetune-from-model "$base"
    run adapters hyper_adapters "$seed" "$ABL_ADAPTER_UPDATES" --sampling-temperature "$ABL_TEMP" \
      --hyper-adapters --hyper-adapter-bottleneck 16 --hyper-adapter-hidden-dim 64 --freeze-base --finetune-from-model "$base"
  fi
  if wants mixing; then  # an equal budget: the same updates of the same --max-tokens for every row
    for t in 1 5 100; do run mixing "T$t" "$seed" "$ABL_UPDATES" --sampling-temperature "$t"; done
    for n in $ABL_UNIMAX_N; do run mixing "unimax_N$n" "$seed" "$ABL_UPDATES" --sampling-method unimax --unimax-max-epochs "$n"; done
    # UtiliMax's utilities: short runs with one language's directions up-weighted, against the same run without
    run mixing_utility uniform "$seed" "$ABL_UTIL_UPDATES" --sampling-method unimax --unimax-max-epochs "$ABL_UTILIMAX_N"
    for l in "${langs[@]}"; do
      run mixing_utility "up_$l" "$seed" "$ABL_UTIL_UPDATES" --sampling-method utilimax --unimax-max-epochs "$ABL_UTILIMAX_N" \
        --utilities "$ENG-$l=1,$l-$ENG=1"
    done
  fi
  if wants stability; then
    run stability stable "$seed" "$ABL_STAB_UPDATES" --arch "$ABL_STAB_ARCH" --log-interval 5
    run stability unstable "$seed" "$ABL_STAB_UPDATES" "${UNSTABLE[@]}"
    run stability unstable_rollback "$seed" "$ABL_STAB_UPDATES" "${UNSTABLE[@]}" --spike-rollback "$ABL_STAB_ROLLBACK" \
      --spike-skip "$ABL_STAB_SKIP"
  fi
  if wants translate_test; then
    dir=$ABL/moe/moe_eom/seed$seed
    if [ ! -f "$WORK/classify/task.json" ]; then
      timed "classification task" mt-eval build-classification --out "$WORK/classify" --corpus "$CORPUS" --no-progress-bar
    fi
    if [ ! -f "$dir/translate_test.csv" ]; then
      timed "translate_test/moe_eom/seed$seed" mt-eval translate-test --task "$WORK/classify" \
        --mt-checkpoint "$dir/checkpoint_last.pt" --encoder "$ENCODER" --methods zero_shot translate_test ${ABL_LANGS:+--langs "$ABL_LANGS"} \
        --beam "$ABL_BEAM" $ABL_PRECISION --threads "$THREADS" --stats "$CORPUS" --out "$dir" --no-progress-bar
    fi
  fi
done

if wants mixing; then  # the utilities of every seed's short runs, then the UtiliMax row
  if stale "$UTILITIES" "$ABL"/mixing_utility/*/seed*/gen/scores.csv; then
    timed "mixing_utility/utilities" mt-eval utilities "$ABL/mixing_utility" --reference uniform --out "$UTILITIES"
  fi
  for seed in $ABL_SEEDS; do
    run mixing "utilimax_N$ABL_UTILIMAX_N" "$seed" "$ABL_UPDATES" --sampling-method utilimax \
      --unimax-max-epochs "$ABL_UTILIMAX_N" --utilities "$UTILITIES"
  done
fi
if wants stability; then  # the statistics around the spikes, beside the loss: report_figures/training_stability.png
  seed=${ABL_SEEDS%% *}
  for config in unstable unstable_rollback; do
    timed "stability/$config/seed$seed report" mt-eval report "$ABL/stability/$config/seed$seed" > /dev/null
  done
fi

if wants mining; then
  for enc in $ABL_BUCC_ENCODERS; do
    if [ ! -f "$ABL/mining/$enc/report.json" ]; then
      timed "mining/$enc" mine-eval bucc --encoder "$enc" --margins ratio,absolute --size "$ABL_BUCC_SIZE" \
        --gold $((ABL_BUCC_SIZE / 5)) --data "$ABL/bucc" --work "$ABL/bucc-eval" --out-dir "$ABL/mining/$enc"
    fi
  done
fi

mt-eval ablations "$ABL"
echo "ablations: $ABL/report.md (commands and times: $ABL/timings.tsv)"
