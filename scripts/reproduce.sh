#!/usr/bin/env bash
# Reproduce the deck's tables and more in one folder: the sweeps experiment=deck_table (the deck's
# question, on the whole training set), tdgs_selection (the TDGS setting that wins on validation),
# recipe_comparison (max, TDGS, gated pooling under the deck's and the modern recipe) and the same
# for the TDGS setting selected, long_training, temperature_lr, temperature_init, all_poolers and
# tdgs_ablation, then tdgs-report over all of them. A (configuration, seed) that several sweeps
# share is trained once: the later sweeps copy the finished run (tdgs-train reuse=FOLDER).
#
#   scripts/reproduce.sh [--smoke] [--only EXPERIMENT,...] [OVERRIDE...]
#     --smoke       synthetic data, 1 epoch, seeds 0 and 1: checks the whole path in minutes
#     --only LIST   these experiments only (comma-separated; recipe_comparison includes its selected
#                   TDGS setting, which needs tdgs_selection's runs), e.g. where compute is short
#     OVERRIDE...   tdgs-train overrides for every sweep, e.g. to run offline on real data:
#                   dataset=fashion_mnist dataset.source=/usr/share/datasets/fashion-mnist
#                   or in parallel: hydra/launcher=local_parallel hydra.launcher.n_jobs=2
#   scripts/reproduce.sh --resume DIR
#                   continue the reproduction in DIR (interrupted, or with failed runs) with the
#                   arguments it was started with: completed runs stay as they are, interrupted
#                   ones resume from their last checkpoint, missing or failed ones run; then the report
#   TDGS_REPRODUCE_DIR=DIR   where to write (default outputs/reproduce/<time>[_smoke])
#
# DIR/invocations.tsv records each invocation: start (time, machine, arguments) and end (how it
# ended, after how many seconds; none for one killed or interrupted); the report folder gets a
# copy, with reproduce.args.
#
# Runs the tdgs-train and tdgs-report of the environment it runs in (found on PATH; `make
# reproduce` puts .venv/bin first).
#
# Exit status: 0 when every run completed; 1 when a sweep had failed jobs (the report lists them).
set -uo pipefail

main() {  # parsed whole before it runs: editing this file during a reproduction cannot break it
  cd "$(dirname "$0")/.."
  resume=()
  if [[ "${1:-}" == "--resume" ]]; then
    out=${2:?"reproduce: --resume needs the folder of the reproduction to continue"}
    if [[ ! -f "$out/reproduce.args" ]]; then
      echo "reproduce: $out holds no reproduction to resume (no reproduce.args)" >&2
      exit 2
    fi
    mapfile -t saved < "$out/reproduce.args"
    set -- ${saved[@]+"${saved[@]}"}
    resume=(resume=true)
  fi
  smoke=0
  args=("$@")
  if [[ "${1:-}" == "--smoke" ]]; then smoke=1; shift; fi
  experiments=deck_table,tdgs_selection,recipe_comparison,long_training,temperature_lr,temperature_init,all_poolers,tdgs_ablation
  if [[ "${1:-}" == "--only" ]]; then
    for name in ${2//,/ }; do
      if [[ ",$experiments," != *",$name,"* ]]; then
        echo "reproduce: --only takes experiments of $experiments, but got $name" >&2
        exit 2
      fi
    done
    experiments=$2
    shift 2
  fi
  overrides=("$@")
  if [[ $smoke == 1 ]]; then  # 1 epoch: no warm-up epoch for trainer=modern either
    overrides=(dataset=synthetic trainer.epochs=1 trainer.warmup_epochs=0 seed=0,1 trainer.progress=false ${overrides[@]+"${overrides[@]}"})
  fi
  for tool in tdgs-train tdgs-report; do
    if ! command -v "$tool" > /dev/null; then
      echo "reproduce: $tool is not on PATH: install tdgs (pip install .) or activate the environment that has it" >&2
      exit 2
    fi
  done
  out=${out:-${TDGS_REPRODUCE_DIR:-outputs/reproduce/$(date +%Y-%m-%d_%H-%M-%S)$([[ $smoke == 1 ]] && echo _smoke)}}
  mkdir -p "$out"
  if [[ ${#resume[@]} -eq 0 ]]; then  # what --resume runs again
    if [[ ${#args[@]} -gt 0 ]]; then printf '%s\n' "${args[@]}" > "$out/reproduce.args"; else : > "$out/reproduce.args"; fi
  fi
  # each invocation's start and end (time, machine, arguments) in invocations.tsv, copied into the report
  machine() {
    local cpu gpu
    cpu=$(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -1)
    gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)
    echo "${cpu:-unknown CPU}, $(nproc) cores${gpu:+, GPU $gpu}"
  }
  started=$(date +%s)
  [[ -f "$out/invocations.tsv" ]] || printf 'event\ttime\tdetail\n' > "$out/invocations.tsv"
  invoked=""
  for word in ${resume[@]+--resume "$out"} ${args[@]+"${args[@]}"}; do invoked+=" $(printf %q "$word")"; done
  printf 'start\t%s\t%s; scripts/reproduce.sh%s\n' "$(date -Is)" "$(machine)" "$invoked" >> "$out/invocations.tsv"
  failed=()
  sweep() {  # FOLDER OVERRIDE...: one sweep into $out/FOLDER, its runs shared with the others
    local folder=$1
    shift
    echo "== $folder -> $out/$folder"
    if ! tdgs-train -m "$@" "hydra.sweep.dir=$out/$folder" "reuse=$out" ${overrides[@]+"${overrides[@]}"} ${resume[@]+"${resume[@]}"}; then
      failed+=("$folder")  # finished runs stay; the report lists what is missing
    fi
  }
  for experiment in ${experiments//,/ }; do
    sweep "$experiment" "experiment=$experiment"
    [[ $experiment == recipe_comparison ]] || continue
    if selected=$(tdgs-report "$out/tdgs_selection" --best-override tdgs_setting); then  # by validation accuracy
      echo "tdgs_setting=$selected won experiment=tdgs_selection on validation"
      sweep recipe_comparison_selected experiment=recipe_comparison pooler=tdgs "tdgs_setting=$selected"
    else
      failed+=(recipe_comparison_selected)
    fi
  done
  outcome=$([[ ${#failed[@]} -gt 0 ]] && echo "failed sweeps (${failed[*]})" || echo completed)
  printf 'end\t%s\t%s after %s s\n' "$(date -Is)" "$outcome" "$(( $(date +%s) - started ))" >> "$out/invocations.tsv"
  tdgs-report "$out" --out "$out/report" || exit 1
  cp "$out/invocations.tsv" "$out/reproduce.args" "$out/report/"
  if [[ ${#failed[@]} -gt 0 ]]; then
    echo "reproduce: these sweeps did not complete every run: ${failed[*]} (see $out/report/report.md, Problems); scripts/reproduce.sh --resume $out continues them" >&2
    exit 1
  fi
  echo "reproduce: done; report in $out/report/report.md"
}

main "$@"; exit $?  # one line: bash reads no further, whatever the file holds by then
