#!/usr/bin/env bash
# Poolers compared at an equal tuning budget, every choice made on validation: for each pooler an
# Optuna search (hparams_search=optuna: the same number of trials over the learning rate and weight
# decay, and TDGS's t0 and theta_lr_scale), then the best configuration it found trained for seeds
# 0-4, then tdgs-report over those runs (test accuracy, mean +- std, the difference to max pooling).
#
#   scripts/tune.sh [--poolers max,tdgs] [--trials N] [OVERRIDE...]
#     --poolers LIST   the poolers to tune (default max,tdgs)
#     --trials N       trials per pooler (default: conf/hparams_search/optuna.yaml's)
#     OVERRIDE...      tdgs-train overrides for every run, e.g. dataset=digits trainer=modern
#                      hydra/launcher=local_parallel hydra.launcher.n_jobs=2 (trials two at a time)
#   scripts/tune.sh --resume DIR
#                    continue in DIR with the arguments it was started with: the searches resume
#                    from their trials' run folders (a completed trial is not trained again, the
#                    sampler proposes what it proposed before), the seeds' runs from their checkpoints
#   TDGS_TUNE_DIR=DIR   where to write (default outputs/tune/<time>)
#
# DIR/search_<pooler>/ holds each search (optimization_results.yaml: its best parameters and
# validation accuracy), DIR/best_<pooler>/ the seeds' runs (seed 0 copied from its trial), DIR/report/.
set -uo pipefail

main() {  # parsed whole before it runs
  cd "$(dirname "$0")/.."
  resume=()
  if [[ "${1:-}" == "--resume" ]]; then
    out=${2:?"tune: --resume needs the folder of the search to continue"}
    if [[ ! -f "$out/tune.args" ]]; then
      echo "tune: $out holds no search to resume (no tune.args)" >&2
      exit 2
    fi
    mapfile -t saved < "$out/tune.args"
    set -- ${saved[@]+"${saved[@]}"}
    resume=(resume=true)
  fi
  args=("$@")
  poolers=max,tdgs
  search=()
  while [[ "${1:-}" == --* ]]; do
    case "$1" in
      --poolers) poolers=$2 ;;
      --trials) search=("hydra.sweeper.n_trials=$2") ;;
      *) echo "tune: unknown option $1 (--poolers LIST, --trials N, --resume DIR)" >&2; exit 2 ;;
    esac
    shift 2
  done
  overrides=("$@")
  out=${out:-${TDGS_TUNE_DIR:-outputs/tune/$(date +%Y-%m-%d_%H-%M-%S)}}
  mkdir -p "$out"
  if [[ ${#resume[@]} -eq 0 ]]; then
    if [[ ${#args[@]} -gt 0 ]]; then printf '%s\n' "${args[@]}" > "$out/tune.args"; else : > "$out/tune.args"; fi
  fi
  common=(${overrides[@]+"${overrides[@]}"} ${resume[@]+"${resume[@]}"})
  study=${out%/}
  study=${study##*/}  # the report compares the poolers' best runs under this name, whatever their options
  for pooler in ${poolers//,/ }; do
    echo "== search $pooler -> $out/search_$pooler"
    tdgs-train -m hparams_search=optuna "pooler=$pooler" "hydra.sweep.dir=$out/search_$pooler" \
      ${search[@]+"${search[@]}"} ${common[@]+"${common[@]}"} || exit 1
    mapfile -t best < <(awk '/^best_params:/ {on = 1; next} /^[^ ]/ {on = 0} on {sub(/^ +/, ""); sub(/: /, "="); print}' \
      "$out/search_$pooler/optimization_results.yaml")
    echo "== best of $pooler (${best[*]}), seeds 0-4 -> $out/best_$pooler"
    tdgs-train -m "pooler=$pooler" "${best[@]}" seed=0,1,2,3,4 "hydra.sweep.dir=$out/best_$pooler" "reuse=$out" \
      "comparison=tuned_$study" ${common[@]+"${common[@]}"} || exit 1
  done
  tdgs-report "$out"/best_* --out "$out/report"
}

main "$@"; exit $?  # one line: bash reads no further, whatever the file holds by then
