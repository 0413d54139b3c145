#!/usr/bin/env bash
# The GPU check, for a machine with one CUDA GPU and the project's dependencies installed: the tests
# marked `cuda`, the CUDA benchmark (scripts/bench.py --device cuda), a 2-epoch TDGS training per
# precision and compile mode, and the end-to-end goal run (10 epochs, TDGS and max pooling); then one
# summary, OUT_DIR/summary.md, with every figure the GPU goals need. About 6 minutes on an H200
# (the tests 3-4 of them, compiling their Triton kernels); every step has a time limit.
#
#   scripts/gpu_check.sh [OUT_DIR]     default outputs/gpu_check/<date>_<time>
#   PYTHON=python3                     the interpreter that has torch, triton and hydra
#   FASHION_MNIST=DIR                  a folder with the four Fashion-MNIST IDX(.gz) files; without it
#                                      the trainings use the synthetic set (CIFAR geometry)
#   DEVICE=cuda                        DEVICE=cpu QUICK=1: a smoke run of this script on a CPU (tests)
#   ALONGSIDE="COMMAND"                a command to run while the tests run (they time nothing), e.g. a sweep
#                                      on the same GPU; waited for before the benchmark, so that nothing
#                                      else runs while anything is timed (step "alongside", its own log)
#
# Every step runs under a time limit with its output in OUT_DIR/<step>.log; a failed step is noted
# and the others still run; the exit code is 1 if any step failed.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # this source tree, installed or not
python=${PYTHON:-python3}
device=${DEVICE:-cuda}
quick=${QUICK:-0}
out=${1:-outputs/gpu_check/$(date +%Y-%m-%d_%H-%M-%S)}
mkdir -p "$out"
echo "step,exit_code,seconds" > "$out/steps.csv"

step() {  # NAME LIMIT_S COMMAND...: run COMMAND with a time limit, log it, record how it ended
  local name=$1 limit=$2 start=$SECONDS rc
  shift 2
  echo "== $name"
  timeout "$limit" "$@" > "$out/$name.log" 2>&1
  rc=$?
  echo "$name,$rc,$((SECONDS - start))" >> "$out/steps.csv"
  [[ $rc == 0 ]] || echo "   $name failed (exit $rc), see $out/$name.log"
}

train=("$python" -m tdgs.cli trainer.progress=false "device=$device")  # tdgs-train, from this source tree

if [[ -n "${FASHION_MNIST:-}" ]]; then
  data=(dataset=fashion_mnist "dataset.root=$out/data")
  # staged once here: the runs below start together and must not stage the same files at once
  "$python" -c "import sys; from pathlib import Path; from tdgs.data.vision import stage_idx_files
stage_idx_files(Path(sys.argv[1]) / 'FashionMNIST' / 'raw', Path(sys.argv[2]))" "$out/data" "$FASHION_MNIST" || exit 1
else
  data=(dataset=synthetic dataset.geometry=cifar dataset.train_size=20000 dataset.test_size=2000)
fi
reps=15 epochs=10 modes=(none inductor graph)
if [[ $quick == 1 ]]; then
  data=(dataset=synthetic dataset.train_size=256 dataset.test_size=128) reps=2 epochs=1
fi
[[ $device == cuda ]] || modes=(none)  # inductor takes minutes to compile on a small CPU; graph needs CUDA

"$python" - > "$out/machine.txt" 2>&1 <<'EOF'
import platform
import torch
print(f"date: {__import__('datetime').datetime.now():%Y-%m-%d %H:%M}")
print(f"gpu: {torch.cuda.get_device_name() if torch.cuda.is_available() else 'none'}")
print(f"python {platform.python_version()}, torch {torch.__version__}", end="")
try:
    import triton
    print(f", triton {triton.__version__}")
except ImportError:
    print(", no triton")
EOF

# the tests that exercise the kernels and the training step: on a GPU the Triton kernels run there
# (the `cuda` tests, and every kernel-versus-reference test); in parallel where pytest-xdist is
tests=(tests/test_kernels.py tests/test_tdgs.py tests/test_semantics.py tests/test_train_step.py tests/test_recipe.py)
[[ $device == cuda ]] || tests=(-m cuda tests)
"$python" -c "import xdist" 2> /dev/null && tests=(-n 8 "${tests[@]}")
if [[ -n "${ALONGSIDE:-}" ]]; then
  (start=$SECONDS; bash -c "$ALONGSIDE" > "$out/alongside.log" 2>&1; rc=$?
   echo "alongside,$rc,$((SECONDS - start))" >> "$out/steps.csv") &
  alongside=$!
fi
step tests 240 "$python" -m pytest -q -p no:cacheprovider "${tests[@]}"
[[ -n "${alongside:-}" ]] && wait "$alongside"
bench_args=(--device "$device" --reps "$reps" --out "$out/bench")
[[ $quick == 1 ]] && bench_args+=(--quick)
step bench 200 "$python" scripts/bench.py "${bench_args[@]}"

# every precision and compile mode, 2 epochs, all at once, so their seconds are not timings (the
# benchmark and the end-to-end runs below are)
for mode in "${modes[@]}"; do
  for precision in 32 bf16-mixed 16-mixed; do
    name="train_${precision}_${mode}"
    step "$name" 120 "${train[@]}" pooler=tdgs trainer.epochs=2 "trainer.precision=$precision" "trainer.compile=$mode" \
      "${data[@]}" "hydra.run.dir=$out/train/$name" &
  done
done
wait

# the end-to-end goal: tdgs-train with the defaults (compile=auto), 10 epochs, TDGS and max pooling, alone
for pooler in tdgs max; do
  step "e2e_$pooler" 60 "${train[@]}" "pooler=$pooler" "trainer.epochs=$epochs" "${data[@]}" "hydra.run.dir=$out/e2e/$pooler"
done

"$python" - "$out" > "$out/summary.md" <<'EOF'
"""One Markdown summary of everything the GPU check measured."""
import sys
from pathlib import Path

import pandas as pd

from tdgs.report.tables import markdown

out = Path(sys.argv[1])
print(f"# GPU check\n\n{(out / 'machine.txt').read_text()}")
print("## Steps\n\n" + markdown(pd.read_csv(out / "steps.csv")) + "\n")
tests = (out / "tests.log").read_text().strip().splitlines()
failures = "\n".join(line for line in tests if line.startswith(("FAILED", "ERROR")))
print(f"## Tests\n\n{tests[-1] if tests else '(no output)'}\n\n{failures}\n")


def pivot(table, columns, cell):
    table = table.assign(cell=table.apply(cell, axis=1), column=table[columns].astype(str).agg(" ".join, axis=1))
    wide = table.pivot(index="pooler", columns="column", values="cell")
    return wide.loc[list(dict.fromkeys(table.pooler)), list(dict.fromkeys(table.column))].reset_index()


bench = out / "bench"
for name, title, columns, cell in [
    ("poolers", "Poolers, forward+backward: ms (ratio to F.max_pool2d in the same dtype and mode)",
     ["dtype", "mode", "shape"], lambda r: f"{r.ms:.3f} ({r.ratio:.2f}x)"),
    ("train_steps", "CNN train step: ms (ratio to max in the same mode; speed-up over the original code's eager step)",
     ["dataset", "mode"], lambda r: f"{r.ms:.2f} ({r.ratio_to_max:.2f}x; {r.speedup_over_original:.1f}x)"),
    ("memory", "Peak memory of a training step: MB (ratio to max)", ["dataset"], lambda r: f"{r.peak_mb:.1f} ({r.ratio_to_max:.2f}x)"),
    ("recipe", "Train step per recipe: ms (ratio to the deck's recipe); evaluation of 1000 images: ms",
     ["dataset", "mode", "recipe"], lambda r: f"{r.ms:.2f}" + ("" if r.ratio_to_default != r.ratio_to_default else f" ({r.ratio_to_default:.2f}x)")),
]:
    files = sorted(bench.glob(f"{name}_*.csv"))
    if files:
        print(f"## {title}\n\n" + markdown(pivot(pd.read_csv(files[0]), columns, cell)) + "\n")

runs = []
for summary in sorted(out.glob("*/*/summary.csv")):
    row = pd.read_csv(summary).iloc[0]
    runs.append({"run": f"{summary.parent.parent.name}/{summary.parent.name}", **{k: row.get(k) for k in (
        "dataset", "pooler", "precision", "compile", "epochs_done", "status", "test_acc", "train_seconds", "error")}})
if runs:
    runs = pd.DataFrame(runs)
    print("## Trainings (train/: all at once, so their seconds are not timings; e2e/: alone)\n")
    print(markdown(runs.round(2)) + "\n")
    e2e = runs[runs.run.str.startswith("e2e/")].set_index("pooler")
    if {"tdgs", "max"} <= set(e2e.index):
        ratio = e2e.train_seconds["tdgs"] / e2e.train_seconds["max"]
        print(f"End to end: TDGS {e2e.train_seconds['tdgs']:.1f} s, max {e2e.train_seconds['max']:.1f} s "
              f"({ratio:.2f}x), test accuracy {e2e.test_acc['tdgs']:.2f}% / {e2e.test_acc['max']:.2f}%\n")
EOF
echo "gpu_check: summary in $out/summary.md"
! awk -F, 'NR > 1 && $2 != 0 { bad = 1 } END { exit !bad }' "$out/steps.csv"  # exit 1 if a step failed
