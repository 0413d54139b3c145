"""The one-command reproduction, in its smoke variant: six sweeps and the report, end to end,
killed part-way and resumed with --resume."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = str(ROOT / "scripts" / "reproduce.sh")
EXPECTED = {
    "deck_table": 2,
    "tdgs_selection": 5,
    "recipe_comparison": 6,
    "recipe_comparison_selected": 2,
    "long_training": 2,
    "temperature_lr": 3,
    "temperature_init": 9,
    "all_poolers": 7,
    "tdgs_ablation": 18,
}
# seed 0 only (the smoke's seeds 0 and 1 double the time): of these 54 runs, 13 repeat another's
# configuration and seed at 1 epoch (TDGS's defaults with a validation split in tdgs_selection, the
# recipe comparison, long_training, temperature_lr, temperature_init, all_poolers and the ablation; the
# selected setting's; t0 0.1, theta_lr_scale 100 and one T per layer from tdgs_selection; max and gated
# from the recipe comparison), so 41 count, and the 13 are copies, not trained again


def test_a_killed_smoke_reproduction_resumes_to_every_run_once_and_the_report(tmp_path):
    out = tmp_path / "reproduce"
    env = {
        **os.environ,
        "TDGS_REPRODUCE_DIR": str(out),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "TDGS_DATA_DIR": str(tmp_path / "data"),
    }
    started = subprocess.Popen(
        ["bash", SCRIPT, "--smoke", "dataset.train_size=256", "dataset.test_size=128", "seed=0"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.time() + 600
    # deck_table done, tdgs_selection under way (its t0 = 0.1 and one-T-per-layer runs done: no defaults)
    while len(list(out.rglob("summary.csv"))) < 6:
        assert started.poll() is None and time.time() < deadline, "the reproduction ended before it was killed"
        time.sleep(0.1)
    os.killpg(started.pid, signal.SIGKILL)  # the script and the sweep it runs, at once
    started.wait()
    finished = {path: path.stat().st_mtime_ns for path in out.rglob("summary.csv")}

    done = subprocess.run(["bash", SCRIPT, "--resume", str(out)], env=env, capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stderr[-3000:]
    assert {name: len(list((out / name).rglob("summary.csv"))) for name in EXPECTED} == EXPECTED
    assert {path: path.stat().st_mtime_ns for path in finished} == finished  # finished runs were left as they were
    for metrics in out.rglob("metrics.csv"):
        assert pd.read_csv(metrics).epoch.tolist() == [1], metrics  # every epoch once
    report = (out / "report" / "report.md").read_text()
    assert "41 completed runs" in report and "13 more runs repeated the configuration and seed" in report
    assert "None: every run folder completed" in report
    copies = [pd.read_csv(path).iloc[0] for path in out.rglob("summary.csv")]
    copies = [row for row in copies if isinstance(row.get("copied_from"), str)]
    assert len(copies) == 13 and all(Path(row.copied_from).is_dir() for row in copies)  # trained once, copied after
    duplicates = pd.read_csv(out / "report" / "duplicates.csv")
    assert len(duplicates) == 13 and (duplicates.test_acc == duplicates.kept_test_acc).all()
    deck = pd.read_csv(out / "report" / "deck_table.csv")  # TDGS seed 0 ran 9 times with validation: once
    assert deck.n.tolist() == [1] * 6 and deck.validation.tolist() == ["val 26 of 256"] * 4 + ["no validation"] * 2
    assert "won experiment=tdgs_selection on validation" in done.stdout
    configurations = pd.read_csv(out / "report" / "configurations.csv")
    assert {"normalize", "eval_mode", "granularity", "t0"} <= set(configurations.columns)
    assert (out / "report" / "accuracy_vs_t0.png").exists()
    invocations = pd.read_csv(out / "report" / "invocations.tsv", sep="\t")  # the killed one never ended
    assert invocations.event.tolist() == ["start", "start", "end"] and "--resume" in invocations.detail[1]
    assert invocations.detail[2].startswith("completed after") and "cores" in invocations.detail[0]


def test_resume_needs_a_reproduction_folder(tmp_path):
    done = subprocess.run(["bash", SCRIPT, "--resume", str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert (
        done.returncode == 2
        and done.stderr.strip() == f"reproduce: {tmp_path} holds no reproduction to resume (no reproduce.args)"
    )


def test_without_tdgs_train_on_path_it_says_so_in_one_line(tmp_path):
    env = {**os.environ, "PATH": "/usr/bin:/bin", "TDGS_REPRODUCE_DIR": str(tmp_path / "out")}
    done = subprocess.run(["bash", SCRIPT, "--smoke"], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and done.stderr.strip().count("\n") == 0
    assert "tdgs-train is not on PATH" in done.stderr and not (tmp_path / "out").exists()
