#!/usr/bin/env bash
# Poolers compared at an equal tuning budget, every choice made on validation: for each pooler an
# Optuna search (hparams_search=optuna: the same number of trials over the learning rate and weight
# decay, and TDGS's t0 and theta_lr_scale; its trials are seed 0), then the best configuration it
# found trained again for fresh seeds 1-5 (the trial chosen for its validation luck is not counted),
# then tdgs-report over those runs (test accuracy, mean +- std, the difference to max pooling).
#
#   scripts/tune.sh [--poolers max,tdgs] [--trials N] [OVERRIDE...]
#     --poolers LIST   the poolers to tune (default max,tdgs)
#     --trials N       trials per pooler (default: conf/hparams_search/optuna.yaml's)
#     OVERRIDE...      tdgs-train overrides for every run, e.g. dataset=digits trainer=modern
#                      hydra/launcher=local_parallel hydra.launcher.n_jobs=2 (trials two at a time)
#   scripts/tune.sh --resume DIR
#                    continue in DIR with the arguments it was started with: the searches resume
#                    from their trials' run folders (the seeded sampler proposes what it proposed
#                    before: a completed trial is not trained again, a failed one stays failed, an
#                    interrupted one continues from its checkpoint), the seeds' runs from theirs
#   TDGS_TUNE_DIR=DIR   where to write (default outputs/tune/<time>)
#
# DIR/search_<pooler>/ holds each search (optimization_results.yaml: its best parameters and
# validation accuracy), DIR/best_<pooler>/ the seeds' runs, DIR/report/.
set -uo pipefail

main() {  # parsed whole before it runs
  absolute() { [[ "$1" == /* ]] && echo "$1" || echo "$PWD/$1"; }  # folders as the caller names them
  resume=()
  if [[ "${1:-}" == "--resume" ]]; then
    out=$(absolute "${2:?"tune: --resume needs the folder of the search to continue"}")
    if [[ $# -gt 2 ]]; then
      echo "tune: --resume DIR takes nothing more (it runs with the arguments DIR was started with)" >&2
      exit 2
    fi
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
  out=${out:-$(absolute "${TDGS_TUNE_DIR:-outputs/tune/$(date +%Y-%m-%d_%H-%M-%S)}")}
  for tool in tdgs-train tdgs-report; do
    if ! command -v "$tool" > /dev/null; then
      echo "tune: $tool is not on PATH: install tdgs (pip install '.[optuna]') or activate the environment that has it" >&2
      exit 2
    fi
  done
  mkdir -p "$out"
  if [[ ${#resume[@]} -eq 0 ]]; then
    if [[ ${#args[@]} -gt 0 ]]; then printf '%s\n' "${args[@]}" > "$out/tune.args"; else : > "$out/tune.args"; fi
  fi
  common=(${overrides[@]+"${overrides[@]}"} ${resume[@]+"${resume[@]}"})
  study=${out%/}
  study=${study##*/}  # the report compares the poolers' best runs under this name, whatever their options
  quoted() { echo "'${1//\'/\\\'}'"; }  # a path as one Hydra value, commas and all
  for pooler in ${poolers//,/ }; do
    echo "== search $pooler -> $out/search_$pooler"
    tdgs-train -m hparams_search=optuna "pooler=$pooler" "hydra.sweep.dir=$(quoted "$out/search_$pooler")" \
      ${search[@]+"${search[@]}"} ${common[@]+"${common[@]}"} || exit 1
    mapfile -t best < <(awk '/^best_params:/ {on = 1; next} /^[^ ]/ {on = 0} on {sub(/^ +/, ""); sub(/: /, "="); print}' \
      "$out/search_$pooler/optimization_results.yaml")
    echo "== best of $pooler (${best[*]}), seeds 1-5 -> $out/best_$pooler"
    tdgs-train -m "pooler=$pooler" "${best[@]}" seed=1,2,3,4,5 "hydra.sweep.dir=$(quoted "$out/best_$pooler")" \
      "comparison=$(quoted "tuned_$study")" ${common[@]+"${common[@]}"} || exit 1
  done
  tdgs-report "$out"/best_* --out "$out/report"
}

main "$@"; exit $?  # one line: bash reads no further, whatever the file holds by then
