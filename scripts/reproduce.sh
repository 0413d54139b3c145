#!/usr/bin/env bash
# Reproduce the deck's tables and more in one folder: the sweeps experiment=deck_table,
# temperature_init, all_poolers and tdgs_ablation, then tdgs-report over all of them.
#
#   scripts/reproduce.sh [--smoke] [OVERRIDE...]
#     --smoke       synthetic data, 1 epoch, seeds 0 and 1: checks the whole path in minutes
#     OVERRIDE...   tdgs-train overrides for every sweep, e.g. to run offline on real data:
#                   dataset=fashion_mnist dataset.source=/usr/share/datasets/fashion-mnist
#                   or in parallel: hydra/launcher=local_parallel hydra.launcher.n_jobs=2
#   TDGS_REPRODUCE_DIR=DIR   where to write (default outputs/reproduce/<time>[_smoke])
set -uo pipefail
cd "$(dirname "$0")/.."
bin=${TDGS_BIN:-.venv/bin}
smoke=0
if [[ "${1:-}" == "--smoke" ]]; then smoke=1; shift; fi
overrides=("$@")
if [[ $smoke == 1 ]]; then
  overrides=(dataset=synthetic trainer.epochs=1 seed=0,1 trainer.progress=false "${overrides[@]}")
fi
out=${TDGS_REPRODUCE_DIR:-outputs/reproduce/$(date +%Y-%m-%d_%H-%M-%S)$([[ $smoke == 1 ]] && echo _smoke)}
failed=()
for experiment in deck_table temperature_init all_poolers tdgs_ablation; do
  echo "== $experiment -> $out/$experiment"
  if ! "$bin/tdgs-train" -m "experiment=$experiment" "hydra.sweep.dir=$out/$experiment" "${overrides[@]}"; then
    failed+=("$experiment")  # finished runs stay; the report lists what is missing
  fi
done
"$bin/tdgs-report" "$out" --out "$out/report" || exit 1
if [[ ${#failed[@]} -gt 0 ]]; then
  echo "reproduce: these sweeps stopped early: ${failed[*]} (see $out/report/report.md, Problems)" >&2
  exit 1
fi
echo "reproduce: done; report in $out/report/report.md"
